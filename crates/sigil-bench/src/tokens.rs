//! Token endpoint load: Sigil (client_secret_basic, private_key_jwt, introspection) beside a
//! hello-world endpoint on the same HTTP stack, the raw Ed25519 rates, and npm's oidc-provider
//! (one process and a cluster) configured for the same grant and token format.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::Method;
use serde_json::{Value, json};
use sigil_crypto::{Algorithm, PublicJwk, SigningKey, b64url};

use crate::Run;
use crate::http::{connect, send};

pub const API: &str = "https://api.example.com";

/// What one load request is.
#[derive(Clone)]
pub enum Req {
    Get(String),
    Form {
        path: String,
        body: String,
        basic: Option<String>,
    },
    Json {
        path: String,
        body: String,
        authorization: String,
    },
    /// A fresh private_key_jwt assertion per request (signed by the load generator).
    Assertion {
        path: String,
        client_id: String,
        key: Arc<SigningKey>,
        aud: String,
    },
}

pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| -> String { url_encode(s) };
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn assertion(key: &SigningKey, client_id: &str, aud: &str, n: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": format!("{n}-{}", b64url(&sigil_crypto::random_bytes::<8>().unwrap_or_default()))});
    sigil_crypto::sign_compact(key, "JWT", claims.to_string().as_bytes()).unwrap_or_default()
}

/// Drives `req` from `conns` keep-alive connections for `duration`; counts 200s.
pub async fn load(addr: &str, req: Req, conns: usize, duration: Duration) -> Run {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let addr = addr.to_owned();
        let req = req.clone();
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let Ok(mut s) = connect(&addr).await else { return run };
            while Instant::now() < deadline {
                let t = Instant::now();
                let res = match &req {
                    Req::Get(p) => send(&mut s, Method::GET, &addr, p, None, None).await,
                    Req::Form { path, body, basic } => form(&mut s, &addr, path, body.clone(), basic.as_deref()).await,
                    Req::Json {
                        path,
                        body,
                        authorization,
                    } => {
                        let body = Some(("application/json", body.clone()));
                        crate::http::send_raw(&mut s, Method::POST, &addr, path, Some(authorization), body).await
                    }
                    Req::Assertion { path, client_id, key, aud } => {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let a = assertion(key, client_id, aud, n);
                        let body = format!("grant_type=client_credentials&resource={}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}", url_encode(API));
                        form(&mut s, &addr, path, body, None).await
                    }
                };
                match res {
                    Ok((200, _)) => {
                        run.ok += 1;
                        run.latencies.push(t.elapsed());
                    }
                    Ok(_) => run.failed += 1,
                    Err(_) => {
                        run.failed += 1;
                        match connect(&addr).await {
                            Ok(c) => s = c,
                            Err(_) => return run,
                        }
                    }
                }
            }
            run
        }));
    }
    crate::join_runs(tasks, started).await
}

async fn form(
    s: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: &str,
    path: &str,
    body: String,
    basic: Option<&str>,
) -> Result<(u16, bytes::Bytes), String> {
    crate::http::send_raw(
        s,
        Method::POST,
        addr,
        path,
        basic,
        Some(("application/x-www-form-urlencoded", body)),
    )
    .await
}

/// Creates the user, agent, resource and two clients the token load uses.
/// What [`seed`] registered: the agent's secret client and key client, and the client of the
/// workload that serves the API (the introspection caller).
pub struct Seeded {
    pub secret_id: String,
    pub secret: String,
    pub key_id: String,
    pub key: Arc<SigningKey>,
    pub server_id: String,
    pub server_secret: String,
}

pub async fn seed(addr: &str, admin: &str) -> Result<Seeded, String> {
    let mut s = connect(addr).await?;
    let calls: Vec<(&str, Value)> = vec![
        ("/admin/v1/users", json!({"username": "bench-owner"})),
        (
            "/admin/v1/agents",
            json!({"name": "bench-agent", "owner": "bench-owner", "ceiling": {"scopes": ["read", "write"]}}),
        ),
        (
            "/admin/v1/workloads",
            json!({"name": "bench-api-server", "owner": "bench-owner"}),
        ),
        (
            "/admin/v1/resources",
            json!({"uri": API, "name": "bench-api", "owner": "bench-owner", "scopes": ["read", "write"], "servers": ["bench-api-server"]}),
        ),
    ];
    for (path, body) in calls {
        let (st, b) = send(&mut s, Method::POST, addr, path, Some(admin), Some(body.to_string())).await?;
        if st != 201 && st != 409 {
            return Err(format!("{path}: {st} {}", String::from_utf8_lossy(&b)));
        }
    }
    let (secret_id, secret) = secret_client(&mut s, addr, admin, "bench-agent").await?;
    let (server_id, server_secret) = secret_client(&mut s, addr, admin, "bench-api-server").await?;
    let (key, _) = SigningKey::generate(Algorithm::EdDsa).map_err(|e| e.to_string())?;
    let mut jwk = PublicJwk::from(&key.public_jwk());
    jwk.kid = Some(key.kid().to_owned());
    let (st, b) = send(&mut s, Method::POST, addr, "/admin/v1/clients", Some(admin), Some(json!({"identity": "bench-agent", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk]}}).to_string())).await?;
    if st != 201 {
        return Err(format!("key client: {st} {}", String::from_utf8_lossy(&b)));
    }
    let v: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
    Ok(Seeded {
        secret_id,
        secret,
        key_id: v
            .get("client_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        key: Arc::new(key),
        server_id,
        server_secret,
    })
}

/// A client_secret_basic client of `identity`: its id and secret.
async fn secret_client(
    s: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: &str,
    admin: &str,
    identity: &str,
) -> Result<(String, String), String> {
    let body = json!({"identity": identity, "token_endpoint_auth_method": "client_secret_basic"});
    let (st, b) = send(
        s,
        Method::POST,
        addr,
        "/admin/v1/clients",
        Some(admin),
        Some(body.to_string()),
    )
    .await?;
    if st != 201 {
        return Err(format!("client of {identity}: {st}"));
    }
    let v: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    Ok((field("client_id"), field("client_secret")))
}

/// Raw Ed25519 signatures and verifications per second on one core, same message size as a token.
pub fn raw_ed25519(duration: Duration) -> (f64, f64) {
    let Ok((key, _)) = SigningKey::generate(Algorithm::EdDsa) else {
        return (0.0, 0.0);
    };
    let msg = vec![7u8; 400];
    let t = Instant::now();
    let mut n = 0u64;
    let mut sig = Vec::new();
    while t.elapsed() < duration {
        sig = key.sign(&msg).unwrap_or_default();
        n += 1;
    }
    let sign_rate = n as f64 / t.elapsed().as_secs_f64();
    let jwk = PublicJwk::from(&key.public_jwk());
    let t = Instant::now();
    let mut m = 0u64;
    while t.elapsed() < duration {
        let _ = jwk.verify(sigil_crypto::ClientAlg::EdDsa, &msg, &sig);
        m += 1;
    }
    (sign_rate, m as f64 / t.elapsed().as_secs_f64())
}

/// npm's oidc-provider (panva), installed into benches/oidc-provider by `npm install`, started as
/// one process or as a node cluster with one worker per core.
pub struct OidcProvider {
    child: tokio::process::Child,
    pub addr: String,
}

impl OidcProvider {
    pub async fn start(cluster: bool) -> Result<Self, String> {
        let dir = std::path::Path::new("benches/oidc-provider");
        if !dir.join("node_modules/oidc-provider").exists() {
            let st = tokio::process::Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .current_dir(dir)
                .status()
                .await
                .map_err(|e| format!("npm: {e}"))?;
            if !st.success() {
                return Err("npm install failed".into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg("provider.mjs")
            .arg(port.to_string())
            .current_dir(dir)
            .env("NODE_ENV", "production")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if cluster {
            cmd.arg("--cluster");
        }
        let child = cmd.spawn().map_err(|e| format!("node: {e}"))?;
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        while crate::http::status(&addr, "/.well-known/openid-configuration").await != Some(200) {
            if t.elapsed() > Duration::from_secs(30) {
                return Err("oidc-provider did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, addr })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
