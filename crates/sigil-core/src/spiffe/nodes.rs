//! Node attestation and the node API's logic: one-time join tokens admit a node agent and give
//! it an X509-SVID of its own; with that SVID (as a node proof) it renews itself, learns the
//! registration entries it may serve, and gets SVIDs for them.

use std::sync::Arc;
use std::time::Duration;

use sigil_crypto::KeyedHasher;
use sigil_crypto::svid_verify::{SvidError, VerifiedSvid, verify_node_proof_with, verify_svid_chain};
use sigil_types::{SpiffeId, Timestamp};

use super::entries::RegistrationEntry;
use super::{SvidKey, X509Ca, jwt_svid};
use crate::audit::{AuditRecord, AuthEvidence, EventType, Outcome};
use crate::model::Principal;
use crate::registry::Ctx;
use crate::store::{Change, ChangeSet, Store, StoreError};
use crate::{Clock, Rng};

/// A join token lives an hour unless the operator says otherwise, and at most a week.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 86_400);
/// A node's own SVID lives an hour; the node renews it at half-life.
const NODE_SVID_TTL: Duration = Duration::from_secs(3600);
/// A node proof may live at most this long (it is checked on every call, not remembered).
const MAX_PROOF_LIFETIME: i64 = 300;
/// Clock skew tolerated on a proof's `iat`.
const PROOF_SKEW: i64 = 30;
/// At most this many SVIDs in one signing request.
pub const MAX_BATCH: usize = 100;

/// A join token as stored: only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub token_hash: String,
    /// The SPIFFE ID the node gets when it presents the token.
    pub spiffe_id: SpiffeId,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub created_by: String,
    pub used_at: Option<Timestamp>,
}

/// A node admitted by attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedNode {
    pub spiffe_id: SpiffeId,
    /// How it was attested (`join_token`).
    pub method: String,
    pub attested_at: Timestamp,
    /// The serial (hex) of the node's newest SVID, and when that SVID expires.
    pub svid_serial: String,
    pub svid_expires_at: Timestamp,
    pub banned_at: Option<Timestamp>,
}

/// Why a node API call is refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the join token is not valid: {0}")]
    JoinToken(&'static str),
    #[error("node authentication failed: {0}")]
    Unauthenticated(String),
    #[error("the node is banned")]
    Banned,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("entry {0} is not served by this node")]
    NotThisNode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// An X509-SVID just signed: the leaf (the CA is in the bundle) and its expiry.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    pub spiffe_id: SpiffeId,
    pub cert_der: Vec<u8>,
    /// The intermediates to present after it (under an upstream CA), else empty.
    pub chain: Vec<Vec<u8>>,
    pub expires_at: i64,
}

/// What a node tells the server about the workload it attested (for the audit trail).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkloadEvidence {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    pub path: Option<String>,
}

#[derive(Debug)]
pub struct Nodes {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
    ca: Arc<X509Ca>,
    hasher: KeyedHasher,
    /// The `aud` a node proof must carry: the node API's base URL.
    proof_audience: String,
    /// Renewed node SVIDs not yet recorded: written together by [`Nodes::flush_renewals`]
    /// (the server calls it several times a second), so a renewal storm costs one commit per
    /// flush instead of one per node. Losing the last fraction of a second of this
    /// bookkeeping in a crash changes nothing that matters: the SVIDs are valid either way,
    /// and bans are written at once.
    renewals: std::sync::Mutex<std::collections::HashMap<String, AttestedNode>>,
    /// Node SVIDs already verified against the current authorities, by certificate digest: a
    /// node presents the same SVID on every call until it renews, so its chain is checked once
    /// (the proof's own signature is checked every time).
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], VerifiedSvid>>,
    verified_against: std::sync::Mutex<[u8; 32]>,
    /// Attested nodes this replica has found. Attestation is never undone (a node is banned,
    /// not deleted), so a node once found is not read again on every call — a renewal storm
    /// would otherwise read each node from the database; bans are checked against `bans`.
    known: std::sync::Mutex<std::collections::HashMap<String, AttestedNode>>,
    bans: BanList,
}

/// Nodes found remembered at most (then the memory starts over).
const MAX_KNOWN: usize = 100_000;

/// The banned nodes, reloaded from the store when the last load is a second old, so a ban made
/// through another replica applies here within a second; one made through this replica applies
/// at once. Bans are never lifted, so loads only ever add to the set.
#[derive(Default)]
struct BanList {
    /// When the set was last loaded, and the set.
    state: std::sync::RwLock<(Option<std::time::Instant>, std::collections::HashSet<String>)>,
    /// Held while loading, so a burst of calls loads once.
    loading: tokio::sync::Mutex<()>,
}

impl BanList {
    const MAX_AGE: Duration = Duration::from_secs(1);

    /// Whether the node is banned, if the set is fresh enough to say.
    fn fresh(&self, spiffe_id: &str) -> Option<bool> {
        let state = self.state.read().ok()?;
        let loaded = state.0?;
        (loaded.elapsed() < Self::MAX_AGE).then(|| state.1.contains(spiffe_id))
    }

    async fn is_banned(&self, store: &dyn Store, spiffe_id: &str) -> Result<bool, StoreError> {
        if let Some(answer) = self.fresh(spiffe_id) {
            return Ok(answer);
        }
        let _loading = self.loading.lock().await;
        if let Some(answer) = self.fresh(spiffe_id) {
            return Ok(answer);
        }
        let started = std::time::Instant::now();
        let banned = store.list_banned_nodes().await?;
        let mut state = self
            .state
            .write()
            .map_err(|_| StoreError::Unavailable("the ban list lock is poisoned".into()))?;
        state.1.extend(banned);
        state.0 = Some(started);
        Ok(state.1.contains(spiffe_id))
    }

    fn add(&self, spiffe_id: &str) {
        if let Ok(mut state) = self.state.write() {
            state.1.insert(spiffe_id.to_owned());
        }
    }
}

impl std::fmt::Debug for BanList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BanList").finish_non_exhaustive()
    }
}

/// Verified node SVIDs remembered at most (then the memory starts over).
const MAX_VERIFIED: usize = 100_000;

impl Nodes {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Rng>,
        ca: Arc<X509Ca>,
        hasher: KeyedHasher,
        proof_audience: String,
    ) -> Self {
        Self {
            store,
            clock,
            rng,
            ca,
            hasher,
            proof_audience,
            renewals: Default::default(),
            verified: Default::default(),
            verified_against: Default::default(),
            known: Default::default(),
            bans: BanList::default(),
        }
    }

    /// The audience node proofs must name.
    pub fn proof_audience(&self) -> &str {
        &self.proof_audience
    }

    /// Creates a one-time join token for a node that will get `spiffe_id` (default
    /// `spiffe://<td>/sigil/node/<random>`). Returns the token (shown once) and the ID.
    pub async fn create_join_token(
        &self,
        ctx: &Ctx,
        spiffe_id: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(String, SpiffeId, Timestamp), NodeError> {
        let now = self.clock.now();
        let td = self.ca.trust_domain();
        let spiffe_id = match spiffe_id {
            Some(s) => SpiffeId::parse(s).map_err(|e| NodeError::Invalid(e.to_string()))?,
            None => SpiffeId::parse(&format!(
                "spiffe://{td}/sigil/node/{}",
                crate::new_id("", now, self.rng.as_ref())
            ))
            .map_err(|e| NodeError::Invalid(e.to_string()))?,
        };
        if spiffe_id.trust_domain() != *td || spiffe_id.path().is_empty() {
            return Err(NodeError::Invalid(format!(
                "the node's SPIFFE ID must name a node in the trust domain {td}"
            )));
        }
        // A banned node stays banned, and a workload's ID is never a node's (its SVID would
        // pass as the node's proof).
        if self
            .store
            .get_node(spiffe_id.as_str())
            .await?
            .is_some_and(|n| n.banned_at.is_some())
            || self.bans.is_banned(&*self.store, spiffe_id.as_str()).await?
        {
            return Err(NodeError::Invalid(format!(
                "the node {spiffe_id} is banned: its ID is not given out again"
            )));
        }
        if !self
            .store
            .list_entries(None, Some(spiffe_id.as_str()))
            .await?
            .is_empty()
        {
            return Err(NodeError::Invalid(format!(
                "{spiffe_id} is a workload's SPIFFE ID (a registration entry names it), not a node's"
            )));
        }
        let ttl = ttl.unwrap_or(DEFAULT_JOIN_TOKEN_TTL);
        if ttl < Duration::from_secs(60) || ttl > MAX_JOIN_TOKEN_TTL {
            return Err(NodeError::Invalid("ttl must be between 1m and 7d".into()));
        }
        let token = sigil_crypto::random_token("sigil_jt_").map_err(|e| NodeError::Signing(e.to_string()))?;
        let expires_at = now.plus(ttl);
        let stored = JoinToken {
            token_hash: self.hasher.hash_hex(token.as_bytes()),
            spiffe_id: spiffe_id.clone(),
            expires_at,
            created_at: now,
            created_by: ctx.principal.as_str().to_owned(),
            used_at: None,
        };
        let record = AuditRecord::new(
            now,
            EventType::JoinTokenCreated,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("node", spiffe_id.as_str(), spiffe_id.as_str())
        .detail("expires_at", expires_at.unix_seconds());
        self.store
            .commit(ChangeSet::new().change(Change::InsertJoinToken(stored)).audit(record))
            .await?;
        Ok((token.to_string(), spiffe_id, expires_at))
    }

    /// Attests a node with a join token: the token is spent and the node gets an SVID for the
    /// key in `csr`. Every refusal is audited.
    pub async fn attest(
        &self,
        join_token: &str,
        csr: &[u8],
        request_id: Option<&str>,
    ) -> Result<IssuedSvid, NodeError> {
        let now = self.clock.now();
        let hash = self.hasher.hash_hex(join_token.as_bytes());
        let stored = self.store.get_join_token(&hash).await?;
        let anonymous = Principal::from_stored("node:unattested".into());
        let token = match stored {
            Some(t) if t.used_at.is_none() && t.expires_at > now => t,
            other => {
                let why = match &other {
                    None => "unknown join token",
                    Some(t) if t.used_at.is_some() => "the join token was already used",
                    Some(_) => "the join token has expired",
                };
                self.refuse(now, &anonymous, request_id, other.as_ref().map(|t| &t.spiffe_id), why)
                    .await;
                return Err(NodeError::JoinToken(why));
            }
        };
        // Banned after its join token was made: no new credential.
        if self
            .store
            .get_node(token.spiffe_id.as_str())
            .await?
            .is_some_and(|n| n.banned_at.is_some())
        {
            self.refuse(
                now,
                &anonymous,
                request_id,
                Some(&token.spiffe_id),
                "the node is banned",
            )
            .await;
            return Err(NodeError::Banned);
        }
        let svid = self.sign_node_svid(&token.spiffe_id, csr)?;
        let node = AttestedNode {
            spiffe_id: token.spiffe_id.clone(),
            method: "join_token".into(),
            attested_at: now,
            svid_serial: svid_serial(&svid)?,
            svid_expires_at: Timestamp::from_unix_seconds(svid.expires_at),
            banned_at: None,
        };
        let record = AuditRecord::new(
            now,
            EventType::NodeAttested,
            &Principal::from_stored(format!("node:{}", token.spiffe_id)),
            request_id,
        )
        .target("node", token.spiffe_id.as_str(), token.spiffe_id.as_str())
        .detail("method", "join_token")
        .detail("svid_serial", node.svid_serial.clone());
        let changes = ChangeSet::new()
            .change(Change::UseJoinToken {
                token_hash: hash,
                at: now,
            })
            .change(Change::UpsertNode(node))
            .audit(record);
        match self.store.commit(changes).await {
            Ok(()) => Ok(svid),
            // Another attestation spent the token between our read and this commit.
            Err(StoreError::Stale { .. }) => {
                self.refuse(
                    now,
                    &anonymous,
                    request_id,
                    Some(&token.spiffe_id),
                    "the join token was already used",
                )
                .await;
                Err(NodeError::JoinToken("the join token was already used"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn refuse(
        &self,
        now: Timestamp,
        by: &Principal,
        request_id: Option<&str>,
        node: Option<&SpiffeId>,
        why: &str,
    ) {
        let mut record = AuditRecord::new(now, EventType::NodeAttested, by, request_id)
            .outcome(Outcome::Denied, why)
            .detail("method", "join_token");
        if let Some(id) = node {
            record = record.target("node", id.as_str(), id.as_str());
        }
        if let Err(e) = self.store.commit(ChangeSet::new().audit(record)).await {
            tracing::warn!(error = %e, "could not audit a refused node attestation");
        }
    }

    fn sign_node_svid(&self, id: &SpiffeId, csr: &[u8]) -> Result<IssuedSvid, NodeError> {
        let cert_der = self
            .ca
            .sign_x509_svid(id, SvidKey::Csr(csr), &[], NODE_SVID_TTL)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        Ok(IssuedSvid {
            spiffe_id: id.clone(),
            expires_at: self.clock.now().unix_seconds() + secs(NODE_SVID_TTL),
            cert_der,
            chain: self.ca.chain(),
        })
    }

    /// Authenticates a node API call by its node proof: a JWS signed with the node's current
    /// SVID key, SVID in `x5c`, `aud` the node API, short-lived. The node must be attested and
    /// not banned.
    /// A refusal is also a `node.auth_failed` audit record, naming the node when its SVID
    /// verified: a banned or stolen node still calling is what an investigator looks for.
    pub async fn authenticate(&self, proof: &str, request_id: Option<&str>) -> Result<AttestedNode, NodeError> {
        let (claimed, result) = self.check_node_proof(proof).await;
        if let Err(e) = &result
            && !matches!(e, NodeError::Store(_))
        {
            let by = Principal::from_stored(
                claimed
                    .as_ref()
                    .map_or_else(|| "anonymous:node_api".to_owned(), |id| format!("node:{id}")),
            );
            let mut record = AuditRecord::new(self.clock.now(), EventType::NodeAuthFailed, &by, request_id)
                .outcome(Outcome::Denied, &e.to_string());
            if let Some(id) = &claimed {
                record = record.target("node", id.as_str(), id.as_str());
            }
            if let Err(store) = self.store.commit(ChangeSet::new().audit(record)).await {
                tracing::warn!(error = %store, "could not audit a refused node proof");
            }
        }
        result
    }

    /// The node a proof authenticates, and the SPIFFE ID it claims once its SVID verified.
    async fn check_node_proof(&self, proof: &str) -> (Option<SpiffeId>, Result<AttestedNode, NodeError>) {
        let now = self.clock.now().unix_seconds();
        let (svid, payload) = match verify_node_proof_with(proof, |leaf, _| self.check_node_svid(leaf, now)) {
            Ok(verified) => verified,
            Err(e) => return (None, Err(NodeError::Unauthenticated(e.to_string()))),
        };
        let id = match SpiffeId::parse(&svid.spiffe_id) {
            Ok(id) => id,
            Err(e) => return (None, Err(NodeError::Unauthenticated(e.to_string()))),
        };
        let result = async {
            self.check_proof_claims(&payload, now)?;
            let node = self
                .attested_node(id.as_str())
                .await?
                .ok_or_else(|| NodeError::Unauthenticated(format!("{id} is not an attested node")))?;
            if node.banned_at.is_some() || self.bans.is_banned(&*self.store, id.as_str()).await? {
                return Err(NodeError::Banned);
            }
            Ok(node)
        }
        .await;
        (Some(id), result)
    }

    /// The attested node: remembered once found (see `known`).
    async fn attested_node(&self, spiffe_id: &str) -> Result<Option<AttestedNode>, NodeError> {
        let known = self.known.lock().ok().and_then(|k| k.get(spiffe_id).cloned());
        if known.is_some() {
            return Ok(known);
        }
        let node = self.store.get_node(spiffe_id).await?;
        if let (Some(n), Ok(mut known)) = (&node, self.known.lock()) {
            if known.len() >= MAX_KNOWN {
                known.clear();
            }
            known.insert(spiffe_id.to_owned(), n.clone());
        }
        Ok(node)
    }

    /// Verifies a node SVID, or recalls that it was verified against the same authorities.
    fn check_node_svid(&self, leaf: &[u8], now: i64) -> Result<VerifiedSvid, SvidError> {
        let digest = sigil_crypto::sha256(leaf);
        let generation = self.ca.published_digest();
        if let (Ok(mut against), Ok(mut cache)) = (self.verified_against.lock(), self.verified.lock())
            && *against != generation
        {
            cache.clear();
            *against = generation;
        }
        let known = self.verified.lock().ok().and_then(|c| c.get(&digest).cloned());
        if let Some(svid) = known {
            if now < svid.not_before || now > svid.not_after {
                return Err(SvidError::Expired);
            }
            return Ok(svid);
        }
        let authorities = self.ca.authorities().map_err(|_| SvidError::UnknownAuthority)?;
        // Our own intermediates, not the ones the caller sent along, complete the chain.
        let svid = verify_svid_chain(leaf, &self.ca.intermediates(), &authorities, now)?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= MAX_VERIFIED {
                cache.clear();
            }
            cache.insert(digest, svid.clone());
        }
        Ok(svid)
    }

    fn check_proof_claims(&self, payload: &[u8], now: i64) -> Result<(), NodeError> {
        #[derive(serde::Deserialize)]
        struct Claims {
            aud: String,
            iat: i64,
            exp: i64,
        }
        let c: Claims = serde_json::from_slice(payload)
            .map_err(|_| NodeError::Unauthenticated("the proof needs aud, iat and exp".into()))?;
        if c.aud != self.proof_audience {
            return Err(NodeError::Unauthenticated(format!(
                "the proof's aud must be {}",
                self.proof_audience
            )));
        }
        if c.exp <= now || c.iat > now + PROOF_SKEW || c.exp.saturating_sub(c.iat) > MAX_PROOF_LIFETIME {
            return Err(NodeError::Unauthenticated(
                "the proof is expired, from the future, or lives longer than 5 minutes".into(),
            ));
        }
        Ok(())
    }

    /// Renews an authenticated node's own SVID for the key in `csr`.
    pub async fn renew(&self, node: &AttestedNode, csr: &[u8]) -> Result<IssuedSvid, NodeError> {
        let svid = self.sign_node_svid(&node.spiffe_id, csr)?;
        let mut updated = node.clone();
        updated.svid_serial = svid_serial(&svid)?;
        updated.svid_expires_at = Timestamp::from_unix_seconds(svid.expires_at);
        if let Ok(mut pending) = self.renewals.lock() {
            pending.insert(updated.spiffe_id.to_string(), updated);
        }
        Ok(svid)
    }

    /// Records the renewals since the last flush, in one commit.
    pub async fn flush_renewals(&self) -> Result<(), NodeError> {
        let pending: Vec<AttestedNode> = match self.renewals.lock() {
            Ok(mut p) if !p.is_empty() => p.drain().map(|(_, n)| n).collect(),
            _ => return Ok(()),
        };
        let mut changes = ChangeSet::new();
        for n in pending {
            changes = changes.change(Change::UpsertNode(n));
        }
        self.store.commit(changes).await?;
        Ok(())
    }

    /// The registration entries this node serves (those whose parent is the node).
    pub async fn entries(&self, node: &AttestedNode) -> Result<Vec<RegistrationEntry>, NodeError> {
        Ok(self.store.list_entries(Some(node.spiffe_id.as_str()), None).await?)
    }

    /// Signs X509-SVIDs for `(entry id, CSR)` pairs; each entry must be this node's. One audit
    /// record for the batch lists every SVID (entry, SPIFFE ID, identity, serial): a node
    /// renewing its workloads is one event, and the audit log keeps up with signing.
    pub async fn sign_x509(
        &self,
        node: &AttestedNode,
        requests: &[(String, Vec<u8>)],
        request_id: Option<&str>,
    ) -> Result<Vec<(String, Result<IssuedSvid, NodeError>)>, NodeError> {
        if requests.len() > MAX_BATCH {
            return Err(NodeError::Invalid(format!("at most {MAX_BATCH} SVIDs per request")));
        }
        let entries = self.entries(node).await?;
        let now = self.clock.now();
        let by = Principal::from_stored(format!("node:{}", node.spiffe_id));
        let mut out = Vec::with_capacity(requests.len());
        let mut issued = Vec::new();
        for (entry_id, csr) in requests {
            let Some(entry) = entries.iter().find(|e| &e.id == entry_id) else {
                out.push((entry_id.clone(), Err(NodeError::NotThisNode(entry_id.clone()))));
                continue;
            };
            let signed = self
                .ca
                .sign_x509_svid(&entry.spiffe_id, SvidKey::Csr(csr), &entry.dns_names, entry.x509_ttl)
                .map_err(|e| NodeError::Invalid(e.to_string()));
            let signed = signed.and_then(|cert_der| {
                let svid = IssuedSvid {
                    spiffe_id: entry.spiffe_id.clone(),
                    expires_at: now.unix_seconds() + secs(entry.x509_ttl),
                    cert_der,
                    chain: self.ca.chain(),
                };
                issued.push(serde_json::json!({
                    "entry_id": entry.id,
                    "spiffe_id": entry.spiffe_id.as_str(),
                    "identity": entry.identity_id.as_ref().map(|i| i.as_str()),
                    "svid_serial": svid_serial(&svid)?,
                }));
                Ok(svid)
            });
            out.push((entry_id.clone(), signed));
        }
        if !issued.is_empty() {
            let record = AuditRecord::new(now, EventType::SvidIssued, &by, request_id)
                .target("node", node.spiffe_id.as_str(), node.spiffe_id.as_str())
                .detail("svid_type", "x509")
                .detail("svids", issued);
            self.store.commit(ChangeSet::new().audit(record)).await?;
        }
        Ok(out)
    }

    /// Mints a JWT-SVID for one of this node's entries, for `audiences`, and audits it with the
    /// workload the node attested (so `sigil trace` links attestation, SVID and token).
    pub async fn mint_jwt(
        &self,
        node: &AttestedNode,
        entry_id: &str,
        audiences: &[String],
        workload: &WorkloadEvidence,
        request_id: Option<&str>,
    ) -> Result<(SpiffeId, String, i64), NodeError> {
        let entries = self.entries(node).await?;
        let entry = entries
            .iter()
            .find(|e| e.id == entry_id)
            .ok_or_else(|| NodeError::NotThisNode(entry_id.to_owned()))?;
        if !sigil_proto::node::audiences_acceptable(audiences) {
            return Err(NodeError::Invalid("give 1 to 16 audiences of at most 512 bytes".into()));
        }
        let now = self.clock.now();
        let key = self
            .ca
            .jwt_signing_key()
            .map_err(|e| NodeError::Signing(e.to_string()))?;
        let jti = crate::new_id("svid_", now, self.rng.as_ref());
        let ttl = secs(entry.jwt_ttl);
        let token = jwt_svid::mint(
            &key,
            self.ca.trust_domain(),
            &entry.spiffe_id,
            audiences,
            now.unix_seconds(),
            ttl,
            jti.clone(),
        )
        .map_err(|e| NodeError::Signing(e.to_string()))?;
        let by = Principal::from_stored(format!("node:{}", node.spiffe_id));
        let mut record = jwt_svid_record(now, &by, request_id, entry)
            .detail("audience", audiences.to_vec())
            .detail("workload", serde_json::to_value(workload).unwrap_or_default());
        record.auth = Some(AuthEvidence {
            method: "node_attestation".into(),
            jti: Some(jti),
            ..AuthEvidence::default()
        });
        self.store.commit(ChangeSet::new().audit(record)).await?;
        Ok((entry.spiffe_id.clone(), token, now.unix_seconds() + ttl))
    }

    /// Records that a workload on this node matched no entry (the node answered
    /// `PermissionDenied`).
    pub async fn report_denied(
        &self,
        node: &AttestedNode,
        workload: &WorkloadEvidence,
        request_id: Option<&str>,
    ) -> Result<(), NodeError> {
        let by = Principal::from_stored(format!("node:{}", node.spiffe_id));
        let record = AuditRecord::new(self.clock.now(), EventType::WorkloadDenied, &by, request_id)
            .outcome(Outcome::Denied, "the caller matches no registration entry")
            .target("node", node.spiffe_id.as_str(), node.spiffe_id.as_str())
            .detail("workload", serde_json::to_value(workload).unwrap_or_default());
        self.store.commit(ChangeSet::new().audit(record)).await?;
        Ok(())
    }

    /// Bans an attested node: it can no longer renew or fetch SVIDs (the SVIDs it holds expire). A node that has not attested yet has nothing to ban, but its
    /// unspent join tokens are withdrawn instead (a leaked token must not let it join);
    /// `Stale` if the ID has neither.
    pub async fn ban(&self, ctx: &Ctx, spiffe_id: &str) -> Result<(), NodeError> {
        let now = self.clock.now();
        let record = AuditRecord::new(now, EventType::NodeBanned, &ctx.principal, ctx.request_id.as_deref())
            .target("node", spiffe_id, spiffe_id);
        let banned = self
            .store
            .commit(
                ChangeSet::new()
                    .change(Change::BanNode {
                        spiffe_id: spiffe_id.to_owned(),
                        at: now,
                    })
                    .audit(record),
            )
            .await;
        match banned {
            Ok(()) => {
                self.bans.add(spiffe_id);
                Ok(())
            }
            Err(StoreError::Stale { .. }) => {
                let record = AuditRecord::new(
                    now,
                    EventType::JoinTokenRevoked,
                    &ctx.principal,
                    ctx.request_id.as_deref(),
                )
                .target("node", spiffe_id, spiffe_id);
                let revoke = Change::RevokeJoinTokens {
                    spiffe_id: spiffe_id.to_owned(),
                };
                Ok(self.store.commit(ChangeSet::new().change(revoke).audit(record)).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list(&self) -> Result<Vec<AttestedNode>, NodeError> {
        Ok(self.store.list_nodes().await?)
    }
}

/// The audit record of a JWT-SVID minted for `entry`.
fn jwt_svid_record(now: Timestamp, by: &Principal, request_id: Option<&str>, entry: &RegistrationEntry) -> AuditRecord {
    let record = AuditRecord::new(now, EventType::SvidIssued, by, request_id)
        .detail("spiffe_id", entry.spiffe_id.as_str())
        .detail("entry_id", entry.id.as_str())
        .detail("svid_type", "jwt");
    // The target is the registry identity the SVID stands for, so tracing an agent shows its
    // SVIDs beside its tokens and decisions.
    match &entry.identity_id {
        Some(identity) => record.target("identity", identity.as_str(), entry.spiffe_id.as_str()),
        None => record.target("entry", &entry.id, entry.spiffe_id.as_str()),
    }
}

fn svid_serial(svid: &IssuedSvid) -> Result<String, NodeError> {
    sigil_crypto::x509::serial_hex(&svid.cert_der).map_err(|e| NodeError::Signing(e.to_string()))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
