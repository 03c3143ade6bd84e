//! The action-to-identity trace: typed records, a Merkle tree over them (RFC 9162 style), signed
//! checkpoints, proofs and offline verification.

pub mod log;
pub mod merkle;
mod query;
mod record;
pub mod verify;

pub use log::{AuditError, AuditLog, Checkpoint, CheckpointClaims, Integration, LeaseClaim};
pub use query::AuditQuery;
pub use record::*;
pub use sigil_proto::admin::AuditIndex;
