-- Node attestation: one-time join tokens and the nodes they admitted; and the trust domain's
-- JWT authorities (ES256 keys that sign JWT-SVIDs, apart from the OAuth signing keys: the
-- JWT-SVID specification allows only RSA and ECDSA algorithms).

CREATE TABLE jwt_authorities (
    kid             TEXT PRIMARY KEY,
    sealed_key      BLOB NOT NULL,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    token_hash      TEXT PRIMARY KEY,
    spiffe_id       TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    used_at         BIGINT
);

-- A node's current SVID serial and lifetime; banned nodes can neither renew nor fetch SVIDs.
CREATE TABLE attested_nodes (
    spiffe_id       TEXT PRIMARY KEY,
    method          TEXT NOT NULL,
    attested_at     BIGINT NOT NULL,
    svid_serial     TEXT NOT NULL,
    svid_expires_at BIGINT NOT NULL,
    banned_at       BIGINT
);

-- Federation: other trust domains whose bundles are fetched from their bundle endpoints and
-- handed to workloads.
CREATE TABLE federations (
    trust_domain    TEXT PRIMARY KEY,
    bundle_endpoint TEXT NOT NULL,
    bundle_json     TEXT,
    refreshed_at    BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    created_by      TEXT NOT NULL
);

-- An authority that is an intermediate under the operator's upstream CA keeps that CA's
-- certificate here: it is what the bundle publishes, and SVIDs carry the intermediate.
ALTER TABLE x509_authorities ADD COLUMN upstream_der BLOB;
