//! OAuth clients. Each belongs to exactly one agent or workload identity.

use sigil_crypto::PublicJwks;
use sigil_types::{IdentityId, ParseError, Timestamp};

/// How a client proves itself at the token, introspection and revocation endpoints
/// (RFC 7591 `token_endpoint_auth_method` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    PrivateKeyJwt,
    ClientSecretBasic,
    ClientSecretPost,
}

impl ClientAuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "private_key_jwt" => Ok(Self::PrivateKeyJwt),
            "client_secret_basic" => Ok(Self::ClientSecretBasic),
            "client_secret_post" => Ok(Self::ClientSecretPost),
            _ => Err(ParseError {
                what: "token_endpoint_auth_method",
                why: "expected private_key_jwt, client_secret_basic or client_secret_post".into(),
            }),
        }
    }

    /// A secret client may present its secret either way (both are the same credential); a key
    /// client never may: it is barred from secrets.
    pub const fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
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
