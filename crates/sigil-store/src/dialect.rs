//! What differs between SQLite and PostgreSQL, in one place.

use sqlx::AnyConnection;
use sqlx::Executor;

/// The database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One forward-only schema migration.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Per-database settings and statements; nothing else in the adapter branches on the backend.
#[derive(Debug)]
pub struct Dialect {
    pub name: &'static str,
    /// Starts a write transaction. SQLite takes the write lock up front (`IMMEDIATE`) so two
    /// writers never deadlock upgrading a read lock.
    pub begin_write: &'static str,
    /// Serialises migrations across processes (PostgreSQL replicas start at once).
    pub migration_lock: Option<&'static str>,
    /// Orders revocations and token derivations across concurrent write transactions (see
    /// [`LineageLock`]); SQLite's one writer already runs transactions one after the other.
    pub lineage_lock: Option<LineageLock>,
    pub migrations: &'static [Migration],
    /// Writer connections: SQLite has one writer at a time anyway; PostgreSQL takes a few.
    pub writers: u32,
    /// A writer keeps its connection from one batch to the next. An embedded SQLite file has no
    /// server to drop it, and taking it from the pool and giving it back cost each group commit
    /// ~90 µs of hand-offs on the writer's path (measured); a PostgreSQL writer takes one per
    /// batch, checked by the pool first, so a connection the server dropped fails no batch.
    pub writer_keeps_connection: bool,
    pub read_connections: u32,
    /// An audit record's stored JSON as bytes: a record whose text was altered into invalid
    /// UTF-8 is then read, and reported as modified by verification, instead of failing the
    /// whole read in the driver.
    pub audit_body_bytes: &'static str,
    /// The oldest pending audit records (at most `$1`), in one row: each as `seq,length,body`,
    /// in `seq` order, with the body's length in UTF-8 bytes (what the client receives,
    /// whatever the server's encoding). The integrator reads up to 256 records a step, and the
    /// driver hands over each row of a result on its own (a channel message and a task wake-up
    /// per row: 1.6 ms a step, the most time any statement took in `sigil-load tokens`); one
    /// row carries them all.
    pub pending_audit: &'static str,
}

/// A revocation reaches the tokens derived from the revoked one through `derived_tokens` (and a
/// family's through `family_tokens`), and recording such a token is refused when its parent (or
/// family) is found revoked. Under PostgreSQL's read-committed isolation two concurrent
/// transactions could each miss the other's uncommitted rows (the revocation not seeing the new
/// token, the recording not seeing the revocation); a transaction-scoped advisory lock, taken
/// first, shared by recordings and exclusive for revocations, makes one of them see the other.
/// Taken before anything else, it adds no lock-order cycle with row locks.
#[derive(Debug, Clone, Copy)]
pub struct LineageLock {
    pub shared: &'static str,
    pub exclusive: &'static str,
}

const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "registry",
        sql: include_str!("../migrations/sqlite/0001_registry.sql"),
    },
    Migration {
        version: 2,
        name: "audit_log",
        sql: include_str!("../migrations/sqlite/0002_audit_log.sql"),
    },
    Migration {
        version: 3,
        name: "oauth",
        sql: include_str!("../migrations/sqlite/0003_oauth.sql"),
    },
    Migration {
        version: 4,
        name: "policy",
        sql: include_str!("../migrations/sqlite/0004_policy.sql"),
    },
    Migration {
        version: 5,
        name: "delegation",
        sql: include_str!("../migrations/sqlite/0005_delegation.sql"),
    },
    Migration {
        version: 6,
        name: "spiffe",
        sql: include_str!("../migrations/sqlite/0006_spiffe.sql"),
    },
    Migration {
        version: 7,
        name: "nodes",
        sql: include_str!("../migrations/sqlite/0007_nodes.sql"),
    },
    Migration {
        version: 8,
        name: "node_bans",
        sql: include_str!("../migrations/sqlite/0008_node_bans.sql"),
    },
    Migration {
        version: 9,
        name: "builtin_policy_version",
        sql: include_str!("../migrations/sqlite/0009_builtin_policy_version.sql"),
    },
    Migration {
        version: 10,
        name: "user_token_cutoff",
        sql: include_str!("../migrations/sqlite/0010_user_token_cutoff.sql"),
    },
    Migration {
        version: 11,
        name: "audit_acting_for",
        sql: include_str!("../migrations/sqlite/0011_audit_acting_for.sql"),
    },
    Migration {
        version: 12,
        name: "resource_servers",
        sql: include_str!("../migrations/sqlite/0012_resource_servers.sql"),
    },
    Migration {
        version: 13,
        name: "derived_tokens",
        sql: include_str!("../migrations/sqlite/0013_derived_tokens.sql"),
    },
    Migration {
        version: 14,
        name: "grant_expiry",
        sql: include_str!("../migrations/sqlite/0014_grant_expiry.sql"),
    },
    Migration {
        version: 15,
        name: "expiry_indexes",
        sql: include_str!("../migrations/sqlite/0015_expiry_indexes.sql"),
    },
    Migration {
        version: 16,
        name: "unstored_tree_levels",
        sql: include_str!("../migrations/sqlite/0016_unstored_tree_levels.sql"),
    },
    Migration {
        version: 17,
        name: "audit_indexes_after_integration",
        sql: include_str!("../migrations/sqlite/0017_audit_indexes_after_integration.sql"),
    },
    Migration {
        version: 18,
        name: "registration_token_index",
        sql: include_str!("../migrations/sqlite/0018_registration_token_index.sql"),
    },
];

const POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "registry",
        sql: include_str!("../migrations/postgres/0001_registry.sql"),
    },
    Migration {
        version: 2,
        name: "audit_log",
        sql: include_str!("../migrations/postgres/0002_audit_log.sql"),
    },
    Migration {
        version: 3,
        name: "oauth",
        sql: include_str!("../migrations/postgres/0003_oauth.sql"),
    },
    Migration {
        version: 4,
        name: "policy",
        sql: include_str!("../migrations/postgres/0004_policy.sql"),
    },
    Migration {
        version: 5,
        name: "delegation",
        sql: include_str!("../migrations/postgres/0005_delegation.sql"),
    },
    Migration {
        version: 6,
        name: "spiffe",
        sql: include_str!("../migrations/postgres/0006_spiffe.sql"),
    },
    Migration {
        version: 7,
        name: "nodes",
        sql: include_str!("../migrations/postgres/0007_nodes.sql"),
    },
    Migration {
        version: 8,
        name: "node_bans",
        sql: include_str!("../migrations/postgres/0008_node_bans.sql"),
    },
    Migration {
        version: 9,
        name: "builtin_policy_version",
        sql: include_str!("../migrations/postgres/0009_builtin_policy_version.sql"),
    },
    Migration {
        version: 10,
        name: "user_token_cutoff",
        sql: include_str!("../migrations/postgres/0010_user_token_cutoff.sql"),
    },
    Migration {
        version: 11,
        name: "audit_acting_for",
        sql: include_str!("../migrations/postgres/0011_audit_acting_for.sql"),
    },
    Migration {
        version: 12,
        name: "resource_servers",
        sql: include_str!("../migrations/postgres/0012_resource_servers.sql"),
    },
    Migration {
        version: 13,
        name: "derived_tokens",
        sql: include_str!("../migrations/postgres/0013_derived_tokens.sql"),
    },
    Migration {
        version: 14,
        name: "grant_expiry",
        sql: include_str!("../migrations/postgres/0014_grant_expiry.sql"),
    },
    Migration {
        version: 15,
        name: "expiry_indexes",
        sql: include_str!("../migrations/postgres/0015_expiry_indexes.sql"),
    },
    Migration {
        version: 16,
        name: "unstored_tree_levels",
        sql: include_str!("../migrations/postgres/0016_unstored_tree_levels.sql"),
    },
    Migration {
        version: 17,
        name: "audit_indexes_after_integration",
        sql: include_str!("../migrations/postgres/0017_audit_indexes_after_integration.sql"),
    },
    Migration {
        version: 18,
        name: "registration_token_index",
        sql: include_str!("../migrations/postgres/0018_registration_token_index.sql"),
    },
];

static SQLITE: Dialect = Dialect {
    name: "sqlite",
    begin_write: "BEGIN IMMEDIATE",
    migration_lock: None,
    lineage_lock: None,
    migrations: SQLITE_MIGRATIONS,
    writers: 1,
    writer_keeps_connection: true,
    read_connections: 4,
    audit_body_bytes: "CAST(body AS BLOB) AS body",
    pending_audit: "SELECT group_concat(seq || ',' || length(CAST(body AS BLOB)) || ',' || body, '' ORDER BY seq) AS pending \
         FROM (SELECT seq, body FROM audit_events WHERE leaf_index IS NULL ORDER BY seq LIMIT $1)",
};

static POSTGRES: Dialect = Dialect {
    name: "postgres",
    begin_write: "BEGIN",
    migration_lock: Some("SELECT pg_advisory_xact_lock(7316617)"),
    lineage_lock: Some(LineageLock {
        shared: "SELECT pg_advisory_xact_lock_shared(7316618)",
        exclusive: "SELECT pg_advisory_xact_lock(7316618)",
    }),
    migrations: POSTGRES_MIGRATIONS,
    writers: 4,
    writer_keeps_connection: false,
    read_connections: 8,
    audit_body_bytes: "convert_to(body, 'UTF8') AS body",
    pending_audit: "SELECT string_agg(seq::text || ',' || octet_length(convert_to(body, 'UTF8'))::text || ',' || body, '' ORDER BY seq) AS pending \
         FROM (SELECT seq, body FROM audit_events WHERE leaf_index IS NULL ORDER BY seq LIMIT $1) AS p",
};

impl Backend {
    pub fn dialect(self) -> &'static Dialect {
        match self {
            Self::Sqlite => &SQLITE,
            Self::Postgres => &POSTGRES,
        }
    }
}

/// Per-connection settings. For SQLite: WAL (readers do not block the writer), `synchronous =
/// FULL` (a commit is on disk before it is acknowledged, so it survives `kill -9` and power
/// loss), foreign keys on, a busy timeout instead of immediate "database is locked", and
/// temporary storage in memory: the group commit gives each change set a savepoint, whose
/// sub-journal (the pages' contents before the change set touched them) otherwise goes through
/// a temporary file, one `pwrite` per page. It is only needed until the transaction ends.
pub async fn prepare_connection(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        conn.execute(sqlx::raw_sql(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;",
        ))
        .await?;
    }
    Ok(())
}
