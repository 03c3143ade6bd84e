//! Starting and stopping a server: bootstrap, listen, background tasks, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use sigil_core::keys::{KeyError, check_master_key};
use sigil_core::store::{Store, StoreError};
use sigil_core::{Clock, SystemRng};
use sigil_store::{Location, SqlStore, StoreOptions};
use tokio::net::TcpListener;

use crate::idle::{IDLE_LIMIT, IdleTimeout};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::app::App;
use crate::bootstrap::{self, BootstrapError, KeyOrigin};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("database: {0}")]
    Store(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("policy: {0}")]
    Policy(String),
}

impl From<StoreError> for ServeError {
    fn from(e: StoreError) -> Self {
        Self::Store(match e {
            StoreError::Unavailable(m) | StoreError::Corrupt(m) => m,
            other => other.to_string(),
        })
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    /// The bootstrap admin token, when this start created it (shown once).
    pub new_admin_token: Option<Zeroizing<String>>,
    pub master_key_origin: KeyOrigin,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, flushes the store, and returns.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Serve(std::io::Error::other(e.to_string()))),
        }
    }

    /// The base URL clients use.
    pub fn url(&self) -> String {
        let scheme = if self.app.config.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// Builds everything and starts serving. `master_key_env` is `SIGIL_MASTER_KEY`, if set.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    master_key_env: Option<Zeroizing<String>>,
) -> Result<Running, ServeError> {
    bootstrap::ensure_data_dir(&config.data_dir)?;
    let (master, master_key_origin) = bootstrap::master_key(master_key_env, &config.master_key_file)?;
    let master = Arc::new(master);
    let location = Location::from_url_or_file(config.database_url.as_deref(), config.data_dir.join("sigil.db"))?;
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&location, &StoreOptions::default()).await?);
    match check_master_key(store.as_ref(), &master).await {
        Err(KeyError::WrongMasterKey) if master_key_origin == bootstrap::KeyOrigin::CreatedFile => {
            return Err(bootstrap::BootstrapError::MissingKey {
                path: config.master_key_file.display().to_string(),
            }
            .into());
        }
        other => other?,
    }
    if master_key_origin == bootstrap::KeyOrigin::CreatedFile {
        bootstrap::write_secret_file(&config.master_key_file, master.to_base64().as_bytes())?;
    }

    let tcp = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = tcp.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    // The issuer is compared byte for byte by clients (RFC 8414 §3.3): no trailing slash.
    let issuer = match &config.issuer {
        Some(i) => i.as_str().trim_end_matches('/').to_owned(),
        None => format!("{scheme}://{addr}"),
    };
    crate::telemetry::metrics();

    let app = Arc::new(
        App::new(
            config.clone(),
            issuer,
            Arc::clone(&store),
            clock,
            Arc::new(SystemRng),
            master,
        )
        .map_err(|e| ServeError::Policy(e.to_string()))?,
    );
    app.keys.ensure_bootstrapped().await?;
    app.spiffe
        .ensure_bootstrapped()
        .await
        .map_err(|e| ServeError::Store(format!("X.509 authority: {e}")))?;
    app.policy
        .refresh()
        .await
        .map_err(|e| ServeError::Policy(e.to_string()))?;
    let new_admin_token = app.admin.bootstrap().await?;
    if let Some(token) = &new_admin_token {
        bootstrap::write_secret_file(&config.data_dir.join("admin-token"), token.as_bytes())?;
    }

    let (stop, stop_rx) = watch::channel(false);
    let maintenance = tokio::spawn(background(Arc::clone(&app), stop_rx.clone()));
    for sink in config.audit_sinks.clone() {
        tokio::spawn(crate::sinks::run(Arc::clone(&app), sink, stop_rx.clone()));
    }
    let router = crate::http::router(Arc::clone(&app));
    let service = router.into_make_service_with_connect_info::<PeerAddr>();
    let task = match &config.tls {
        None => {
            let listener = IdleTimeout::new(tcp, IDLE_LIMIT, config.max_connections);
            tokio::spawn(serve(listener, service, stop_rx, Arc::clone(&store), maintenance))
        }
        Some((cert, key)) => {
            let tls = crate::tls::server_config(cert, key).map_err(ServeError::Tls)?;
            let listener = IdleTimeout::new(
                crate::tls::TlsListener::new(tcp, tls, config.max_connections).map_err(ServeError::Serve)?,
                IDLE_LIMIT,
                config.max_connections,
            );
            tokio::spawn(serve(listener, service, stop_rx, Arc::clone(&store), maintenance))
        }
    };
    Ok(Running {
        addr,
        app,
        new_admin_token,
        master_key_origin,
        stop,
        task,
    })
}

/// How long a shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

async fn serve<L>(
    listener: L,
    service: IntoMakeServiceWithConnectInfo<axum::Router, PeerAddr>,
    mut stop: watch::Receiver<bool>,
    store: Arc<dyn Store>,
    maintenance: tokio::task::JoinHandle<()>,
) -> Result<(), ServeError>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    PeerAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let mut deadline = stop.clone();
    let serving = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .into_future();
    // A client that never finishes its request must not hold the shutdown forever: after the
    // grace period the connections left are dropped (every acknowledged write is committed).
    let result = tokio::select! {
        r = serving => r.map_err(ServeError::Serve),
        () = async {
            let _ = deadline.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still unfinished at shutdown; closing their connections");
            Ok(())
        }
    };
    maintenance.abort();
    // Every acknowledged write is already committed; this drains anything queued and closes.
    store.close().await;
    result
}

/// The client's address, for logs and audit records, and over TLS the certificate it
/// presented (DER), if any; works for plain and TLS listeners.
#[derive(Debug, Clone)]
pub struct PeerAddr(pub SocketAddr, pub Option<Arc<[u8]>>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, IdleTimeout<TcpListener>>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, IdleTimeout<TcpListener>>) -> Self {
        Self(*stream.remote_addr(), None)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, IdleTimeout<crate::tls::TlsListener>>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, IdleTimeout<crate::tls::TlsListener>>) -> Self {
        let cert = stream
            .io()
            .inner()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Arc::from(c.as_ref()));
        Self(*stream.remote_addr(), cert)
    }
}

/// Background work on every replica: key rotation steps and key reloads each second; the active
/// policy version and audit integration (whoever holds the lease) every 200 ms, so activations
/// reach every replica and checkpoints trail records by well under a second.
async fn background(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    let mut purging = false; // expired rows are left from the last purge
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if ticks.is_multiple_of(5) && let Err(e) = app.keys.maintain().await {
                    tracing::warn!(error = %e, "key maintenance failed");
                }
                if ticks.is_multiple_of(5) && let Err(e) = app.federations.refresh_due().await {
                    tracing::warn!(error = %e, "federated bundle refresh failed");
                }
                if ticks.is_multiple_of(25) && let Err(e) = app.spiffe.reload().await {
                    tracing::warn!(error = %e, "X.509 authority reload failed");
                }
                // Another replica's activation takes effect here within a second: checked every
                // tick (one indexed read of the latest activation), not once a second.
                if let Err(e) = app.policy.refresh().await {
                    tracing::warn!(error = %e, "policy refresh failed");
                }
                ticks += 1;
                if let Err(e) = app.nodes.flush_renewals().await {
                    tracing::warn!(error = %e, "recording node renewals failed");
                }
                integrate_pending(&app).await;
                if ticks.is_multiple_of(300) {
                    prune(&app).await;
                    purging = true;
                }
                if purging {
                    purging = purge_expired(&app).await;
                }
            }
            _ = stop.changed() => {
                if let Err(e) = app.nodes.flush_renewals().await {
                    tracing::warn!(error = %e, "recording node renewals failed");
                }
                return;
            }
        }
    }
}

/// Retention, once a minute: never past a record some SIEM sink has not delivered yet.
async fn prune(app: &App) {
    let Some(retain) = app.config.audit_retain else { return };
    let mut not_beyond = u64::MAX;
    for sink in &app.config.audit_sinks {
        match app.store.sink_position(sink.name()).await {
            Ok(p) => not_beyond = not_beyond.min(p.unwrap_or(0)),
            Err(_) => return,
        }
    }
    match app.audit.prune(retain, not_beyond).await {
        Ok(Some(before)) => tracing::info!(before_leaf = before, "pruned audit records past retention"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "audit retention failed"),
    }
}

/// Forgets the single-use marks, revocations, token lineage, codes and refresh tokens of what
/// has expired, ten minutes past its expiry (beyond any clock-skew leeway), so those tables hold
/// only what can still matter. Under sustained load a minute's expiries are hundreds of
/// thousands of rows, seconds of the writer's time in one piece: they go a chunk at a time,
/// each its own commit so requests' writes go between them, and a few chunks a tick so
/// integration keeps its pace. Answers whether more is left for the next tick.
async fn purge_expired(app: &App) -> bool {
    const MARGIN_SECS: i64 = 600;
    const CHUNKS_PER_TICK: usize = 5;
    let before = app.clock.now().unix_seconds() - MARGIN_SECS;
    for _ in 0..CHUNKS_PER_TICK {
        let purge = sigil_core::store::ChangeSet::new().change(sigil_core::store::Change::PurgeExpired {
            before,
            limit: sigil_core::store::PURGE_CHUNK,
        });
        let left = match app.store.commit(purge).await {
            Ok(()) => app.store.expired_left(before).await,
            Err(e) => Err(e),
        };
        match left {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "purging expired single-use marks and revocations failed");
                return false; // tried again at the next minute
            }
        }
    }
    true
}

/// Integrates until nothing is pending (a full batch means more may be waiting).
async fn integrate_pending(app: &App) {
    loop {
        match app.audit.integrate_once(&app.keys).await {
            Ok(n) if n as u32 == sigil_core::audit::log::MAX_INTEGRATION_BATCH => continue,
            Ok(_) => return,
            Err(e @ sigil_core::audit::log::AuditError::Inconsistent(_)) => {
                tracing::error!(error = %e, "audit integration stopped: the stored log is inconsistent");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit integration failed");
                return;
            }
        }
    }
}
