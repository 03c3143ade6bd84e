//! OAuth clients. Each belongs to exactly one agent or workload identity.

use sigil_crypto::{Algorithm, PublicJwks};
use sigil_types::{IdentityId, ParseError, Timestamp};

/// How a client proves itself at the token, introspection and revocation endpoints
/// (RFC 7591 `token_endpoint_auth_method` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    PrivateKeyJwt,
    ClientSecretBasic,
    ClientSecretPost,
    /// A public client (a browser or native app of an agent): no credential, so it may only use
    /// the authorization code grant with PKCE (OAuth 2.1 §2.1).
    None,
}

impl ClientAuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "private_key_jwt" => Ok(Self::PrivateKeyJwt),
            "client_secret_basic" => Ok(Self::ClientSecretBasic),
            "client_secret_post" => Ok(Self::ClientSecretPost),
            "none" => Ok(Self::None),
            _ => Err(ParseError {
                what: "token_endpoint_auth_method",
                why: "expected private_key_jwt, client_secret_basic, client_secret_post or none".into(),
            }),
        }
    }

    /// A secret client may present its secret either way (both are the same credential); a key
    /// client never may: it is barred from secrets.
    pub const fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

/// Every grant a client can be allowed, in the order metadata lists them.
const GRANTS: [&str; 5] = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    TOKEN_EXCHANGE_GRANT,
    JWT_BEARER_GRANT,
];

/// The client metadata naming how its ID tokens are signed (OpenID Connect Registration §2).
pub const ID_TOKEN_ALG_FIELD: &str = "id_token_signed_response_alg";

/// Checks a client's `id_token_signed_response_alg` against the algorithms Sigil signs ID tokens
/// with now; an algorithm Sigil cannot sign with is refused at registration, not at sign-in.
pub fn check_id_token_alg(
    metadata: &serde_json::Map<String, serde_json::Value>,
    supported: &[Algorithm],
) -> Result<(), String> {
    match metadata.get(ID_TOKEN_ALG_FIELD) {
        None => Ok(()),
        Some(serde_json::Value::String(a)) if Algorithm::parse(a).is_some_and(|a| supported.contains(&a)) => Ok(()),
        Some(_) => {
            let names: Vec<&str> = supported.iter().map(|a| a.as_str()).collect();
            Err(format!("{ID_TOKEN_ALG_FIELD} must be one of {}", names.join(", ")))
        }
    }
}

impl OAuthClient {
    /// The scope the client registered (RFC 7591 §2 `scope`: what it "can use when requesting
    /// access tokens"), if it registered one: no token it gets holds anything else.
    pub fn registered_scope(&self) -> Option<sigil_types::ScopeSet> {
        let scope = self.metadata.as_ref()?.get("scope")?.as_str()?;
        sigil_types::ScopeSet::parse_oauth(scope).ok()
    }

    /// The algorithm this client's ID tokens are signed with: the one it registered, else RS256,
    /// OpenID Connect's default.
    pub fn id_token_alg(&self) -> Algorithm {
        self.metadata
            .as_ref()
            .and_then(|m| m.get(ID_TOKEN_ALG_FIELD))
            .and_then(serde_json::Value::as_str)
            .and_then(Algorithm::parse)
            .unwrap_or(crate::keys::KeyRole::ID_TOKEN_ALGORITHM)
    }

    /// Whether the client may use `grant`: the code grant (and its refresh tokens) needs
    /// redirect URIs; the others need a confidential client the operator registered. A public
    /// client, or one described by a metadata document (unknown to the operator), acts only for
    /// users who sign in and consent, never on its own.
    /// A client that registered `grant_types` (RFC 7591 §2) gets those only, with
    /// `refresh_token` going with `authorization_code`.
    pub fn allows(&self, grant: &str) -> bool {
        self.can_use(grant) && self.registered_for(grant)
    }

    /// Whether the client's kind can use `grant` at all.
    fn can_use(&self, grant: &str) -> bool {
        match grant {
            "authorization_code" | "refresh_token" => !self.redirect_uris.is_empty(),
            "client_credentials" | TOKEN_EXCHANGE_GRANT | JWT_BEARER_GRANT => {
                self.auth_method != ClientAuthMethod::None && !super::metadata_doc::is_document_url(&self.client_id)
            }
            _ => false,
        }
    }

    /// Whether the registered metadata leaves `grant` in: all grants when it names none.
    fn registered_for(&self, grant: &str) -> bool {
        let Some(registered) = self
            .metadata
            .as_ref()
            .and_then(|m| m.get("grant_types"))
            .and_then(serde_json::Value::as_array)
        else {
            return true;
        };
        let named = |g: &str| registered.iter().any(|v| v.as_str() == Some(g));
        named(grant) || (grant == "refresh_token" && named("authorization_code"))
    }

    /// The grants this client may use (RFC 7591 `grant_types`).
    pub fn grant_types(&self) -> Vec<&'static str> {
        GRANTS.into_iter().filter(|g| self.allows(g)).collect()
    }

    /// `unauthorized_client` (RFC 6749 §5.2) unless the client may use `grant`.
    pub fn ensure_grant(&self, grant: &str) -> Result<(), super::error::OAuthError> {
        if self.allows(grant) {
            Ok(())
        } else {
            Err(super::error::OAuthError::new(
                super::error::ErrorCode::UnauthorizedClient,
                format!("this client may not use the {grant} grant"),
            ))
        }
    }
}

/// RFC 8693 §2.1 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523 §2.1 grant type (Sigil redeems ID-JAGs with it).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// What an administrator or a registration asks for when creating a client.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    pub method: Option<ClientAuthMethod>,
    pub jwks: Option<PublicJwks>,
    pub jwks_uri: Option<String>,
    pub dpop_required: bool,
    pub redirect_uris: Vec<String>,
    pub id_jag_audiences: Vec<IdJagAudience>,
}

/// An authorization server a client may get ID-JAGs for, and the client's identifier there
/// (the ID-JAG's `client_id`, draft-ietf-oauth-identity-assertion-authz-grant §3.1 and §5);
/// without one, the client's Sigil `client_id` is used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdJagAudience {
    pub audience: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Checks where a key-holding party's public keys come from: exactly one of a JWK Set (1 to 20
/// valid public keys) or an https `jwks_uri` (loopback http only when `allow_loopback`).
pub fn check_key_source(jwks: Option<&PublicJwks>, jwks_uri: Option<&str>, allow_loopback: bool) -> Result<(), String> {
    match (jwks, jwks_uri) {
        (Some(set), None) => {
            if set.keys.is_empty() || set.keys.len() > 20 {
                return Err("jwks must hold 1 to 20 public keys".into());
            }
            set.keys
                .iter()
                .try_for_each(|k| k.check().map_err(|e| format!("jwks: {e}")))?;
            // An assertion names its key by kid; two keys under one kid leave that ambiguous.
            let mut kids = std::collections::BTreeSet::new();
            if let Some(kid) = set
                .keys
                .iter()
                .filter_map(|k| k.kid.as_deref())
                .find(|kid| !kids.insert(*kid))
            {
                return Err(format!("jwks: two keys have the kid {kid:?}"));
            }
            if set.keys.iter().any(sigil_crypto::PublicJwk::for_signatures) {
                Ok(())
            } else {
                Err("jwks holds no key for verifying signatures".into())
            }
        }
        (None, Some(uri)) => {
            let u = url::Url::parse(uri).map_err(|e| format!("jwks_uri: {e}"))?;
            if u.fragment().is_some() {
                return Err("jwks_uri must not have a fragment".into());
            }
            let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if u.scheme() == "https" || (allow_loopback && loopback && u.scheme() == "http") {
                Ok(())
            } else {
                Err("jwks_uri must be https".into())
            }
        }
        _ => Err("give exactly one of jwks or jwks_uri".into()),
    }
}

/// `uris` in their order, each once (a repeated redirect URI matches nothing more).
pub fn without_repeats(mut uris: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    uris.retain(|u| seen.insert(u.clone()));
    uris
}

/// The parameters an authorization response appends to the redirect URI.
const RESPONSE_PARAMETERS: &[&str] = &["code", "state", "iss", "error", "error_description", "error_uri"];

/// Checks a redirect URI as OAuth 2.1 §2.3 and RFC 8252 §7 want it: absolute, no fragment, and
/// https unless it is a loopback address (native apps) or a private-use scheme.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > 2048 {
        return Err("a redirect URI is at most 2048 characters".into());
    }
    // The URL parser would strip these silently, and redirect URIs are compared exactly.
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "redirect URI {uri:?} must not contain spaces or control characters"
        ));
    }
    let u = url::Url::parse(uri).map_err(|e| format!("redirect URI {uri}: {e}"))?;
    // The browser is sent to the parsed form: one that differs (characters RFC 3986 does not
    // allow, an upper-case host, `..` segments) would redirect elsewhere than what is matched.
    if u.as_str() != uri && u.as_str() != format!("{uri}/") {
        return Err(format!(
            "redirect URI {uri} is not in normal form (it would be sent as {})",
            u.as_str()
        ));
    }
    if u.fragment().is_some() {
        return Err(format!("redirect URI {uri} must not have a fragment"));
    }
    // The authorization response adds these (RFC 6749 §4.1.2, RFC 9207): already in the URI,
    // they would make it ambiguous.
    if let Some((k, _)) = u.query_pairs().find(|(k, _)| RESPONSE_PARAMETERS.contains(&k.as_ref())) {
        return Err(format!(
            "redirect URI {uri} must not carry the response parameter {k} in its query"
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("redirect URI {uri} must not carry user information"));
    }
    if u.host_str().is_some_and(|h| h.contains('*')) {
        return Err(format!(
            "redirect URI {uri}: wildcards are not allowed (redirect URIs are matched exactly)"
        ));
    }
    let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!("redirect URI {uri} must be https (http only on loopback)")),
        "javascript" | "data" | "file" | "vbscript" => Err(format!("redirect URI scheme of {uri} is not allowed")),
        s if s.contains('.') => Ok(()), // private-use scheme such as com.example.app (RFC 8252 §7.1)
        _ => Err(format!(
            "redirect URI {uri} must be https, loopback http or a reverse-domain scheme"
        )),
    }
}

/// Prefix of generated client secrets, so secret scanners find leaked ones.
pub const CLIENT_SECRET_PREFIX: &str = "sigil_cs_";

#[derive(Debug, Clone, PartialEq)]
pub struct OAuthClient {
    pub client_id: String,
    pub identity_id: IdentityId,
    pub auth_method: ClientAuthMethod,
    /// Registered public keys (for `private_key_jwt`).
    pub jwks: Option<PublicJwks>,
    /// Or where to fetch them.
    pub jwks_uri: Option<String>,
    /// Keyed hash of the generated secret (never the secret).
    pub secret_hash: Option<String>,
    /// Tokens must be DPoP-bound (RFC 9449).
    pub dpop_required: bool,
    /// Keyed hash of the RFC 7592 registration access token (dynamically registered clients).
    pub registration_token_hash: Option<String>,
    /// The client metadata as registered (RFC 7591 §2), for RFC 7592 reads.
    pub metadata: Option<serde_json::Value>,
    /// Where authorization responses may be sent, matched exactly (OAuth 2.1 §2.3.1); empty for
    /// a client that does not use the authorization code grant.
    pub redirect_uris: Vec<String>,
    /// The authorization servers (their issuer identifiers) Sigil may address Identity
    /// Assertion JWT Authorization Grants to for this client; empty: none.
    pub id_jag_audiences: Vec<IdJagAudience>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub version: i64,
}

/// Prefix of initial access tokens for dynamic registration.
pub const REGISTRATION_TOKEN_PREFIX: &str = "sigil_iat_";
/// Prefix of RFC 7592 registration access tokens.
pub const REGISTRATION_ACCESS_PREFIX: &str = "sigil_rat_";

/// An initial access token (RFC 7591 §3): lets whoever holds it register clients owned by
/// `owner`, under `identity` if given, else each under a new agent with an empty ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub id: String,
    pub token_hash: String,
    pub owner: sigil_types::UserId,
    pub identity: Option<IdentityId>,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub created_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, method: ClientAuthMethod, redirect: bool) -> OAuthClient {
        OAuthClient {
            client_id: id.into(),
            identity_id: IdentityId::parse("idn_00000000000000000000000000").unwrap_or_else(|_| unreachable!()),
            auth_method: method,
            jwks: None,
            jwks_uri: None,
            secret_hash: None,
            dpop_required: false,
            registration_token_hash: None,
            metadata: None,
            redirect_uris: if redirect {
                vec!["https://app.example.com/cb".into()]
            } else {
                vec![]
            },
            id_jag_audiences: vec![],
            created_at: Timestamp::from_unix_seconds(0),
            created_by: "test".into(),
            version: 1,
        }
    }

    #[test]
    fn grants_follow_the_kind_of_client() {
        let document = client("https://app.example.com/c.json", ClientAuthMethod::PrivateKeyJwt, true);
        assert_eq!(document.grant_types(), vec!["authorization_code", "refresh_token"]);
        assert!(document.ensure_grant("client_credentials").is_err());
        assert!(document.ensure_grant(JWT_BEARER_GRANT).is_err());
        let public = client("cli_x", ClientAuthMethod::None, true);
        assert!(public.ensure_grant(TOKEN_EXCHANGE_GRANT).is_err());
        let confidential = client("cli_y", ClientAuthMethod::ClientSecretBasic, false);
        assert!(confidential.ensure_grant("client_credentials").is_ok());
        assert!(confidential.ensure_grant("authorization_code").is_err());
    }

    #[test]
    fn redirect_uris_are_checked_at_registration() {
        for ok in [
            "https://app.example.com/cb",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:8765/callback",
            "http://localhost:3000/oauth/callback?app=1",
            "https://app.example.com",
            "com.example.app:/cb",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://user:pw@app.example.com/cb",
            "https://user@app.example.com/cb",
            "https://*.example.com/cb",
            "http://app.example.com/cb",
            "https://app.example.com/cb#x",
            " https://app.example.com/cb",
            "javascript:alert(1)",
            "https://app.example.com/\"x",
            "https://App.Example.com/cb",
            "https://app.example.com/a/../cb",
            "https://app.example.com/cb?code=evil",
            "https://app.example.com/cb?x=1&state=evil",
            "https://app.example.com/cb?iss=https://evil.example",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
