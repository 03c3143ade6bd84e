//! The node API under load, against a real `sigil serve`: X509-SVIDs signed from CSRs in
//! batches (as a node agent asks for its workloads' SVIDs), a renewal storm (thousands of nodes
//! renewing their own SVIDs at once, retried after 503s as agents do) with the server's memory
//! sampled throughout, and an overload far beyond what the server admits, which it must shed
//! with `Retry-After` while staying up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::Method;
use serde_json::{Value, json};
use sigil_crypto::svid_verify::sign_node_proof;
use sigil_crypto::x509::{generate_svid_key, make_csr};

use crate::http::{connect, send, send_raw};
use crate::proc::Server;

/// An attested node: its SVID key and certificate.
struct Node {
    spiffe_id: String,
    key: zeroize::Zeroizing<Vec<u8>>,
    cert: Vec<u8>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Node {
    fn proof(&self, addr: &str) -> Result<String, String> {
        let claims = json!({"aud": format!("http://{addr}/spiffe/v1/node"), "iat": now(), "exp": now() + 120});
        let jws = sign_node_proof(&self.key, &self.cert, claims.to_string().as_bytes()).map_err(|e| e.to_string())?;
        Ok(format!("SigilNode {jws}"))
    }
}

fn csr_b64() -> Result<String, String> {
    let key = generate_svid_key().map_err(|e| e.to_string())?;
    Ok(STANDARD.encode(make_csr(&key).map_err(|e| e.to_string())?))
}

/// Attests `n` nodes (join token, then attestation) over `conns` connections.
async fn attest_nodes(server: &Server, n: usize, conns: usize) -> Result<Vec<Node>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, token, next) = (server.addr.clone(), server.token.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&addr).await?;
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let (st, body) = send(
                    &mut s,
                    Method::POST,
                    &addr,
                    "/admin/v1/nodes/join-tokens",
                    Some(&token),
                    Some("{}".into()),
                )
                .await?;
                let jt: Value = serde_json::from_slice(&body).map_err(|e| format!("{st}: {e}"))?;
                let key = generate_svid_key().map_err(|e| e.to_string())?;
                let csr = STANDARD.encode(make_csr(&key).map_err(|e| e.to_string())?);
                let body = json!({"join_token": jt.get("token").cloned().unwrap_or_default(), "csr": csr}).to_string();
                let (st, resp) = send(&mut s, Method::POST, &addr, "/spiffe/v1/node/attest", None, Some(body)).await?;
                let v: Value = serde_json::from_slice(&resp).map_err(|e| format!("{st}: {e}"))?;
                let cert = STANDARD
                    .decode(
                        v.get("cert")
                            .and_then(Value::as_str)
                            .ok_or(format!("attest: {st} {v}"))?,
                    )
                    .map_err(|e| e.to_string())?;
                let spiffe_id = v
                    .get("spiffe_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                out.push(Node { spiffe_id, key, cert });
            }
            Ok::<_, String>(out)
        }));
    }
    let mut nodes = Vec::with_capacity(n);
    for t in tasks {
        nodes.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(nodes)
}

/// One entry listing per node, as `sigil node` does on every sync.
async fn list_entries_once(server: &Server, nodes: &[Node], conns: usize) -> Result<(), String> {
    let proofs: Vec<String> = nodes.iter().map(|n| n.proof(&server.addr)).collect::<Result<_, _>>()?;
    let proofs = Arc::new(proofs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, proofs, next) = (server.addr.clone(), Arc::clone(&proofs), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&addr).await?;
            while let Some(p) = proofs.get(next.fetch_add(1, Ordering::Relaxed)) {
                let (st, _) = send_raw(&mut s, Method::GET, &addr, "/spiffe/v1/node/entries", Some(p), None).await?;
                if st != 200 {
                    return Err(format!("entries: {st}"));
                }
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Samples the server's RSS every 10 ms until stopped; returns the peak (kB).
fn sample_rss(server: &Server, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let pid = server.child.id();
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(kb) = pid.and_then(rss_of) {
                peak = peak.max(kb);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    })
}

fn rss_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Each phase runs when its size is not zero.
pub async fn bench(
    sigil: &std::path::Path,
    duration: Duration,
    storm: usize,
    overload_for: Duration,
) -> Result<Vec<(String, String)>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = Server::start(sigil, dir.path(), None).await?;
    let mut rows = Vec::new();
    if !duration.is_zero() {
        rows.extend(batch_signing(&server, duration).await?);
    }
    if storm > 0 {
        rows.extend(renewal_storm(&server, storm).await?);
    }
    if !overload_for.is_zero() {
        rows.extend(overload(&server, overload_for).await?);
    }
    server.stop().await;
    Ok(rows)
}

/// One node with 100 entries asks for all their SVIDs per request, from several connections.
async fn batch_signing(server: &Server, duration: Duration) -> Result<Vec<(String, String)>, String> {
    const BATCH: usize = 100;
    const CONNS: usize = 8;
    let node = attest_nodes(server, 1, 1).await?.pop().ok_or("no node")?;
    let node_id = node.spiffe_id.clone();
    let mut s = connect(&server.addr).await?;
    let mut requests = Vec::new();
    for i in 0..BATCH {
        let entry = json!({"spiffe_id": format!("spiffe://sigil.local/bench/w{i}"), "parent_id": node_id, "selectors": [format!("unix:uid:{}", 10_000 + i)]});
        let (st, body) = send(
            &mut s,
            Method::POST,
            &server.addr,
            "/admin/v1/entries",
            Some(&server.token),
            Some(entry.to_string()),
        )
        .await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{st}: {e}"))?;
        requests.push(json!({"entry_id": v.get("id").cloned().unwrap_or_default(), "csr": csr_b64()?}));
    }
    let body = json!({ "requests": requests }).to_string();
    let signed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (addr, body, signed) = (server.addr.clone(), body.clone(), Arc::clone(&signed));
        let auth = node.proof(&server.addr)?;
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&addr).await?;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let (st, resp) = send_raw(
                    &mut s,
                    Method::POST,
                    &addr,
                    "/spiffe/v1/node/x509-svids",
                    Some(&auth),
                    Some(("application/json", body.clone())),
                )
                .await?;
                if st != 200 {
                    return Err(format!("x509-svids: {st} {}", String::from_utf8_lossy(&resp)));
                }
                let v: Value = serde_json::from_slice(&resp).map_err(|e| e.to_string())?;
                let n = v.get("svids").and_then(Value::as_array).map_or(0, |a| {
                    a.iter().filter(|s| s.get("svid").is_some_and(Value::is_object)).count()
                });
                signed.fetch_add(n as u64, Ordering::Relaxed);
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    let rate = signed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    Ok(vec![(
        format!("X509-SVIDs/s from CSRs over the node API ({BATCH} per request, {CONNS} connections, audited)"),
        format!("{rate:.0}/s (p99 per request {:.1} ms)", p99.as_secs_f64() * 1000.0),
    )])
}

/// `n` attested nodes each renew their own SVID, all submitted at once over many connections;
/// a 503 is retried after its Retry-After, as `sigil node` does on its next sync. Each node
/// has listed its entries once before (as agents do every sync), so the server has seen its
/// SVID.
async fn renewal_storm(server: &Server, n: usize) -> Result<Vec<(String, String)>, String> {
    const CONNS: usize = 1000;
    let nodes = attest_nodes(server, n, 32).await?;
    // Each node has synced once with its SVID, as agents do every few seconds.
    list_entries_once(server, &nodes, 32).await?;
    // Everything a node sends is prepared first, so the client's own signing is not measured.
    let mut work = Vec::with_capacity(n);
    for node in &nodes {
        work.push((node.proof(&server.addr)?, json!({ "csr": csr_b64()? }).to_string()));
    }
    let work = Arc::new(work);
    let before = server.rss_kb().unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(server, Arc::clone(&stop));
    let next = Arc::new(AtomicUsize::new(0));
    let shed = Arc::new(AtomicUsize::new(0));
    crate::proc::profile_window("enable");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNS.min(n) {
        let (addr, work, next, shed) = (
            server.addr.clone(),
            Arc::clone(&work),
            Arc::clone(&next),
            Arc::clone(&shed),
        );
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((auth, body)) = work.get(i) else {
                    return Ok::<_, String>(());
                };
                loop {
                    let (st, _) = send_raw(
                        &mut s,
                        Method::POST,
                        &addr,
                        "/spiffe/v1/node/renew",
                        Some(auth),
                        Some(("application/json", body.clone())),
                    )
                    .await?;
                    match st {
                        200 => break,
                        503 => {
                            shed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        other => return Err(format!("renew: {other}")),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let drained = started.elapsed();
    crate::proc::profile_window("disable");
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.map_err(|e| e.to_string())?;
    Ok(vec![
        (
            format!("renewal storm: {n} nodes renew at once over {CONNS} connections, drained in"),
            format!(
                "{:.2} s ({:.0} renewals/s, {} answered 503 and retried)",
                drained.as_secs_f64(),
                n as f64 / drained.as_secs_f64(),
                shed.load(Ordering::Relaxed)
            ),
        ),
        (
            "renewal storm: server memory growth (peak RSS during the storm minus before)".into(),
            format!(
                "{:.1} MB (before {:.1} MB, peak {:.1} MB)",
                peak.saturating_sub(before) as f64 / 1024.0,
                before as f64 / 1024.0,
                peak as f64 / 1024.0
            ),
        ),
    ])
}

/// Far more callers than the server admits (in flight + queue), back to back, for a few
/// seconds: the server must answer the excess with 503 + Retry-After, keep serving the rest,
/// and stay responsive (`/healthz` is timed throughout).
async fn overload(server: &Server, seconds: Duration) -> Result<Vec<(String, String)>, String> {
    const CONNS: usize = 6000;
    let node = attest_nodes(server, 1, 1).await?.pop().ok_or("no node")?;
    let auth = Arc::new(node.proof(&server.addr)?);
    let body = Arc::new(json!({ "csr": csr_b64()? }).to_string());
    let (ok, shed, retry_after, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let before = server.rss_kb().unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(server, Arc::clone(&stop));
    let deadline = Instant::now() + seconds;
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (addr, auth, body) = (server.addr.clone(), Arc::clone(&auth), Arc::clone(&body));
        let (ok, shed, retry_after, other) = (
            Arc::clone(&ok),
            Arc::clone(&shed),
            Arc::clone(&retry_after),
            Arc::clone(&other),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = connect(&addr).await else {
                other.fetch_add(1, Ordering::Relaxed);
                return;
            };
            while Instant::now() < deadline {
                match renew_with_headers(&mut s, &addr, &auth, &body).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok((503, has_retry_after)) => {
                        if has_retry_after {
                            retry_after.fetch_add(1, Ordering::Relaxed);
                        }
                        shed.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // The health endpoint stays quick while the node API is overloaded.
    let mut health = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        if crate::http::status(&server.addr, "/healthz").await == Some(200) {
            health.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.map_err(|e| e.to_string())?;
    health.sort();
    let alive = crate::http::status(&server.addr, "/readyz").await == Some(200);
    Ok(vec![
        (
            format!(
                "overload: {CONNS} connections renewing back to back for {} s (admits 64 running + 4,096 waiting)",
                seconds.as_secs()
            ),
            format!(
                "{:.0} served/s, {} shed with 503 ({} with Retry-After), {} other errors; ready afterwards: {alive}",
                ok.load(Ordering::Relaxed) as f64 / seconds.as_secs_f64(),
                shed.load(Ordering::Relaxed),
                retry_after.load(Ordering::Relaxed),
                other.load(Ordering::Relaxed)
            ),
        ),
        (
            "overload: /healthz latency (max) and server memory growth".into(),
            format!(
                "{:.1} ms; {:.1} MB (peak {:.1} MB)",
                health.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
                peak.saturating_sub(before) as f64 / 1024.0,
                peak as f64 / 1024.0
            ),
        ),
    ])
}

async fn renew_with_headers(
    s: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: &str,
    auth: &str,
    body: &str,
) -> Result<(u16, bool), String> {
    use http_body_util::BodyExt;
    let req = hyper::Request::builder()
        .method(Method::POST)
        .uri("/spiffe/v1/node/renew")
        .header("host", addr)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    s.ready().await.map_err(|e| e.to_string())?;
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().contains_key("retry-after");
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, retry_after))
}
