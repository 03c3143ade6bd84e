//! The authorization endpoint (OAuth 2.1 §4.1): a user signs in, sees which agent asks for what,
//! and consents; the client then redeems a single-use code with its PKCE verifier.
//!
//! The pages are stateless on the server: the request travels in the forms, a CSRF token binds
//! each form to the browser's cookie, and after the password check a short-lived signed *login
//! ticket* carries the user to the consent step. Every step re-validates the request.

use std::sync::Arc;
use std::time::Duration;

use sigil_types::{IdentityStatus, ResourceUri, ScopeSet, Timestamp, UserId, UserStatus, Username};

use super::client::OAuthClient;
use super::error::{ErrorCode, OAuthError};
use super::grant::{CODE_PREFIX, Grant, GrantKind};
use super::policy::ChainPrincipal;
use super::service::OAuthService;
use crate::audit::{AuditRecord, EventType, Outcome, Target};
use crate::model::{Identity, IdentityRef, Principal, Resource, ResourceRef, User, UserRef};
use crate::store::{Change, ChangeSet};

/// The OpenID Connect scope (Core §3.1.2.1).
pub const OPENID: &str = "openid";
/// The other scope values OpenID Connect defines (Core §5.4, §11). In an OpenID request, those
/// the resource does not define itself are ignored, as Core §3.1.2.1 says of scope values not
/// understood: relying-party libraries send `openid profile email` by default, and the ID
/// token's claims do not depend on them.
const OIDC_SCOPES: [&str; 5] = ["profile", "email", "address", "phone", "offline_access"];

/// Failed sign-ins per username within [`SIGN_IN_WINDOW`] after which the username is locked
/// for the rest of the window (online guessing; the lock is per process).
const MAX_FAILED_SIGN_INS: u32 = 5;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Recent failed sign-ins by username.
#[derive(Debug, Default)]
pub(super) struct SignInThrottle(std::sync::Mutex<std::collections::HashMap<String, (u32, sigil_types::Timestamp)>>);

impl SignInThrottle {
    fn is_locked(&self, user: &str, now: Timestamp) -> bool {
        self.0.lock().is_ok_and(|m| {
            m.get(user)
                .is_some_and(|(n, since)| *n >= MAX_FAILED_SIGN_INS && now.since(*since) < SIGN_IN_WINDOW)
        })
    }

    fn failed(&self, user: &str, now: Timestamp) {
        let Ok(mut m) = self.0.lock() else { return };
        if m.len() >= 100_000 {
            m.retain(|_, (_, since)| now.since(*since) < SIGN_IN_WINDOW);
        }
        let e = m.entry(user.to_owned()).or_insert((0, now));
        if now.since(e.1) >= SIGN_IN_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

/// Password checks running at once (each takes 19 MiB and tens of milliseconds).
pub(super) const PASSWORD_CHECKS: usize = 2;

/// Codes live one minute (RFC 6749 §4.1.2 recommends at most ten).
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long the consent page may stay open after the password was checked.
const TICKET_TTL_SECS: i64 = 600;

/// The query parameters of an authorization request.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeRequest {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub resource: Vec<String>,
    /// OpenID Connect: echoed in the ID token.
    pub nonce: Option<String>,
    /// OpenID Connect Core §3.1.2.1: space-separated; `none` forbids any page.
    pub prompt: Option<String>,
    /// OAuth 2.0 Multiple Response Types §2.1; only `query` is supported.
    pub response_mode: Option<String>,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code is bound to.
    pub dpop_jkt: Option<String>,
    /// OpenID Connect Core §3.1.2.1: an ID token Sigil issued, naming who should sign in.
    pub id_token_hint: Option<String>,
    /// OpenID Connect Core §3.1.2.1: seconds the sign-in may be old when the user consents.
    pub max_age: Option<String>,
    /// OpenID Connect request objects (Core §6), which Sigil refuses: present or not.
    pub request_object: bool,
    pub request_uri: bool,
    /// The first parameter other than `client_id` and `redirect_uri` that the request repeats.
    pub repeated: Option<String>,
    /// Why the first parameter other than `client_id` and `redirect_uri` that could not be
    /// decoded (a broken escape, not UTF-8) was left out.
    pub undecodable: Option<String>,
}

/// A request that passed every check: what the consent page shows and the code records.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client: Arc<OAuthClient>,
    pub agent: Arc<Identity>,
    pub agent_owner: String,
    /// The API the user lets the agent act at. `None`: a sign-in only (an OpenID Connect
    /// request that named no resource), whose access token reads the user's claims at the
    /// UserInfo endpoint and nothing else.
    pub resource: Option<Arc<Resource>>,
    /// Requested scopes: of the resource (all of them when none were requested), or of a
    /// sign-in only the [`USERINFO_SCOPES`](super::sign_in::USERINFO_SCOPES) asked for (perhaps none).
    pub scopes: ScopeSet,
    pub redirect_uri: String,
    /// Whether the request named the redirect URI (then the token request must repeat it).
    pub redirect_uri_given: bool,
    pub state: Option<String>,
    pub code_challenge: String,
    /// The request's scope held `openid` (OpenID Connect): the token response has an ID token.
    pub openid: bool,
    pub nonce: Option<String>,
    /// RFC 9449 §10: the code may only be redeemed with a DPoP proof of this key.
    pub dpop_jkt: Option<String>,
    /// The user `id_token_hint` named: anyone else signing in is `login_required`.
    pub hinted_user: Option<String>,
    /// OpenID Connect Core §3.1.2.1: a sign-in older than this many seconds at consent is
    /// repeated.
    pub max_age: Option<u64>,
}

/// Why an authorization request fails. Until the client and redirect URI are known to be good,
/// the error is shown to the user and never sent anywhere (OAuth 2.1 §4.1.2.1).
#[derive(Debug, Clone)]
pub enum AuthorizeFailure {
    Show(OAuthError),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: OAuthError,
    },
}

impl AuthorizeFailure {
    fn redirect(a: &Authorization, error: OAuthError) -> Self {
        Self::Redirect {
            redirect_uri: a.redirect_uri.clone(),
            state: a.state.clone(),
            error,
        }
    }
}

/// The values of a request's `scope` that are the resource's: all but `openid` and, in an
/// OpenID request, the OpenID Connect values `defined` (the resource's scopes) does not hold.
pub(super) fn resource_scope_values<'a>(raw: &'a str, defined: &ScopeSet) -> Vec<&'a str> {
    let openid = raw.split(' ').any(|s| s == OPENID);
    let defines = |s: &str| defined.iter().any(|d| d.as_str() == s);
    raw.split(' ')
        .filter(|s| !s.is_empty() && *s != OPENID)
        .filter(|s| !(openid && OIDC_SCOPES.contains(s) && !defines(s)))
        .collect()
}

/// Exact string match (OAuth 2.1 §2.3.1, RFC 9700 §2.1), except the port of a loopback IP
/// redirect URI (RFC 8252 §7.3: native apps listen on an ephemeral port). Compared as text, not
/// as parsed URLs, so `127.1`, `..` segments or userinfo never pass for the registered URI.
fn redirect_matches(registered: &str, requested: &str) -> bool {
    registered == requested
        || matches!(
            (without_loopback_port(registered), without_loopback_port(requested)),
            (Some(a), Some(b)) if a == b
        )
}

/// `http://127.0.0.1:PORT/rest` (or `[::1]`) as `http://127.0.0.1/rest`; `None` for anything
/// else, including a port that is not a plain 1–65535.
fn without_loopback_port(uri: &str) -> Option<String> {
    let host = ["http://127.0.0.1", "http://[::1]"]
        .into_iter()
        .find(|h| uri.starts_with(h))?;
    let mut rest = uri.get(host.len()..)?;
    if let Some(after_colon) = rest.strip_prefix(':') {
        let digits = after_colon.bytes().take_while(u8::is_ascii_digit).count();
        let port = after_colon.get(..digits)?;
        if port.starts_with('0') || port.parse::<u16>().is_err() {
            return None;
        }
        rest = after_colon.get(digits..)?;
    }
    (rest.is_empty() || rest.starts_with(['/', '?'])).then(|| format!("{host}{rest}"))
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub(super) fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// RFC 7636 §4.6 with S256: `BASE64URL(SHA256(verifier)) == challenge`.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    valid_verifier(verifier)
        && sigil_crypto::constant_time_eq(
            sigil_crypto::b64url(&sigil_crypto::sha256(verifier.as_bytes())).as_bytes(),
            challenge.as_bytes(),
        )
}

/// A consent form submitted again after its decision (its ticket is spent): shown, since the
/// client already had its one answer.
fn decided_already() -> AuthorizeFailure {
    AuthorizeFailure::Show(OAuthError::invalid_request(
        "this consent was already given; start again from the application",
    ))
}

/// Appends the response parameters to a redirect URI, keeping its own query (RFC 6749 §3.1.2).
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => redirect_uri.to_owned(),
    }
}

impl OAuthService {
    /// Validates an authorization request against the client's registration.
    pub async fn check_authorization(&self, r: &AuthorizeRequest) -> Result<Authorization, AuthorizeFailure> {
        let show = |d: &str| AuthorizeFailure::Show(OAuthError::invalid_request(d));
        let client_id = r.client_id.as_deref().ok_or_else(|| show("client_id is required"))?;
        let client = self
            .client(client_id)
            .await
            .map_err(AuthorizeFailure::Show)?
            .ok_or_else(|| show("unknown client"))?;
        if client.redirect_uris.is_empty() {
            return Err(AuthorizeFailure::Show(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client is not registered for the authorization code grant",
            )));
        }
        let (redirect_uri, given) = match (&r.redirect_uri, client.redirect_uris.as_slice()) {
            (Some(u), registered) if registered.iter().any(|reg| redirect_matches(reg, u)) => (u.clone(), true),
            (Some(_), _) => return Err(show("redirect_uri does not exactly match a registered redirect URI")),
            (None, [only]) => (only.clone(), false),
            (None, _) => return Err(show("redirect_uri is required: the client has several")),
        };
        let agent = self
            .reads
            .identity(&IdentityRef::Id(client.identity_id.clone()))
            .await
            .map_err(|e| AuthorizeFailure::Show(e.into()))?
            .ok_or_else(|| show("the client's identity no longer exists"))?;
        // A client described by a metadata document names its own redirect URIs: redirecting its
        // errors without any user interaction would make Sigil an open redirector (RFC 9700
        // §4.11.1), so they are shown instead.
        let described_by_document = super::metadata_doc::is_document_url(&client.client_id);
        let fail = |code: ErrorCode, d: &str| {
            let error = OAuthError::new(code, d);
            if described_by_document {
                AuthorizeFailure::Show(error)
            } else {
                AuthorizeFailure::Redirect {
                    redirect_uri: redirect_uri.clone(),
                    state: r.state.clone(),
                    error,
                }
            }
        };
        if let Some(p) = &r.repeated {
            return Err(fail(ErrorCode::InvalidRequest, &format!("parameter {p} is repeated")));
        }
        if let Some(why) = &r.undecodable {
            return Err(fail(ErrorCode::InvalidRequest, why));
        }
        match r.response_type.as_deref() {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    ErrorCode::UnsupportedResponseType,
                    "the only response_type is code",
                ));
            }
            None => return Err(fail(ErrorCode::InvalidRequest, "response_type is required")),
        }
        if r.response_mode.as_deref().is_some_and(|m| m != "query") {
            return Err(fail(ErrorCode::InvalidRequest, "the only response_mode is query"));
        }
        // Core §6: a request object carries parameters Sigil would otherwise silently drop.
        if r.request_object {
            return Err(fail(
                ErrorCode::RequestNotSupported,
                "request objects are not supported",
            ));
        }
        if r.request_uri {
            return Err(fail(ErrorCode::RequestUriNotSupported, "request_uri is not supported"));
        }
        // A non-negative integer (Core §3.1.2.1): digits only; one too large for u64 is no limit.
        let max_age = match r.max_age.as_deref() {
            None => None,
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => Some(m.parse().unwrap_or(u64::MAX)),
            Some(_) => return Err(fail(ErrorCode::InvalidRequest, "max_age must be a number of seconds")),
        };
        let hinted_user = match r.id_token_hint.as_deref() {
            None => None,
            Some(hint) => Some(self.hinted_user(hint).ok_or_else(|| {
                fail(
                    ErrorCode::InvalidRequest,
                    "id_token_hint is not an ID token Sigil issued",
                )
            })?),
        };
        if r.dpop_jkt.as_deref().is_some_and(|j| !is_sha256_b64url(j)) {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "dpop_jkt is not a base64url SHA-256 JWK thumbprint",
            ));
        }
        let challenge = match (r.code_challenge.as_deref(), r.code_challenge_method.as_deref()) {
            (None, _) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge is required (PKCE, RFC 7636)",
                ));
            }
            (Some(_), Some("S256")) => r.code_challenge.clone().unwrap_or_default(),
            (Some(_), Some("plain") | None) => {
                return Err(fail(ErrorCode::InvalidRequest, "code_challenge_method must be S256"));
            }
            (Some(_), Some(_)) => return Err(fail(ErrorCode::InvalidRequest, "unknown code_challenge_method")),
        };
        if !is_sha256_b64url(&challenge) {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "code_challenge is not a base64url SHA-256",
            ));
        }
        // RFC 6749 §4.1.2.1: a client that may not redeem a code is told so here, before the
        // user is asked to sign in and consent to something that could never be used.
        if let Err(e) = client.ensure_grant("authorization_code") {
            return Err(fail(e.code, &e.description));
        }
        let status = agent.effective_status(self.clock.now());
        if status != IdentityStatus::Active {
            return Err(fail(
                ErrorCode::AccessDenied,
                &format!("the agent behind this client is {status}"),
            ));
        }
        // `openid` asks for an ID token about the user; the other scopes are the resource's.
        let raw_scope = r.scope.as_deref().unwrap_or_default();
        let openid = raw_scope.split(' ').any(|s| s == OPENID);
        let uri = match r.resource.as_slice() {
            [one] => Some(ResourceUri::parse(one).map_err(|e| fail(ErrorCode::InvalidTarget, &e.to_string()))?),
            // An OpenID Connect relying party that only signs its user in names no API
            // (RFC 8707 makes `resource` optional); any other request must say where the
            // agent would act.
            [] if openid => None,
            [] => {
                return Err(fail(
                    ErrorCode::InvalidTarget,
                    "resource is required: name the API (RFC 8707), or ask for scope openid to sign the user in",
                ));
            }
            _ => return Err(fail(ErrorCode::InvalidTarget, "one resource per authorization")),
        };
        if uri.as_ref().is_some_and(|u| self.is_sign_in_only(u.as_str())) {
            return Err(fail(
                ErrorCode::InvalidTarget,
                "the UserInfo endpoint is not an API: leave resource out to sign the user in",
            ));
        }
        let resource = match uri {
            None => None,
            Some(uri) => Some(
                self.reads
                    .resource(&ResourceRef::Uri(uri))
                    .await
                    .map_err(|e| AuthorizeFailure::Show(e.into()))?
                    .ok_or_else(|| fail(ErrorCode::InvalidTarget, "the resource is not registered"))?,
            ),
        };
        // Core §3.1.2.1 makes redirect_uri REQUIRED in an OpenID Connect request, even where
        // OAuth 2.1 would fall back to the one registered URI. Not a redirected error: the
        // redirect URI is what is missing (§3.1.2.6).
        if openid && !given {
            return Err(show("redirect_uri is required in an OpenID Connect request"));
        }
        // Checked before the user signs in: a client registered for an algorithm that a key
        // rotation has since retired would otherwise fail only at the token endpoint.
        if openid && self.keys.id_token_key(client.id_token_alg()).is_none() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                &format!(
                    "the client's id_token_signed_response_alg {} is no longer signed here; update its registration",
                    client.id_token_alg().as_str()
                ),
            ));
        }
        if r.nonce.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(fail(ErrorCode::InvalidRequest, "nonce is too long"));
        }
        let scopes = match &resource {
            Some(resource) => {
                requested_resource_scopes(raw_scope, resource).map_err(|e| fail(e.code, &e.description))?
            }
            None => super::sign_in::sign_in_scopes(raw_scope, client.registered_scope().as_ref())
                .map_err(|e| fail(e.code, &e.description))?,
        };
        // Sigil keeps no sign-in session: every authorization asks the user to sign in, so a
        // request that forbids any page cannot be satisfied. `none` with another value is
        // contradictory (Core §3.1.2.1).
        if let Some(prompt) = r.prompt.as_deref() {
            let values: Vec<&str> = prompt.split(' ').filter(|v| !v.is_empty()).collect();
            if values.contains(&"none") {
                return Err(if values.len() > 1 {
                    fail(
                        ErrorCode::InvalidRequest,
                        "prompt=none cannot be combined with other values",
                    )
                } else {
                    fail(ErrorCode::LoginRequired, "prompt=none, but the user must sign in")
                });
            }
        }
        let agent_owner = self
            .reads
            .username(&agent.owner)
            .await
            .map_err(|e| AuthorizeFailure::Show(e.into()))?;
        Ok(Authorization {
            client,
            agent,
            agent_owner,
            resource,
            scopes,
            redirect_uri,
            redirect_uri_given: given,
            state: r.state.clone(),
            code_challenge: challenge,
            openid,
            nonce: r.nonce.clone(),
            dpop_jkt: r.dpop_jkt.clone(),
            hinted_user,
            max_age,
        })
    }

    /// The `sub` of an ID token Sigil signed (Core §3.1.2.1: it may have expired).
    fn hinted_user(&self, hint: &str) -> Option<String> {
        let verified = sigil_crypto::verify_compact(hint, &self.keys.jwks()).ok()?;
        if verified.typ.as_deref() != Some("JWT") {
            return None; // an access token or an ID-JAG names no one who signs in here
        }
        let claims: serde_json::Value = serde_json::from_slice(&verified.payload).ok()?;
        if claims.get("iss").and_then(serde_json::Value::as_str) != Some(self.cfg.issuer.as_str()) {
            return None;
        }
        claims.get("sub").and_then(serde_json::Value::as_str).map(str::to_owned)
    }

    /// Checks a user's password. Unknown users cost the same hash as known ones.
    pub async fn login(&self, username: &str, password: &str, request_id: Option<&str>) -> Result<User, OAuthError> {
        let key = username
            .trim()
            .to_ascii_lowercase()
            .chars()
            .take(64)
            .collect::<String>();
        if self.sign_ins.is_locked(&key, self.clock.now()) {
            self.record_failed_sign_in(username, "too many failed sign-ins", request_id)
                .await?;
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                "too many failed sign-ins for this user; try again later",
            ));
        }
        let user = match Username::parse(username) {
            Ok(u) => self.store.get_user(&UserRef::Username(u)).await?,
            Err(_) => None,
        };
        let hash = match &user {
            Some(u) => self.store.user_password_hash(&u.id).await?,
            None => None,
        };
        let ok = self.check_password(password, hash.clone()).await;
        match user {
            Some(u) if ok && hash.is_some() && u.status == UserStatus::Active => Ok(u),
            _ => {
                self.sign_ins.failed(&key, self.clock.now());
                self.record_failed_sign_in(
                    username,
                    "wrong username or password, or the user is not active",
                    request_id,
                )
                .await?;
                Err(OAuthError::new(ErrorCode::AccessDenied, "wrong username or password"))
            }
        }
    }

    async fn record_failed_sign_in(
        &self,
        username: &str,
        why: &str,
        request_id: Option<&str>,
    ) -> Result<(), OAuthError> {
        let record = AuditRecord::new(
            self.clock.now(),
            EventType::UserLoginFailed,
            &Principal::from_stored("anonymous".into()),
            request_id,
        )
        .outcome(Outcome::Denied, why)
        .detail("username", username.chars().take(64).collect::<String>());
        self.store.commit(ChangeSet::new().audit(record)).await?;
        Ok(())
    }

    /// The requested scopes the policy lets this user delegate to this agent (narrowing is
    /// allowed, RFC 6749 §3.3; the token response names what was granted). The consent page
    /// shows exactly these; none at all is `access_denied`.
    ///
    /// A sign-in only asks no policy: the agent gets no authority anywhere, and what the user
    /// shares about herself (her profile, her email) is hers to consent to.
    pub async fn consentable_scopes(
        &self,
        a: &Authorization,
        user: &User,
    ) -> Result<(ScopeSet, Option<crate::audit::PolicyEvidence>), AuthorizeFailure> {
        let Some(resource) = &a.resource else {
            return Ok((a.scopes.clone(), None));
        };
        let chain = [
            ChainPrincipal::User(user),
            ChainPrincipal::Identity {
                identity: &a.agent,
                owner: &a.agent_owner,
            },
        ];
        let denied = |d: String| AuthorizeFailure::redirect(a, OAuthError::new(ErrorCode::AccessDenied, d));
        let (scopes, evidence) = self
            .permitted_scopes(
                &chain,
                &a.client,
                resource,
                &ScopeSet::default(),
                "authorization_code",
                false,
                self.clock.now(),
            )
            .await
            .map_err(|e| denied(e.description))?;
        let granted = ScopeSet::new(a.scopes.iter().filter(|s| scopes.contains(s)).cloned())
            .map_err(|e| AuthorizeFailure::redirect(a, OAuthError::invalid_scope(e.to_string())))?;
        if granted.is_empty() {
            return Err(denied("the policy permits none of the requested scopes".into()));
        }
        Ok((granted, Some(evidence)))
    }

    /// Argon2id off the async workers, at most [`PASSWORD_CHECKS`] at a time: a flood of sign-in
    /// attempts queues here instead of stalling every other endpoint.
    async fn check_password(&self, password: &str, hash: Option<String>) -> bool {
        let Ok(_slot) = self.password_checks.acquire().await else {
            return false;
        };
        let password = zeroize::Zeroizing::new(password.to_owned());
        tokio::task::spawn_blocking(move || {
            sigil_crypto::verify_password(&password, hash.as_deref().unwrap_or_else(|| sigil_crypto::dummy_hash()))
        })
        .await
        .unwrap_or(false)
    }

    /// The user consented: asks the policy which of the scopes the user and the agent may hold
    /// together, stores a code for them and returns the redirect to send the browser to.
    /// `signed_in_at` (from the login ticket) becomes the ID token's `auth_time`.
    pub async fn grant_authorization(
        &self,
        a: &Authorization,
        user: &User,
        signed_in_at: Timestamp,
        ticket: &str,
        request_id: Option<&str>,
    ) -> Result<String, AuthorizeFailure> {
        let now = self.clock.now();
        if a.hinted_user.as_ref().is_some_and(|h| *h != user.id.to_string()) {
            return Err(AuthorizeFailure::redirect(
                a,
                OAuthError::new(
                    ErrorCode::LoginRequired,
                    "the user who signed in is not the one id_token_hint names",
                ),
            ));
        }
        let (granted, evidence) = self.consentable_scopes(a, user).await?;
        let code = sigil_crypto::random_token(CODE_PREFIX)
            .map_err(|_| AuthorizeFailure::redirect(a, OAuthError::unavailable()))?;
        let grant = Grant {
            handle_hash: self.secret_hash(&code),
            kind: GrantKind::Code,
            family_id: self.new_id("fam_", now),
            client_id: a.client.client_id.clone(),
            user_id: user.id.clone(),
            resource: self.audience_of(a.resource.as_deref()).to_owned(),
            scope: granted.to_oauth_string(),
            redirect_uri: a.redirect_uri_given.then(|| a.redirect_uri.clone()),
            code_challenge: Some(a.code_challenge.clone()),
            openid: a.openid,
            nonce: a.nonce.clone(),
            auth_time: signed_in_at,
            dpop_jkt: a.dpop_jkt.clone(),
            issued_at: now,
            expires_at: now.plus(CODE_TTL),
            used_at: None,
            family_revoked: false,
        };
        let mut record = AuditRecord::new(
            now,
            EventType::AuthorizationGranted,
            &Principal::from_stored(user.username.to_string()),
            request_id,
        );
        record.subject = Some(user.id.to_string());
        record.actors = vec![a.agent.id.to_string()];
        record.client_id = Some(a.client.client_id.clone());
        record.target = Some(self.audience_target(a.resource.as_deref()));
        record.scopes = granted.iter().map(ToString::to_string).collect();
        record.policy = evidence;
        let record = record.detail("family", grant.family_id.as_str());
        // The login ticket is spent with the consent, so a resubmitted form gets no second code.
        let cs = ChangeSet::new()
            .change(Change::InsertGrant(grant))
            .change(spend_ticket(ticket, now))
            .audit(record);
        match self.store.commit(cs).await {
            Ok(()) => {}
            Err(crate::store::StoreError::Duplicate { .. }) => return Err(decided_already()),
            Err(e) => return Err(AuthorizeFailure::redirect(a, e.into())),
        }
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = &a.state {
            params.push(("state", s));
        }
        params.push(("iss", &self.cfg.issuer)); // RFC 9207
        Ok(redirect_with(&a.redirect_uri, &params))
    }

    /// The user declined: recorded, and the client told `access_denied`. The ticket is spent
    /// with the decision, so a resubmitted form (either way) gets no second answer.
    pub async fn deny_authorization(
        &self,
        a: &Authorization,
        user: &User,
        ticket: &str,
        request_id: Option<&str>,
    ) -> Result<String, AuthorizeFailure> {
        let mut record = AuditRecord::new(
            self.clock.now(),
            EventType::AuthorizationDenied,
            &Principal::from_stored(user.username.to_string()),
            request_id,
        )
        .outcome(Outcome::Denied, "the user declined");
        record.subject = Some(user.id.to_string());
        record.actors = vec![a.agent.id.to_string()];
        record.client_id = Some(a.client.client_id.clone());
        record.target = Some(self.audience_target(a.resource.as_deref()));
        let cs = ChangeSet::new()
            .change(spend_ticket(ticket, self.clock.now()))
            .audit(record);
        match self.store.commit(cs).await {
            Ok(()) => {}
            Err(crate::store::StoreError::Duplicate { .. }) => return Err(decided_already()),
            Err(e) => return Err(AuthorizeFailure::Show(e.into())),
        }
        Ok(self.error_redirect(
            a.redirect_uri.as_str(),
            a.state.as_deref(),
            &OAuthError::new(ErrorCode::AccessDenied, "the user declined"),
        ))
    }

    /// An error response to the client through the browser (RFC 6749 §4.1.2.1, RFC 9207 `iss`).
    pub fn error_redirect(&self, redirect_uri: &str, state: Option<&str>, e: &OAuthError) -> String {
        let mut params = vec![
            ("error", e.code.as_str()),
            ("error_description", e.description.as_str()),
        ];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", &self.cfg.issuer));
        redirect_with(redirect_uri, &params)
    }

    // ---- CSRF tokens and login tickets ----

    /// The CSRF token the forms carry for a browser whose cookie holds `nonce`.
    pub fn csrf_token(&self, nonce: &str) -> String {
        self.forms.hash_hex(format!("csrf\0{nonce}").as_bytes())
    }

    pub fn csrf_matches(&self, nonce: Option<&str>, token: Option<&str>) -> bool {
        match (nonce, token) {
            (Some(n), Some(t)) if !n.is_empty() => {
                sigil_crypto::constant_time_eq(self.csrf_token(n).as_bytes(), t.as_bytes())
            }
            _ => false,
        }
    }

    /// After a good password: a ticket naming the user, bound to this request and this browser,
    /// valid for [`TICKET_TTL_SECS`].
    pub fn login_ticket(&self, user: &UserId, request: &str, nonce: &str) -> String {
        let exp = self.clock.now().unix_seconds() + TICKET_TTL_SECS;
        let mac = self.ticket_mac(user.as_str(), exp, request, nonce);
        format!("{user}.{exp}.{mac}")
    }

    /// The user a ticket names and when they signed in, if the ticket is genuine, current and
    /// for this request and browser.
    pub fn check_ticket(&self, ticket: &str, request: &str, nonce: &str) -> Option<(UserId, Timestamp)> {
        let mut parts = ticket.splitn(3, '.');
        let (user, exp, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let exp: i64 = exp.parse().ok()?;
        let expected = self.ticket_mac(user, exp, request, nonce);
        if exp <= self.clock.now().unix_seconds()
            || !sigil_crypto::constant_time_eq(expected.as_bytes(), mac.as_bytes())
        {
            return None;
        }
        let signed_in_at = Timestamp::from_unix_seconds(exp - TICKET_TTL_SECS);
        Some((UserId::parse(user).ok()?, signed_in_at))
    }

    /// Whether the sign-in is older than the request's `max_age` allows, so the user must sign
    /// in again before consenting (Core §3.1.2.1).
    pub fn sign_in_too_old(&self, a: &Authorization, signed_in_at: Timestamp) -> bool {
        let age = self.clock.now().unix_seconds() - signed_in_at.unix_seconds();
        a.max_age.is_some_and(|m| u64::try_from(age).unwrap_or(0) > m)
    }

    fn ticket_mac(&self, user: &str, exp: i64, request: &str, nonce: &str) -> String {
        self.forms
            .hash_hex(format!("ticket\0{user}\0{exp}\0{nonce}\0{request}").as_bytes())
    }

    /// A user by id, for the consent step.
    pub async fn active_user(&self, id: &UserId) -> Result<Option<Arc<User>>, OAuthError> {
        Ok(self
            .reads
            .user(&UserRef::Id(id.clone()))
            .await?
            .filter(|u| u.status == UserStatus::Active))
    }

    /// Sets a user's password (admin action).
    pub async fn set_password(
        &self,
        ctx: &crate::registry::Ctx,
        user: &UserRef,
        password: &str,
    ) -> Result<(), crate::registry::RegistryError> {
        use crate::registry::RegistryError;
        if password.chars().count() < 12 || password.len() > sigil_crypto::MAX_PASSWORD_BYTES {
            return Err(RegistryError::invalid("password", "use 12 to 1024 characters"));
        }
        let u = self
            .store
            .get_user(user)
            .await?
            .ok_or_else(|| RegistryError::not_found("user", user.to_string()))?;
        let hash = sigil_crypto::hash_password(password)
            .map_err(|e| RegistryError::Store(crate::store::StoreError::Unavailable(e.to_string())))?;
        let now = self.clock.now();
        let record = AuditRecord::new(
            now,
            EventType::UserPasswordSet,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("user", u.id.as_str(), u.username.as_str());
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::SetUserPassword {
                        user_id: u.id,
                        hash,
                        at: now,
                    })
                    .audit(record),
            )
            .await?;
        Ok(())
    }
}

/// Marks a login ticket used, in the shared single-use table (keyed apart from client
/// assertions by a client id no client can have).
fn spend_ticket(ticket: &str, now: Timestamp) -> Change {
    Change::RecordAssertion {
        client_id: "sigil:login-ticket".into(),
        jti: sigil_crypto::b64url(&sigil_crypto::sha256(ticket.as_bytes())),
        expires_at: now.unix_seconds() + TICKET_TTL_SECS,
    }
}

/// The scopes an authorization request asks of its resource: those it defines, all of them
/// when the request names none.
fn requested_resource_scopes(raw_scope: &str, resource: &Resource) -> Result<ScopeSet, OAuthError> {
    let requested = ScopeSet::parse_oauth(&resource_scope_values(raw_scope, &resource.scopes).join(" "))
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    if let Some(s) = requested.iter().find(|s| !resource.scopes.contains(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "the resource does not define scope {s}"
        )));
    }
    Ok(if requested.is_empty() {
        resource.scopes.clone()
    } else {
        requested
    })
}

pub(super) fn resource_target(r: &Resource) -> Target {
    Target {
        kind: "resource".into(),
        id: Some(r.id.to_string()),
        name: Some(r.name.to_string()),
        resource: Some(r.uri.to_string()),
        audience: Some(r.uri.to_string()),
    }
}

/// A base64url SHA-256 digest without padding: a PKCE S256 challenge or a JWK thumbprint.
fn is_sha256_b64url(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::redirect_matches;

    /// Loopback redirect URIs match on any port and on nothing else: the rest is compared as
    /// the string it is (RFC 8252 §7.3, RFC 9700 §2.1).
    #[test]
    fn loopback_redirect_uris_differ_only_in_the_port() {
        let registered = "http://127.0.0.1:18611/cb";
        for same in [
            registered,
            "http://127.0.0.1:5/cb",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:65535/cb",
        ] {
            assert!(redirect_matches(registered, same), "{same}");
        }
        assert!(redirect_matches("http://[::1]/cb?x=1", "http://[::1]:8080/cb?x=1"));
        for other in [
            "http://evil@127.0.0.1:18611/cb",
            "http://127.0.0.1:18611/x/../cb",
            "http://127.1:18611/cb",
            "http://0x7f000001:18611/cb",
            "http://127.0.0.1.:18611/cb",
            "HTTP://127.0.0.1:18611/cb",
            " http://127.0.0.1:18611/cb",
            "http://127.0.0.1:0/cb",
            "http://127.0.0.1:018611/cb",
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:18611\\cb",
            "http://127.0.0.1:18611/cb#f",
            "http://127.0.0.1:18611/cb/",
            "http://127.0.0.1:18611/cb?x",
            "http://127.0.0.10:18611/cb",
        ] {
            assert!(!redirect_matches(registered, other), "{other}");
        }
        // Other redirect URIs match exactly, the port included.
        assert!(!redirect_matches(
            "https://app.example.com/cb",
            "https://app.example.com:443/cb"
        ));
        assert!(!redirect_matches("http://localhost:1/cb", "http://localhost:2/cb"));
    }
}
