//! Client authentication at the token, introspection and revocation endpoints.

use async_trait::async_trait;
use serde::Deserialize;
use sigil_crypto::{ClientAlg, PublicJwks, b64url_decode};

use super::client::{ClientAuthMethod, OAuthClient};
use super::error::OAuthError;
use crate::audit::AuthEvidence;

/// RFC 7523 §2.2.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far in the future a client assertion's `exp` may be. Short assertions are better, but
/// widely used clients default to an hour (authlib does), and the replay cache keeps each `jti`
/// only until its `exp`, so an hour bounds that cache too.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;
/// Clock skew tolerated on `iat`/`nbf`.
pub const SKEW_SECS: i64 = 60;

/// What the request carried to authenticate the client, before checking any of it.
#[derive(Default, Clone)]
pub struct PresentedCredentials {
    /// From `Authorization: Basic` (already form-url-decoded, RFC 6749 §2.3.1).
    pub basic: Option<(String, String)>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
    /// The certificate the client presented in the TLS handshake (DER), if it used mutual TLS.
    pub tls_client_cert: Option<Vec<u8>>,
}

impl std::fmt::Debug for PresentedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Which hosts a `jwks_uri` may be fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFrom {
    /// One the operator registered (a client or trusted issuer made through the admin API):
    /// internal hosts are the operator's choice.
    AnyHost,
    /// One a registrant wrote (dynamic client registration): public addresses only, as for
    /// client metadata documents (loopback when those allow it), or Sigil would connect to
    /// internal hosts on anyone's behalf.
    PublicHosts { allow_loopback: bool },
}

/// Fetches a party's JWKS from its registered `jwks_uri` (an adapter does the HTTP and the
/// caching). `kid`: the key id the JWS to verify names; a cached set without it may be fetched
/// again, since the party may have rotated its keys (OIDC Core §10.1.1).
#[async_trait]
pub trait JwksFetcher: Send + Sync + std::fmt::Debug {
    async fn fetch(&self, uri: &str, kid: Option<&str>, from: FetchFrom) -> Result<PublicJwks, String>;
}

/// The `kid` in a compact JWS's header, if it has one.
pub fn header_kid(jws: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Kid {
        kid: Option<String>,
    }
    decode_part::<Kid>(jws, 0).ok()?.kid
}

/// A client that proved itself, with the evidence for the audit trail and, for an assertion, its
/// `jti` and expiry, which the caller records as used in the same commit as the action.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub client: std::sync::Arc<OAuthClient>,
    pub evidence: AuthEvidence,
    pub assertion_jti: Option<(String, i64)>,
    /// With mutual TLS: the certificate's SHA-256 thumbprint (base64url), which the issued
    /// access token is bound to (`cnf.x5t#S256`, RFC 8705 §3).
    pub cert_thumbprint: Option<String>,
}

#[derive(Deserialize)]
struct AssertionHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    /// RFC 7515 §4.1.11: Sigil understands no extension, so any `crit` makes the JWS invalid.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "super::numeric_date::optional")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "super::numeric_date::optional")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "super::numeric_date::optional")]
    nbf: Option<i64>,
    jti: Option<String>,
}

/// Which method the request used; more than one is an error (RFC 6749 §2.3).
pub enum Method<'a> {
    Basic(&'a str, &'a str),
    Post(&'a str, &'a str),
    Assertion(&'a str),
    /// Mutual TLS with an X509-SVID (RFC 8705 `tls_client_auth`, the SPIFFE ID as the name).
    Tls(&'a [u8]),
}

impl std::fmt::Debug for Method<'_> {
    // Never print secrets or assertions.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic(id, _) => write!(f, "Basic({id}, …)"),
            Self::Post(id, _) => write!(f, "Post({id}, …)"),
            Self::Assertion(_) => f.write_str("Assertion(…)"),
            Self::Tls(_) => f.write_str("Tls(…)"),
        }
    }
}

pub fn method(p: &PresentedCredentials) -> Result<Method<'_>, OAuthError> {
    let used =
        usize::from(p.basic.is_some()) + usize::from(p.client_secret.is_some()) + usize::from(p.assertion.is_some());
    if used > 1 {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method was used",
        ));
    }
    if let Some((id, secret)) = &p.basic {
        if p.client_id.as_deref().is_some_and(|c| c != id) {
            return Err(OAuthError::invalid_request(
                "client_id does not match the Authorization header",
            ));
        }
        return Ok(Method::Basic(id, secret));
    }
    if let Some(secret) = &p.client_secret {
        let id = p
            .client_id
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("client_secret without client_id"))?;
        return Ok(Method::Post(id, secret));
    }
    if let Some(a) = &p.assertion {
        if p.assertion_type.as_deref() != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        return Ok(Method::Assertion(a));
    }
    if let Some(cert) = &p.tls_client_cert {
        return Ok(Method::Tls(cert));
    }
    Err(OAuthError::invalid_client("client authentication is required"))
}

/// Reads the unverified `iss`/`sub` of an assertion to find which client it claims to be.
pub fn assertion_client_id(assertion: &str) -> Result<String, OAuthError> {
    match assertion_signer(assertion)? {
        AssertionSigner::Client(id) => Ok(id),
        AssertionSigner::Workload(_) => Err(OAuthError::invalid_client(
            "the client assertion must have iss = sub = client_id",
        )),
    }
}

/// Who an assertion says it comes from (unverified, to route it to the right check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionSigner {
    /// A registered client: `iss` = `sub` = its client_id (RFC 7523 §3).
    Client(String),
    /// A workload's JWT-SVID: `sub` is its SPIFFE ID (and `iss`, if any, the same or absent).
    Workload(String),
}

/// Reads an assertion's `iss` and `sub` once and says which kind of signer it names.
pub fn assertion_signer(assertion: &str) -> Result<AssertionSigner, OAuthError> {
    let claims = decode_part::<AssertionClaims>(assertion, 1)?;
    match (claims.iss, claims.sub) {
        (iss, Some(sub)) if sub.starts_with("spiffe://") && iss.as_ref().is_none_or(|i| *i == sub) => {
            Ok(AssertionSigner::Workload(sub))
        }
        (Some(iss), Some(sub)) if iss == sub => Ok(AssertionSigner::Client(iss)),
        _ => Err(OAuthError::invalid_client(
            "the client assertion must have iss = sub = client_id",
        )),
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(jwt: &str, index: usize) -> Result<T, OAuthError> {
    let bad = || OAuthError::invalid_client("malformed client assertion");
    if jwt.len() > 8192 || jwt.split('.').count() != 3 {
        return Err(bad());
    }
    let part = jwt.split('.').nth(index).ok_or_else(bad)?;
    serde_json::from_slice(&b64url_decode(part).map_err(|_| bad())?).map_err(|_| bad())
}

/// Verifies a `private_key_jwt` assertion (RFC 7523 §3) for `client`: signature with one of its
/// keys, `iss` = `sub` = client id, `aud` naming us, a short `exp`, and a `jti` (whose single
/// use the caller enforces by recording it).
pub fn verify_assertion(
    assertion: &str,
    client: &OAuthClient,
    keys: &PublicJwks,
    audiences: &[&str],
    now: i64,
) -> Result<(AuthEvidence, (String, i64)), OAuthError> {
    let header: AssertionHeader = decode_part(assertion, 0)?;
    if header.crit.is_some() {
        return Err(OAuthError::invalid_client(
            "the client assertion lists critical header extensions, which are not supported (RFC 7515 section 4.1.11)",
        ));
    }
    // Explicit typing (RFC 8725 section 3.11): another kind of JWT is no client assertion.
    if header.typ.as_deref().is_some_and(|t| {
        !sigil_crypto::typ_is(Some(t), "JWT") && !sigil_crypto::typ_is(Some(t), "client-authentication+jwt")
    }) {
        return Err(OAuthError::invalid_client(
            "the client assertion's typ must be JWT or client-authentication+jwt",
        ));
    }
    let alg = ClientAlg::parse(&header.alg).ok_or_else(|| {
        OAuthError::invalid_client(format!(
            "client assertion algorithm {:?} is not accepted; use one of {:?}",
            header.alg,
            ClientAlg::ALL
        ))
    })?;
    let mut parts = assertion.rsplitn(2, '.');
    let (Some(sig), Some(signing_input)) = (parts.next(), parts.next()) else {
        return Err(OAuthError::invalid_client("malformed client assertion"));
    };
    let sig = b64url_decode(sig).map_err(|_| OAuthError::invalid_client("malformed client assertion"))?;
    let candidates: Vec<_> = keys
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .filter(|k| k.supports(alg))
        .collect();
    if candidates.is_empty() {
        return Err(OAuthError::invalid_client(
            "no registered key of the client matches the assertion's kid and alg",
        ));
    }
    let key = candidates
        .into_iter()
        .find(|k| k.verify(alg, signing_input.as_bytes(), &sig))
        .ok_or_else(|| OAuthError::invalid_client("the client assertion's signature does not verify"))?;

    let c: AssertionClaims = decode_part(assertion, 1)?;
    if c.iss.as_deref() != Some(client.client_id.as_str()) || c.sub.as_deref() != Some(client.client_id.as_str()) {
        return Err(OAuthError::invalid_client(
            "the client assertion must have iss = sub = client_id",
        ));
    }
    let aud_ok = match &c.aud {
        Some(serde_json::Value::String(a)) => audiences.contains(&a.as_str()),
        // Every audience must be this server: an assertion also meant for another party could be
        // replayed here by it (draft-ietf-oauth-rfc7523bis).
        Some(serde_json::Value::Array(list)) => {
            !list.is_empty() && list.iter().all(|a| a.as_str().is_some_and(|a| audiences.contains(&a)))
        }
        _ => false,
    };
    if !aud_ok {
        return Err(OAuthError::invalid_client(
            "the client assertion's aud must be the issuer or the endpoint URL, and nothing else",
        ));
    }
    let exp = c
        .exp
        .ok_or_else(|| OAuthError::invalid_client("the client assertion has no exp"))?;
    if exp <= now {
        return Err(OAuthError::invalid_client("the client assertion has expired"));
    }
    if exp > now + MAX_ASSERTION_LIFETIME_SECS + SKEW_SECS {
        return Err(OAuthError::invalid_client(
            "the client assertion's exp is too far in the future",
        ));
    }
    if c.iat.is_some_and(|iat| iat > now + SKEW_SECS) || c.nbf.is_some_and(|nbf| nbf > now + SKEW_SECS) {
        return Err(OAuthError::invalid_client("the client assertion is not valid yet"));
    }
    if let Some(why) = super::jti::unusable(c.jti.as_deref()) {
        return Err(OAuthError::invalid_client(format!("the client assertion {why}")));
    }
    let jti = c.jti.unwrap_or_default();
    let evidence = AuthEvidence {
        method: ClientAuthMethod::PrivateKeyJwt.as_str().into(),
        key_id: key.kid.clone().or_else(|| key.thumbprint().ok()),
        jti: None,
        issuer: None,
        cert_fingerprint: None,
    };
    Ok((evidence, (jti, exp)))
}
