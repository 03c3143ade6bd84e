-- The trust domain's X.509 authorities (the CA certificates and their sealed private keys) that
-- sign X509-SVIDs and are published in the SPIFFE trust bundle.

CREATE TABLE x509_authorities (
    id              TEXT PRIMARY KEY,
    cert_der        BYTEA NOT NULL,
    sealed_key      BYTEA NOT NULL,
    status          TEXT NOT NULL,
    not_after       BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);

-- Registration entries: which workloads (selectors, on which node) get which SPIFFE ID.
CREATE TABLE registration_entries (
    id              TEXT PRIMARY KEY,
    spiffe_id       TEXT NOT NULL,
    parent_id       TEXT NOT NULL,
    selectors_json  TEXT NOT NULL,
    identity_id     TEXT REFERENCES identities(id),
    x509_ttl        BIGINT NOT NULL,
    jwt_ttl         BIGINT NOT NULL,
    dns_json        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    updated_by      TEXT NOT NULL,
    version         BIGINT NOT NULL
);
CREATE INDEX registration_entries_parent ON registration_entries(parent_id);
CREATE INDEX registration_entries_spiffe ON registration_entries(spiffe_id);
