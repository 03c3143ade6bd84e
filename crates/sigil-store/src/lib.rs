//! SQLite and PostgreSQL adapters for Sigil's store port.
//!
//! One adapter serves both databases through sqlx's `Any` driver: the queries are the same SQL
//! (`$n` placeholders, portable types), and what differs between the two lives in one
//! [`dialect::Dialect`] value chosen when connecting, never in `if sqlite` branches in queries.
//! Writes go through a group-committing writer ([`writer`]): many requests' change sets share
//! one transaction and one fsync, each isolated in its own savepoint.

mod apply;
mod checkpointer;
mod dialect;
mod errors;
mod migrate;
mod notices;
mod read;
mod revocations;
mod rows;
mod sql;
pub mod testing;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use async_trait::async_trait;
use sigil_core::admin_auth::AdminCredential;
use sigil_core::audit::{AuditQuery, Checkpoint};
use sigil_core::keys::StoredKey;
use sigil_core::model::{
    Identity, IdentityQuery, IdentityRef, Page, Resource, ResourceQuery, ResourceRef, User, UserQuery, UserRef,
};
use sigil_core::store::{
    AdminStore, AuditStore, ChangeSet, IdentityStore, KeyStore, ResourceStore, Store, StoreError, StoreResult,
    StoredAudit, UserStore,
};
use sigil_types::{IdentityId, UserId};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use dialect::Backend;
pub use migrate::{MigrationReport, latest_version};

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file (created if missing).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl Location {
    /// Chooses PostgreSQL for `postgres://`/`postgresql://` URLs, otherwise the SQLite file.
    pub fn from_url_or_file(url: Option<&str>, sqlite_file: std::path::PathBuf) -> Result<Self, StoreError> {
        match url {
            None => Ok(Self::Sqlite(sqlite_file)),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Self::Postgres(u.to_owned()))
            }
            Some(u) if u.starts_with("sqlite://") => Ok(Self::Sqlite(u.trim_start_matches("sqlite://").into())),
            Some(_) => Err(StoreError::Unavailable(
                "database url must start with postgres://, postgresql:// or sqlite://".into(),
            )),
        }
    }
}

impl Location {
    /// Installs the drivers (once) and gives the backend and connection URL.
    fn open(&self) -> (Backend, String) {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        match self {
            Self::Sqlite(path) => {
                owner_only(path);
                (Backend::Sqlite, format!("sqlite://{}?mode=rwc", path.display()))
            }
            Self::Postgres(url) => (Backend::Postgres, url.clone()),
        }
    }
}

/// The SQLite file holds sealed keys, hashed secrets and the audit trail: readable by its owner
/// only (0600), like the master key beside it. Created that way if missing (SQLite gives its
/// `-wal` and `-shm` files the database file's mode), and tightened if an older build left it
/// wider. Best effort: a path that cannot be opened fails with SQLite's own error next.
fn owner_only(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = std::path::Path::new(&file);
            if let Ok(meta) = std::fs::metadata(file)
                && meta.permissions().mode() & 0o077 != 0
            {
                let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Tuning for a store; the defaults suit one `sigil serve` process.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Run pending migrations when connecting (`sigil serve` does; `sigil db migrate` too).
    pub migrate: bool,
    /// How long to wait for a connection before answering "unavailable".
    pub acquire_timeout: Duration,
    /// Most change sets committed in one transaction (1 = one fsync per change set: the
    /// baseline the benchmark compares group commit against).
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            acquire_timeout: Duration::from_secs(5),
            max_batch: writer::MAX_BATCH,
        }
    }
}

/// The SQL store. Cheap to clone; all clones share pools and the writer.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    writer: Arc<writer::Writer>,
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// SQLite: tokens known not to be revoked (PostgreSQL replicas ask the database each time).
    not_revoked: Option<Arc<revocations::NotRevoked>>,
    /// PostgreSQL: other replicas' registry changes move `epoch` too.
    _notices: Option<Arc<notices::Listening>>,
    /// SQLite: the WAL checkpointer runs while any clone of the store is alive.
    _checkpointing: Arc<()>,
}

static DRIVERS: std::sync::Once = std::sync::Once::new();

/// Tells the other replicas to drop their cached registry reads. A notice that cannot be sent
/// leaves them at their caches' age bound, so it is logged, not an error of the commit.
async fn announce_registry_change(pool: &AnyPool) {
    if let Err(e) = sqlx::raw_sql(notices::ANNOUNCE).execute(pool).await {
        tracing::warn!(error = %e, "could not announce a registry change to other replicas");
    }
}

impl SqlStore {
    /// Connects, applies migrations if asked, and starts the writer.
    pub async fn connect(location: &Location, opts: &StoreOptions) -> Result<Self, StoreError> {
        let (backend, url) = location.open();
        let d = backend.dialect();
        let pool = pool_sized(&url, backend, d.read_connections, opts).await?;
        if opts.migrate {
            migrate::run(&pool, backend).await?;
        } else {
            migrate::check_current(&pool, backend).await?;
        }
        let write_pool = pool_sized(&url, backend, d.writers, opts).await?;
        let rewind = (backend == Backend::Sqlite).then(Arc::<checkpointer::RestartWanted>::default);
        let not_revoked = (backend == Backend::Sqlite).then(Arc::<revocations::NotRevoked>::default);
        let epoch = Arc::<std::sync::atomic::AtomicU64>::default();
        let after = writer::AfterCommit {
            registry_epoch: Arc::clone(&epoch),
            not_revoked: not_revoked.clone(),
            rewind: rewind.clone(),
        };
        let writer = Arc::new(writer::Writer::start(write_pool, backend, opts.max_batch, after));
        let notices =
            (backend == Backend::Postgres).then(|| Arc::new(notices::listen(url.clone(), Arc::clone(&epoch))));
        let checkpointing = Arc::new(());
        if let Some(rewind) = rewind {
            checkpointer::start(pool.clone(), &checkpointing, rewind);
        }
        Ok(Self {
            pool,
            backend,
            writer,
            epoch,
            not_revoked,
            _notices: notices,
            _checkpointing: checkpointing,
        })
    }

    /// Only applies migrations (for `sigil db migrate`).
    pub async fn migrate_only(location: &Location) -> Result<MigrationReport, StoreError> {
        let (backend, url) = location.open();
        let pool = pool_sized(&url, backend, 1, &StoreOptions::default()).await?;
        let report = migrate::run(&pool, backend).await;
        pool.close().await;
        report
    }

    pub fn kind(&self) -> Backend {
        self.backend
    }
}

async fn pool_sized(url: &str, backend: Backend, size: u32, opts: &StoreOptions) -> Result<AnyPool, StoreError> {
    AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        // A pool pings a connection before handing it out, in case the server dropped it. An
        // embedded SQLite file has no server to drop it, and the ping is a round trip to the
        // driver's thread on every read and every group commit (0.3–0.7 ms per commit under
        // load, measured). PostgreSQL keeps the check.
        .test_before_acquire(backend != Backend::Sqlite)
        .acquire_timeout(opts.acquire_timeout)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                dialect::prepare_connection(conn).await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to the database: {e}")))
}

#[async_trait]
impl UserStore for SqlStore {
    async fn get_user(&self, r: &UserRef) -> StoreResult<Option<User>> {
        read::get_user(&self.pool, r).await
    }
    async fn list_users(&self, q: &UserQuery) -> StoreResult<Page<User>> {
        read::list_users(&self.pool, q).await
    }
}

#[async_trait]
impl IdentityStore for SqlStore {
    async fn get_identity(&self, r: &IdentityRef) -> StoreResult<Option<Identity>> {
        read::get_identity(&self.pool, r).await
    }
    async fn list_identities(&self, q: &IdentityQuery) -> StoreResult<Page<Identity>> {
        read::list_identities(&self.pool, q).await
    }
    async fn count_owned(&self, owner: &UserId) -> StoreResult<u64> {
        read::count_owned(&self.pool, owner).await
    }
    async fn count_identities(&self) -> StoreResult<u64> {
        read::count_identities(&self.pool).await
    }
    async fn identity_ids_owned_by(&self, owner: &UserId) -> StoreResult<Vec<IdentityId>> {
        read::identity_ids_owned_by(&self.pool, owner).await
    }
}

#[async_trait]
impl ResourceStore for SqlStore {
    async fn get_resource(&self, r: &ResourceRef) -> StoreResult<Option<Resource>> {
        read::get_resource(&self.pool, r).await
    }
    async fn list_resources(&self, q: &ResourceQuery) -> StoreResult<Page<Resource>> {
        read::list_resources(&self.pool, q).await
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn list_signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        read::list_signing_keys(&self.pool).await
    }
    async fn get_setting(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        read::get_setting(&self.pool, name).await
    }
}

#[async_trait]
impl AdminStore for SqlStore {
    async fn find_admin_credential(&self, token_hash: &str) -> StoreResult<Option<AdminCredential>> {
        read::find_admin_credential(&self.pool, "token_hash", token_hash).await
    }
    async fn get_admin_credential_by_name(&self, name: &str) -> StoreResult<Option<AdminCredential>> {
        read::find_admin_credential(&self.pool, "name", name).await
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<StoredAudit>> {
        read::list_audit(&self.pool, self.backend.dialect(), after, limit).await
    }
    async fn list_leaves(&self, from: u64, limit: u32) -> StoreResult<Vec<sigil_core::store::StoredLeaf>> {
        read::list_leaves(&self.pool, self.backend.dialect(), from, limit).await
    }
    async fn search_audit(&self, q: &AuditQuery) -> StoreResult<Page<StoredAudit>> {
        read::search_audit(&self.pool, self.backend.dialect(), q).await
    }
    async fn pending_audit(&self, limit: u32) -> StoreResult<Vec<(i64, String)>> {
        read::pending_audit(&self.pool, self.backend.dialect(), limit).await
    }
    async fn audit_tree_size(&self) -> StoreResult<u64> {
        read::audit_tree_size(&self.pool).await
    }
    async fn audit_nodes(&self, coords: &[(u32, u64)]) -> StoreResult<HashMap<(u32, u64), [u8; 32]>> {
        read::audit_nodes(&self.pool, coords).await
    }

    async fn audit_leaf_hashes(&self, from: u64, to: u64) -> StoreResult<Vec<(u64, [u8; 32])>> {
        read::audit_leaf_hashes(&self.pool, from, to).await
    }
    async fn latest_checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        read::latest_checkpoint(&self.pool).await
    }
    async fn list_checkpoints(&self, after: u64, limit: u32) -> StoreResult<Vec<Checkpoint>> {
        read::list_checkpoints(&self.pool, after, limit).await
    }
    async fn sink_position(&self, name: &str) -> StoreResult<Option<u64>> {
        read::sink_position(&self.pool, name).await
    }
    async fn audit_base(&self) -> StoreResult<u64> {
        read::audit_base(&self.pool).await
    }
    async fn audit_prune_point(&self, cutoff: sigil_types::Timestamp) -> StoreResult<Option<u64>> {
        read::audit_prune_point(&self.pool, cutoff).await
    }
}

#[async_trait]
impl sigil_core::store::OAuthStore for SqlStore {
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<sigil_core::oauth::OAuthClient>> {
        read::get_client(&self.pool, client_id).await
    }
    async fn client_by_registration_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<sigil_core::oauth::OAuthClient>> {
        read::client_by_registration_token(&self.pool, token_hash).await
    }
    async fn list_clients(
        &self,
        identity: Option<&IdentityId>,
        page: &sigil_core::model::PageRequest,
    ) -> StoreResult<Page<sigil_core::oauth::OAuthClient>> {
        read::list_clients(&self.pool, identity, page).await
    }
    async fn expired_left(&self, before: i64) -> StoreResult<bool> {
        read::expired_left(&self.pool, before).await
    }

    async fn is_token_revoked(&self, jti: &str) -> StoreResult<bool> {
        let Some(not_revoked) = &self.not_revoked else {
            return read::is_token_revoked(&self.pool, jti).await;
        };
        if not_revoked.knows(jti) {
            return Ok(false);
        }
        let epoch = not_revoked.epoch();
        let revoked = read::is_token_revoked(&self.pool, jti).await?;
        if !revoked {
            not_revoked.remember(jti, epoch);
        }
        Ok(revoked)
    }
    async fn find_registration_token(
        &self,
        hash: &str,
    ) -> StoreResult<Option<sigil_core::oauth::client::RegistrationToken>> {
        read::find_registration_token(&self.pool, hash).await
    }
    async fn list_registration_tokens(
        &self,
        now: sigil_types::Timestamp,
    ) -> StoreResult<Vec<sigil_core::oauth::client::RegistrationToken>> {
        read::list_registration_tokens(&self.pool, now).await
    }
}

#[async_trait]
impl sigil_core::store::PolicyStore for SqlStore {
    async fn list_policy_versions(&self) -> StoreResult<Vec<sigil_core::policy::PolicyVersion>> {
        read::list_policy_versions(&self.pool).await
    }
    async fn get_policy_version(&self, version: u64) -> StoreResult<Option<sigil_core::policy::PolicyVersion>> {
        read::get_policy_version(&self.pool, version).await
    }
    async fn policy_activations(&self, limit: u32) -> StoreResult<Vec<sigil_core::policy::PolicyActivation>> {
        read::policy_activations(&self.pool, limit).await
    }
}

#[async_trait]
impl sigil_core::store::DelegationStore for SqlStore {
    async fn user_password_hash(&self, user: &UserId) -> StoreResult<Option<String>> {
        read::user_password_hash(&self.pool, user).await
    }
    async fn get_grant(&self, handle_hash: &str) -> StoreResult<Option<sigil_core::oauth::grant::Grant>> {
        read::get_grant(&self.pool, handle_hash).await
    }
    async fn get_entry(&self, id: &str) -> StoreResult<Option<sigil_core::spiffe::entries::RegistrationEntry>> {
        read::get_entry(&self.pool, id).await
    }
    async fn list_entries(
        &self,
        parent_id: Option<&str>,
        spiffe_id: Option<&str>,
    ) -> StoreResult<Vec<sigil_core::spiffe::entries::RegistrationEntry>> {
        read::list_entries(&self.pool, parent_id, spiffe_id).await
    }
    async fn get_join_token(&self, token_hash: &str) -> StoreResult<Option<sigil_core::spiffe::nodes::JoinToken>> {
        read::get_join_token(&self.pool, token_hash).await
    }
    async fn get_node(&self, spiffe_id: &str) -> StoreResult<Option<sigil_core::spiffe::nodes::AttestedNode>> {
        read::get_node(&self.pool, spiffe_id).await
    }
    async fn list_banned_nodes(&self) -> StoreResult<Vec<String>> {
        read::list_banned_nodes(&self.pool).await
    }
    async fn list_nodes(&self) -> StoreResult<Vec<sigil_core::spiffe::nodes::AttestedNode>> {
        read::list_nodes(&self.pool).await
    }
    async fn list_federations(&self) -> StoreResult<Vec<sigil_core::spiffe::federation::Federation>> {
        read::list_federations(&self.pool).await
    }
    async fn list_jwt_authorities(&self) -> StoreResult<Vec<sigil_core::spiffe::StoredJwtAuthority>> {
        read::list_jwt_authorities(&self.pool).await
    }
    async fn list_x509_authorities(&self) -> StoreResult<Vec<sigil_core::spiffe::StoredAuthority>> {
        read::list_x509_authorities(&self.pool).await
    }
    async fn list_trusted_issuers(&self) -> StoreResult<Vec<sigil_core::oauth::trusted::TrustedIssuer>> {
        read::list_trusted_issuers(&self.pool).await
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn commit(&self, changes: ChangeSet) -> StoreResult<()> {
        // The writer moves this replica's registry epoch after the commit; the other replicas
        // hear of it here (a notice lost with a dropped request leaves them at their caches'
        // one-second bound).
        let announce = self.backend == Backend::Postgres && changes.touches_registry();
        let result = self.writer.submit(changes).await;
        if announce && result.is_ok() {
            announce_registry_change(&self.pool).await;
        }
        result
    }

    fn registry_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn ping(&self) -> StoreResult<()> {
        // A database that answers but lost its schema (dropped and created again) serves
        // nothing: readiness asks for the schema this binary runs on, not just a connection.
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM sigil_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let version: i64 = sqlx::Row::try_get(&row, "v").map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if version < migrate::latest_version(self.backend) {
            return Err(StoreError::Unavailable(format!(
                "the database schema is at version {version}, not {}",
                migrate::latest_version(self.backend)
            )));
        }
        Ok(())
    }

    async fn close(&self) {
        self.writer.shutdown().await;
        self.pool.close().await;
    }

    fn backend(&self) -> &'static str {
        self.backend.dialect().name
    }
}
