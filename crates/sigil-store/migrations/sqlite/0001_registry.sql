-- Registry, keys, admin credentials, settings and the audit log (SQLite).
-- Times are microseconds since the Unix epoch; every entity row carries a version for
-- optimistic concurrency.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT,
    display_name  TEXT,
    groups_json   TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    updated_by    TEXT NOT NULL,
    version       BIGINT NOT NULL
);

CREATE TABLE user_groups (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    grp      TEXT NOT NULL,
    PRIMARY KEY (user_id, grp)
);
CREATE INDEX user_groups_grp ON user_groups(grp);

CREATE TABLE identities (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    description   TEXT,
    owner_id      TEXT NOT NULL REFERENCES users(id),
    team          TEXT,
    labels_json   TEXT NOT NULL,
    status        TEXT NOT NULL,
    expires_at    BIGINT,
    ceiling_json  TEXT NOT NULL,
    last_used_at  BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    updated_by    TEXT NOT NULL,
    version       BIGINT NOT NULL
);
CREATE INDEX identities_owner ON identities(owner_id);
CREATE INDEX identities_status ON identities(status);

CREATE TABLE identity_labels (
    identity_id  TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (identity_id, key)
);
CREATE INDEX identity_labels_kv ON identity_labels(key, value);

CREATE TABLE resources (
    id            TEXT PRIMARY KEY,
    uri           TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT,
    owner_id      TEXT NOT NULL REFERENCES users(id),
    scopes_json   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    updated_by    TEXT NOT NULL,
    version       BIGINT NOT NULL
);
CREATE INDEX resources_owner ON resources(owner_id);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL,
    public_jwk      TEXT NOT NULL,
    sealed_private  BLOB NOT NULL,
    created_at      BIGINT NOT NULL,
    activate_at     BIGINT NOT NULL,
    retired_at      BIGINT,
    remove_after    BIGINT,
    version         BIGINT NOT NULL
);

CREATE TABLE admin_credentials (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);

-- seq is assigned by the database at insert; AUTOINCREMENT so a number is never reused.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    time        BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    request_id  TEXT,
    subject     TEXT,
    actor       TEXT,
    client_id   TEXT,
    target_id   TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events(time);
CREATE INDEX audit_events_type ON audit_events(event_type);
CREATE INDEX audit_events_request ON audit_events(request_id);
CREATE INDEX audit_events_actor ON audit_events(actor);
CREATE INDEX audit_events_target ON audit_events(target_id);
