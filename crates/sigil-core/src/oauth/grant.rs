//! Delegated grants: authorization codes (single use, RFC 6749 §4.1.2) and refresh tokens
//! (rotated on every use, OAuth 2.1 §4.3.1). Both belong to a *family*: the one authorization a
//! user gave a client. Presenting a used code or a rotated refresh token again is taken as theft
//! and revokes the whole family, including the access tokens it produced (RFC 9700 §4.14.2).

use sigil_types::{Timestamp, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    Code,
    Refresh,
}

impl GrantKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Refresh => "refresh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "code" => Some(Self::Code),
            "refresh" => Some(Self::Refresh),
            _ => None,
        }
    }
}

/// One code or refresh token. The value handed out is never stored, only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub handle_hash: String,
    pub kind: GrantKind,
    pub family_id: String,
    pub client_id: String,
    pub user_id: UserId,
    /// The resource (RFC 8707) the user consented to.
    pub resource: String,
    /// The consented scopes, space-separated.
    pub scope: String,
    /// Codes: the redirect URI the code was sent to, which the token request must repeat.
    pub redirect_uri: Option<String>,
    /// Codes: the PKCE S256 challenge (RFC 7636 §4.2).
    pub code_challenge: Option<String>,
    /// The user asked for `openid`: token responses carry an OpenID Connect ID token.
    pub openid: bool,
    /// Codes: the OpenID Connect `nonce` of the authorization request.
    pub nonce: Option<String>,
    /// When the user signed in for this family (the ID token's `auth_time`).
    pub auth_time: Timestamp,
    /// Refresh tokens obtained with a DPoP proof are bound to its key (RFC 9449 §5).
    pub dpop_jkt: Option<String>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// When the code was redeemed or the refresh token rotated.
    pub used_at: Option<Timestamp>,
    /// Read only: the family was revoked (reuse detected, or the user withdrew consent).
    pub family_revoked: bool,
}

/// Prefixes of the handed-out values, so secret scanners recognise leaked ones.
pub const CODE_PREFIX: &str = "sigil_ac_";
pub const REFRESH_PREFIX: &str = "sigil_rt_";
