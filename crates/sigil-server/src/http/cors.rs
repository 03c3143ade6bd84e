//! CORS for the endpoints a browser-based OAuth client calls itself (an MCP client in a web
//! page, a single-page app): discovery, keys, token, revocation, UserInfo and dynamic registration.
//!
//! None of them reads cookies, so any origin may call them (`*`, never with credentials); a
//! cross-origin caller gets exactly what a native client gets. The sign-in pages (`/authorize`)
//! are navigated to, not fetched, and keep their own cookie and CSRF rules; the admin API,
//! introspection, AuthZEN and the node API are for servers and send no CORS headers.

use std::time::Duration;

use axum::http::{HeaderName, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The layer for the browser-callable endpoints.
pub fn browser_clients() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        // `Authorization` is never covered by a wildcard (Fetch standard), so it is named.
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("dpop"),
        ])
        // A browser client reads the challenge and the DPoP nonce (RFC 9449 §8) from these.
        .expose_headers([header::WWW_AUTHENTICATE, HeaderName::from_static("dpop-nonce")])
        .max_age(Duration::from_secs(600))
}
