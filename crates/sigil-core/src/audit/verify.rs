//! Verifying the log without trusting the server: recompute every leaf and the tree from the
//! records, and check each signed checkpoint's root against it.
//!
//! The export format (JSON Lines) is one header line, then checkpoint and record lines:
//! `{"type":"checkpoint","tree_size":N,"jws":"…"}` and
//! `{"type":"record","leaf_index":i,"leaf_hash":"<hex>","body":"<the record's stored JSON>"}`.
//! `body` is a string so its exact bytes — which the leaf hash covers — survive the round trip.

use serde::{Deserialize, Serialize};
use sigil_crypto::{Jwks, hex};
use sigil_proto::admin::AuditIndex;

use super::AuditRecord;
use super::log::{CHECKPOINT_TYP, CheckpointClaims, leaf_hash_of};
use super::merkle::Frontier;

pub const EXPORT_FORMAT: &str = "sigil-audit-export/1";

/// One line of an export file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExportLine {
    Header {
        format: String,
        issuer: String,
        exported_at: String,
    },
    /// After retention pruned the records below `tree_size`: the frontier of that prefix, which a
    /// signed checkpoint at exactly `tree_size` must vouch for.
    Base {
        tree_size: u64,
        frontier: Vec<BaseNode>,
    },
    Checkpoint {
        tree_size: u64,
        jws: String,
    },
    Record {
        leaf_index: u64,
        leaf_hash: String,
        body: String,
        /// The columns the record was stored under, when exported from a live log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<Box<AuditIndex>>,
    },
}

/// A perfect subtree hash: level, index, hex hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseNode {
    pub level: u32,
    pub index: u64,
    pub hash: String,
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub records: u64,
    pub checkpoints: u64,
    /// Leaves covered by the newest valid checkpoint.
    pub verified_size: u64,
    /// Checkpoints signed by a key neither published nor recorded in the log (removed by a
    /// rotation before keys were logged), left unchecked because a later checkpoint by a
    /// published key vouches for the records they cover.
    pub skipped_checkpoints: u64,
}

/// Where and how the log was found to be altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct Tampered {
    /// The first leaf found altered, when it can be named.
    pub leaf_index: Option<u64>,
    pub message: String,
}

fn tampered(leaf_index: Option<u64>, message: String) -> Tampered {
    Tampered { leaf_index, message }
}

/// Checks records (in file order) and checkpoints against the publisher's keys.
pub fn verify(lines: &[ExportLine], jwks: &Jwks, issuer: Option<&str>) -> Result<Report, Tampered> {
    let records: Vec<(u64, &str, &str)> = lines
        .iter()
        .filter_map(|l| match l {
            ExportLine::Record {
                leaf_index,
                leaf_hash,
                body,
                ..
            } => Some((*leaf_index, leaf_hash.as_str(), body.as_str())),
            _ => None,
        })
        .collect();
    let (mut checkpoints, skipped_checkpoints) = signed_checkpoints(lines, jwks, issuer, &records)?;
    checkpoints.sort_by_key(|c| c.0);
    if checkpoints.is_empty() && !records.is_empty() {
        return Err(tampered(
            None,
            "the export has records but no signed checkpoint: nothing can be verified".into(),
        ));
    }

    let (mut frontier, start) = base(lines, &checkpoints)?;
    // Pass 1: every record on its own (order, content, hash), so the first altered record is
    // named exactly wherever the per-record evidence allows it.
    let mut hashes = Vec::with_capacity(records.len());
    for (expected, (index, stored_hash, body)) in (start..).zip(records.iter().copied()) {
        hashes.push(check_record(expected, index, stored_hash, body, &records)?);
    }
    // The columns search and trace go by must still say what the verified records say.
    for l in lines {
        if let ExportLine::Record {
            leaf_index,
            body,
            index: Some(stored),
            ..
        } = l
        {
            check_index(*leaf_index, body, stored)?;
        }
    }
    // Pass 2: the tree, against every signed checkpoint.
    let mut next_checkpoint = checkpoints.iter().filter(|(size, _)| *size > start).peekable();
    let mut last_verified = start;
    for h in hashes {
        frontier.push(h);
        while let Some((size, root)) = next_checkpoint.peek() {
            if *size != frontier.size {
                break;
            }
            if frontier.root() != *root {
                return Err(tampered(
                    Some(last_verified),
                    format!(
                        "the records do not match the signed checkpoint at tree size {size}: a record in leaves {last_verified}..{} was modified, removed or inserted",
                        size - 1
                    ),
                ));
            }
            last_verified = *size;
            next_checkpoint.next();
        }
    }
    if let Some((size, _)) = next_checkpoint.next() {
        return Err(tampered(
            Some(frontier.size),
            format!(
                "the checkpoint at tree size {size} covers records missing from the log: record {} onwards was removed",
                frontier.size
            ),
        ));
    }
    // Integration signs a checkpoint in the same transaction as the records it adds, and an
    // export fetches the checkpoints of records integrated while it ran: a record past the
    // newest checkpoint is one whose checkpoints were removed (to hide that it was altered).
    if frontier.size > last_verified {
        return Err(tampered(
            Some(last_verified),
            format!(
                "records {last_verified}..{} are integrated but no signed checkpoint covers them: checkpoints were removed",
                frontier.size - 1
            ),
        ));
    }
    Ok(Report {
        records: frontier.size - start,
        checkpoints: checkpoints.len() as u64,
        verified_size: last_verified,
        skipped_checkpoints,
    })
}

/// Every checkpoint's tree size and signed root, and how many were skipped. A checkpoint signed
/// by a key rotation has removed from the JWKS is checked against the public key in that key's
/// `key.created` record — trusted only when the record and the checkpoint both lie inside a tree
/// a checkpoint by a published key signs (pass 2 then checks that root over the record). One
/// whose key the log does not hold either is skipped if such a checkpoint covers it.
fn signed_checkpoints(
    lines: &[ExportLine],
    jwks: &Jwks,
    issuer: Option<&str>,
    records: &[(u64, &str, &str)],
) -> Result<(Vec<SignedRoot>, u64), Tampered> {
    let mut signed = Vec::new();
    let mut by_removed_keys = Vec::new();
    for line in lines {
        if let ExportLine::Checkpoint { tree_size, jws } = line {
            match check_checkpoint(*tree_size, jws, jwks, issuer) {
                Ok(root) => signed.push((*tree_size, root)),
                Err(CheckpointFailure::UnknownKey(t)) => by_removed_keys.push((*tree_size, jws.as_str(), t)),
                Err(CheckpointFailure::Invalid(t)) => return Err(t),
            }
        }
    }
    if by_removed_keys.is_empty() {
        return Ok((signed, 0));
    }
    let covered = signed.iter().map(|(size, _)| *size).max().unwrap_or(0);
    let logged = logged_keys(records, covered);
    let mut skipped = 0;
    for (size, jws, unknown) in by_removed_keys {
        if size > covered {
            return Err(unknown);
        }
        match check_checkpoint(size, jws, &logged, issuer) {
            Ok(root) => signed.push((size, root)),
            Err(CheckpointFailure::UnknownKey(_)) => skipped += 1,
            Err(CheckpointFailure::Invalid(t)) => return Err(t),
        }
    }
    Ok((signed, skipped))
}

/// The public keys `key.created` records below leaf `covered` hold.
fn logged_keys(records: &[(u64, &str, &str)], covered: u64) -> Jwks {
    let keys = records
        .iter()
        .filter(|(index, _, _)| *index < covered)
        .filter_map(|(_, _, body)| serde_json::from_str::<AuditRecord>(body).ok())
        .filter(|r| r.event_type == super::EventType::KeyCreated)
        .filter_map(|r| serde_json::from_value(r.details.get("public_jwk")?.clone()).ok())
        .collect();
    Jwks { keys }
}

/// Checks one record's place, content and leaf hash; returns its recomputed leaf hash.
fn check_record(
    expected: u64,
    index: u64,
    stored_hash: &str,
    body: &str,
    records: &[(u64, &str, &str)],
) -> Result<[u8; 32], Tampered> {
    if index > expected {
        let later = records.iter().any(|(i, _, _)| *i == expected);
        let message = if later {
            format!("records were reordered: record {expected} appears after record {index} (position {expected})")
        } else {
            format!("record {expected} was removed (the record in its place has leaf index {index})")
        };
        return Err(tampered(Some(expected), message));
    }
    if index < expected {
        return Err(tampered(
            Some(expected),
            format!(
                "a record with leaf index {index} appears at position {expected}: records were reordered or inserted"
            ),
        ));
    }
    if serde_json::from_str::<AuditRecord>(body).is_err() {
        return Err(tampered(
            Some(index),
            format!("record {index} was modified: it is no longer a valid audit record"),
        ));
    }
    let h = leaf_hash_of(index, body);
    if hex(&h) != stored_hash {
        // A record hashed for the position before this one was pushed down by an insertion.
        if index > 0 && hex(&leaf_hash_of(index - 1, body)) == stored_hash {
            return Err(tampered(
                Some(index - 1),
                format!(
                    "a record was inserted at position {}: the records after it were shifted",
                    index - 1
                ),
            ));
        }
        return Err(tampered(
            Some(index),
            format!("record {index} was modified: its content does not match its leaf hash"),
        ));
    }
    Ok(h)
}

/// A stored record's index columns against the record itself (already checked against its
/// leaf hash): a column edited to hide the record from search or trace is named here.
fn check_index(index: u64, body: &str, stored: &AuditIndex) -> Result<(), Tampered> {
    let Ok(record) = serde_json::from_str::<AuditRecord>(body) else {
        return Ok(()); // pass 1 has already reported a body that does not parse
    };
    let expected = record.index();
    if expected == *stored {
        return Ok(());
    }
    let differing: Vec<&str> = [
        ("time", expected.time != stored.time),
        ("event_type", expected.event_type != stored.event_type),
        ("outcome", expected.outcome != stored.outcome),
        ("request_id", expected.request_id != stored.request_id),
        ("subject", expected.subject != stored.subject),
        ("actor", expected.actor != stored.actor),
        ("client_id", expected.client_id != stored.client_id),
        ("target_id", expected.target_id != stored.target_id),
        ("jti", expected.jti != stored.jti),
        ("acting_for", expected.acting_for != stored.acting_for),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    Err(tampered(
        Some(index),
        format!(
            "record {index}'s indexed columns were modified ({}): search and trace no longer find it by what it says",
            differing.join(", ")
        ),
    ))
}

/// The tree the records continue: empty, or the pruned prefix vouched for by a checkpoint.
fn base(lines: &[ExportLine], checkpoints: &[(u64, [u8; 32])]) -> Result<(Frontier, u64), Tampered> {
    let Some((size, nodes)) = lines.iter().find_map(|l| match l {
        ExportLine::Base { tree_size, frontier } if *tree_size > 0 => Some((*tree_size, frontier)),
        _ => None,
    }) else {
        return Ok((Frontier::default(), 0));
    };
    let mut map = std::collections::HashMap::new();
    for n in nodes {
        let h: [u8; 32] =
            unhex(&n.hash).ok_or_else(|| tampered(Some(size), "the base of the log has a malformed hash".into()))?;
        map.insert((n.level, n.index), h);
    }
    let frontier = Frontier::load(size, &map).ok_or_else(|| {
        tampered(
            Some(size),
            format!("the base of the log (records before {size} were pruned) is incomplete"),
        )
    })?;
    match checkpoints.iter().find(|(s, _)| *s == size) {
        Some((_, root)) if *root == frontier.root() => Ok((frontier, size)),
        Some(_) => Err(tampered(
            Some(size),
            format!("the pruned prefix (leaves 0..{size}) does not match the signed checkpoint at tree size {size}"),
        )),
        None => Err(tampered(
            Some(size),
            format!("records before {size} were pruned but no signed checkpoint at tree size {size} vouches for them"),
        )),
    }
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let v: Option<Vec<u8>> = (0..32)
        .map(|i| s.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect();
    v?.try_into().ok()
}

/// A checkpoint's tree size and the root hash it signs.
type SignedRoot = (u64, [u8; 32]);

/// Why a checkpoint did not check out: signed by a key not in the set, or anything else.
enum CheckpointFailure {
    UnknownKey(Tampered),
    Invalid(Tampered),
}

/// Verifies a checkpoint's signature and claims; returns its root hash.
fn check_checkpoint(size: u64, jws: &str, jwks: &Jwks, issuer: Option<&str>) -> Result<[u8; 32], CheckpointFailure> {
    let bad =
        |why: &str| CheckpointFailure::Invalid(tampered(None, format!("the checkpoint at tree size {size} {why}")));
    let v = sigil_crypto::verify_compact(jws, jwks).map_err(|e| {
        let failure = tampered(
            None,
            format!("the checkpoint at tree size {size} does not verify ({e}): wrong public key or forged"),
        );
        match e {
            sigil_crypto::JwsError::UnknownKey => CheckpointFailure::UnknownKey(failure),
            _ => CheckpointFailure::Invalid(failure),
        }
    })?;
    if v.typ.as_deref() != Some(CHECKPOINT_TYP) {
        return Err(bad("is not a checkpoint (wrong typ)"));
    }
    let claims: CheckpointClaims = serde_json::from_slice(&v.payload).map_err(|_| bad("has malformed claims"))?;
    if claims.tree_size != size {
        return Err(bad(&format!("claims tree size {}", claims.tree_size)));
    }
    if let Some(iss) = issuer
        && claims.iss != iss
    {
        return Err(bad(&format!("was issued by {:?}, not {iss:?}", claims.iss)));
    }
    let root = sigil_crypto::b64url_decode(&claims.root_hash).map_err(|_| bad("has a malformed root hash"))?;
    root.try_into().map_err(|_| bad("has a malformed root hash"))
}
