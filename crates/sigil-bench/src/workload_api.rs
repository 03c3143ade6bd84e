//! The SPIFFE Workload API of `sigil node`, as workloads use it: X509-SVID fetches (served from
//! the agent's cache, which the server signs in batches), JWT-SVIDs minted through the server
//! for a new audience each time, and cached JWT-SVIDs for a repeated audience.

use std::time::{Duration, Instant};

use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sigil_node::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_node::proto::{JwtsvidRequest, X509svidRequest};
use tonic::transport::{Channel, Endpoint};

use crate::Run;
use crate::http::{connect, send};
use crate::proc::Server;

const NODE_ID: &str = "spiffe://sigil.local/node/bench";

fn my_uid() -> Result<String, String> {
    std::fs::read_to_string("/proc/self/status")
        .map_err(|e| e.to_string())?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .ok_or_else(|| "no Uid in /proc/self/status".into())
}

async fn admin_post(server: &Server, path: &str, body: Value) -> Result<Value, String> {
    let mut s = connect(&server.addr).await?;
    let (st, resp) = send(
        &mut s,
        Method::POST,
        &server.addr,
        path,
        Some(&server.token),
        Some(body.to_string()),
    )
    .await?;
    if !(200..300).contains(&st) {
        return Err(format!("{path}: {st} {}", String::from_utf8_lossy(&resp)));
    }
    serde_json::from_slice(&resp).map_err(|e| e.to_string())
}

async fn channel(socket: std::path::PathBuf) -> Result<Channel, String> {
    Endpoint::try_from("http://localhost")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| e.to_string())
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

/// Runs `call` back to back from `conns` clients for `duration`.
async fn drive<F, Fut>(ch: &Channel, conns: usize, duration: Duration, call: F) -> Run
where
    F: Fn(SpiffeWorkloadApiClient<Channel>, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (client, call) = (SpiffeWorkloadApiClient::new(ch.clone()), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut n = (c as u64) << 32;
            while Instant::now() < deadline {
                let t = Instant::now();
                n += 1;
                if call(client.clone(), n).await {
                    run.ok += 1;
                    run.latencies.push(t.elapsed());
                } else {
                    run.failed += 1;
                }
            }
            run
        }));
    }
    crate::join_runs(tasks, started).await
}

pub async fn bench(sigil: &std::path::Path, duration: Duration, conns: usize) -> Result<Vec<(String, String)>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = Server::start(sigil, &dir.path().join("server"), None).await?;
    let token = admin_post(&server, "/admin/v1/nodes/join-tokens", json!({"spiffe_id": NODE_ID})).await?;
    admin_post(
        &server,
        "/admin/v1/entries",
        json!({"spiffe_id": "spiffe://sigil.local/bench/app", "parent_id": NODE_ID, "selectors": [format!("unix:uid:{}", my_uid()?)]}),
    )
    .await?;
    let socket = dir.path().join("api.sock");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(sigil_node::run(
        sigil_node::NodeConfig {
            server: format!("http://{}", server.addr),
            join_token: token.get("token").and_then(Value::as_str).map(str::to_owned),
            socket: socket.clone(),
            data_dir: dir.path().join("node"),
            sync_interval: Duration::from_secs(5),
            allow_unauthenticated_verifiers: false,
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let ready = Instant::now();
    while !socket.exists() {
        if ready.elapsed() > Duration::from_secs(20) {
            return Err("the node agent did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ch = channel(socket).await?;
    // Wait for the first SVID.
    let mut probe = SpiffeWorkloadApiClient::new(ch.clone());
    let mut first = probe
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    first.message().await.map_err(|e| e.to_string())?;

    let x509 = drive(&ch, conns, duration, |mut c, _| async move {
        match c.fetch_x509svid(with_header(X509svidRequest {})).await {
            Ok(r) => matches!(r.into_inner().message().await, Ok(Some(m)) if !m.svids.is_empty()),
            Err(_) => false,
        }
    })
    .await;
    let fresh = drive(&ch, conns, duration, |mut c, n| async move {
        let req = JwtsvidRequest {
            audience: vec![format!("https://api-{n}.example.com")],
            spiffe_id: String::new(),
        };
        c.fetch_jwtsvid(with_header(req)).await.is_ok()
    })
    .await;
    let cached = drive(&ch, conns, duration, |mut c, _| async move {
        let req = JwtsvidRequest {
            audience: vec!["https://api.example.com".into()],
            spiffe_id: String::new(),
        };
        c.fetch_jwtsvid(with_header(req)).await.is_ok()
    })
    .await;
    let _ = stop_tx.send(());
    let _ = agent.await;
    server.stop().await;
    Ok(vec![
        (
            format!("Workload API FetchX509SVID (new stream + first message), {conns} clients"),
            x509.summary(),
        ),
        (
            format!(
                "Workload API FetchJWTSVID, a new audience each call (minted and audited by the server), {conns} clients"
            ),
            fresh.summary(),
        ),
        (
            format!("Workload API FetchJWTSVID, a repeated audience (the agent's cache), {conns} clients"),
            cached.summary(),
        ),
    ])
}
