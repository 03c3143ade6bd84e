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
fn method_label(m: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|k| *k == m.as_str()).unwrap_or("OTHER")
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
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, caller_request_id = %caller_id, method = %method, route = %route);
    let mut resp = next.run(req).instrument(span).await;
    if let Some(v) = echoed.or_else(|| HeaderValue::from_str(&id).ok()) {
        resp.headers_mut().insert(HEADER, v);
    }
    record(route, method, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

/// A route's registered metric handles: (method, status, request counter, duration histogram).
/// The counter is per status, the histogram per method (registered again for another status,
/// the recorder hands back the same one).
type RouteMetrics = Vec<(&'static str, u16, metrics::Counter, metrics::Histogram)>;

fn handles<'a>(
    route: &'a RouteMetrics,
    method: &str,
    status: u16,
) -> Option<(&'a metrics::Counter, &'a metrics::Histogram)> {
    route
        .iter()
        .find(|(m, s, _, _)| *m == method && *s == status)
        .map(|(_, _, c, h)| (c, h))
}

/// Counts the request and records its duration. The handles are registered once per route,
/// method and status (a bounded set: routes are the router's, methods and statuses fixed
/// lists): `counter!`/`histogram!` with run-time labels build and register their key on every
/// call, a dozen allocations and a registry lookup per request.
fn record(route: &str, method: &'static str, status: u16, seconds: f64) {
    use std::collections::HashMap;
    use std::sync::{LazyLock, PoisonError, RwLock};
    static HANDLES: LazyLock<RwLock<HashMap<String, RouteMetrics>>> = LazyLock::new(Default::default);
    let observe = |(c, h): (&metrics::Counter, &metrics::Histogram)| {
        c.increment(1);
        h.record(seconds);
    };
    // A panic while registering leaves at worst a route without the handle, which the next
    // miss registers, so a poisoned lock is used as it is rather than ending all counting.
    let read = HANDLES.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = read.get(route).and_then(|r| handles(r, method, status)) {
        return observe(found);
    }
    drop(read);
    crate::telemetry::metrics(); // the recorder the handles register with, installed once
    let mut map = HANDLES.write().unwrap_or_else(PoisonError::into_inner);
    let known = map.entry(route.to_owned()).or_default();
    if handles(known, method, status).is_none() {
        let (m, r) = (("method", method.to_owned()), ("route", route.to_owned()));
        let counter = metrics::counter!(
            "sigil_http_requests_total",
            &[m.clone(), r.clone(), ("status", status.to_string())]
        );
        let histogram = metrics::histogram!("sigil_http_request_duration_seconds", &[m, r]);
        known.push((method, status, counter, histogram));
    }
    if let Some(found) = handles(known, method, status) {
        observe(found);
    }
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
