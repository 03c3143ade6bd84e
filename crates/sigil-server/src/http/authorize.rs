//! The authorization endpoint's pages: `GET /authorize` shows the sign-in form, `POST
//! /authorize/login` checks the password and shows the consent page, `POST /authorize/consent`
//! records the decision and sends the browser back to the client. Server-rendered, no script.

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sigil_core::oauth::OAuthError;
use sigil_core::oauth::authorize::{Authorization, AuthorizeFailure, AuthorizeRequest};

use super::State;
use super::oauth::{Form, rid};

const CSRF_COOKIE: &str = "sigil_csrf";
/// An authorization request travels in the forms; longer ones are refused.
const MAX_REQUEST: usize = 4096;

/// `GET /authorize`
pub async fn start(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    RawQuery(q): RawQuery,
) -> Response {
    begin(&app, &headers, q.unwrap_or_default(), rid(&ext).as_deref()).await
}

/// `POST /authorize`: OpenID Connect Core §3.1.2.1 requires the form-encoded POST too, with
/// the same parameters as the query of a GET.
pub async fn start_posted(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    FormBody(body): FormBody,
) -> Response {
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_encoded {
        return error_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an authorization request sent by POST must be application/x-www-form-urlencoded",
        );
    }
    let Ok(query) = String::from_utf8(body.to_vec()) else {
        return error_page(StatusCode::BAD_REQUEST, "the authorization request is not UTF-8");
    };
    begin(&app, &headers, query, rid(&ext).as_deref()).await
}

/// Checks an authorization request and shows the sign-in page for it. The request travels on
/// in the page's forms as a query string, however it arrived.
async fn begin(app: &crate::App, headers: &HeaderMap, query: String, request_id: Option<&str>) -> Response {
    let checked = match parse_request(&query) {
        Ok(r) => app.oauth.check_authorization(&r).await.map_err(|f| (f, r.client_id)),
        Err(e) => Err((AuthorizeFailure::Show(e), None)),
    };
    match checked {
        Ok(a) => {
            let nonce = cookie(headers)
                .filter(|n| n.len() == 43)
                .map_or_else(new_nonce, str::to_owned);
            let csrf = app.oauth.csrf_token(&nonce);
            let mut resp = page(StatusCode::OK, &login_page(&a, &query, &csrf, None));
            set_cookie(&mut resp, &nonce, app.issuer.starts_with("https://"));
            resp
        }
        Err((f, client_id)) => refused(app, f, client_id.as_deref(), request_id).await,
    }
}

/// `POST /authorize/login`
pub async fn login(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    FormBody(body): FormBody,
) -> Response {
    let request_id = rid(&ext);
    let (form, nonce, query, a) = match accept_form(&app, &headers, &body, request_id.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user = form.get("username").unwrap_or_default();
    let password = form.get("password").unwrap_or_default();
    let csrf = app.oauth.csrf_token(&nonce);
    match app.oauth.login(user, password, request_id.as_deref()).await {
        Ok(u) => match app.oauth.consentable_scopes(&a, &u).await {
            Ok((scopes, _)) => {
                let ticket = app.oauth.login_ticket(&u.id, &query, &nonce);
                let shown = Authorization { scopes, ..a };
                page(
                    StatusCode::OK,
                    &consent_page(&shown, &query, &csrf, &ticket, u.username.as_str()),
                )
            }
            Err(f) => failure(&app, f),
        },
        // The form again with the reason: a 200, since a 401 would have to name an HTTP
        // authentication scheme (RFC 9110 §15.5.2), and this is a page, not a challenge.
        Err(e) => page(StatusCode::OK, &login_page(&a, &query, &csrf, Some(&e.description))),
    }
}

/// `POST /authorize/consent`
pub async fn consent(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    FormBody(body): FormBody,
) -> Response {
    let request_id = rid(&ext);
    let (form, nonce, query, a) = match accept_form(&app, &headers, &body, request_id.as_deref()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ticket = form.get("ticket").unwrap_or_default();
    let signed_in = app.oauth.check_ticket(ticket, &query, &nonce);
    let user = match &signed_in {
        Some((id, _)) => app.oauth.active_user(id).await.ok().flatten(),
        None => None,
    };
    let (Some(user), Some((_, signed_in_at))) = (user, signed_in) else {
        return error_page(
            StatusCode::FORBIDDEN,
            "Your sign-in expired or is not valid. Start again from the application.",
        );
    };
    if app.oauth.sign_in_too_old(&a, signed_in_at) {
        // Core §3.1.2.1: past max_age the user signs in again, here, before any consent counts.
        let csrf = app.oauth.csrf_token(&nonce);
        let notice = "The application asks for a recent sign-in. Please sign in again.";
        return page(StatusCode::OK, &login_page(&a, &query, &csrf, Some(notice)));
    }
    let location = if form.get("decision") == Some("allow") {
        match app
            .oauth
            .grant_authorization(&a, &user, signed_in_at, ticket, request_id.as_deref())
            .await
        {
            Ok(l) => l,
            Err(f) => return failure(&app, f),
        }
    } else {
        match app
            .oauth
            .deny_authorization(&a, &user, ticket, request_id.as_deref())
            .await
        {
            Ok(l) => l,
            Err(f) => return failure(&app, f),
        }
    };
    see_other(&location)
}

/// Parses and checks a posted form: the CSRF token against the cookie, then the authorization
/// request it carries, re-validated from scratch.
async fn accept_form(
    app: &crate::App,
    headers: &HeaderMap,
    body: &[u8],
    request_id: Option<&str>,
) -> Result<(Form, String, String, Authorization), Response> {
    let form = Form::parse(headers, body, &[]).map_err(|e| error_page(StatusCode::BAD_REQUEST, &e.description))?;
    let nonce = cookie(headers).unwrap_or_default().to_owned();
    if !app.oauth.csrf_matches(Some(&nonce), form.get("csrf")) {
        tracing::warn!("authorization form without a valid CSRF token");
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "This form is not valid (missing or wrong CSRF token). Start again from the application.",
        ));
    }
    let query = form.get("request").unwrap_or_default().to_owned();
    let req = match parse_request(&query) {
        Ok(r) => r,
        Err(e) => return Err(refused(app, AuthorizeFailure::Show(e), None, request_id).await),
    };
    let a = match app.oauth.check_authorization(&req).await {
        Ok(a) => a,
        Err(f) => return Err(refused(app, f, req.client_id.as_deref(), request_id).await),
    };
    Ok((form, nonce, query, a))
}

/// The query of an authorization request; every parameter at most once except `resource`.
fn parse_request(query: &str) -> Result<AuthorizeRequest, OAuthError> {
    if query.len() > MAX_REQUEST {
        return Err(OAuthError::invalid_request("the authorization request is too long"));
    }
    let mut r = AuthorizeRequest::default();
    let mut seen: Vec<String> = Vec::new();
    for pair in strict_form_pairs(query) {
        // With the client or its redirect URI in doubt the error can only be shown; another
        // parameter that cannot be decoded is an error for the client (RFC 6749 §4.1.2.1),
        // redirected without it once the redirect URI is known to be good.
        let (k, v) = match pair {
            Ok(kv) => kv,
            Err((name, why)) if name.is_none() || matches!(name.as_deref(), Some("client_id" | "redirect_uri")) => {
                return Err(OAuthError::invalid_request(why));
            }
            Err((_, why)) => {
                r.undecodable.get_or_insert(why);
                continue;
            }
        };
        if k != "resource" {
            if seen.contains(&k) {
                // With the client or its redirect URI in doubt the error can only be shown;
                // any other repeated parameter is an error for the client (RFC 6749 §4.1.2.1),
                // decided once the redirect URI is known to be good. The first value counts.
                if k == "client_id" || k == "redirect_uri" {
                    return Err(OAuthError::invalid_request(format!("parameter {k} is repeated")));
                }
                r.repeated.get_or_insert_with(|| k.clone());
                continue;
            }
            seen.push(k.clone());
        }
        let v = Some(v).filter(|v| !v.is_empty());
        match k.as_str() {
            "client_id" => r.client_id = v,
            "redirect_uri" => r.redirect_uri = v,
            "response_type" => r.response_type = v,
            "scope" => r.scope = v,
            "state" => r.state = v,
            "code_challenge" => r.code_challenge = v,
            "code_challenge_method" => r.code_challenge_method = v,
            "resource" => r.resource.extend(v),
            "nonce" => r.nonce = v,
            "prompt" => r.prompt = v,
            "response_mode" => r.response_mode = v,
            "dpop_jkt" => r.dpop_jkt = v,
            "id_token_hint" => r.id_token_hint = v,
            "max_age" => r.max_age = v,
            "request" => r.request_object = v.is_some(),
            "request_uri" => r.request_uri = v.is_some(),
            _ => {} // OAuth 2.1 §4.1.1: unknown parameters are ignored
        }
    }
    Ok(r)
}

/// A query parameter that could not be decoded: its name, if that much could be, and why.
type Undecodable = (Option<String>, String);

/// The pairs of an `application/x-www-form-urlencoded` query (RFC 6749 Appendix B: `+` is a
/// space, `%XX` an octet, the octets UTF-8). Unlike a lenient parser, a broken escape or
/// invalid UTF-8 is reported rather than altered: RFC 6749 §4.1.2 has `state` come back exactly
/// as received, and a value rewritten with U+FFFD would not. An error carries the parameter's
/// name, when that much could be decoded, and why.
fn strict_form_pairs(query: &str) -> Vec<Result<(String, String), Undecodable>> {
    fn decode(part: &str) -> Result<String, &'static str> {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or("malformed percent-encoding")?;
                    out.push(hex);
                    i += 2;
                }
                other => out.push(other),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| "not UTF-8 once percent-decoded")
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(k).map_err(|why| (None, format!("a parameter name: {why}")))?;
            match decode(v) {
                Ok(value) => Ok((name, value)),
                Err(why) => Err((Some(name.clone()), format!("parameter {name:?}: {why}"))),
            }
        })
        .collect()
}

/// An authorization request refused as it stands (malformed, an unknown client or redirect
/// URI, a metadata document that failed, a quarantined agent): the answer, and a denied
/// `authorization.denied` record naming the client asked for (and its agent, if it exists).
async fn refused(app: &crate::App, f: AuthorizeFailure, client_id: Option<&str>, request_id: Option<&str>) -> Response {
    let (AuthorizeFailure::Show(error) | AuthorizeFailure::Redirect { error, .. }) = &f;
    let claimed = sigil_core::oauth::client_auth::PresentedCredentials {
        client_id: client_id.map(str::to_owned),
        ..Default::default()
    };
    app.oauth
        .record_refused_client_request(
            sigil_core::audit::EventType::AuthorizationDenied,
            "authorize",
            Some(&claimed),
            error,
            request_id,
        )
        .await;
    failure(app, f)
}

fn failure(app: &crate::App, f: AuthorizeFailure) -> Response {
    match f {
        AuthorizeFailure::Show(e) => {
            tracing::info!(
                error = e.code.as_str(),
                description = e.description,
                "authorization request refused"
            );
            error_page(
                StatusCode::BAD_REQUEST,
                &format!("{}: {}", e.code.as_str(), e.description),
            )
        }
        AuthorizeFailure::Redirect {
            redirect_uri,
            state,
            error,
        } => {
            tracing::info!(
                error = error.code.as_str(),
                description = error.description,
                "authorization error sent to the client"
            );
            see_other(&app.oauth.error_redirect(&redirect_uri, state.as_deref(), &error))
        }
    }
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(_) => error_page(StatusCode::BAD_REQUEST, "the redirect URI cannot be used"),
    }
}

fn new_nonce() -> String {
    sigil_crypto::random_bytes::<32>()
        .map(|b| sigil_crypto::b64url(&b))
        .unwrap_or_default()
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == CSRF_COOKIE)
        .map(|(_, v)| v)
}

fn set_cookie(resp: &mut Response, nonce: &str, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!("{CSRF_COOKIE}={nonce}; Path=/authorize; HttpOnly; SameSite=Lax{secure}");
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
}

// ---- pages ----

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Sigil</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}label{{display:block;margin:.6rem 0}}input{{width:100%;padding:.4rem}}button{{margin:.8rem .4rem 0 0;padding:.5rem 1rem}}.err{{color:#a00}}code{{background:#eee;padding:0 .2rem}}</style></head><body>{body}</body></html>"
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// A sign-in form's body; one too large (413) or unreadable (400) gets the sign-in error page
/// instead of the framework's plain-text answer.
pub struct FormBody(Bytes);

impl axum::extract::FromRequest<std::sync::Arc<crate::App>> for FormBody {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, app: &std::sync::Arc<crate::App>) -> Result<Self, Response> {
        use super::extract::BodyError;
        super::extract::read_body(req.into_body(), app.config.max_body_bytes)
            .await
            .map(FormBody)
            .map_err(|e| match e {
                BodyError::TooLarge => error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form sent was too large."),
                BodyError::Malformed => error_page(StatusCode::BAD_REQUEST, "The form sent could not be read."),
            })
    }
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        &format!("<h1>Sign-in cannot continue</h1><p class=\"err\">{}</p>", esc(message)),
    )
}

/// Who asks for what, shown on both pages. A client described by a metadata document is named
/// with the host its document came from (draft-ietf-oauth-client-id-metadata-document §6.4).
/// What the request asks. `signed_in`: the consent page, which also names the agent's owner
/// (the sign-in page does not: anyone who knows a client id can open it).
fn request_summary(a: &Authorization, signed_in: bool) -> String {
    let scopes: String = a
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", esc(s.as_str())))
        .collect();
    let via = if sigil_core::oauth::metadata_doc::is_document_url(&a.client.client_id) {
        let name = a
            .client
            .metadata
            .as_ref()
            .and_then(|m| m.get("client_name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let host = url::Url::parse(&a.client.client_id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!(
            " through the application <strong>{}</strong> from <strong>{}</strong>",
            esc(name),
            esc(&host)
        )
    } else {
        String::new()
    };
    // The host of a web redirect; a native app's private-use scheme (`com.example.app:/cb`)
    // has none, and is named instead so the user still sees where the code goes.
    let redirect_host = url::Url::parse(&a.redirect_uri)
        .ok()
        .map(|u| match u.host_str() {
            Some(host) => host.to_owned(),
            None => format!("the app {}:", u.scheme()),
        })
        .unwrap_or_default();
    let owner = if signed_in {
        format!(" (owned by {})", esc(&a.agent_owner))
    } else {
        String::new()
    };
    let asks = match &a.resource {
        Some(r) => format!(
            "asks to act for you at <strong>{}</strong> <code>{}</code> with:</p><ul>{}</ul>",
            esc(r.name.as_str()),
            esc(r.uri.as_str()),
            scopes
        ),
        // A sign-in only: the agent gets no access to any API, only who the user is.
        None if a.scopes.is_empty() => {
            "asks to know who you are (your user id).</p><p>It gets no access to any API.</p>".to_owned()
        }
        None => {
            format!("asks to know who you are and to read:</p><ul>{scopes}</ul><p>It gets no access to any API.</p>")
        }
    };
    format!(
        "<p>The agent <strong>{}</strong>{}{} {}<p>You will be sent back to <strong>{}</strong>.</p>",
        esc(a.agent.name.as_str()),
        owner,
        via,
        asks,
        esc(&redirect_host)
    )
}

fn login_page(a: &Authorization, query: &str, csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"err\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<h1>Sign in</h1>{}{}<form method=\"post\" action=\"/authorize/login\"><input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Username <input name=\"username\" autocomplete=\"username\" required></label><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label><button type=\"submit\">Sign in</button></form>",
        request_summary(a, false),
        error,
        esc(query),
        esc(csrf)
    )
}

fn consent_page(a: &Authorization, query: &str, csrf: &str, ticket: &str, username: &str) -> String {
    let terms = if a.resource.is_some() {
        "The agent will act as itself, on your behalf; you can revoke this at any time."
    } else {
        "You can revoke this at any time."
    };
    format!(
        "<h1>Allow access?</h1><p>Signed in as <strong>{}</strong>.</p>{}<p>{}</p><form method=\"post\" action=\"/authorize/consent\"><input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"ticket\" value=\"{}\"><button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button><button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        esc(username),
        request_summary(a, true),
        terms,
        esc(query),
        esc(csrf),
        esc(ticket)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use sigil_core::oauth::ErrorCode;

    #[test]
    fn state_comes_back_exactly_or_the_request_is_refused() {
        let r = parse_request("client_id=c&state=a%2Bb+c%20%C3%A9&state=x").unwrap();
        assert_eq!(r.state.as_deref(), Some("a+b c é"));
        assert_eq!(r.repeated.as_deref(), Some("state"));
        // Any other parameter is left out and redirected as invalid_request once the redirect
        // URI is known to be good; a broken client_id, redirect_uri or name is shown at once.
        for bad in ["state=%C3%28", "state=%FF%FE", "state=100%", "foo=%ZZ", "state=%+F"] {
            let r = parse_request(&format!("client_id=c&{bad}")).expect(bad);
            assert!(r.undecodable.is_some() && r.state.is_none(), "{bad}");
        }
        for bad in ["client_id=%ZZ", "redirect_uri=%FF", "st%E9=1"] {
            let e = parse_request(&format!("state=s&{bad}")).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
        }
    }
}
