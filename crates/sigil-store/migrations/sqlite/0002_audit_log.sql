-- The audit log as a Merkle tree: leaf positions and hashes assigned by the integrator, the perfect
-- subtree hashes, signed checkpoints, leases (one integrator at a time), and SIEM sink positions.

ALTER TABLE audit_events ADD COLUMN leaf_index BIGINT;
ALTER TABLE audit_events ADD COLUMN leaf_hash BLOB;
ALTER TABLE audit_events ADD COLUMN jti TEXT;
CREATE UNIQUE INDEX audit_events_leaf ON audit_events(leaf_index);
CREATE INDEX audit_events_pending ON audit_events(seq) WHERE leaf_index IS NULL;
CREATE INDEX audit_events_subject ON audit_events(subject);
CREATE INDEX audit_events_client ON audit_events(client_id);
CREATE INDEX audit_events_jti ON audit_events(jti);

CREATE TABLE audit_tree_nodes (
    level  BIGINT NOT NULL,
    idx    BIGINT NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE audit_checkpoints (
    tree_size  BIGINT PRIMARY KEY,
    root_hash  BLOB NOT NULL,
    time       BIGINT NOT NULL,
    kid        TEXT NOT NULL,
    jws        TEXT NOT NULL
);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE audit_sinks (
    name       TEXT PRIMARY KEY,
    delivered  BIGINT NOT NULL
);
