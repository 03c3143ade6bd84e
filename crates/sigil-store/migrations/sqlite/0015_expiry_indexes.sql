-- The purge of what expired deletes a bounded chunk at a time, found through these indexes:
-- without them each purge read the whole table (a few seconds of the writer's time, every
-- minute, once token exchanges or DPoP proofs had filled these tables), and one unbounded delete
-- held the writer as long. Expiry times grow with issue time, so these indexes append.
CREATE INDEX used_dpop_proofs_expiry ON used_dpop_proofs(expires_at);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens(expires_at);
CREATE INDEX family_tokens_expiry ON family_tokens(expires_at);
CREATE INDEX derived_tokens_expiry ON derived_tokens(expires_at);
