//! The SPIFFE issuer's authorities: the trust domain's X.509 CA (a self-signed root by default)
//! and its JWT authority (an ES256 key: the JWT-SVID specification allows only RSA and ECDSA, so
//! JWT-SVIDs are not signed with the OAuth keys, which default to EdDSA), both kept sealed under
//! the master key in the store, and the SPIFFE trust bundle that publishes them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use sigil_crypto::x509::{SvidRequest, X509Authority};
use sigil_crypto::{Algorithm, Jwks, MasterKey, SealedBlob, SigningKey};
use sigil_types::{SpiffeId, Timestamp, TrustDomain};

use crate::Clock;
use crate::audit::{AuditRecord, EventType};
use crate::model::Principal;
use crate::store::{Change, ChangeSet, Store, StoreError};

const SEAL_CONTEXT: &str = "sigil x509 authority v1";
const JWT_SEAL_CONTEXT: &str = "sigil jwt authority v1";
/// Authority states: `active` signs and is published; `prepared` (rotation step one) is
/// published but does not sign yet; `retired` (replaced) is published until it expires.
const ACTIVE: &str = "active";
const PREPARED: &str = "prepared";
/// A self-signed root lives a year; rotation (prepare, activate) replaces it before then.
const ROOT_TTL: Duration = Duration::from_secs(365 * 86_400);
/// How often relying parties should refetch the bundle (SPIFFE bundle `spiffe_refresh_hint`).
const REFRESH_HINT_SECS: u64 = 300;

/// An authority as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuthority {
    pub id: String,
    pub cert_der: Vec<u8>,
    pub sealed_key: SealedBlob,
    /// For an intermediate under an upstream CA: that CA's certificate (the trust anchor).
    pub upstream_der: Option<Vec<u8>>,
    /// `active` (signs and is published) — later also `prepared` and `retired`.
    pub status: String,
    pub not_after: Timestamp,
    pub created_at: Timestamp,
}

/// A JWT authority as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJwtAuthority {
    pub kid: String,
    pub sealed_key: SealedBlob,
    /// `active` (signs and is published).
    pub status: String,
    pub created_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum SpiffeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cryptography: {0}")]
    Crypto(String),
    #[error("the trust domain has no X.509 authority yet")]
    NoAuthority,
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// What is loaded: the authority that signs, and every published certificate.
#[derive(Debug)]
struct Loaded {
    /// The intermediates between an SVID and the published CA (empty for a self-signed root).
    signing_chain: Vec<Vec<u8>>,
    /// Every current intermediate (old and new ones during a rotation), for verifying SVIDs.
    intermediates: Vec<Vec<u8>>,
    /// A digest of the published CA certificates: changes whenever the set does.
    published_digest: [u8; 32],
    signing: X509Authority,
    signing_id: String,
    published: Vec<Vec<u8>>,
    /// The JWT authority that signs JWT-SVIDs, and every published one.
    jwt_signing: Arc<SigningKey>,
    jwt_published: Jwks,
    newest: i64,
}

#[derive(Debug)]
pub struct X509Ca {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    master: Arc<MasterKey>,
    trust_domain: TrustDomain,
    upstream: Option<X509Authority>,
    loaded: RwLock<Option<Arc<Loaded>>>,
}

impl X509Ca {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        master: Arc<MasterKey>,
        trust_domain: TrustDomain,
    ) -> Self {
        Self {
            store,
            clock,
            master,
            trust_domain,
            upstream: None,
            loaded: RwLock::new(None),
        }
    }

    /// New authorities become intermediates signed by `upstream` (the operator's CA) instead of
    /// self-signed roots: the bundle then publishes the upstream CA, and SVIDs carry the
    /// intermediate. Authorities made before stay until rotated out.
    pub fn with_upstream(mut self, upstream: X509Authority) -> Self {
        self.upstream = Some(upstream);
        self
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Loads the authorities, creating the first root and JWT authority if there are none
    /// (replicas starting together may each create one: all are published and the oldest
    /// signs, so they agree).
    pub async fn ensure_bootstrapped(&self) -> Result<(), SpiffeError> {
        let system = Principal::from_stored("sigil".into());
        let mut changes = ChangeSet::new();
        if self
            .store
            .list_x509_authorities()
            .await?
            .iter()
            .all(|a| a.status != ACTIVE)
        {
            let (c, r) = self.new_root(ACTIVE, &system, None)?;
            changes = changes.change(c).audit(r);
        }
        if self
            .store
            .list_jwt_authorities()
            .await?
            .iter()
            .all(|a| a.status != ACTIVE)
        {
            let (c, r) = self.new_jwt_authority(ACTIVE, &system, None)?;
            changes = changes.change(c).audit(r);
        }
        if !changes.changes.is_empty() {
            self.store.commit(changes).await?;
        }
        self.reload().await
    }

    /// Rotation, step one: a new root and JWT authority are created `prepared`: published in
    /// the bundle (so relying parties learn them) but not yet signing.
    pub async fn prepare(&self, by: &Principal, request_id: Option<&str>) -> Result<(), SpiffeError> {
        if self
            .store
            .list_x509_authorities()
            .await?
            .iter()
            .any(|a| a.status == PREPARED)
        {
            return Err(SpiffeError::Invalid(
                "an authority is already prepared: activate it first".into(),
            ));
        }
        let (c1, r1) = self.new_root(PREPARED, by, request_id)?;
        let (c2, r2) = self.new_jwt_authority(PREPARED, by, request_id)?;
        self.store
            .commit(ChangeSet::new().change(c1).audit(r1).change(c2).audit(r2))
            .await?;
        self.reload().await
    }

    /// Rotation, step two: the prepared authorities sign from now on; the old ones are retired
    /// but stay published while SVIDs they signed may still be in use.
    pub async fn activate(&self, by: &Principal, request_id: Option<&str>) -> Result<(), SpiffeError> {
        let x509 = self.store.list_x509_authorities().await?;
        let jwt = self.store.list_jwt_authorities().await?;
        let (Some(x), Some(j)) = (
            x509.iter().find(|a| a.status == PREPARED),
            jwt.iter().find(|a| a.status == PREPARED),
        ) else {
            return Err(SpiffeError::Invalid("no prepared authority: run prepare first".into()));
        };
        let record = AuditRecord::new(self.clock.now(), EventType::AuthorityActivated, by, request_id)
            .target("x509_authority", &x.id, self.trust_domain.as_str())
            .detail("jwt_authority", j.kid.as_str());
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::ActivateAuthorities {
                        x509_id: x.id.clone(),
                        jwt_kid: j.kid.clone(),
                    })
                    .audit(record),
            )
            .await?;
        self.reload().await
    }

    fn new_root(
        &self,
        status: &str,
        by: &Principal,
        request_id: Option<&str>,
    ) -> Result<(Change, AuditRecord), SpiffeError> {
        let now = self.clock.now();
        let td_id = self.trust_domain.id();
        let crypto = |e: sigil_crypto::CryptoError| SpiffeError::Crypto(e.to_string());
        let (ca, not_after) = match &self.upstream {
            None => {
                let not_after = now.plus(ROOT_TTL);
                let ca =
                    X509Authority::generate_root(td_id.as_str(), now.unix_seconds() - 60, not_after.unix_seconds())
                        .map_err(crypto)?;
                (ca, not_after)
            }
            Some(up) => {
                // An intermediate may not outlive the CA that signed it.
                let (_, upstream_end) = sigil_crypto::x509::validity(up.cert_der()).map_err(crypto)?;
                let end = now.plus(ROOT_TTL).unix_seconds().min(upstream_end);
                if end <= now.unix_seconds() + 3600 {
                    return Err(SpiffeError::Invalid("the upstream CA expires within the hour".into()));
                }
                let ca = X509Authority::generate_intermediate(td_id.as_str(), up, now.unix_seconds() - 60, end)
                    .map_err(crypto)?;
                (ca, Timestamp::from_unix_seconds(end))
            }
        };
        let sealed = self
            .master
            .seal(&ca.key_pkcs8(), SEAL_CONTEXT)
            .map_err(|e| SpiffeError::Crypto(e.to_string()))?;
        let id = format!(
            "x509_{}",
            sigil_crypto::b64url(&sigil_crypto::sha256(ca.cert_der()))
                .get(..16)
                .unwrap_or_default()
        );
        let record = AuditRecord::new(now, EventType::X509AuthorityCreated, by, request_id)
            .target("x509_authority", &id, self.trust_domain.as_str())
            .detail("status", status)
            .detail("not_after", not_after.to_string());
        let stored = StoredAuthority {
            id,
            cert_der: ca.cert_der().to_vec(),
            sealed_key: sealed,
            upstream_der: self.upstream.as_ref().map(|u| u.cert_der().to_vec()),
            status: status.into(),
            not_after,
            created_at: now,
        };
        Ok((Change::InsertX509Authority(stored), record))
    }

    fn new_jwt_authority(
        &self,
        status: &str,
        by: &Principal,
        request_id: Option<&str>,
    ) -> Result<(Change, AuditRecord), SpiffeError> {
        let now = self.clock.now();
        let (key, pkcs8) = SigningKey::generate(Algorithm::Es256).map_err(|e| SpiffeError::Crypto(e.to_string()))?;
        let sealed = self
            .master
            .seal(&pkcs8, JWT_SEAL_CONTEXT)
            .map_err(|e| SpiffeError::Crypto(e.to_string()))?;
        let record = AuditRecord::new(now, EventType::JwtAuthorityCreated, by, request_id)
            .target("jwt_authority", key.kid(), self.trust_domain.as_str())
            .detail("status", status)
            .detail("alg", "ES256");
        let stored = StoredJwtAuthority {
            kid: key.kid().to_owned(),
            sealed_key: sealed,
            status: status.into(),
            created_at: now,
        };
        Ok((Change::InsertJwtAuthority(stored), record))
    }

    /// Rereads the authorities from the store (other replicas may have added one).
    pub async fn reload(&self) -> Result<(), SpiffeError> {
        let now = self.clock.now();
        // Expired authorities can vouch for nothing any more: they leave the bundle.
        let all: Vec<StoredAuthority> = self
            .store
            .list_x509_authorities()
            .await?
            .into_iter()
            .filter(|a| a.not_after > now)
            .collect();
        let signing = all
            .iter()
            .find(|a| a.status == ACTIVE)
            .ok_or(SpiffeError::NoAuthority)?;
        let key = self
            .master
            .open(&signing.sealed_key, SEAL_CONTEXT)
            .map_err(|e| SpiffeError::Crypto(e.to_string()))?;
        let authority =
            X509Authority::from_parts(&key, &signing.cert_der).map_err(|e| SpiffeError::Crypto(e.to_string()))?;
        let jwt_all = self.store.list_jwt_authorities().await?;
        let mut jwt_keys = Vec::with_capacity(jwt_all.len());
        for a in &jwt_all {
            let pkcs8 = self
                .master
                .open(&a.sealed_key, JWT_SEAL_CONTEXT)
                .map_err(|e| SpiffeError::Crypto(e.to_string()))?;
            let key = SigningKey::from_pkcs8(a.kid.clone(), Algorithm::Es256, &pkcs8)
                .map_err(|e| SpiffeError::Crypto(e.to_string()))?;
            jwt_keys.push((a.status == ACTIVE, Arc::new(key)));
        }
        let jwt_signing = jwt_keys
            .iter()
            .find(|(active, _)| *active)
            .map(|(_, k)| Arc::clone(k))
            .ok_or(SpiffeError::NoAuthority)?;
        let loaded = Loaded {
            published_digest: sigil_crypto::sha256(
                &all.iter().flat_map(|a| a.cert_der.iter().copied()).collect::<Vec<u8>>(),
            ),
            signing: authority,
            signing_id: signing.id.clone(),
            published: {
                // What relying parties trust: each root, or for an intermediate its upstream CA.
                let mut anchors: Vec<Vec<u8>> = Vec::new();
                for a in &all {
                    let anchor = a.upstream_der.as_ref().unwrap_or(&a.cert_der);
                    if !anchors.contains(anchor) {
                        anchors.push(anchor.clone());
                    }
                }
                anchors
            },
            intermediates: all
                .iter()
                .filter(|a| a.upstream_der.is_some())
                .map(|a| a.cert_der.clone())
                .collect(),
            signing_chain: signing
                .upstream_der
                .is_some()
                .then(|| signing.cert_der.clone())
                .into_iter()
                .collect(),
            jwt_signing,
            jwt_published: Jwks {
                keys: jwt_keys.iter().map(|(_, k)| k.public_jwk()).collect(),
            },
            // Microseconds: the bundle's `spiffe_sequence` must change with every change of its
            // contents (Trust Domain and Bundle §4.1.1), and two authorities prepared within one
            // second are two changes.
            newest: all
                .iter()
                .map(|a| a.created_at.unix_micros())
                .chain(jwt_all.iter().map(|a| a.created_at.unix_micros()))
                .max()
                .unwrap_or_default(),
        };
        if let Ok(mut slot) = self.loaded.write() {
            *slot = Some(Arc::new(loaded));
        }
        Ok(())
    }

    fn current(&self) -> Result<Arc<Loaded>, SpiffeError> {
        self.loaded
            .read()
            .ok()
            .and_then(|l| l.clone())
            .ok_or(SpiffeError::NoAuthority)
    }

    /// The id of the authority that signs X509-SVIDs now (node agents re-sign their
    /// workloads' SVIDs when it changes).
    pub fn active_authority_id(&self) -> String {
        self.current().map(|l| l.signing_id.clone()).unwrap_or_default()
    }

    /// Every authority, oldest first, for `sigil ca list`.
    pub async fn list(&self) -> Result<Vec<(String, String, String, Option<Timestamp>)>, SpiffeError> {
        let mut out: Vec<(String, String, String, Option<Timestamp>)> = self
            .store
            .list_x509_authorities()
            .await?
            .into_iter()
            .map(|a| ("x509".into(), a.id, a.status, Some(a.not_after)))
            .collect();
        out.extend(
            self.store
                .list_jwt_authorities()
                .await?
                .into_iter()
                .map(|a| ("jwt".into(), a.kid, a.status, None)),
        );
        Ok(out)
    }

    /// The certificates an SVID signed now must be presented with, after it: the
    /// intermediate when the authority is under an upstream CA, else none.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.current().map(|l| l.signing_chain.clone()).unwrap_or_default()
    }

    /// Every current intermediate authority, for checking SVIDs presented with their chain.
    pub fn intermediates(&self) -> Vec<Vec<u8>> {
        self.current().map(|l| l.intermediates.clone()).unwrap_or_default()
    }

    /// The key that signs JWT-SVIDs.
    pub fn jwt_signing_key(&self) -> Result<Arc<SigningKey>, SpiffeError> {
        Ok(Arc::clone(&self.current()?.jwt_signing))
    }

    /// The JWT authorities JWT-SVIDs are validated against.
    pub fn jwt_authorities(&self) -> Result<Jwks, SpiffeError> {
        Ok(self.current()?.jwt_published.clone())
    }

    /// Identifies the current set of published CA certificates (a verification made against
    /// one set holds while this is unchanged).
    pub fn published_digest(&self) -> [u8; 32] {
        self.current().map(|l| l.published_digest).unwrap_or_default()
    }

    /// The CA certificates relying parties trust (DER).
    pub fn authorities(&self) -> Result<Vec<Vec<u8>>, SpiffeError> {
        Ok(self.current()?.published.clone())
    }

    /// Signs an X509-SVID for `spiffe_id` (which must be in this trust domain) valid for `ttl`
    /// from now, for the key in a PKCS#10 request or a PKCS#8 key.
    pub fn sign_x509_svid(
        &self,
        spiffe_id: &SpiffeId,
        key: SvidKey<'_>,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<Vec<u8>, SpiffeError> {
        if spiffe_id.trust_domain() != self.trust_domain {
            return Err(SpiffeError::Invalid(format!(
                "{spiffe_id} is not in the trust domain {}",
                self.trust_domain
            )));
        }
        if spiffe_id.path().is_empty() {
            return Err(SpiffeError::Invalid(
                "an SVID names a workload, not the trust domain".into(),
            ));
        }
        let now = self.clock.now().unix_seconds();
        let req = SvidRequest {
            spiffe_id: spiffe_id.as_str(),
            dns_names,
            not_before: now - 10,
            not_after: now + i64::try_from(ttl.as_secs()).unwrap_or(3600),
        };
        let ca = self.current()?;
        match key {
            SvidKey::Csr(der) => ca.signing.sign_csr(der, &req),
            SvidKey::Pkcs8(der) => ca.signing.sign_for_key(der, &req),
        }
        .map_err(|e| SpiffeError::Invalid(e.to_string()))
    }

    /// The trust bundle in the SPIFFE bundle format (a JWK Set: `x509-svid` keys with their
    /// certificate in `x5c`, `jwt-svid` keys with their `kid`), with `spiffe_sequence` and
    /// `spiffe_refresh_hint`.
    pub fn bundle(&self) -> Result<Value, SpiffeError> {
        let loaded = self.current()?;
        let mut keys = Vec::new();
        for der in loaded.published.iter() {
            let jwk = sigil_crypto::x509::ec_jwk_of_cert(der).map_err(|e| SpiffeError::Crypto(e.to_string()))?;
            let mut jwk = jwk;
            if let Some(o) = jwk.as_object_mut() {
                o.insert("use".into(), json!("x509-svid"));
                o.insert("x5c".into(), json!([base64_std(der)]));
            }
            keys.push(jwk);
        }
        for k in &loaded.jwt_published.keys {
            let mut k = serde_json::to_value(k).map_err(|e| SpiffeError::Crypto(e.to_string()))?;
            if let Some(o) = k.as_object_mut() {
                o.insert("use".into(), json!("jwt-svid"));
                o.remove("alg");
            }
            keys.push(k);
        }
        Ok(json!({
            "keys": keys,
            "spiffe_sequence": u64::try_from(loaded.newest).unwrap_or_default(),
            "spiffe_refresh_hint": REFRESH_HINT_SECS,
        }))
    }
}

/// Where a workload's public key comes from.
#[derive(Debug, Clone, Copy)]
pub enum SvidKey<'a> {
    Csr(&'a [u8]),
    Pkcs8(&'a [u8]),
}

fn base64_std(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}
