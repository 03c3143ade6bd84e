-- Policy set versions (immutable once stored) and their activations (append-only: the latest row
-- is the active version, and the rows before it are the history rollback walks back through).

CREATE TABLE policy_versions (
    version      BIGINT PRIMARY KEY,
    policies     TEXT NOT NULL,
    schema_text  TEXT,
    description  TEXT,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);

CREATE TABLE policy_activations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    version       BIGINT NOT NULL REFERENCES policy_versions(version),
    activated_at  BIGINT NOT NULL,
    activated_by  TEXT NOT NULL
);
