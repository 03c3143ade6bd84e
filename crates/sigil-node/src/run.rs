//! Starting the agent: resume or attest, sync once, keep syncing, serve the Workload API on
//! the unix socket until shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::UnixListenerStream;

use crate::agent::{Agent, new_key_and_csr};
use crate::client::{ClientError, NodeClient, decode_b64, unix_now};
use crate::identity::{IdentityError, NodeIdentity};
use crate::proto::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::workload_api::WorkloadApi;

/// How long in-flight Workload API calls get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How the agent runs (`sigil node --server URL --join-token T --socket PATH --data-dir D`).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Sigil server's URL (its issuer).
    pub server: String,
    /// A one-time join token; needed only when the data directory holds no node identity.
    pub join_token: Option<String>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    /// How often to sync with the server.
    pub sync_interval: Duration,
    /// Hand our trust bundle to callers no entry selects (SPIRE's
    /// `allow_unauthenticated_verifiers`); off, they get `PermissionDenied`.
    pub allow_unauthenticated_verifiers: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no saved node identity in {0}: give --join-token to attest this node")]
    NoIdentity(PathBuf),
    #[error("node attestation failed: {0}")]
    Attestation(ClientError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot serve the Workload API on {path}: {why}")]
    Socket { path: PathBuf, why: String },
    #[error("the Workload API server failed: {0}")]
    Serve(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Loads the saved identity, or attests with the join token.
async fn identity(client: &NodeClient, config: &NodeConfig) -> Result<NodeIdentity, NodeError> {
    if let Some(id) = NodeIdentity::load(&config.data_dir, unix_now())? {
        tracing::info!(spiffe_id = %id.spiffe_id, "resuming with the saved node identity");
        return Ok(id);
    }
    let token = config
        .join_token
        .as_deref()
        .ok_or_else(|| NodeError::NoIdentity(config.data_dir.clone()))?;
    let (key, csr) = new_key_and_csr()?;
    let svid = client.attest(token, &csr).await.map_err(NodeError::Attestation)?;
    let chain = svid.chain.iter().map(|c| decode_b64(c)).collect::<Result<_, _>>()?;
    let id = NodeIdentity::new(
        svid.spiffe_id,
        decode_b64(&svid.cert)?,
        chain,
        key,
        unix_now(),
        svid.expires_at,
    );
    id.save(&config.data_dir)?;
    tracing::info!(spiffe_id = %id.spiffe_id, "node attested");
    Ok(id)
}

fn bind(path: &Path) -> Result<tokio::net::UnixListener, NodeError> {
    let err = |why: String| NodeError::Socket {
        path: path.to_owned(),
        why,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    // A socket left by an earlier run would make bind fail.
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| err(e.to_string()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    // Any local process may call: attestation, not file permissions, decides what it gets.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

/// Runs the agent until `shutdown` completes.
/// The Workload API's connections, each with the peer's program read as it is accepted.
fn accepted(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<crate::connection::AttestedStream>> {
    use tokio_stream::StreamExt;
    UnixListenerStream::new(listener).map(|s| s.map(crate::connection::AttestedStream::accepted))
}

pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
    let client = NodeClient::new(&config.server)?;
    let id = identity(&client, &config).await?;
    let agent = Arc::new(Agent::new(client, id, config.data_dir.clone()));
    if let Err(e) = agent.sync_once().await {
        tracing::warn!(error = %e, "first sync failed; the Workload API waits for the server");
    }
    let syncer = Arc::clone(&agent);
    let interval = config.sync_interval;
    let sync_task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            match syncer.sync_once().await {
                Ok(()) => {}
                Err(e) if e.is_auth() => tracing::error!(error = %e, "the server refuses this node"),
                // Keep serving from the cache; the next round retries.
                Err(e) => tracing::warn!(error = %e, "sync failed; serving from the cache"),
            }
        }
    });
    let listener = bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "Workload API listening");
    let (stopping, stop) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi::new(
            agent,
            config.allow_unauthenticated_verifiers,
        )))
        .serve_with_incoming_shutdown(accepted(listener), async move {
            let _ = stop.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            // Streams (FetchX509SVID…) never end on their own: give calls a moment to
            // finish, then drop the rest.
            let _ = stopping.send(());
            tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.unwrap_or(Ok(()))
        }
    };
    sync_task.abort();
    let _ = std::fs::remove_file(&config.socket);
    result.map_err(|e| NodeError::Serve(e.to_string()))
}
