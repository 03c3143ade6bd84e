-- The trust domain's X.509 authorities (the CA certificates and their sealed private keys) that
-- sign X509-SVIDs and are published in the SPIFFE trust bundle.

CREATE TABLE x509_authorities (
    id              TEXT PRIMARY KEY,
    cert_der        BLOB NOT NULL,
    sealed_key      BLOB NOT NULL,
    status          TEXT NOT NULL,
    not_after       BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
