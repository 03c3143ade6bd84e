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
    pub created_at: Timestamp,
    pub created_by: String,
    pub version: i64,
}
