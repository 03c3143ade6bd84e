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
    StoreError::Unavailable(e.to_string())
}

pub fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}
