-- Delegation: users' passwords (Argon2id), redirect URIs of clients that use the authorization
-- code grant, authorization codes and refresh tokens (by keyed hash of their value), and the
-- grant families they belong to with the access tokens each family produced.

CREATE TABLE user_passwords (
    user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    hash        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

ALTER TABLE oauth_clients ADD COLUMN redirect_uris_json TEXT;

CREATE TABLE grant_families (
    family_id   TEXT PRIMARY KEY,
    revoked_at  BIGINT
);

CREATE TABLE delegated_grants (
    handle_hash     TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    family_id       TEXT NOT NULL REFERENCES grant_families(family_id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource        TEXT NOT NULL,
    scope           TEXT NOT NULL,
    redirect_uri    TEXT,
    code_challenge  TEXT,
    openid          BIGINT NOT NULL,
    nonce           TEXT,
    auth_time       BIGINT NOT NULL,
    dpop_jkt        TEXT,
    issued_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX delegated_grants_family ON delegated_grants(family_id);

CREATE TABLE family_tokens (
    family_id   TEXT NOT NULL REFERENCES grant_families(family_id) ON DELETE CASCADE,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (family_id, jti)
);

-- Enterprise identity providers whose tokens Sigil accepts (token exchange subject tokens,
-- ID-JAG assertions), and per client the audiences Sigil may address ID-JAGs to for it.
CREATE TABLE trusted_issuers (
    id              TEXT PRIMARY KEY,
    issuer          TEXT NOT NULL UNIQUE,
    jwks_json       TEXT,
    jwks_uri        TEXT,
    username_claim  TEXT NOT NULL,
    audiences_json  TEXT NOT NULL,
    accept_id_jag   BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    created_by      TEXT NOT NULL
);

ALTER TABLE oauth_clients ADD COLUMN id_jag_audiences_json TEXT;
