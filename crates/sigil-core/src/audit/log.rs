//! The tamper-evident log: integration of records into the Merkle tree, signed checkpoints, proofs.
//!
//! Requests only *insert* records (a plain insert in their own transaction, sequence assigned by
//! the database). One integrator at a time — whoever holds the `audit-integrator` lease, on any
//! replica — takes the records not yet in the tree in sequence order, gives each the next leaf
//! index, appends it, stores the new perfect subtree hashes, and signs a checkpoint of the new
//! tree head, all in one commit fenced by the lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigil_types::Timestamp;
use tokio::sync::Mutex;

use super::merkle::{self, Frontier, Hash};
use crate::keys::{KeyError, KeyManager};
use crate::store::{Change, ChangeSet, Store, StoreError};
use crate::{Clock, Rng};

/// The media type in a checkpoint's JWS header.
pub const CHECKPOINT_TYP: &str = "sigil-audit-checkpoint+jwt";
const LEASE: &str = "audit-integrator";
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Most records integrated in one commit. Integration shares the writer with requests, so one
/// big step would stall every request in the batch behind it; small steps keep the token
/// endpoint's p99 down (5,000: ~50 ms, 512: ~25 ms, 128–256: ~12–15 ms in `sigil-load tokens`).
pub const MAX_INTEGRATION_BATCH: u32 = 256;

/// The bytes a leaf hashes: its index (so position is part of what is signed) and the record's
/// stored canonical JSON, byte for byte.
pub fn leaf_data(leaf_index: u64, body: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + body.len());
    v.extend_from_slice(&leaf_index.to_be_bytes());
    v.extend_from_slice(body.as_bytes());
    v
}

pub fn leaf_hash_of(leaf_index: u64, body: &str) -> Hash {
    merkle::leaf_hash(&leaf_data(leaf_index, body))
}

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tree_size: u64,
    pub root_hash: Hash,
    pub time: Timestamp,
    pub kid: String,
    /// Compact JWS over [`CheckpointClaims`].
    pub jws: String,
}

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointClaims {
    pub iss: String,
    pub tree_size: u64,
    /// base64url of the RFC 9162 root hash.
    pub root_hash: String,
    pub iat: i64,
}

impl CheckpointClaims {
    /// The root these claims sign, if they are for a tree of `size` leaves.
    pub fn root_for(&self, size: u64) -> Option<Hash> {
        let root = sigil_crypto::b64url_decode(&self.root_hash).ok()?;
        Hash::try_from(root.as_slice()).ok().filter(|_| self.tree_size == size)
    }
}

/// A claim on a named lease until `until`, valid if free, expired, or already ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseClaim {
    pub name: String,
    pub holder: String,
    pub now: Timestamp,
    pub until: Timestamp,
}

/// One integration step, committed atomically and fenced by the lease.
#[derive(Debug, Clone)]
pub struct Integration {
    pub lease: LeaseClaim,
    /// (seq, leaf index, leaf hash) for each newly integrated record, in leaf order.
    pub leaves: Vec<(i64, u64, Hash)>,
    /// The perfect subtrees the step completed, of the stored levels ([`merkle::is_stored`]).
    pub nodes: Vec<(u32, u64, Hash)>,
    pub checkpoint: Option<Checkpoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("the stored tree is incomplete: {0}")]
    Inconsistent(String),
    #[error("{0}")]
    BadRequest(String),
}

/// The integrator and proof service for one process.
#[derive(Debug)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    issuer: String,
    holder: String,
    held: Mutex<Held>,
}

/// What the integrator keeps between steps.
#[derive(Debug, Default)]
struct Held {
    /// The right edge of the tree after our last committed step; reloaded after losing the lease.
    frontier: Option<Frontier>,
    /// Our name is in the lease: we took it, and no step's fence has failed since. Each step's
    /// fence extends it, so a holder asks for it again only after losing it, and an idle holder
    /// writes nothing. (One that lapsed while nobody took it still fences for us: nobody can
    /// have integrated meanwhile.)
    lease: bool,
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, rng: &dyn Rng, issuer: String) -> Self {
        let mut id = [0u8; 10];
        rng.fill(&mut id);
        let holder = format!("integrator-{}", sigil_types::encode_ulid(0, id));
        Self {
            store,
            clock,
            issuer,
            holder,
            held: Mutex::new(Held::default()),
        }
    }

    /// This process's lease holder id (unique per process).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Integrates up to one batch of pending records. Returns how many were integrated (0 when
    /// nothing was pending or another replica holds the lease).
    pub async fn integrate_once(&self, keys: &KeyManager) -> Result<usize, AuditError> {
        let now = self.clock.now();
        let lease = LeaseClaim {
            name: LEASE.into(),
            holder: self.holder.clone(),
            now,
            until: now.plus(LEASE_TTL),
        };
        let mut held = self.held.lock().await;
        if !held.lease {
            match self
                .store
                .commit(ChangeSet::new().change(Change::AcquireLease(lease.clone())))
                .await
            {
                Ok(()) => held.lease = true,
                Err(StoreError::Stale { .. }) => {
                    held.frontier = None; // someone else integrates; our view of the tree goes stale
                    return Ok(0);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let pending = self.store.pending_audit(MAX_INTEGRATION_BATCH).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let (mut frontier, mut nodes) = match held.frontier.take() {
            Some(f) => (f, Vec::new()),
            None => self.load_frontier(keys).await?,
        };
        let start = frontier.clone();
        let mut leaves = Vec::with_capacity(pending.len());
        for (seq, body) in &pending {
            let index = frontier.size;
            let h = leaf_hash_of(index, body);
            leaves.push((*seq, index, h));
            nodes.extend(stored_only(frontier.push(h)));
        }
        let checkpoint = self.sign(keys, frontier.size, frontier.root())?;
        let n = leaves.len();
        let integration = Integration {
            lease,
            leaves,
            nodes,
            checkpoint: Some(checkpoint),
        };
        match self
            .store
            .commit(ChangeSet::new().change(Change::IntegrateAudit(Box::new(integration))))
            .await
        {
            Ok(()) => {
                held.frontier = Some(frontier);
                Ok(n)
            }
            Err(StoreError::Stale { .. }) => {
                // The fence failed: another replica took the lease.
                *held = Held::default();
                Ok(0)
            }
            Err(e) => {
                // Nothing was applied: keep the tree as it was before this step.
                held.frontier = Some(start);
                Err(e.into())
            }
        }
    }

    /// The stored tree's frontier, and the nodes to store again when they had to be recomputed.
    /// The tree must end where the last signed checkpoint says: the integrator signs only on
    /// top of a history it signed before. Stored nodes that disagree are rebuilt from the leaf
    /// hashes (they are a cache); leaves that disagree, or integrated leaves without any
    /// checkpoint, stop integration — signing them would vouch for a rewritten history.
    async fn load_frontier(&self, keys: &KeyManager) -> Result<(Frontier, Vec<(u32, u64, Hash)>), AuditError> {
        let size = self.store.audit_tree_size().await?;
        let signed = self.last_signed_root(keys, size).await?;
        let coords = Frontier::coordinates(size);
        let nodes = self.nodes(&coords).await?;
        if let Some(frontier) = Frontier::load(size, &nodes)
            && signed.is_none_or(|root| root == frontier.root())
        {
            return Ok((frontier, Vec::new()));
        }
        let (frontier, nodes) = self.rebuild_tree(size).await?;
        if signed.is_some_and(|root| root != frontier.root()) {
            return Err(AuditError::Inconsistent(format!(
                "the audit records' leaf hashes do not match the last signed checkpoint (size {size}): \
                 records were changed outside Sigil; integration stops until `sigil audit verify` is run and the store restored"
            )));
        }
        Ok((frontier, nodes))
    }

    /// The root the last checkpoint signed for a tree of `size` leaves (`None` for an empty
    /// tree). Read from the JWS, not from the `root_hash` column, which is a cache.
    async fn last_signed_root(&self, keys: &KeyManager, size: u64) -> Result<Option<Hash>, AuditError> {
        let tampered = |why: String| AuditError::Inconsistent(format!("{why}; integration stops"));
        let Some(checkpoint) = self.store.latest_checkpoint().await? else {
            return match size {
                0 => Ok(None),
                _ => Err(tampered(format!(
                    "{size} audit records are integrated but no signed checkpoint covers them (the checkpoints were removed)"
                ))),
            };
        };
        if checkpoint.tree_size != size {
            return Err(tampered(format!(
                "the last signed checkpoint is for {} leaves but {size} are integrated",
                checkpoint.tree_size
            )));
        }
        let mut verified = sigil_crypto::verify_compact(&checkpoint.jws, &keys.jwks());
        if matches!(verified, Err(sigil_crypto::JwsError::UnknownKey)) {
            // Signed by a key another replica activated that this one has not loaded yet. (A
            // key is removed only by a change whose own checkpoint a later key signs, so the
            // last checkpoint's key is always published.)
            keys.refresh().await?;
            verified = sigil_crypto::verify_compact(&checkpoint.jws, &keys.jwks());
        }
        let payload = match verified {
            Ok(v) => v.payload,
            Err(e) => {
                return Err(tampered(format!(
                    "the last checkpoint's signature does not verify: {e}"
                )));
            }
        };
        let claims: CheckpointClaims = serde_json::from_slice(&payload)
            .map_err(|_| tampered("the last checkpoint's claims are unreadable".into()))?;
        let root = claims
            .root_for(size)
            .ok_or_else(|| tampered("the last checkpoint's claims do not name this tree".into()))?;
        Ok(Some(root))
    }

    /// The tree nodes are derived data: when stored ones are missing, they are recomputed from
    /// the records' leaf hashes (and stored again with the next step), so integration goes on.
    /// Impossible once retention has pruned the first records.
    async fn rebuild_tree(&self, size: u64) -> Result<(Frontier, Vec<(u32, u64, Hash)>), AuditError> {
        const PAGE: u32 = 1000;
        let mut frontier = Frontier::default();
        let mut nodes = Vec::new();
        while frontier.size < size {
            let before = frontier.size;
            for leaf in self.store.list_leaves(frontier.size, PAGE).await? {
                if leaf.leaf_index != frontier.size || frontier.size == size {
                    break;
                }
                nodes.extend(stored_only(frontier.push(leaf.leaf_hash)));
            }
            if frontier.size == before {
                break; // a gap: those leaves are gone
            }
        }
        if frontier.size != size {
            return Err(AuditError::Inconsistent(format!(
                "missing tree nodes for size {size}, and leaves {}.. cannot rebuild them",
                frontier.size
            )));
        }
        tracing::warn!(
            size,
            nodes = nodes.len(),
            "stored audit tree nodes were missing; rebuilt from the leaf hashes"
        );
        Ok((frontier, nodes))
    }

    fn sign(&self, keys: &KeyManager, size: u64, root: Hash) -> Result<Checkpoint, AuditError> {
        let time = self.clock.now();
        let claims = CheckpointClaims {
            iss: self.issuer.clone(),
            tree_size: size,
            root_hash: sigil_crypto::b64url(&root),
            iat: time.unix_seconds(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| AuditError::Inconsistent(e.to_string()))?;
        let key = keys.active().ok_or(KeyError::NoActiveKey)?;
        let jws = sigil_crypto::sign_compact(&key, CHECKPOINT_TYP, &payload).map_err(KeyError::from)?;
        Ok(Checkpoint {
            tree_size: size,
            root_hash: root,
            time,
            kid: key.kid().to_owned(),
            jws,
        })
    }

    /// RFC 9162 inclusion proof for `leaf_index` in the tree of `tree_size` leaves.
    pub async fn inclusion_proof(&self, leaf_index: u64, tree_size: u64) -> Result<Vec<Hash>, AuditError> {
        let size = self.store.audit_tree_size().await?;
        if tree_size > size || leaf_index >= tree_size {
            return Err(AuditError::BadRequest(format!(
                "need leaf_index < tree_size <= {size} (the current tree size)"
            )));
        }
        let coords = merkle::needed_nodes(|src| {
            let _ = merkle::inclusion_proof(src, leaf_index, tree_size);
        });
        let nodes = self.nodes(&coords).await?;
        match merkle::inclusion_proof(&nodes, leaf_index, tree_size) {
            Some(proof) => Ok(proof),
            None => Err(self.missing_nodes(leaf_index).await),
        }
    }

    /// RFC 9162 consistency proof between two tree sizes.
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, AuditError> {
        let size = self.store.audit_tree_size().await?;
        if first == 0 || first > second || second > size {
            return Err(AuditError::BadRequest(format!(
                "need 0 < first <= second <= {size} (the current tree size)"
            )));
        }
        let coords = merkle::needed_nodes(|src| {
            let _ = merkle::consistency_proof(src, first, second);
        });
        let nodes = self.nodes(&coords).await?;
        match merkle::consistency_proof(&nodes, first, second) {
            Some(proof) => Ok(proof),
            None => Err(self.missing_nodes(first).await),
        }
    }

    /// Retention: deletes records older than `retain`, but only up to a checkpointed tree size,
    /// so the records that remain still verify against a signed tree head. Only the integrator
    /// (lease holder) prunes. Returns the new first leaf, if anything was pruned.
    /// `not_beyond` holds pruning below records not yet delivered to every SIEM sink.
    pub async fn prune(&self, retain: Duration, not_beyond: u64) -> Result<Option<u64>, AuditError> {
        let now = self.clock.now();
        let cutoff = sigil_types::Timestamp::from_unix_micros(
            now.unix_micros()
                .saturating_sub(i64::try_from(retain.as_micros()).unwrap_or(i64::MAX)),
        );
        let Some(point) = self.store.audit_prune_point(cutoff).await? else {
            return Ok(None);
        };
        if point > not_beyond || point <= self.store.audit_base().await? {
            return Ok(None);
        }
        let lease = LeaseClaim {
            name: LEASE.into(),
            holder: self.holder.clone(),
            now,
            until: now.plus(LEASE_TTL),
        };
        let record = super::AuditRecord::new(
            now,
            super::EventType::AuditPruned,
            &crate::model::Principal::system(),
            None,
        )
        .detail("before_leaf", point)
        .detail("cutoff", cutoff.to_rfc3339());
        // The pruned prefix's frontier nodes below the stored levels would go with its leaves,
        // so the prune keeps them; they can never be rebuilt afterwards, so they must first give
        // the root the checkpoint at the prune point signed (a leaf hash changed outside Sigil
        // would otherwise become part of the stored tree for good).
        let coords = Frontier::coordinates(point);
        let found = self.nodes(&coords).await?;
        let prefix = Frontier::load(point, &found)
            .ok_or_else(|| AuditError::Inconsistent(format!("missing tree nodes below leaf {point}")))?;
        if prefix.root() != self.signed_root_at(point).await? {
            return Err(AuditError::Inconsistent(format!(
                "the leaf hashes below {point} do not give the root its checkpoint signed: records were changed outside Sigil; the prune stops"
            )));
        }
        let frontier = coords
            .into_iter()
            .filter(|(l, _)| !merkle::is_stored(*l))
            .filter_map(|(l, i)| Some((l, i, *found.get(&(l, i))?)))
            .collect();
        match self
            .store
            .commit(
                ChangeSet::new()
                    .change(Change::PruneAudit {
                        lease,
                        before: point,
                        frontier,
                    })
                    .audit(record),
            )
            .await
        {
            Ok(()) => Ok(Some(point)),
            Err(StoreError::Stale { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The first stored leaf and the frontier nodes of the tree below it: what a verifier needs to
    /// check the remaining records after a prune.
    pub async fn base(&self) -> Result<(u64, Vec<(u32, u64, Hash)>), AuditError> {
        let base = self.store.audit_base().await?;
        let coords = Frontier::coordinates(base);
        let nodes = self.nodes(&coords).await?;
        let mut out = Vec::new();
        for (l, i) in coords {
            let h = nodes
                .get(&(l, i))
                .ok_or_else(|| AuditError::Inconsistent(format!("missing node {l}/{i}")))?;
            out.push((l, i, *h));
        }
        Ok((base, out))
    }

    /// Tree nodes at `coords`: the stored ones, and the others (below
    /// [`merkle::LOWEST_STORED_LEVEL`]) hashed again from the leaf hashes under them. Where a
    /// prune took those leaves, the prefix's frontier, stored by the prune, stands in for them.
    async fn nodes(&self, coords: &[(u32, u64)]) -> Result<HashMap<(u32, u64), Hash>, AuditError> {
        let mut nodes = self.store.audit_nodes(coords).await?;
        let unstored: Vec<(u32, u64)> = coords
            .iter()
            .copied()
            .filter(|&(l, i)| !merkle::is_stored(l) && !nodes.contains_key(&(l, i)))
            .collect();
        if unstored.is_empty() {
            return Ok(nodes);
        }
        let mut known = HashMap::new();
        for range in merged(unstored.iter().map(|&(l, i)| merkle::leaves_under(l, i))) {
            for (index, hash) in self.store.audit_leaf_hashes(range.start, range.end).await? {
                known.insert((0, index), hash);
            }
        }
        let pruned_below: Vec<(u32, u64)> = unstored
            .iter()
            .filter(|&&(l, i)| merkle::leaves_under(l, i).any(|leaf| !known.contains_key(&(0, leaf))))
            .flat_map(|&(l, i)| merkle::descendants(l, i))
            .collect();
        if !pruned_below.is_empty() {
            known.extend(self.store.audit_nodes(&pruned_below).await?);
        }
        for (l, i) in unstored {
            if let Some(h) = merkle::hash_from_below(l, i, &known) {
                nodes.insert((l, i), h);
            }
        }
        Ok(nodes)
    }

    /// The root the checkpoint at tree size `point` signed, read from its JWS claims, not from
    /// the `root_hash` column (`sigil audit verify` checks the signature: the key may have left
    /// the JWKS since).
    async fn signed_root_at(&self, point: u64) -> Result<Hash, AuditError> {
        let checkpoint = self
            .store
            .list_checkpoints(point.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|c| c.tree_size == point)
            .ok_or_else(|| AuditError::Inconsistent(format!("no checkpoint at tree size {point}")))?;
        checkpoint
            .jws
            .split('.')
            .nth(1)
            .and_then(|p| sigil_crypto::b64url_decode(p).ok())
            .and_then(|p| serde_json::from_slice::<CheckpointClaims>(&p).ok())
            .and_then(|c| c.root_for(point))
            .ok_or_else(|| AuditError::Inconsistent(format!("the checkpoint at {point} has unreadable claims")))
    }

    /// Why a proof that starts at `first_leaf` could not be computed: below the first stored
    /// leaf, retention removed the leaf hashes the unstored subtrees are hashed from.
    async fn missing_nodes(&self, first_leaf: u64) -> AuditError {
        match self.store.audit_base().await {
            Ok(base) if first_leaf < base => AuditError::BadRequest(format!(
                "records below leaf {base} were pruned (retention): proofs start at tree size {base}"
            )),
            Ok(_) => AuditError::Inconsistent("missing tree nodes".into()),
            Err(e) => e.into(),
        }
    }

    /// The root of the first `size` leaves, from stored nodes and ones hashed again below them.
    pub async fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        let coords = merkle::needed_nodes(|src| {
            let _ = merkle::root(src, size);
        });
        let nodes = self.nodes(&coords).await?;
        merkle::root(&nodes, size).ok_or_else(|| AuditError::Inconsistent("missing tree nodes".into()))
    }
}

/// The nodes of a step that are kept in storage.
fn stored_only(made: Vec<(u32, u64, Hash)>) -> impl Iterator<Item = (u32, u64, Hash)> {
    made.into_iter().filter(|(l, _, _)| merkle::is_stored(*l))
}

/// Leaf ranges, overlapping or adjacent ones joined, in order: one read per run of leaves.
fn merged(ranges: impl Iterator<Item = std::ops::Range<u64>>) -> Vec<std::ops::Range<u64>> {
    let mut v: Vec<_> = ranges.collect();
    v.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<std::ops::Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}
