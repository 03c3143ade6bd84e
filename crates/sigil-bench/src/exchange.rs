//! Token exchange (RFC 8693) under load: a user signs in once through the real /authorize pages
//! (so the subject token is a genuine delegated token, user → assistant), then a sub-agent
//! exchanges it back to back: each request authenticates the client, verifies the subject
//! token, checks every principal of the chain is active, asks the policy for the user and both
//! agents, signs a new token and commits an audit record.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{Value, json};

use crate::http::{connect, send};
use crate::proc::Server;
use crate::tokens::{API, Req, basic, load};

const CALLBACK: &str = "http://127.0.0.1:9/cb";
const PASSWORD: &str = "bench password 1234";
const VERIFIER: &str = "bench-verifier-0123456789-0123456789-0123456789";

/// Percent-encodes a form value (RFC 3986 unreserved characters stay as they are).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let len = html.get(start..)?.find('"')?;
    Some(html.get(start..start + len)?.replace("&amp;", "&"))
}

/// One browser request: returns the status, the Location and Set-Cookie headers, and the body.
async fn browse(
    addr: &str,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: Option<String>,
) -> Result<(u16, Option<String>, Option<String>, String), String> {
    let mut s = connect(addr).await?;
    let mut b = Request::builder().method(method).uri(path).header("host", addr);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    if form.is_some() {
        b = b.header("content-type", "application/x-www-form-urlencoded");
    }
    let req = b
        .body(Full::new(Bytes::from(form.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    s.ready().await.map_err(|e| e.to_string())?;
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, location, cookie) = (resp.status().as_u16(), header("location"), header("set-cookie"));
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, location, cookie, String::from_utf8_lossy(&body).into_owned()))
}

async fn admin(s: &Server, path: &str, method: Method, body: Value) -> Result<Value, String> {
    let mut c = connect(&s.addr).await?;
    let (st, b) = send(&mut c, method, &s.addr, path, Some(&s.token), Some(body.to_string())).await?;
    if st >= 300 {
        return Err(format!("{path}: {st} {}", String::from_utf8_lossy(&b)));
    }
    Ok(serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Registers the user, two agents, their clients and the resource; returns the public client
/// id and the sub-agent's (client id, secret).
async fn seed(s: &Server) -> Result<(String, (String, String)), String> {
    admin(s, "/admin/v1/users", Method::POST, json!({"username": "bench-user"})).await?;
    admin(
        s,
        "/admin/v1/users/bench-user/password",
        Method::PUT,
        json!({"password": PASSWORD}),
    )
    .await?;
    for name in ["bench-assistant", "bench-helper"] {
        let body = json!({"name": name, "owner": "bench-user", "ceiling": {"scopes": ["read", "write"]}});
        admin(s, "/admin/v1/agents", Method::POST, body).await?;
    }
    let body = json!({"uri": API, "name": "bench-api", "owner": "bench-user", "scopes": ["read", "write"]});
    admin(s, "/admin/v1/resources", Method::POST, body).await?;
    let public = admin(
        s,
        "/admin/v1/clients",
        Method::POST,
        json!({"identity": "bench-assistant", "token_endpoint_auth_method": "none", "redirect_uris": [CALLBACK]}),
    )
    .await?;
    let helper = admin(
        s,
        "/admin/v1/clients",
        Method::POST,
        json!({"identity": "bench-helper", "token_endpoint_auth_method": "client_secret_basic"}),
    )
    .await?;
    Ok((
        field(&public, "client_id"),
        (field(&helper, "client_id"), field(&helper, "client_secret")),
    ))
}

/// Signs the user in through /authorize and redeems the code: a delegated token (user → assistant).
async fn user_token(s: &Server, client_id: &str) -> Result<String, String> {
    let challenge = sigil_crypto::b64url(&sigil_crypto::sha256(VERIFIER.as_bytes()));
    let query = format!(
        "response_type=code&client_id={}&redirect_uri={}&scope=read&state=s&code_challenge={challenge}&code_challenge_method=S256&resource={}",
        enc(client_id),
        enc(CALLBACK),
        enc(API)
    );
    let (st, _, cookie, html) = browse(&s.addr, Method::GET, &format!("/authorize?{query}"), None, None).await?;
    let cookie = cookie
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .ok_or_else(|| format!("sign-in page {st} without a cookie"))?;
    let (request, csrf) = (
        hidden(&html, "request").unwrap_or_default(),
        hidden(&html, "csrf").unwrap_or_default(),
    );
    let form = format!(
        "request={}&csrf={csrf}&username=bench-user&password={}",
        enc(&request),
        enc(PASSWORD)
    );
    let (_, _, _, html) = browse(&s.addr, Method::POST, "/authorize/login", Some(&cookie), Some(form)).await?;
    let ticket = hidden(&html, "ticket").ok_or("no consent page")?;
    let form = format!(
        "request={}&csrf={csrf}&ticket={}&decision=allow",
        enc(&request),
        enc(&ticket)
    );
    let (_, location, _, _) = browse(&s.addr, Method::POST, "/authorize/consent", Some(&cookie), Some(form)).await?;
    let location = location.ok_or("no redirect after consent")?;
    let code = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .ok_or("no code")?;
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}&client_id={}",
        enc(CALLBACK),
        enc(client_id)
    );
    let (_, _, _, body) = browse(&s.addr, Method::POST, "/token", None, Some(form)).await?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Some(field(&v, "access_token"))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("no user token: {body}"))
}

pub async fn bench(sigil: &std::path::Path, d: Duration, conns: usize) -> Result<Vec<(String, String)>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = Server::start(sigil, dir.path(), None).await?;
    let (public, (helper_id, helper_secret)) = seed(&server).await?;
    let subject = user_token(&server, &public).await?;
    let body = format!(
        "grant_type={}&subject_token={subject}&subject_token_type={}&resource={}&scope=read",
        enc("urn:ietf:params:oauth:grant-type:token-exchange"),
        enc("urn:ietf:params:oauth:token-type:access_token"),
        enc(API)
    );
    crate::proc::profile_window("enable");
    let run = load(
        &server.addr,
        Req::Form {
            path: "/token".into(),
            body,
            basic: Some(basic(&helper_id, &helper_secret)),
        },
        conns,
        d,
    )
    .await;
    crate::proc::profile_window("disable");
    let rows = vec![
        (
            format!(
                "Sigil token exchanges/s, {conns} connections (user → agent → sub-agent; policy for 3 principals, audit record each)"
            ),
            run.summary(),
        ),
        ("Sigil RSS after the run".into(), crate::fmt_mb(server.rss_kb())),
    ];
    server.stop().await;
    Ok(rows)
}
