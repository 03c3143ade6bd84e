//! OpenID Connect ID tokens (Core §2) about the user who signed in, for the client.

use sigil_types::Timestamp;

use super::client::OAuthClient;
use super::error::{ErrorCode, OAuthError};
use super::grant::Grant;
use super::service::OAuthService;
use crate::model::User;

/// How long Sigil's ID tokens live.
const ID_TOKEN_TTL_SECS: i64 = 300;

impl OAuthService {
    /// An OpenID Connect ID token (Core §2) about the user, for the client.
    pub(super) fn mint_id_token(
        &self,
        user: &User,
        client: &OAuthClient,
        grant: &Grant,
        now: Timestamp,
    ) -> Result<String, OAuthError> {
        let mut c = serde_json::Map::new();
        c.insert("iss".into(), self.cfg.issuer.clone().into());
        c.insert("sub".into(), user.id.to_string().into());
        c.insert("aud".into(), client.client_id.clone().into());
        c.insert("iat".into(), now.unix_seconds().into());
        c.insert("exp".into(), (now.unix_seconds() + ID_TOKEN_TTL_SECS).into());
        c.insert("auth_time".into(), grant.auth_time.unix_seconds().into());
        if let Some(n) = &grant.nonce {
            c.insert("nonce".into(), n.clone().into());
        }
        // A sign-in releases the user's profile and email only as far as she consented to
        // (Core §5.4); an API's authorization names its user as it always has.
        let sign_in = self.is_sign_in_only(&grant.resource);
        let released = |scope: &str| !sign_in || grant.scope.split(' ').any(|s| s == scope);
        if released("profile") {
            c.insert("preferred_username".into(), user.username.to_string().into());
        }
        if released("email")
            && let Some(e) = &user.email
        {
            c.insert("email".into(), e.to_string().into());
        }
        // The algorithm the client registered is checked then against what Sigil signs with;
        // should that key have been rotated to another algorithm since, say so plainly.
        // A 4xx, not a server error: the client's registration asks for what is no longer
        // offered, and updating it (RFC 7592) is the cure.
        let key = self.keys.id_token_key(client.id_token_alg()).ok_or_else(|| {
            OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!(
                    "no active key signs ID tokens with the client's id_token_signed_response_alg {}; update its registration",
                    client.id_token_alg()
                ),
            )
        })?;
        let payload = serde_json::to_vec(&c).map_err(|_| OAuthError::unavailable())?;
        sigil_crypto::sign_compact(&key, "JWT", &payload).map_err(|_| OAuthError::unavailable())
    }
}
