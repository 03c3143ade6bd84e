-- A user's tokens issued at or before this time are dead: set when the user is suspended or
-- disabled, so resuming her does not bring back the tokens and grants of before.

ALTER TABLE users ADD COLUMN tokens_not_before BIGINT;
