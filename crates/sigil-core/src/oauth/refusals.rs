//! Refused requests in the audit trail: a bad client credential, a quarantined agent's client
//! still calling, another client's token — each a denied record naming the client asked for and
//! the identity behind it, so the attempt shows in that identity's trace.

use super::client_auth::{self, PresentedCredentials};
use super::error::{ErrorCode, OAuthError};
use super::service::OAuthService;
use crate::audit::{AuditRecord, EventType, Outcome};
use crate::model::{IdentityRef, Principal};
use crate::store::ChangeSet;

impl OAuthService {
    /// The identity behind a client, for a refusal record. A metadata-document client is the
    /// configured agent's, found without fetching its document again (the refusal may be that
    /// fetch failing).
    async fn identity_of_client(&self, client_id: Option<&str>) -> Option<std::sync::Arc<crate::model::Identity>> {
        let client_id = client_id?;
        let identity = if super::metadata_doc::is_document_url(client_id) {
            IdentityRef::parse(self.cfg.metadata_documents.identity.as_deref()?).ok()?
        } else {
            IdentityRef::Id(self.client(client_id).await.ok().flatten()?.identity_id.clone())
        };
        self.reads.identity(&identity).await.ok().flatten()
    }

    /// Records a refused token request (`token.refused`), whatever its grant: a replayed
    /// ID-JAG, a PKCE mismatch or an untrusted issuer belong in the trail as much as a bad client
    /// assertion. `grant_type` is the request's, if it had one; `creds`, if they could be read.
    pub async fn record_refused_token_request(
        &self,
        grant_type: Option<&str>,
        creds: Option<&PresentedCredentials>,
        e: &OAuthError,
        request_id: Option<&str>,
    ) {
        let action = grant_type.unwrap_or("(none)");
        self.record_refused_client_request(EventType::TokenRefused, action, creds, e, request_id)
            .await;
    }

    /// Records a refused request of a client as a denied `event` (`token.introspected`,
    /// `token.revoked`, `authorization.denied`, `access.evaluated`): failed client
    /// authentication, a quarantined agent's client still calling, another client's token.
    pub async fn record_refused_client_request(
        &self,
        event: EventType,
        action: &str,
        creds: Option<&PresentedCredentials>,
        e: &OAuthError,
        request_id: Option<&str>,
    ) {
        if e.code == ErrorCode::TemporarilyUnavailable {
            return; // the store is down: nothing to record into
        }
        let claimed = creds.and_then(|creds| {
            creds
                .basic
                .as_ref()
                .map(|(id, _)| id.clone())
                .or_else(|| creds.client_id.clone())
                .or_else(|| {
                    creds
                        .assertion
                        .as_deref()
                        .and_then(|a| client_auth::assertion_client_id(a).ok())
                })
        });
        let mut record = AuditRecord::new(
            self.clock.now(),
            event,
            &Principal::from_stored("client".into()),
            request_id,
        )
        .outcome(Outcome::Denied, &e.to_string());
        record.client_id = claimed.map(|c| c.chars().take(64).collect());
        // The action (a grant) as asked for, bounded: the value is the caller's.
        record.action = Some(action.chars().take(80).collect());
        // Name the identity behind the client, so the attempt shows in its trace (a suspended
        // agent still trying is exactly what an investigator looks for).
        if let Some(identity) = self.identity_of_client(record.client_id.as_deref()).await {
            record = record.target(
                crate::model::IdentityFamily::of(identity.kind).noun(),
                identity.id.as_str(),
                identity.name.as_str(),
            );
        }
        if let Err(err) = self.store.commit(ChangeSet::new().audit(record)).await {
            tracing::error!(error = ?err, "could not record a refused client request");
        }
    }
}
