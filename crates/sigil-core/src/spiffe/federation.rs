//! Federation: the operator names another trust domain and its bundle endpoint; Sigil fetches
//! that domain's SPIFFE bundle, checks it, refreshes it as its `spiffe_refresh_hint` asks, and
//! node agents hand it to workloads beside their own (`federated_bundles`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sigil_types::{Timestamp, TrustDomain};

use crate::Clock;
use crate::audit::{AuditRecord, EventType, Outcome};
use crate::model::Principal;
use crate::registry::{Ctx, RegistryError};
use crate::store::{Change, ChangeSet, Store};

/// How often a bundle is refetched when it does not say (and at least this often).
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// A failed fetch is retried after this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// The shortest refresh a bundle may ask for.
const MIN_REFRESH: Duration = Duration::from_secs(5);

/// A federated trust domain as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    pub trust_domain: TrustDomain,
    pub bundle_endpoint: String,
    /// The last good bundle (SPIFFE bundle JSON), if any was fetched.
    pub bundle_json: Option<String>,
    pub refreshed_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// Fetches a bundle endpoint (an adapter does the HTTP).
#[async_trait]
pub trait BundleFetcher: Send + Sync + std::fmt::Debug {
    async fn fetch_bundle(&self, url: &str) -> Result<Vec<u8>, String>;
}

#[derive(Debug)]
pub struct Federations {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    fetcher: Arc<dyn BundleFetcher>,
    own: TrustDomain,
}

fn invalid(field: &'static str, why: impl Into<String>) -> RegistryError {
    RegistryError::invalid(field, why)
}

impl Federations {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        fetcher: Arc<dyn BundleFetcher>,
        own: TrustDomain,
    ) -> Self {
        Self {
            store,
            clock,
            fetcher,
            own,
        }
    }

    /// Federates with `trust_domain`, whose bundle is served at `endpoint` (`https://`, or
    /// `http://` on a loopback address for development). The first fetch happens in the
    /// background within a second.
    pub async fn add(&self, ctx: &Ctx, trust_domain: &str, endpoint: &str) -> Result<Federation, RegistryError> {
        let td = TrustDomain::parse(trust_domain).map_err(|e| invalid("trust_domain", e.to_string()))?;
        if td == self.own {
            return Err(invalid("trust_domain", "that is this server's own trust domain"));
        }
        check_endpoint(endpoint)?;
        let now = self.clock.now();
        let f = Federation {
            trust_domain: td.clone(),
            bundle_endpoint: endpoint.to_owned(),
            bundle_json: None,
            refreshed_at: None,
            last_error: None,
            created_at: now,
            created_by: ctx.principal.as_str().to_owned(),
        };
        let record = AuditRecord::new(
            now,
            EventType::FederationAdded,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("trust_domain", td.as_str(), td.as_str())
        .detail("bundle_endpoint", endpoint);
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::InsertFederation(f.clone()))
                    .audit(record),
            )
            .await?;
        Ok(f)
    }

    pub async fn delete(&self, ctx: &Ctx, trust_domain: &str) -> Result<(), RegistryError> {
        let record = AuditRecord::new(
            self.clock.now(),
            EventType::FederationRemoved,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("trust_domain", trust_domain, trust_domain);
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::DeleteFederation {
                        trust_domain: trust_domain.to_owned(),
                    })
                    .audit(record),
            )
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Stale { .. } => RegistryError::not_found("federation", trust_domain),
                other => other.into(),
            })
    }

    pub async fn list(&self) -> Result<Vec<Federation>, RegistryError> {
        Ok(self.store.list_federations().await?)
    }

    /// The current federated bundles: `spiffe://<td>` → the bundle document. A trust domain
    /// whose bundle is empty (its keys revoked) is left out: nothing of it is trusted.
    pub async fn bundles(&self) -> Result<Vec<(String, Value)>, RegistryError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter_map(|f| {
                let doc: Value = serde_json::from_str(f.bundle_json.as_deref()?).ok()?;
                let keys = doc.get("keys").and_then(Value::as_array)?;
                (!keys.is_empty()).then(|| (format!("spiffe://{}", f.trust_domain), doc))
            })
            .collect())
    }

    /// Fetches every bundle that is due (never fetched, past its refresh hint, or failed more
    /// than 30 s ago). A bad answer keeps the last good bundle and is recorded and audited.
    pub async fn refresh_due(&self) -> Result<(), RegistryError> {
        let now = self.clock.now();
        for f in self.list().await? {
            let wait = if f.last_error.is_some() {
                RETRY_AFTER_FAILURE
            } else {
                refresh_interval(f.bundle_json.as_deref())
            };
            if f.refreshed_at.is_some_and(|t| now.since(t) < wait) {
                continue;
            }
            let fetched = self.fetcher.fetch_bundle(&f.bundle_endpoint).await;
            let checked = fetched.and_then(|bytes| check_bundle(&f.trust_domain, &bytes));
            let system = Principal::system();
            let (change, record) = match checked {
                Ok(json) => {
                    let changed = f.bundle_json.as_deref() != Some(json.as_str());
                    let record = changed.then(|| {
                        AuditRecord::new(now, EventType::FederatedBundleUpdated, &system, None).target(
                            "trust_domain",
                            f.trust_domain.as_str(),
                            f.trust_domain.as_str(),
                        )
                    });
                    (
                        Change::SetFederatedBundle {
                            trust_domain: f.trust_domain.to_string(),
                            bundle_json: Some(json),
                            refreshed_at: now,
                            error: None,
                        },
                        record,
                    )
                }
                Err(why) => {
                    tracing::warn!(trust_domain = %f.trust_domain, error = %why, "federated bundle refresh failed");
                    let record = AuditRecord::new(now, EventType::FederatedBundleUpdated, &system, None)
                        .target("trust_domain", f.trust_domain.as_str(), f.trust_domain.as_str())
                        .outcome(Outcome::Error, &why);
                    (
                        Change::SetFederatedBundle {
                            trust_domain: f.trust_domain.to_string(),
                            bundle_json: f.bundle_json.clone(),
                            refreshed_at: now,
                            error: Some(why),
                        },
                        Some(record),
                    )
                }
            };
            let mut cs = ChangeSet::new().change(change);
            if let Some(r) = record {
                cs = cs.audit(r);
            }
            self.store.commit(cs).await?;
        }
        Ok(())
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), RegistryError> {
    let url = url::Url::parse(endpoint).map_err(|e| invalid("bundle_endpoint", e.to_string()))?;
    // Federation §5.2.1.1: no userinfo in an https_web endpoint (it would also be a credential
    // stored and listed in clear).
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("bundle_endpoint", "must not contain a user name or password"));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid(
            "bundle_endpoint",
            "must be https:// (the SPIFFE https_web profile); http:// only on loopback",
        )),
    }
}

fn refresh_interval(bundle: Option<&str>) -> Duration {
    bundle
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .and_then(|v| v.get("spiffe_refresh_hint").and_then(Value::as_u64))
        .map_or(DEFAULT_REFRESH, |s| {
            Duration::from_secs(s).clamp(MIN_REFRESH, DEFAULT_REFRESH)
        })
}

/// Checks that `bytes` is a SPIFFE bundle of `td` (a JWK Set of at most 64 KB) whose CA
/// certificates name `td` if they name a trust domain at all. Returns the bundle, with only its
/// usable entries ([`bundle_entries`]) and no private key members, as compact JSON. A bundle
/// with no usable entry is an empty bundle: the trust domain's keys are revoked, and its SVIDs
/// are no longer trusted (Trust Domain and Bundle §4.1.3). A malformed JWT authority is an
/// error instead ([`malformed_jwt_authority`]): the caller keeps the last good bundle.
pub fn check_bundle(td: &TrustDomain, bytes: &[u8]) -> Result<String, String> {
    if bytes.len() > 64 * 1024 {
        return Err("the bundle is larger than 64 KB".into());
    }
    let mut doc: Value =
        serde_json::from_slice(bytes).map_err(|_| "the bundle endpoint did not answer with JSON".to_owned())?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a SPIFFE bundle: no keys array")?;
    for (n, key) in keys.iter().enumerate() {
        malformed_jwt_authority(key).map_err(|why| format!("keys[{n}] is a malformed JWT authority: {why}"))?;
    }
    let mut usable = Vec::with_capacity(keys.len());
    for entry in bundle_entries(keys) {
        if let BundleEntry::X509 { der, .. } = &entry {
            let named = sigil_crypto::x509::uri_sans(der).map_err(|e| e.to_string())?;
            let own = format!("spiffe://{td}");
            if named.iter().any(|u| u.starts_with("spiffe://") && *u != own) {
                return Err(format!(
                    "the bundle is for another trust domain (its CA names {})",
                    named.join(", ")
                ));
            }
        }
        let mut key = entry.key().clone();
        if let Some(members) = key.as_object_mut() {
            // A publisher's mistake must not hand its private key on to every workload.
            for private in PRIVATE_MEMBERS {
                members.remove(private);
            }
        }
        usable.push(key);
    }
    if let Some(o) = doc.as_object_mut() {
        o.insert("keys".into(), Value::Array(usable));
    }
    serde_json::to_string(&doc).map_err(|e| e.to_string())
}

/// Whether `key`, of a type and use a relying party knows (so not one to ignore), is broken: a
/// `jwt-svid` key without the `kid` JWT-SVID §6 requires, or whose key material does not decode.
/// Such a bundle is a publisher's mistake, not a statement that the keys are gone, so it is
/// refused as a whole and the last good bundle stays, as go-spiffe and SPIRE do.
fn malformed_jwt_authority(key: &Value) -> Result<(), String> {
    let known_type = matches!(key.get("kty").and_then(Value::as_str), Some("EC" | "RSA" | "OKP"));
    if !known_type || key.get("use").and_then(Value::as_str) != Some("jwt-svid") {
        return Ok(());
    }
    if key.get("kid").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err("no kid".into());
    }
    let mut public = key.clone();
    if let Some(members) = public.as_object_mut() {
        for private in PRIVATE_MEMBERS {
            members.remove(private);
        }
        members.remove("use"); // `jwt-svid` means signatures; the check knows only `sig`
    }
    let jwk: sigil_crypto::PublicJwk = serde_json::from_value(public).map_err(|e| e.to_string())?;
    let checked_curve = match jwk.kty.as_str() {
        "EC" => jwk.crv.as_deref() == Some("P-256"),
        "OKP" => jwk.crv.as_deref() == Some("Ed25519"),
        _ => true,
    };
    if !checked_curve {
        return Ok(()); // another curve: passed on to workloads, never used here
    }
    match jwk.check() {
        Err(sigil_crypto::JwkError::Malformed) => Err("its key material does not decode".into()),
        // Another curve or a weak RSA size is a key Sigil cannot use, ignored like an unknown type.
        _ => Ok(()),
    }
}

/// JWK members that hold private key material (RFC 7518 §6).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A usable entry of a SPIFFE bundle's `keys`.
#[derive(Debug, Clone)]
pub enum BundleEntry<'a> {
    /// An X.509 authority, with the DER of the first certificate in its `x5c`.
    X509 { key: &'a Value, der: Vec<u8> },
    /// A JWT authority (it has a `kid`).
    Jwt { key: &'a Value },
}

impl<'a> BundleEntry<'a> {
    pub fn key(&self) -> &'a Value {
        match self {
            Self::X509 { key, .. } | Self::Jwt { key } => key,
        }
    }
}

/// The entries of a bundle's `keys` a relying party may use, for the server and node agents
/// alike. Others are ignored one by one, never the whole bundle: an unknown key type (Trust
/// Domain and Bundle §4.2.1), an `x509-svid` key without a certificate (X509-SVID §6.2), a
/// `jwt-svid` key without `kid`, any other `use`.
pub fn bundle_entries(keys: &[Value]) -> impl Iterator<Item = BundleEntry<'_>> {
    keys.iter()
        .filter(|k| matches!(k.get("kty").and_then(Value::as_str), Some("EC" | "RSA" | "OKP")))
        .filter_map(|key| match key.get("use").and_then(Value::as_str) {
            Some("x509-svid") => first_certificate(key).map(|der| BundleEntry::X509 { key, der }),
            Some("jwt-svid")
                if key
                    .get("kid")
                    .and_then(Value::as_str)
                    .is_some_and(|kid| !kid.is_empty()) =>
            {
                Some(BundleEntry::Jwt { key })
            }
            _ => None,
        })
}

/// The DER of the first certificate in a key's `x5c`, if there is one that decodes.
fn first_certificate(k: &Value) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = k.get("x5c")?.as_array()?.first()?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// The coordinates of a P-256 key, as far as a JWK check can tell (32 bytes each).
    const P256_X: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA";
    const P256_Y: &str = "ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0A";

    /// Entries a relying party cannot use are dropped one by one; the rest of the bundle (a new
    /// JWT key, say) still arrives.
    #[test]
    fn unusable_bundle_entries_are_ignored_not_fatal() {
        let td = TrustDomain::parse("other.test").unwrap();
        let bundle = serde_json::json!({
            "keys": [
                {"kty": "EC", "use": "jwt-svid", "kid": "good", "crv": "P-256", "x": P256_X, "y": P256_Y},
                {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": "AA", "y": "AA", "x5c": []},
                {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": "AA", "y": "AA"},
                {"kty": "FOO", "use": "jwt-svid", "kid": "unknown-type"},
                {"kty": "EC", "use": "jwt-svid", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
                {"kty": "EC", "use": "enc", "kid": "other-use"}
            ],
            "spiffe_sequence": 7
        });
        let kept: Value = serde_json::from_str(&check_bundle(&td, bundle.to_string().as_bytes()).unwrap()).unwrap();
        let kids: Vec<&str> = kept["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or("-"))
            .collect();
        assert_eq!(kids, ["good", "p384"]);
        assert_eq!(kept["spiffe_sequence"], 7);
        // Nothing usable is an empty bundle (every key revoked), not an error that keeps the old one.
        let nothing = serde_json::json!({"keys": [{"kty": "FOO", "use": "jwt-svid", "kid": "x"}]});
        let empty: Value = serde_json::from_str(&check_bundle(&td, nothing.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(empty["keys"], serde_json::json!([]));
        assert!(
            check_bundle(&td, b"{}").is_err(),
            "no keys array at all is not a bundle"
        );
        // A JWT authority without kid or with broken key material makes the bundle malformed:
        // refused as a whole (the caller keeps the last good one), not emptied.
        for broken in [
            serde_json::json!({"kty": "EC", "use": "jwt-svid", "crv": "P-256", "x": P256_X, "y": P256_Y}),
            serde_json::json!({"kty": "EC", "use": "jwt-svid", "kid": "k", "crv": "P-256", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "RSA", "use": "jwt-svid", "kid": "k"}),
        ] {
            let doc = serde_json::json!({"keys": [broken]});
            assert!(check_bundle(&td, doc.to_string().as_bytes()).is_err(), "{doc}");
        }
        // Private members never travel on.
        let leaky = serde_json::json!({"keys": [{"kty": "EC", "use": "jwt-svid", "kid": "k", "crv": "P-256", "x": P256_X, "y": P256_Y, "d": "secret"}]});
        let kept = check_bundle(&td, leaky.to_string().as_bytes()).unwrap();
        assert!(!kept.contains("secret"), "{kept}");
    }
}
