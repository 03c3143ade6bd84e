//! The group committer's fast path: change sets whose every refusal can be judged for the
//! whole batch at once — audit records alone, token derivations (refused when the parent is
//! revoked), single-use marks (refused when already spent) and identity touches (never
//! refused) — are written at the end of the transaction instead of one savepoint each.
//!
//! Writes take their row locks in one order in every transaction: marks by key, then identity
//! touches by id, then derivations — the order of an issuance's own changes, which a change set
//! alone in its transaction applies as they come. So two PostgreSQL writers recording the same
//! marks or touching the same identities wait for each other instead of deadlocking. Touches
//! come after the marks so that a change set refused as a replay touches nothing either.

use std::collections::HashSet;

use sigil_core::audit::AuditRecord;
use sigil_core::store::{Change, ChangeSet, StoreError};
use sqlx::AnyConnection;

use crate::apply::single_use::{Mark, MarkKey, forget_marks, insert_marks_many};
use crate::apply::{apply_one, insert_audit_many, insert_derived_many, revoked_among};

/// Whether `job` can take the fast path.
pub fn takes(job: &ChangeSet) -> bool {
    job.changes.iter().all(|c| {
        matches!(
            c,
            Change::RecordDerivedToken { .. }
                | Change::RecordAssertion { .. }
                | Change::RecordGrantAssertion { .. }
                | Change::RecordDpopProof { .. }
                | Change::TouchIdentity { .. }
        )
    })
}

/// Judges the fast-path `jobs` (each with its index into `results`), refuses in `results` those
/// built on a revoked parent or spending a spent mark, then writes the rest together with
/// `audit` (the records of the change sets that already succeeded in savepoints). `Err`: a
/// statement failed and the attempt must be rolled back.
pub async fn write(
    conn: &mut AnyConnection,
    jobs: &[(usize, &ChangeSet)],
    results: &mut [Result<(), StoreError>],
    mut audit: Vec<&AuditRecord>,
) -> Result<(), StoreError> {
    let marks: Vec<Vec<Mark>> = jobs
        .iter()
        .map(|(_, job)| job.changes.iter().filter_map(Mark::of).collect())
        .collect();
    let parents: Vec<&str> = jobs.iter().flat_map(|(_, job)| parents_of(job)).collect();
    let revoked = revoked_among(conn, &parents).await?;

    let mut claimed: HashSet<&MarkKey> = HashSet::new();
    let mut passed: Vec<(usize, &ChangeSet, &[Mark])> = Vec::new();
    for ((n, job), job_marks) in jobs.iter().zip(&marks) {
        match judge(job, job_marks, &revoked, &mut claimed) {
            Ok(()) => passed.push((*n, job, job_marks)),
            Err(refusal) => refuse(results, *n, refusal),
        }
    }
    let to_record: Vec<&Mark> = passed.iter().flat_map(|(_, _, m)| m.iter()).collect();
    let recorded = insert_marks_many(conn, &to_record).await?;

    // A mark recorded before (by an earlier batch, or by another writer meanwhile) makes its
    // change set a replay; the other marks that change set recorded here are taken back.
    let mut touches: Vec<&Change> = Vec::new();
    let mut derived: Vec<&Change> = Vec::new();
    let mut forget: Vec<&MarkKey> = Vec::new();
    for (n, job, job_marks) in passed {
        if let Some(lost) = job_marks.iter().find(|m| !recorded.contains(&m.key)) {
            refuse(results, n, lost.replayed());
            forget.extend(job_marks.iter().map(|m| &m.key).filter(|k| recorded.contains(*k)));
            continue;
        }
        for change in &job.changes {
            match change {
                Change::TouchIdentity { .. } => touches.push(change),
                Change::RecordDerivedToken { .. } => derived.push(change),
                _ => {}
            }
        }
        audit.extend(job.audit.iter());
    }
    touches.sort_by_key(|c| match c {
        Change::TouchIdentity { id, .. } => Some(id.as_str()),
        _ => None,
    });
    for touch in touches {
        apply_one(conn, touch).await?;
    }
    forget_marks(conn, &forget).await?;
    insert_derived_many(conn, &derived).await?;
    insert_audit_many(conn, &audit).await
}

fn refuse(results: &mut [Result<(), StoreError>], n: usize, refusal: StoreError) {
    if let Some(result) = results.get_mut(n) {
        *result = Err(refusal);
    }
}

/// The first refusal of `job`'s changes that shows before anything is written, in their order:
/// a derivation from a revoked parent, or a mark spent earlier in the same batch (one stored
/// before shows when it is inserted). On success its marks are claimed, so a later change set of
/// the batch spending one of them is a replay.
fn judge<'a>(
    job: &ChangeSet,
    marks: &'a [Mark],
    revoked: &HashSet<String>,
    claimed: &mut HashSet<&'a MarkKey>,
) -> Result<(), StoreError> {
    let mut own: HashSet<&MarkKey> = HashSet::new();
    let mut marks_in_order = marks.iter();
    for change in &job.changes {
        if let Change::RecordDerivedToken { parent_jti, .. } = change {
            if revoked.contains(parent_jti) {
                return Err(StoreError::Stale {
                    entity: "subject token",
                });
            }
            continue;
        }
        if matches!(change, Change::TouchIdentity { .. }) {
            continue;
        }
        // Every other fast-path change is a mark, and `marks` holds them in the same order.
        let Some(mark) = marks_in_order.next() else { continue };
        if claimed.contains(&mark.key) || !own.insert(&mark.key) {
            return Err(mark.replayed());
        }
    }
    claimed.extend(own);
    Ok(())
}

/// The tokens a change set's derivation records were exchanged from.
fn parents_of(job: &ChangeSet) -> impl Iterator<Item = &str> {
    job.changes.iter().filter_map(|c| match c {
        Change::RecordDerivedToken { parent_jti, .. } => Some(parent_jti.as_str()),
        _ => None,
    })
}
