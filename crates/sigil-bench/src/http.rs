//! Minimal keep-alive HTTP/1.1 load: one hyper connection per worker, requests back to back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::Run;
use crate::proc::Server;

pub async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

pub async fn send(
    s: &mut SendRequest<Full<Bytes>>,
    method: Method,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, Bytes), String> {
    let mut b = Request::builder().method(method).uri(path).header("host", addr);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(j) => {
            b = b.header("content-type", "application/json");
            Full::new(Bytes::from(j))
        }
        None => Full::new(Bytes::new()),
    };
    let req = b.body(body).map_err(|e| e.to_string())?;
    s.ready().await.map_err(|e| e.to_string())?;
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes))
}

/// One request on a fresh connection; `None` if nothing answers.
pub async fn status(addr: &str, path: &str) -> Option<u16> {
    let mut s = connect(addr).await.ok()?;
    send(&mut s, Method::GET, addr, path, None, None)
        .await
        .ok()
        .map(|(st, _)| st)
}

async fn ensure_owner(server: &Server) -> Result<(), String> {
    let mut s = connect(&server.addr).await?;
    let (st, body) = send(
        &mut s,
        Method::POST,
        &server.addr,
        "/admin/v1/users",
        Some(&server.token),
        Some(r#"{"username":"bench-owner"}"#.into()),
    )
    .await?;
    if st != 201 && st != 409 {
        return Err(format!("cannot create owner: {st} {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

/// Creates agents (unique names) from `concurrency` connections for `duration`.
pub async fn registry_writes(
    server: &Server,
    concurrency: usize,
    duration: Duration,
    tag: &str,
) -> Result<Run, String> {
    ensure_owner(server).await?;
    let counter = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let addr = server.addr.clone();
        let token = server.token.clone();
        let counter = Arc::clone(&counter);
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let Ok(mut s) = connect(&addr).await else { return run };
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = format!(r#"{{"name":"{tag}-{w}-{n}","owner":"bench-owner","labels":{{"env":"bench","worker":"w{w}"}},"ceiling":{{"scopes":["read","write"]}}}}"#);
                let t = Instant::now();
                match send(&mut s, Method::POST, &addr, "/admin/v1/agents", Some(&token), Some(body)).await {
                    Ok((201, _)) => {
                        run.ok += 1;
                        run.latencies.push(t.elapsed());
                    }
                    _ => run.failed += 1,
                }
            }
            run
        }));
    }
    Ok(crate::join_runs(tasks, started).await)
}

/// Registers `n` more agents as fast as the server takes them.
pub async fn fill_identities(server: &Server, n: usize, concurrency: usize) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let addr = server.addr.clone();
        let token = server.token.clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut s = connect(&addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), String>(());
                }
                let body = format!(r#"{{"name":"fill-{i}","owner":"bench-owner","labels":{{"env":"bench"}}}}"#);
                send(
                    &mut s,
                    Method::POST,
                    &addr,
                    "/admin/v1/agents",
                    Some(&token),
                    Some(body),
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Pages through every agent (500 a page), as an inventory report would.
pub async fn list_all_agents(server: &Server) -> Result<usize, String> {
    let mut s = connect(&server.addr).await?;
    let mut cursor: Option<String> = None;
    let mut count = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/agents?limit=500&cursor={c}"),
            None => "/admin/v1/agents?limit=500".into(),
        };
        let (st, body) = send(&mut s, Method::GET, &server.addr, &path, Some(&server.token), None).await?;
        if st != 200 {
            return Err(format!("list failed: {st}"));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        count += v.get("items").and_then(|i| i.as_array()).map_or(0, Vec::len);
        match v.get("next_cursor").and_then(|c| c.as_str()) {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(count),
        }
    }
}

/// Like [`send`] with a given content type and a raw Authorization header value.
pub async fn send_raw(
    s: &mut SendRequest<Full<Bytes>>,
    method: Method,
    addr: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<(&str, String)>,
) -> Result<(u16, Bytes), String> {
    let mut b = Request::builder().method(method).uri(path).header("host", addr);
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    let body = match body {
        Some((ct, text)) => {
            b = b.header("content-type", ct);
            Full::new(Bytes::from(text))
        }
        None => Full::new(Bytes::new()),
    };
    let req = b.body(body).map_err(|e| e.to_string())?;
    s.ready().await.map_err(|e| e.to_string())?;
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes))
}
