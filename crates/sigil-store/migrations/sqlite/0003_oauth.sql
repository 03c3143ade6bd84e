-- OAuth clients, the shared replay cache for client assertions, revoked tokens, and the per-
-- identity cut-off that revokes every token issued before a suspension or revocation.

CREATE TABLE oauth_clients (
    client_id      TEXT PRIMARY KEY,
    identity_id    TEXT NOT NULL REFERENCES identities(id),
    auth_method    TEXT NOT NULL,
    jwks_json      TEXT,
    jwks_uri       TEXT,
    secret_hash    TEXT,
    dpop_required  BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    version        BIGINT NOT NULL
);
CREATE INDEX oauth_clients_identity ON oauth_clients(identity_id);

CREATE TABLE used_assertions (
    client_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX used_assertions_expiry ON used_assertions(expires_at);

CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT NOT NULL
);

ALTER TABLE identities ADD COLUMN tokens_not_before BIGINT;

-- DPoP proof jtis seen (RFC 9449 §11.1), shared by all replicas, kept until the proof is stale.
CREATE TABLE used_dpop_proofs (
    jti         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);

-- Initial access tokens for dynamic client registration (RFC 7591 §3), issued by an admin for
-- an owner; and the RFC 7592 management credential and metadata of registered clients.
CREATE TABLE registration_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    owner_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    identity_id  TEXT REFERENCES identities(id),
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);

ALTER TABLE oauth_clients ADD COLUMN registration_token_hash TEXT;
ALTER TABLE oauth_clients ADD COLUMN metadata_json TEXT;

-- Per-identity token settings: access-token lifetime (capped by the server's maximum) and
-- whether every token of the identity must be DPoP-bound.
ALTER TABLE identities ADD COLUMN token_ttl_seconds BIGINT;
ALTER TABLE identities ADD COLUMN dpop_required BIGINT NOT NULL DEFAULT 0;
