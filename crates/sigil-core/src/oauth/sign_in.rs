//! A sign-in only: an OpenID Connect authorization that names no API. Its scope is made of the
//! UserInfo scopes alone, and its grant and tokens are for the UserInfo endpoint (Core §5.3),
//! which stands where an API's URI would.

use sigil_types::ScopeSet;

use super::authorize::resource_target;
use super::error::OAuthError;
use super::service::OAuthService;
use crate::audit::Target;
use crate::model::Resource;

/// The OpenID Connect scopes whose claims the UserInfo endpoint releases (Core §5.4); the
/// scope of a sign-in that names no API is made of these alone.
pub(super) const USERINFO_SCOPES: [&str; 2] = ["profile", "email"];

/// The scopes of a sign-in only: the [`USERINFO_SCOPES`] it asks for. Any other value is not
/// understood without an API and is ignored (Core §3.1.2.1); the token response's `scope` says
/// what was granted (RFC 6749 §5.1). A client that registered a `scope` (RFC 7591 §2) asks
/// within it.
pub(super) fn sign_in_scopes(raw_scope: &str, registered: Option<&ScopeSet>) -> Result<ScopeSet, OAuthError> {
    let kept = ScopeSet::parse_oauth(&userinfo_scope_values(raw_scope).join(" "))
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    if let Some(outside) = registered.and_then(|r| kept.iter().find(|s| !r.contains(s))) {
        return Err(OAuthError::invalid_scope(format!(
            "scope {outside} is outside the scope the client registered"
        )));
    }
    Ok(kept)
}

/// The values of a request's `scope` that a sign-in only understands: [`USERINFO_SCOPES`].
pub(super) fn userinfo_scope_values(raw: &str) -> Vec<&str> {
    raw.split(' ').filter(|s| USERINFO_SCOPES.contains(s)).collect()
}

impl OAuthService {
    /// What a grant or token is for: the resource's URI, or the UserInfo endpoint for a
    /// sign-in only.
    pub(super) fn audience_of<'a>(&'a self, resource: Option<&'a Resource>) -> &'a str {
        resource.map_or(self.cfg.userinfo_endpoint.as_str(), |r| r.uri.as_str())
    }

    /// Whether a grant's or token's audience is the UserInfo endpoint (a sign-in only).
    pub(super) fn is_sign_in_only(&self, audience: &str) -> bool {
        audience == self.cfg.userinfo_endpoint
    }

    /// The audit target of an authorization or a delegated token.
    pub(super) fn audience_target(&self, resource: Option<&Resource>) -> Target {
        match resource {
            Some(r) => resource_target(r),
            None => Target {
                kind: "userinfo".into(),
                id: None,
                name: None,
                resource: None,
                audience: Some(self.cfg.userinfo_endpoint.clone()),
            },
        }
    }
}
