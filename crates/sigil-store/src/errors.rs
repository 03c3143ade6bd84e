//! sqlx errors → the store port's errors.

use sigil_core::store::StoreError;
use sqlx::error::ErrorKind;

/// What a failed statement was doing, to name the right entity and field in the error.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub entity: &'static str,
    /// Unique columns of the entity, most specific first (`username` before `name`), primary key last.
    pub unique_fields: &'static [&'static str],
    /// A delete: a foreign-key violation means the row is still referenced.
    pub is_delete: bool,
    /// For inserts/updates: what a foreign-key violation refers to.
    pub references: &'static str,
}

pub fn map(e: sqlx::Error, op: Op) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let text = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
        match db.kind() {
            ErrorKind::UniqueViolation => {
                let field = op
                    .unique_fields
                    .iter()
                    .find(|f| text.contains(&format!(".{f}")) || text.contains(&format!("_{f}_")))
                    .or_else(|| op.unique_fields.iter().find(|f| text.contains(**f)))
                    .copied()
                    // Primary-key violations name a constraint like `settings_pkey`: the primary
                    // key is listed last.
                    .or_else(|| op.unique_fields.last().copied())
                    .unwrap_or("id");
                return StoreError::Duplicate {
                    entity: op.entity,
                    field,
                };
            }
            ErrorKind::ForeignKeyViolation if op.is_delete => {
                return StoreError::StillReferenced { entity: op.entity };
            }
            ErrorKind::ForeignKeyViolation => {
                return StoreError::MissingReference { entity: op.references };
            }
            _ => {}
        }
    }
    unavailable(e)
}

pub fn unavailable(e: sqlx::Error) -> StoreError {
    if aborted_by_the_server(&e) {
        return StoreError::Unavailable(format!("{ABORTED}{e}"));
    }
    StoreError::Unavailable(e.to_string())
}

/// How an aborted write's error starts, so the writer still recognises it once it has become a
/// change set's own [`StoreError`] (inside a savepoint, or alone in its transaction).
const ABORTED: &str = "aborted by the server to break a conflict with another writer: ";

/// PostgreSQL's `deadlock_detected` (40P01) and `serialization_failure` (40001): the server
/// rolled the transaction (or the savepoint the statement ran in) back to break a conflict
/// with another writer, so nothing of it took effect and running it again can succeed.
pub fn aborted_by_the_server(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// Whether an [`StoreError::Unavailable`] message is [`unavailable`]'s for a write the server
/// aborted.
pub fn is_aborted(message: &str) -> bool {
    message.starts_with(ABORTED)
}

pub fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}
