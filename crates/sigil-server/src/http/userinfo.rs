//! `/userinfo` (OpenID Connect Core §5.3), GET or POST, with the access token in the
//! `Authorization` header: `Bearer` (RFC 6750 §2.1) or `DPoP` with a proof (RFC 9449 §7.1).
//! Refusals carry the RFC 6750 §3 challenge of the scheme the request used.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sigil_core::oauth::userinfo::UserInfoRequest;
use sigil_core::oauth::{ErrorCode, OAuthError};

use super::State;
use super::oauth::rid;

pub async fn userinfo(axum::extract::State(app): State, req: axum::extract::Request) -> Response {
    let (parts, _body) = req.into_parts();
    let request_id = rid(&parts.extensions);
    let presented = match presented_token(&parts.headers) {
        Ok(p) => p,
        Err(NotPresented::Absent) => return bare_challenges(),
        Err(NotPresented::Unsupported) => {
            tracing::info!("userinfo refused: an unsupported Authorization scheme");
            return bare_challenges();
        }
        Err(NotPresented::Malformed(why)) => {
            let e = OAuthError::invalid_request(why);
            app.oauth.refuse_unreadable_userinfo(&e, request_id.as_deref()).await;
            return render(&e, "Bearer");
        }
    };
    let cert = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::serve::PeerAddr>>()
        .and_then(|c| c.0.1.clone());
    let proof = match dpop_header(&parts.headers) {
        Ok(p) => p,
        Err(e) => {
            app.oauth.refuse_unreadable_userinfo(&e, request_id.as_deref()).await;
            return challenge(&app, presented.dpop, &e);
        }
    };
    let r = UserInfoRequest {
        token: presented.token,
        dpop_scheme: presented.dpop,
        proof,
        // HEAD reaches the GET handler: a proof must name the method actually used.
        method: parts.method.as_str(),
        client_cert: cert.as_deref(),
    };
    match app.oauth.userinfo(&r, request_id.as_deref()).await {
        Ok(claims) => {
            let mut resp = (StatusCode::OK, axum::Json(claims)).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => challenge(&app, presented.dpop, &e),
    }
}

struct Presented<'a> {
    token: &'a str,
    dpop: bool,
}

/// Why a request carries no access token.
enum NotPresented {
    /// No `Authorization` header at all.
    Absent,
    /// A scheme other than Bearer and DPoP: no credential this endpoint understands, answered
    /// like none (RFC 6750 §3.1).
    Unsupported,
    /// Another scheme, a second header, or no single token.
    Malformed(&'static str),
}

/// The access token of the one `Authorization` header.
fn presented_token(headers: &HeaderMap) -> Result<Presented<'_>, NotPresented> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Err(NotPresented::Absent);
    };
    let malformed = |why: &'static str| Err(NotPresented::Malformed(why));
    if all.next().is_some() {
        return malformed("more than one Authorization header");
    }
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return malformed("the Authorization header is not a scheme and a token");
    };
    let token = token.trim();
    let dpop = if scheme.eq_ignore_ascii_case("dpop") {
        true
    } else if scheme.eq_ignore_ascii_case("bearer") {
        false
    } else {
        return Err(NotPresented::Unsupported);
    };
    if token.is_empty() || token.contains(' ') {
        return malformed("the Authorization header carries no single token");
    }
    Ok(Presented { token, dpop })
}

/// No token at all: bare challenges, which name no error (RFC 6750 §3.1), one per scheme.
fn bare_challenges() -> Response {
    let mut resp = StatusCode::UNAUTHORIZED.into_response();
    let h = resp.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sigil\""),
    );
    h.append(header::WWW_AUTHENTICATE, dpop_challenge_base());
    resp
}

/// The `DPoP` header, if any; more than one is malformed (RFC 9449 §4.3).
fn dpop_header(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let bad = || OAuthError::new(ErrorCode::InvalidDpopProof, "send one well-formed DPoP header");
    let mut all = headers.get_all("dpop").iter();
    let first = all.next().map(|v| v.to_str().map_err(|_| bad())).transpose()?;
    if all.next().is_some() {
        return Err(bad());
    }
    Ok(first)
}

/// The refusal in the scheme the request used; a DPoP-scheme refusal carries a fresh nonce
/// when the server requires them (RFC 9449 §9).
fn challenge(app: &crate::App, dpop: bool, e: &OAuthError) -> Response {
    let dpop = dpop || matches!(e.code, ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce);
    let mut resp = render(e, if dpop { "DPoP" } else { "Bearer" });
    if dpop && let Some(n) = app.oauth.dpop_nonce().and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("dpop-nonce", n);
    }
    resp
}

/// RFC 6750 §3: the status of the error code, and a challenge naming it.
fn render(e: &OAuthError, scheme: &str) -> Response {
    let status = match e.code {
        ErrorCode::InvalidToken | ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce => StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = serde_json::json!({ "error": e.code.as_str(), "error_description": e.description });
    let mut resp = (status, axum::Json(body)).into_response();
    let algs = if scheme == "DPoP" { dpop_algs() } else { String::new() };
    let value = format!(
        "{scheme} realm=\"sigil\",{algs} error=\"{}\", error_description=\"{}\"",
        e.code.as_str(),
        quotable(&e.description)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    // A bearer refusal also offers DPoP: a DPoP-bound token sent as a bearer token learns
    // which scheme it needs (RFC 9449 §7.2).
    if scheme == "Bearer" && status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .append(header::WWW_AUTHENTICATE, dpop_challenge_base());
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The DPoP challenge with the algorithms proofs may use (RFC 9449 §7.1).
fn dpop_challenge_base() -> HeaderValue {
    HeaderValue::from_str(&format!("DPoP realm=\"sigil\",{}", dpop_algs().trim_end_matches(',')))
        .unwrap_or_else(|_| HeaderValue::from_static("DPoP realm=\"sigil\""))
}

fn dpop_algs() -> String {
    format!(" algs=\"{}\",", sigil_crypto::ClientAlg::ALL.join(" "))
}

/// RFC 6750 §3: `error_description` holds %x20-21 / %x23-5B / %x5D-7E only.
fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::quotable;

    #[test]
    fn descriptions_are_made_quotable() {
        assert_eq!(quotable("a \"b\" \\ § c"), "a ?b? ? ? c");
    }
}
