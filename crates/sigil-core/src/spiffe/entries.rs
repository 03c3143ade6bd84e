//! Registration entries: a SPIFFE ID, the node (parent) that may hand it out, the selectors a
//! workload must match on that node, lifetimes, DNS names, and the registry identity (agent or
//! workload) the SVID stands for.

use std::sync::Arc;
use std::time::Duration;

use sigil_types::{IdentityId, SpiffeId, TrustDomain};

use crate::audit::{AuditRecord, EventType};
use crate::model::{IdentityRef, Meta};
use crate::registry::{Ctx, RegistryError};
use crate::store::{Change, ChangeSet, Store, StoreError};
use crate::{Clock, Rng};

/// Longest SVID lifetimes an entry may ask for.
const MAX_X509_TTL: Duration = Duration::from_secs(7 * 86_400);
const MAX_JWT_TTL: Duration = Duration::from_secs(86_400);
/// Defaults from the issue: X509-SVIDs live an hour, JWT-SVIDs five minutes.
pub const DEFAULT_X509_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);
/// Where the default node SPIFFE IDs live (`spiffe://<td>/sigil/node/<id>`): not for workloads.
pub const NODE_PATH: &str = "/sigil/node/";

/// A workload selector, `type:value` (e.g. `unix:uid:1000`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector(String);

impl Selector {
    /// Parses a selector. The unix attestor's are checked strictly: `unix:uid:N`, `unix:gid:N`,
    /// `unix:path:/absolute/path`, `unix:sha256:<64 hex>`; other types are `type:value` with a
    /// lowercase type.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| format!("selector {s:?} must be type:value"))?;
        if kind.is_empty()
            || !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("selector type {kind:?} must be lowercase letters, digits or _"));
        }
        if value.is_empty() || s.len() > 1024 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("selector {s:?} needs a value of at most 1024 bytes"));
        }
        if kind == "unix" {
            let (k, v) = value
                .split_once(':')
                .ok_or_else(|| format!("unix selector {s:?} must be unix:<kind>:<value>"))?;
            let ok = match k {
                // Digits as the kernel reports them: no sign, no leading zeros.
                "uid" | "gid" => {
                    v.bytes().all(|b| b.is_ascii_digit())
                        && (v == "0" || !v.starts_with('0'))
                        && v.parse::<u32>().is_ok()
                }
                // A normalised absolute path, as the attestor reads it from /proc.
                "path" => {
                    v.starts_with('/')
                        && v.split('/')
                            .skip(1)
                            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                }
                "sha256" => v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "unix selector {s:?}: expected unix:uid:N, unix:gid:N, unix:path:/abs or unix:sha256:<64 lowercase hex>"
                ));
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationEntry {
    pub id: String,
    pub spiffe_id: SpiffeId,
    /// The node (its SPIFFE ID) whose agent serves this entry.
    pub parent_id: SpiffeId,
    /// All must match the calling workload.
    pub selectors: Vec<Selector>,
    /// The agent or workload the SVID stands for in Sigil's registry, policy and audit trail.
    pub identity_id: Option<IdentityId>,
    pub x509_ttl: Duration,
    pub jwt_ttl: Duration,
    pub dns_names: Vec<String>,
    pub meta: Meta,
}

/// What an administrator gives to create or replace an entry.
#[derive(Debug, Clone, Default)]
pub struct EntrySpec {
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: Vec<String>,
    pub identity: Option<String>,
    pub x509_ttl: Option<Duration>,
    pub jwt_ttl: Option<Duration>,
    pub dns_names: Vec<String>,
}

#[derive(Debug)]
pub struct Entries {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
    trust_domain: TrustDomain,
}

fn invalid(field: &'static str, why: impl Into<String>) -> RegistryError {
    RegistryError::invalid(field, why)
}

impl Entries {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, rng: Arc<dyn Rng>, trust_domain: TrustDomain) -> Self {
        Self {
            store,
            clock,
            rng,
            trust_domain,
        }
    }

    /// Checks a spec and resolves its identity. `replacing`: the entry an update replaces.
    async fn validated(&self, spec: EntrySpec, replacing: Option<&str>) -> Result<Validated, RegistryError> {
        let spiffe_id = SpiffeId::parse(&spec.spiffe_id).map_err(|e| invalid("spiffe_id", e.to_string()))?;
        if spiffe_id.trust_domain() != self.trust_domain {
            return Err(invalid(
                "spiffe_id",
                format!("must be in the trust domain {}", self.trust_domain),
            ));
        }
        if spiffe_id.path().is_empty() {
            return Err(invalid(
                "spiffe_id",
                "must name a workload (a path), not the trust domain",
            ));
        }
        let parent_id = SpiffeId::parse(&spec.parent_id).map_err(|e| invalid("parent_id", e.to_string()))?;
        if parent_id.trust_domain() != self.trust_domain {
            return Err(invalid(
                "parent_id",
                format!("must be in the trust domain {}", self.trust_domain),
            ));
        }
        if parent_id.path().is_empty() || parent_id == spiffe_id {
            return Err(invalid(
                "parent_id",
                "must name the node that serves the entry, not the trust domain or the entry itself",
            ));
        }
        if spec.selectors.is_empty() || spec.selectors.len() > 32 {
            return Err(invalid("selectors", "give 1 to 32 selectors"));
        }
        let mut selectors = spec
            .selectors
            .iter()
            .map(|s| Selector::parse(s).map_err(|e| invalid("selectors", e)))
            .collect::<Result<Vec<_>, _>>()?;
        selectors.sort();
        selectors.dedup();
        let x509_ttl = spec.x509_ttl.unwrap_or(DEFAULT_X509_TTL);
        if x509_ttl < Duration::from_secs(60) || x509_ttl > MAX_X509_TTL {
            return Err(invalid("x509_ttl", "must be between 1m and 7d"));
        }
        let jwt_ttl = spec.jwt_ttl.unwrap_or(DEFAULT_JWT_TTL);
        if jwt_ttl < Duration::from_secs(30) || jwt_ttl > MAX_JWT_TTL {
            return Err(invalid("jwt_ttl", "must be between 30s and 1d"));
        }
        if spec.dns_names.len() > 16 || !spec.dns_names.iter().all(|d| is_dns_name(d)) {
            return Err(invalid(
                "dns_names",
                "at most 16 DNS names in the preferred name syntax (RFC 1034 section 3.5; a wildcard only as the whole first label; no IP addresses)",
            ));
        }
        let identity_id = match &spec.identity {
            Some(r) => {
                let r = IdentityRef::parse(r).map_err(|e| invalid("identity", e.to_string()))?;
                let identity = self
                    .store
                    .get_identity(&r)
                    .await?
                    .ok_or_else(|| invalid("identity", format!("identity {r} does not exist")))?;
                crate::registry::refuse_final(&identity, "SPIFFE entries")?;
                Some(identity.id)
            }
            None => None,
        };
        self.check_unambiguous(&spiffe_id, &parent_id, &selectors, identity_id.as_ref(), replacing)
            .await?;
        Ok(Validated {
            spiffe_id,
            parent_id,
            selectors,
            identity_id,
            x509_ttl,
            jwt_ttl,
            dns_names: spec.dns_names,
        })
    }

    /// A SPIFFE ID stands for one registry identity (a JWT-SVID or X509-SVID is mapped to it
    /// by its ID alone), and a node's ID is never a workload's (a workload SVID would pass as
    /// the node's proof).
    async fn check_unambiguous(
        &self,
        spiffe_id: &SpiffeId,
        parent_id: &SpiffeId,
        selectors: &[Selector],
        identity: Option<&IdentityId>,
        replacing: Option<&str>,
    ) -> Result<(), RegistryError> {
        let others = self.store.list_entries(None, Some(spiffe_id.as_str())).await?;
        // The same ID, node and selectors twice is one entry registered twice (a retried
        // create): refused, so that retries do not pile up copies (SPIRE does the same).
        if let Some(same) = others.iter().find(|e| {
            Some(e.id.as_str()) != replacing && &e.parent_id == parent_id && e.selectors.as_slice() == selectors
        }) {
            return Err(RegistryError::Conflict(format!(
                "entry {} already registers {spiffe_id} for these selectors on {parent_id}",
                same.id
            )));
        }
        if others
            .iter()
            .any(|e| Some(e.id.as_str()) != replacing && e.identity_id.as_ref() != identity)
        {
            return Err(RegistryError::Conflict(format!(
                "{spiffe_id} is already registered for another identity: one SPIFFE ID stands for one identity"
            )));
        }
        if self.store.get_node(spiffe_id.as_str()).await?.is_some() || spiffe_id.path().starts_with(NODE_PATH) {
            return Err(RegistryError::Conflict(format!(
                "{spiffe_id} is a node's SPIFFE ID, not a workload's"
            )));
        }
        Ok(())
    }

    pub async fn create(&self, ctx: &Ctx, spec: EntrySpec) -> Result<RegistrationEntry, RegistryError> {
        let v = self.validated(spec, None).await?;
        let now = self.clock.now();
        let e = RegistrationEntry {
            id: crate::new_id("ent_", now, self.rng.as_ref()),
            spiffe_id: v.spiffe_id,
            parent_id: v.parent_id,
            selectors: v.selectors,
            identity_id: v.identity_id,
            x509_ttl: v.x509_ttl,
            jwt_ttl: v.jwt_ttl,
            dns_names: v.dns_names,
            meta: Meta::new(now, &ctx.principal),
        };
        let record = AuditRecord::new(now, EventType::EntryCreated, &ctx.principal, ctx.request_id.as_deref())
            .target("entry", &e.id, e.spiffe_id.as_str())
            .detail("parent_id", e.parent_id.as_str())
            .detail(
                "selectors",
                e.selectors.iter().map(Selector::as_str).collect::<Vec<_>>(),
            );
        self.store
            .commit(ChangeSet::new().change(Change::InsertEntry(e.clone())).audit(record))
            .await?;
        Ok(e)
    }

    pub async fn get(&self, id: &str) -> Result<RegistrationEntry, RegistryError> {
        self.store
            .get_entry(id)
            .await?
            .ok_or_else(|| RegistryError::not_found("entry", id))
    }

    pub async fn list(
        &self,
        parent: Option<&str>,
        spiffe_id: Option<&str>,
    ) -> Result<Vec<RegistrationEntry>, RegistryError> {
        Ok(self.store.list_entries(parent, spiffe_id).await?)
    }

    /// Replaces an entry's fields (all of them, as given), keeping its id.
    pub async fn update(&self, ctx: &Ctx, id: &str, spec: EntrySpec) -> Result<RegistrationEntry, RegistryError> {
        let old = self.get(id).await?;
        let v = self.validated(spec, Some(&old.id)).await?;
        let now = self.clock.now();
        let e = RegistrationEntry {
            id: old.id.clone(),
            spiffe_id: v.spiffe_id,
            parent_id: v.parent_id,
            selectors: v.selectors,
            identity_id: v.identity_id,
            x509_ttl: v.x509_ttl,
            jwt_ttl: v.jwt_ttl,
            dns_names: v.dns_names,
            meta: old.meta.touched(now, &ctx.principal),
        };
        let record = AuditRecord::new(now, EventType::EntryUpdated, &ctx.principal, ctx.request_id.as_deref()).target(
            "entry",
            &e.id,
            e.spiffe_id.as_str(),
        );
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::UpdateEntry {
                        entry: e.clone(),
                        expected_version: old.meta.version,
                    })
                    .audit(record),
            )
            .await?;
        Ok(e)
    }

    pub async fn delete(&self, ctx: &Ctx, id: &str) -> Result<(), RegistryError> {
        let old = self.get(id).await?;
        let record = AuditRecord::new(
            self.clock.now(),
            EventType::EntryDeleted,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("entry", &old.id, old.spiffe_id.as_str());
        match self
            .store
            .commit(
                ChangeSet::new()
                    .change(Change::DeleteEntry {
                        id: old.id.clone(),
                        expected_version: old.meta.version,
                    })
                    .audit(record),
            )
            .await
        {
            Err(StoreError::Stale { .. }) => Err(RegistryError::not_found("entry", id)),
            other => Ok(other?),
        }
    }
}

/// RFC 1034 §3.5 preferred name syntax (with RFC 1123's leading digits): labels of letters,
/// digits and inner hyphens, 1 to 63 bytes, 253 in all; `*` only as the whole first label; not
/// an IPv4 address (that belongs in an iPAddress SAN).
fn is_dns_name(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    d.len() <= 253
        && d.parse::<std::net::Ipv4Addr>().is_err()
        && labels
            .iter()
            .enumerate()
            .all(|(n, l)| label_ok(l) || (n == 0 && *l == "*" && labels.len() > 1))
}

struct Validated {
    spiffe_id: SpiffeId,
    parent_id: SpiffeId,
    selectors: Vec<Selector>,
    identity_id: Option<IdentityId>,
    x509_ttl: Duration,
    jwt_ttl: Duration,
    dns_names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_selectors_are_checked() {
        for ok in ["unix:uid:1000", "unix:gid:0", "unix:path:/usr/bin/agent", "k8s:ns:prod"] {
            assert!(Selector::parse(ok).is_ok(), "{ok}");
        }
        let sha = format!("unix:sha256:{}", "ab".repeat(32));
        assert!(Selector::parse(&sha).is_ok());
        for bad in [
            "unix",
            "unix:uid:abc",
            "unix:uid:-1",
            "unix:path:relative",
            "unix:sha256:XYZ",
            "unix:pid:1",
            "Unix:uid:1",
            ":x",
            "k8s:",
            "unix:uid:+5",
            "unix:uid:007",
            "unix:path:/a/../b",
            "unix:path:/a//b",
            "k8s:ns:def ault",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names_follow_the_preferred_name_syntax() {
        for ok in [
            "api.example.com",
            "*.example.com",
            "a-1.b2",
            "localhost",
            "3com.example",
        ] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in [
            "a..b",
            "1.2.3.4",
            "-a.example",
            "a-.example",
            "*",
            "a.*.example",
            "x_y.example",
            "a.",
            "",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
