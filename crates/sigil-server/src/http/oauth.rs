//! The OAuth endpoints: `/token`, `/introspect`, `/revoke` and the metadata documents.
//! Errors are RFC 6749 §5.2 JSON bodies, with `WWW-Authenticate` on `invalid_client`.

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sigil_core::audit::EventType;
use sigil_core::oauth::client::TOKEN_EXCHANGE_GRANT;
use sigil_core::oauth::client_auth::PresentedCredentials;
use sigil_core::oauth::delegation::CodeRedemption;
use sigil_core::oauth::enterprise::{ID_JAG_PROFILE, ID_JAG_TOKEN_TYPE, JWT_BEARER_GRANT};
use sigil_core::oauth::exchange::ExchangeRequest;
use sigil_core::oauth::{ErrorCode, OAuthError};

use super::State;
use super::middleware::RequestId;

const FORM: &str = "application/x-www-form-urlencoded";

/// Renders an OAuth error (RFC 6749 §5.2).
pub fn error_response(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    tracing::info!(
        error = e.code.as_str(),
        description = e.description,
        "oauth request refused"
    );
    let body = serde_json::json!({ "error": e.code.as_str(), "error_description": e.description });
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED {
        // The challenge names the scheme that failed (RFC 6749 §5.2, RFC 6750 §3).
        let challenge = if e.code == ErrorCode::InvalidToken {
            "Bearer realm=\"sigil\", error=\"invalid_token\""
        } else {
            "Basic realm=\"sigil\""
        };
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    resp
}

/// The token of an `Authorization: Bearer` header; the scheme is case-insensitive (RFC 7235 §2.1).
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    if repeated_authorization(headers) {
        return None; // not a bearer credential: client authentication refuses the request
    }
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn ok_json(body: impl serde::Serialize) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A form body: every parameter at most once (RFC 6749 §3.2), except those listed as repeatable;
/// one sent without a value counts as omitted (§3.1, §3.2).
#[derive(Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(headers: &HeaderMap, body: &[u8], repeatable: &[&str]) -> Result<Self, OAuthError> {
        if !Self::declared(headers) {
            return Err(OAuthError::invalid_request(format!("the body must be {FORM}")));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body).filter(|(_, v)| !v.is_empty()) {
            if !repeatable.contains(&k.as_ref()) && pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(OAuthError::invalid_request(format!("parameter {k} is repeated")));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self(pairs))
    }

    /// Whether the request says its body is a form.
    fn declared(headers: &HeaderMap) -> bool {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(FORM))
    }

    /// The form of a call that must come from an authenticated client (introspection,
    /// revocation). A body that is not a form carries no client credential, so a call with none
    /// outside the body either (no Authorization header, no client certificate) is refused as
    /// unauthenticated (401, RFC 7662 §2.1, RFC 7009 §2.1) rather than as malformed.
    fn of_client(headers: &HeaderMap, ext: &axum::http::Extensions, body: &[u8]) -> Result<Self, OAuthError> {
        if !Self::declared(headers) && headers.get(header::AUTHORIZATION).is_none() && client_cert(ext).is_none() {
            return Err(OAuthError::invalid_client("client authentication is required"));
        }
        Self::parse(headers, body, &[])
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(pk, _)| pk == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Two `Authorization` headers are two credentials at once: which one counts is ambiguous, so
/// the request is malformed rather than authenticated by whichever comes first.
fn repeated_authorization(headers: &HeaderMap) -> bool {
    headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some()
}

/// Client credentials from the Authorization header and the form.
fn credentials(
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    form: &Form,
) -> Result<PresentedCredentials, OAuthError> {
    if repeated_authorization(headers) {
        return Err(OAuthError::invalid_request("more than one Authorization header"));
    }
    let basic = match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") => Some(parse_basic(&v[6..])?),
        Some(_) => {
            return Err(OAuthError::invalid_client(
                "unsupported Authorization scheme; use Basic",
            ));
        }
        None => None,
    };
    Ok(PresentedCredentials {
        basic,
        client_id: form.get("client_id").map(str::to_owned),
        client_secret: form.get("client_secret").map(str::to_owned),
        assertion_type: form.get("client_assertion_type").map(str::to_owned),
        assertion: form.get("client_assertion").map(str::to_owned),
        tls_client_cert: client_cert(ext).map(<[u8]>::to_vec),
    })
}

/// The client certificate of the connection, if it is mutual TLS.
fn client_cert(ext: &axum::http::Extensions) -> Option<&[u8]> {
    ext.get::<axum::extract::ConnectInfo<crate::serve::PeerAddr>>()
        .and_then(|c| c.0.1.as_deref())
}

/// RFC 6749 §2.3.1: `base64(urlencode(id) ":" urlencode(secret))`.
fn parse_basic(b64: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Ok((dec(id).ok_or_else(bad)?, dec(secret).ok_or_else(bad)?))
}

pub(super) fn rid(headers_ext: &axum::http::Extensions) -> Option<String> {
    headers_ext.get::<RequestId>().map(|r| r.0.clone())
}

/// The `DPoP` header, if any; more than one is an error (RFC 9449 §4.3).
fn single_dpop(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let bad = |why: &str| OAuthError::new(sigil_core::oauth::ErrorCode::InvalidDpopProof, why);
    let mut all = headers.get_all("dpop").iter();
    let first = all
        .next()
        .map(|v| v.to_str().map_err(|_| bad("malformed DPoP header")))
        .transpose()?;
    if all.next().is_some() {
        return Err(bad("more than one DPoP header"));
    }
    Ok(first)
}

/// The body of a request to an OAuth endpoint, read up to the configured limit; a larger one
/// is answered 413 with an RFC 6749 §5.2 body like every other refusal of these endpoints.
pub struct OAuthBody(pub Bytes);

impl axum::extract::FromRequest<std::sync::Arc<crate::app::App>> for OAuthBody {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        app: &std::sync::Arc<crate::app::App>,
    ) -> Result<Self, Response> {
        Self::read(req.into_body(), app.config.max_body_bytes).await
    }
}

impl OAuthBody {
    async fn read(body: axum::body::Body, limit: usize) -> Result<Self, Response> {
        use super::extract::BodyError;
        super::extract::read_body(body, limit)
            .await
            .map(Self)
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    let mut r = error_response(&OAuthError::invalid_request("the request body is too large"));
                    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                    r
                }
                BodyError::Malformed => error_response(&OAuthError::invalid_request(BodyError::MALFORMED)),
            })
    }
}

/// `POST /token`
pub async fn token(AxState(app): State, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let request_id = rid(&parts.extensions);
    let bytes = match OAuthBody::read(body, app.config.max_body_bytes).await {
        Ok(OAuthBody(b)) => b,
        Err(r) => return r,
    };
    // Parsed before the grant runs, so that a refusal's audit record can name the grant and
    // the claimed client (borrowed, not copied: this is every token request's path).
    let form = Form::parse(&parts.headers, &bytes, &["resource", "audience"]);
    let creds = form
        .as_ref()
        .ok()
        .map(|f| credentials(&parts.headers, &parts.extensions, f));
    let result = async {
        let form = form.as_ref().map_err(Clone::clone)?;
        let creds = match &creds {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(OAuthError::invalid_request("the form could not be read")),
        };
        let dpop = single_dpop(&parts.headers)?;
        match form.get("grant_type") {
            Some("client_credentials") => {
                app.oauth
                    .client_credentials(
                        creds,
                        form.get("scope"),
                        &form.all("resource"),
                        dpop,
                        request_id.as_deref(),
                    )
                    .await
            }
            Some("authorization_code") => {
                let redemption = CodeRedemption {
                    code: form.get("code"),
                    redirect_uri: form.get("redirect_uri"),
                    code_verifier: form.get("code_verifier"),
                    resources: &form.all("resource"),
                };
                app.oauth
                    .authorization_code(creds, &redemption, dpop, request_id.as_deref())
                    .await
            }
            Some("refresh_token") => {
                app.oauth
                    .refresh(
                        creds,
                        form.get("refresh_token"),
                        form.get("scope"),
                        &form.all("resource"),
                        dpop,
                        request_id.as_deref(),
                    )
                    .await
            }
            Some(TOKEN_EXCHANGE_GRANT) => {
                let exchange = ExchangeRequest {
                    subject_token: form.get("subject_token"),
                    subject_token_type: form.get("subject_token_type"),
                    actor_token: form.get("actor_token"),
                    actor_token_type: form.get("actor_token_type"),
                    requested_token_type: form.get("requested_token_type"),
                    resources: &form.all("resource"),
                    audiences: &form.all("audience"),
                    scope: form.get("scope"),
                };
                app.oauth
                    .token_exchange(creds, &exchange, dpop, request_id.as_deref())
                    .await
            }
            Some(JWT_BEARER_GRANT) => {
                app.oauth
                    .jwt_bearer(
                        creds,
                        form.get("assertion"),
                        form.get("scope"),
                        &form.all("resource"),
                        dpop,
                        request_id.as_deref(),
                    )
                    .await
            }
            Some(other) => Err(OAuthError::new(
                sigil_core::oauth::ErrorCode::UnsupportedGrantType,
                format!("grant_type {other:?} is not supported"),
            )),
            None => Err(OAuthError::invalid_request("grant_type is required")),
        }
    }
    .await;
    let mut resp = match result {
        Ok(t) => ok_json(t),
        Err(e) => {
            app.oauth
                .record_refused_token_request(
                    form.as_ref().ok().and_then(|f| f.get("grant_type")),
                    creds.as_ref().and_then(|c| c.as_ref().ok()),
                    &e,
                    request_id.as_deref(),
                )
                .await;
            error_response(&e)
        }
    };
    if let Some(n) = app.oauth.dpop_nonce().and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("dpop-nonce", n);
    }
    resp
}

/// Who is calling introspection: an administrator (bearer admin token) or an authenticated client.
async fn caller(
    app: &crate::App,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    form: &Form,
    endpoint: &str,
    allow_public: bool,
    request_id: Option<&str>,
) -> Result<(Option<(String, sigil_types::IdentityId)>, String), OAuthError> {
    if let Some(t) = bearer_token(headers) {
        // RFC 7662 §2.3: a bad bearer credential is answered as RFC 6750 §3 says.
        return match app.admin.authenticate(Some(t), request_id, "oauth").await {
            Ok(p) => Ok((None, p.as_str().to_owned())),
            Err(_) => Err(OAuthError::new(ErrorCode::InvalidToken, "invalid bearer credential")),
        };
    }
    let creds = credentials(headers, ext, form)?;
    // RFC 7009 §2.1: a public client identifies itself by client_id to revoke its own tokens.
    let auth = if allow_public {
        app.oauth.authenticate_or_public(&creds, endpoint).await?
    } else {
        app.oauth.authenticate(&creds, endpoint).await?
    };
    app.oauth.require_active_identity(&auth).await?;
    app.oauth.spend_assertion(&auth).await?;
    let who = format!("client:{}", auth.client.client_id);
    Ok((
        Some((auth.client.client_id.clone(), auth.client.identity_id.clone())),
        who,
    ))
}

/// The authenticated caller of a JSON endpoint (AuthZEN): the principal for audit records and,
/// for an OAuth client, the identity it belongs to.
pub(super) struct JsonCaller {
    pub who: String,
    pub identity: Option<sigil_types::IdentityId>,
}

/// Authenticates the caller of a JSON endpoint: an admin bearer token, an OAuth client's
/// credentials in `Authorization: Basic`, or a workload's X509-SVID over mutual TLS.
pub(super) async fn json_caller(
    app: &crate::App,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    endpoint: &str,
    request_id: Option<&str>,
) -> Result<JsonCaller, OAuthError> {
    let form = Form(Vec::new());
    if bearer_token(headers).is_some() {
        let (_, who) = caller(app, headers, ext, &form, endpoint, false, request_id).await?;
        return Ok(JsonCaller { who, identity: None });
    }
    let auth = app
        .oauth
        .authenticate(&credentials(headers, ext, &form)?, endpoint)
        .await?;
    app.oauth.require_active_identity(&auth).await?;
    Ok(JsonCaller {
        who: format!("client:{}", auth.client.client_id),
        identity: Some(auth.client.identity_id.clone()),
    })
}

/// `POST /introspect` (RFC 7662)
pub async fn introspect(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    OAuthBody(body): OAuthBody,
) -> Response {
    let request_id = rid(&ext);
    let result = async {
        let form = Form::of_client(&headers, &ext, &body)?;
        let (client, who) = caller(
            &app,
            &headers,
            &ext,
            &form,
            &app.oauth.config().introspection_endpoint,
            false,
            request_id.as_deref(),
        )
        .await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let identity = client.as_ref().map(|(_, identity)| identity);
        app.oauth.introspect(token, &who, identity, request_id.as_deref()).await
    }
    .await;
    match result {
        Ok(r) => ok_json(r),
        Err(e) => {
            refused_form_request(
                &app,
                EventType::TokenIntrospected,
                &headers,
                &ext,
                &body,
                &e,
                &request_id,
            )
            .await
        }
    }
}

/// The answer to a refused introspection or revocation, recorded first.
async fn refused_form_request(
    app: &crate::App,
    event: EventType,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    body: &[u8],
    e: &OAuthError,
    request_id: &Option<String>,
) -> Response {
    let form = Form::parse(headers, body, &[]).ok();
    record_refusal(app, event, headers, ext, form.as_ref(), e, request_id).await;
    error_response(e)
}

/// Audits a refused request of a client (introspection, revocation, AuthZEN), naming the client
/// as far as its credentials could be read. A bad administrator token is already an
/// `admin.auth_failed` record.
pub(super) async fn record_refusal(
    app: &crate::App,
    event: EventType,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    form: Option<&Form>,
    e: &OAuthError,
    request_id: &Option<String>,
) {
    if bearer_token(headers).is_some() {
        return;
    }
    let creds = form.and_then(|form| credentials(headers, ext, form).ok());
    let action = match event {
        EventType::TokenRevoked => "revoke",
        EventType::AccessEvaluated => "evaluate",
        _ => "introspect",
    };
    app.oauth
        .record_refused_client_request(event, action, creds.as_ref(), e, request_id.as_deref())
        .await;
}

/// `POST /revoke` (RFC 7009)
pub async fn revoke(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    OAuthBody(body): OAuthBody,
) -> Response {
    let request_id = rid(&ext);
    let result = async {
        let form = Form::of_client(&headers, &ext, &body)?;
        let (client, who) = caller(
            &app,
            &headers,
            &ext,
            &form,
            &app.oauth.config().revocation_endpoint,
            true,
            request_id.as_deref(),
        )
        .await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let by = sigil_core::model::Principal::from_stored(who);
        app.oauth
            .revoke(
                token,
                client.as_ref().map(|(id, _)| id.as_str()),
                &by,
                request_id.as_deref(),
            )
            .await
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => refused_form_request(&app, EventType::TokenRevoked, &headers, &ext, &body, &e, &request_id).await,
    }
}

/// RFC 8414 authorization server metadata (also served as `openid-configuration`).
pub async fn metadata(AxState(app): State) -> Response {
    let c = app.oauth.config();
    // Mutual TLS needs Sigil's own TLS listener: without one no client can present a certificate.
    let mtls = app.config.tls.is_some();
    let mut methods = vec!["private_key_jwt", "client_secret_basic", "client_secret_post"];
    if mtls {
        methods.push("tls_client_auth");
    }
    // Public clients revoke their own tokens with only their client_id, and use no other
    // authentication at the token endpoint.
    let revocation_methods = [methods.as_slice(), &["none"]].concat();
    let token_methods = &revocation_methods;
    let algs = sigil_crypto::ClientAlg::ALL;
    let id_token_algs: Vec<&str> = app.keys.id_token_algorithms().iter().map(|a| a.as_str()).collect();
    let body = serde_json::json!({
        "issuer": c.issuer,
        "authorization_endpoint": c.authorization_endpoint,
        "token_endpoint": c.token_endpoint,
        "jwks_uri": format!("{}/.well-known/jwks.json", c.issuer),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE_GRANT, JWT_BEARER_GRANT],
        "authorization_grant_profiles_supported": [ID_JAG_PROFILE],
        "client_id_metadata_document_supported": c.metadata_documents.identity.is_some(),
        "userinfo_endpoint": c.userinfo_endpoint,
        "scopes_supported": ["openid", "profile", "email"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": id_token_algs,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username", "name", "email"],
        "identity_chaining_requested_token_types_supported": [ID_JAG_TOKEN_TYPE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_methods_supported": token_methods,
        "tls_client_certificate_bound_access_tokens": mtls,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint": c.introspection_endpoint,
        "introspection_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "revocation_endpoint": c.revocation_endpoint,
        "revocation_endpoint_auth_methods_supported": revocation_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        "dpop_signing_alg_values_supported": algs,
        "registration_endpoint": format!("{}/register", c.issuer),
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(body)).into_response()
}
