//! Test support for workload identity: a `sigil node` agent in process on a temporary socket, a
//! Workload API client for it, and this test process's own uid/gid for selectors that match it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sigil_node::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint};

use crate::{TestServer, fail};

/// A field of this process's `/proc/self/status` line (`Uid:` or `Gid:`): the real id.
fn status_id(field: &str) -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| fail(&format!("no {field} in /proc/self/status")))
}

/// This process's uid: a `unix:uid` selector with it matches the test itself.
pub fn my_uid() -> u32 {
    status_id("Uid:")
}

pub fn my_gid() -> u32 {
    status_id("Gid:")
}

/// A registration entry under `parent_id` with default lifetimes and no DNS names.
pub fn entry(
    spiffe_id: &str,
    parent_id: &str,
    selectors: &[String],
    identity: Option<&str>,
) -> sigil_proto::admin::EntryRequest {
    sigil_proto::admin::EntryRequest {
        spiffe_id: spiffe_id.into(),
        parent_id: parent_id.into(),
        selectors: selectors.to_vec(),
        identity: identity.map(str::to_owned),
        x509_ttl_seconds: None,
        jwt_ttl_seconds: None,
        dns_names: vec![],
    }
}

/// A node agent running in this process.
#[derive(Debug)]
pub struct NodeAgent {
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), sigil_node::NodeError>>>,
    _dir: tempfile::TempDir,
}

impl NodeAgent {
    /// Starts an agent against `server` (syncing every 200 ms) and waits for its socket.
    pub async fn start(server: &str, join_token: Option<String>) -> Self {
        Self::start_with(server, join_token, false).await
    }

    /// [`NodeAgent::start`], choosing whether callers no entry selects get the trust bundle.
    pub async fn start_with(server: &str, join_token: Option<String>, allow_unauthenticated_verifiers: bool) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
        // A temporary directory keeps the socket path short (unix paths are ~108 bytes).
        let socket = dir.path().join("api.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = sigil_node::NodeConfig {
            server: server.to_owned(),
            join_token,
            socket: socket.clone(),
            data_dir: dir.path().join("data"),
            sync_interval: Duration::from_millis(200),
            allow_unauthenticated_verifiers,
        };
        let task = tokio::spawn(sigil_node::run(config, async move {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if socket.exists() || task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            socket,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// A Workload API client on the agent's socket.
    pub async fn client(&self) -> SpiffeWorkloadApiClient<Channel> {
        workload_api(&self.socket).await
    }

    /// Stops the agent and fails the test if it ended with an error.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fail(&format!("the node agent failed: {e}")),
                Err(e) => fail(&format!("the node agent panicked: {e}")),
            }
        }
    }
}

/// A Workload API client on a unix socket.
pub async fn workload_api(socket: &Path) -> SpiffeWorkloadApiClient<Channel> {
    let path = socket.to_owned();
    let channel = Endpoint::try_from("http://localhost")
        .unwrap_or_else(|e| fail(&e.to_string()))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap_or_else(|e| fail(&format!("cannot connect to the Workload API: {e}")));
    SpiffeWorkloadApiClient::new(channel)
}

/// A Workload API request with the `workload.spiffe.io: true` security header.
pub fn with_security_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

impl TestServer {
    /// A one-time join token for a node that will get `spiffe_id`.
    pub async fn join_token(&self, spiffe_id: &str) -> String {
        self.client()
            .create_join_token(&sigil_proto::node::JoinTokenRequest {
                spiffe_id: Some(spiffe_id.into()),
                ttl_seconds: None,
            })
            .await
            .unwrap_or_else(|e| fail(&format!("join token: {e}")))
            .token
    }
}

/// Attests a node through `server`'s node API with a join token, as `sigil node` does on its
/// first start, and returns its identity: call the node API as that node with
/// [`sigil_node::client::NodeClient`].
pub async fn attest_node(server: &str, join_token: &str) -> sigil_node::identity::NodeIdentity {
    use sigil_node::client::{NodeClient, decode_b64, unix_now};
    let (key, csr) = sigil_node::agent::new_key_and_csr().unwrap_or_else(|e| fail(&format!("node key: {e}")));
    let svid = NodeClient::new(server)
        .unwrap_or_else(|e| fail(&format!("node client: {e}")))
        .attest(join_token, &csr)
        .await
        .unwrap_or_else(|e| fail(&format!("attestation: {e}")));
    let decode = |b64: &str| decode_b64(b64).unwrap_or_else(|e| fail(&format!("attestation answer: {e}")));
    let chain = svid.chain.iter().map(|c| decode(c)).collect();
    sigil_node::identity::NodeIdentity::new(
        svid.spiffe_id,
        decode(&svid.cert),
        chain,
        key,
        unix_now(),
        svid.expires_at,
    )
}
