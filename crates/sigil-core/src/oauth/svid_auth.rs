//! SVIDs as OAuth client credentials: a workload authenticates at the token endpoint with a
//! JWT-SVID as its `client_assertion` (RFC 7523 `jwt-bearer` assertion type). Its `client_id`
//! is its SPIFFE ID; the registration entries for that SPIFFE ID name the registry identity it
//! acts as. So a workload goes from its node's attestation to an access token without ever
//! holding a static secret.

use super::client::{ClientAuthMethod, OAuthClient};
use super::client_auth::{Authenticated, PresentedCredentials};
use super::error::OAuthError;
use super::service::OAuthService;
use crate::audit::AuthEvidence;
use crate::spiffe::jwt_svid;

impl OAuthService {
    /// Authenticates a workload by its JWT-SVID: signed by this trust domain's JWT authorities,
    /// `aud` naming this server (the issuer or the endpoint), current, with a `jti` (recorded as
    /// used with the request's other single-use marks), and a registration entry for the SPIFFE ID
    /// that names a registry identity.
    pub(super) async fn authenticate_svid(
        &self,
        creds: &PresentedCredentials,
        assertion: &str,
        spiffe_id: &str,
        endpoint: &str,
    ) -> Result<Authenticated, OAuthError> {
        if creds.client_id.as_deref().is_some_and(|c| c != spiffe_id) {
            return Err(OAuthError::invalid_client(
                "client_id does not match the JWT-SVID's SPIFFE ID",
            ));
        }
        let now = self.clock.now().unix_seconds();
        let keys = self.spiffe.jwt_authorities().map_err(|e| {
            tracing::error!(error = %e, "no JWT authority to verify JWT-SVIDs");
            OAuthError::unavailable()
        })?;
        let audiences = [self.cfg.issuer.as_str(), self.cfg.token_endpoint.as_str(), endpoint];
        let mut found = None;
        for aud in audiences {
            match jwt_svid::validate(assertion, &keys, aud, now) {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(jwt_svid::JwtSvidError::WrongAudience) => {}
                Err(e) => return Err(OAuthError::invalid_client(format!("the JWT-SVID is not valid: {e}"))),
            }
        }
        let (id, claims) = found
            .ok_or_else(|| OAuthError::invalid_client("the JWT-SVID's aud must be the issuer or the endpoint URL"))?;
        if claims.exp > now + 3600 {
            return Err(OAuthError::invalid_client(
                "the JWT-SVID lives too long to be a client assertion",
            ));
        }
        if let Some(why) = super::jti::unusable(Some(&claims.jti)) {
            return Err(OAuthError::invalid_client(format!("the JWT-SVID {why}")));
        }
        let (client, entry_id) = self.workload_client(&id).await?;
        Ok(Authenticated {
            client: client.into(),
            evidence: AuthEvidence {
                method: "jwt_svid".into(),
                key_id: Some(id.to_string()),
                jti: None,
                issuer: Some(format!("entry {entry_id}")),
                cert_fingerprint: None,
            },
            assertion_jti: Some((claims.jti, claims.exp)),
            cert_thumbprint: None,
        })
    }

    /// Authenticates a workload by the X509-SVID it presented in the TLS handshake (RFC 8705
    /// `tls_client_auth`, with the SPIFFE ID as the certificate's name): it must chain to the
    /// trust domain's authorities and be current; TLS already proved the key. The token gets
    /// bound to the certificate.
    pub(super) async fn authenticate_tls(
        &self,
        creds: &PresentedCredentials,
        cert: &[u8],
    ) -> Result<Authenticated, OAuthError> {
        let authorities = self.spiffe.authorities().map_err(|e| {
            tracing::error!(error = %e, "no X.509 authority to verify client certificates");
            OAuthError::unavailable()
        })?;
        let now = self.clock.now().unix_seconds();
        let svid = sigil_crypto::svid_verify::verify_svid_chain(cert, &self.spiffe.intermediates(), &authorities, now)
            .map_err(|e| {
                OAuthError::invalid_client(format!(
                    "the client certificate is not an X509-SVID of this trust domain: {e}"
                ))
            })?;
        let id = sigil_types::SpiffeId::parse(&svid.spiffe_id)
            .map_err(|e| OAuthError::invalid_client(format!("the client certificate's SPIFFE ID: {e}")))?;
        if creds.client_id.as_deref().is_some_and(|c| c != id.as_str()) {
            return Err(OAuthError::invalid_client(
                "client_id does not match the client certificate's SPIFFE ID",
            ));
        }
        let (client, entry_id) = self.workload_client(&id).await?;
        let thumbprint = sigil_crypto::b64url(&sigil_crypto::sha256(cert));
        Ok(Authenticated {
            client: client.into(),
            evidence: AuthEvidence {
                method: "tls_client_auth".into(),
                key_id: Some(id.to_string()),
                jti: None,
                issuer: Some(format!("entry {entry_id}")),
                cert_fingerprint: Some(thumbprint.clone()),
            },
            assertion_jti: None,
            cert_thumbprint: Some(thumbprint),
        })
    }

    /// The client a workload acts as: the registry identity its registration entry names.
    async fn workload_client(&self, id: &sigil_types::SpiffeId) -> Result<(OAuthClient, String), OAuthError> {
        let entry = self
            .store
            .list_entries(None, Some(id.as_str()))
            .await?
            .into_iter()
            .find(|e| e.identity_id.is_some())
            .ok_or_else(|| OAuthError::invalid_client("no registration entry maps this SPIFFE ID to an identity"))?;
        let identity_id = entry
            .identity_id
            .ok_or_else(|| OAuthError::invalid_client("no registration entry maps this SPIFFE ID to an identity"))?;
        let now_ts = self.clock.now();
        let client = OAuthClient {
            client_id: id.to_string(),
            identity_id,
            auth_method: ClientAuthMethod::PrivateKeyJwt,
            jwks: None,
            jwks_uri: None,
            secret_hash: None,
            dpop_required: false,
            registration_token_hash: None,
            metadata: None,
            redirect_uris: Vec::new(),
            id_jag_audiences: Vec::new(),
            created_at: now_ts,
            created_by: format!("registration entry {}", entry.id),
            version: 0,
        };
        Ok((client, entry.id))
    }
}
