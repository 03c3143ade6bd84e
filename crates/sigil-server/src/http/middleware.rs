//! Per-request observation: a request id, a tracing span, and Prometheus metrics per route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The id of one request: in logs, problem bodies, audit records and the `x-request-id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const HEADER: &str = "x-request-id";

/// Longest caller-chosen id used in logs and audit records; a longer one is replaced there by
/// Sigil's own (the response still echoes it).
const MAX_INCOMING: usize = 256;

/// The caller's id as Sigil records it: printable ASCII up to [`MAX_INCOMING`] bytes, so it can
/// neither break a log line nor grow without bound.
fn incoming_id(req: &Request) -> Option<String> {
    let v = req.headers().get(HEADER)?.to_str().ok()?;
    let ok = !v.trim().is_empty() && v.len() <= MAX_INCOMING && v.bytes().all(|b| (0x20..=0x7e).contains(&b));
    ok.then(|| v.to_owned())
}

fn new_id() -> String {
    let mut b = [0u8; 10];
    let _ = sigil_crypto::fill_random(&mut b);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    format!("req_{}", sigil_types::encode_ulid(ms, b))
}

pub async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    // AuthZEN's PDP must answer with the very identifier the PEP sent, whatever its shape, so
    // the header goes back byte for byte even when Sigil records its own id instead.
    let echoed = req.headers().get(HEADER).cloned();
    let id = incoming_id(&req).unwrap_or_else(new_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut resp = next.run(req).instrument(span).await;
    let status = resp.status().as_u16().to_string();
    if let Some(v) = echoed.or_else(|| HeaderValue::from_str(&id).ok()) {
        resp.headers_mut().insert(HEADER, v);
    }
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("sigil_http_requests_total", &labels).increment(1);
    metrics::histogram!("sigil_http_request_duration_seconds", &labels[..2]).record(start.elapsed().as_secs_f64());
    resp
}
