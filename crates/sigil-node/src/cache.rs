//! The node's cache of what workloads are handed: the entries this node serves, an X509-SVID per
//! entry, and the trust bundle. It is replaced as a whole ([`Snapshot`]) and published on a
//! watch channel, so Workload API streams wake up when something changes and keep serving from
//! it while the server is unreachable.

use std::collections::HashMap;
use std::sync::Arc;

use sigil_core::spiffe::federation::BundleEntry;
use sigil_crypto::{Jwk, Jwks};
use sigil_proto::node::NodeEntry;
use tokio::sync::watch;
use zeroize::Zeroizing;

/// A workload's X509-SVID and its private key (PKCS#8 DER).
pub struct WorkloadSvid {
    pub spiffe_id: String,
    /// The authority that was signing when this SVID was asked for.
    pub authority: String,
    pub cert_der: Vec<u8>,
    /// Intermediates after the leaf (under an upstream CA).
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for WorkloadSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl WorkloadSvid {
    /// Due for renewal: past half its lifetime (the Workload API pushes the new one before the
    /// old expires).
    pub fn needs_renewal(&self, now: i64) -> bool {
        now >= self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

/// The trust domain's bundle, in the two encodings the Workload API hands out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    /// `spiffe://<trust domain>`.
    pub trust_domain_id: String,
    /// The X.509 authorities, concatenated DER.
    pub x509: Vec<u8>,
    /// The JWT authorities as a JWK Set (JSON), as the SPIFFE bundle lists them.
    pub jwt_jwks: Vec<u8>,
    /// The same keys, for validating JWT-SVIDs.
    pub jwt_keys: Jwks,
}

impl Bundle {
    /// Reads a SPIFFE bundle (a JWK Set whose keys have `use` `x509-svid` or `jwt-svid`).
    pub fn from_spiffe_bundle(trust_domain_id: String, doc: &serde_json::Value) -> Result<Self, String> {
        let keys = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("the bundle has no keys array")?;
        let mut x509 = Vec::new();
        let mut jwt = Vec::new();
        let mut jwt_keys = Vec::new();
        for entry in sigil_core::spiffe::federation::bundle_entries(keys) {
            match entry {
                BundleEntry::X509 { der, .. } => x509.extend_from_slice(&der),
                BundleEntry::Jwt { key } => {
                    jwt.push(key.clone());
                    if let Some(jwk) = jwk_for_validation(key) {
                        jwt_keys.push(jwk);
                    }
                }
            }
        }
        if x509.is_empty() && jwt.is_empty() {
            return Err("the bundle has no authority".into());
        }
        Ok(Self {
            trust_domain_id,
            x509,
            jwt_jwks: serde_json::to_vec(&serde_json::json!({ "keys": jwt })).map_err(|e| e.to_string())?,
            jwt_keys: Jwks { keys: jwt_keys },
        })
    }
}

/// A bundle key as a verification key: SPIFFE bundles carry no `alg`, so it follows from the
/// key type (Ed25519 → EdDSA, P-256 → ES256), the only ones Sigil signs with.
/// A bundle's JWT authority as a key `ValidateJWTSVID` can use. JWT-SVID §3 allows only the
/// RS, PS and ES algorithms; of those, P-256 keys (ES256) and RSA keys (RS256) are verified here.
/// Any other key — Ed25519 included, which JWT-SVIDs may not use — vouches for nothing.
fn jwk_for_validation(k: &serde_json::Value) -> Option<Jwk> {
    let s = |name: &str| k.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let kty = s("kty")?;
    let alg = match (kty.as_str(), s("crv").as_deref()) {
        ("EC", Some("P-256")) => "ES256",
        ("RSA", None) => "RS256",
        _ => return None,
    };
    // A key that names its algorithm is used with that one only.
    if s("alg").is_some_and(|named| named != alg) {
        return None;
    }
    Some(Jwk {
        kty,
        crv: s("crv"),
        x: s("x"),
        y: s("y"),
        n: s("n"),
        e: s("e"),
        kid: s("kid")?,
        alg: alg.into(),
        use_: "sig".into(),
    })
}

/// Everything the Workload API serves from.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// False until the first successful sync: callers wait rather than being refused.
    pub ready: bool,
    pub entries: Vec<NodeEntry>,
    /// By entry id.
    pub svids: HashMap<String, Arc<WorkloadSvid>>,
    pub bundle: Bundle,
    /// Federated trust domains' bundles.
    pub federated: Vec<Bundle>,
}

impl Snapshot {
    /// The bundle of the trust domain `spiffe://<td>`: ours or a federated one.
    pub fn bundle_for(&self, trust_domain_id: &str) -> Option<&Bundle> {
        std::iter::once(&self.bundle)
            .chain(&self.federated)
            .find(|b| b.trust_domain_id == trust_domain_id)
    }

    /// Every bundle, ours first.
    pub fn all_bundles(&self) -> impl Iterator<Item = &Bundle> {
        std::iter::once(&self.bundle).chain(&self.federated)
    }

    /// The X509-SVIDs of these entries that may still be handed out at `now`: one the agent
    /// could not renew in time is left out once it has expired, so the workload waits for a
    /// fresh one instead of presenting a certificate every peer refuses.
    pub fn servable_svids(&self, entry_ids: &[String], now: i64) -> Vec<Arc<WorkloadSvid>> {
        entry_ids
            .iter()
            .filter_map(|id| self.svids.get(id))
            .filter(|s| s.expires_at > now)
            .cloned()
            .collect()
    }
}

/// The published snapshot.
#[derive(Debug, Clone)]
pub struct Cache {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Self { tx: Arc::new(tx) }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn publish(&self, s: Snapshot) {
        self.tx.send_replace(Arc::new(s));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::{Snapshot, WorkloadSvid, jwk_for_validation};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn expired_svids_are_not_served() {
        let svid = |expires_at| {
            Arc::new(WorkloadSvid {
                spiffe_id: "spiffe://sigil.local/app".into(),
                authority: "a".into(),
                cert_der: vec![1],
                chain: Vec::new(),
                key_pkcs8: zeroize::Zeroizing::new(vec![2]),
                issued_at: 0,
                expires_at,
            })
        };
        let mut snap = Snapshot::default();
        snap.svids.insert("live".into(), svid(200));
        snap.svids.insert("expired".into(), svid(100));
        let ids = ["live".to_owned(), "expired".to_owned(), "unknown".to_owned()];
        let served = snap.servable_svids(&ids, 100);
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].expires_at, 200);
        assert!(snap.servable_svids(&ids, 200).is_empty(), "expiry is exclusive");
    }

    /// Only JWT-SVID algorithms (JWT-SVID §3) that Sigil verifies: ES256 and RS256 keys.
    #[test]
    fn only_jwt_svid_keys_validate_jwt_svids() {
        let ec = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "e", "use": "jwt-svid"});
        assert_eq!(jwk_for_validation(&ec).unwrap().alg, "ES256");
        let rsa = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r", "use": "jwt-svid"});
        assert_eq!(jwk_for_validation(&rsa).unwrap().alg, "RS256");
        for refused in [
            json!({"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "o"}),
            json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p"}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "ps", "alg": "PS256"}),
            json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        ] {
            assert!(jwk_for_validation(&refused).is_none(), "{refused}");
        }
    }
}
