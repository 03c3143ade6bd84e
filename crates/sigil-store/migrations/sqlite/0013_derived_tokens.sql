-- Access tokens issued by token exchange (RFC 8693), under the access token they were
-- exchanged from: revoking that token, or the grant family it came from, revokes every token
-- derived from it, at any depth of the delegation chain.
CREATE TABLE derived_tokens (
    parent_jti  TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (parent_jti, jti)
) WITHOUT ROWID;
