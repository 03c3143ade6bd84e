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

/// Longest caller-chosen id written to the log; a longer one is left out (the response still
/// echoes it).
const MAX_INCOMING: usize = 256;

/// The caller's id as Sigil logs it: printable ASCII up to [`MAX_INCOMING`] bytes, so it can
/// neither break a log line nor grow without bound. It is never the id audit records go by:
/// anyone could name a real request's id and attach records to its trace.
fn incoming_id(req: &Request) -> Option<String> {
    let v = req.headers().get(HEADER)?.to_str().ok()?;
    let ok = !v.trim().is_empty() && v.len() <= MAX_INCOMING && v.bytes().all(|b| (0x20..=0x7e).contains(&b));
    ok.then(|| v.to_owned())
}

/// The method as a metrics label: the RFC 9110 §9 methods by name, any other as `OTHER`, so a
/// client cannot create label sets at will.
fn method_label(m: &axum::http::Method) -> String {
    use axum::http::Method;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    if known.contains(m) { m.as_str() } else { "OTHER" }.to_owned()
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
    let caller_id = incoming_id(&req).unwrap_or_default();
    let id = new_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, caller_request_id = %caller_id, method = %method, route = %route);
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

/// What every exchange gets whatever the route: RFC 9112 §3.2's Host rule for HTTP/1.1 (none,
/// or more than one, is a 400), `nosniff`, HSTS over TLS, and `no-store` on admin answers
/// (some carry secrets shown once).
pub async fn hygiene(axum::extract::State(tls): axum::extract::State<bool>, req: Request, next: Next) -> Response {
    use axum::http::{Version, header};
    use axum::response::IntoResponse;
    if req.version() == Version::HTTP_11 && req.headers().get_all(header::HOST).iter().count() != 1 {
        return super::error::ApiError::Invalid {
            field: Some("Host".into()),
            message: "an HTTP/1.1 request carries exactly one Host header (RFC 9112 section 3.2)".into(),
        }
        .into_response();
    }
    let admin = req.uri().path().starts_with("/admin/");
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if admin && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
