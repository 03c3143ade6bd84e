//! What an embedded (SQLite) store knows not to be revoked, so that introspection and every grant
//! that takes a token (token exchange, ID-JAG) stop asking the database per request whether the
//! token was revoked: that read was a hand-off to sqlx's SQLite thread and back on every call.
//!
//! An SQLite file is served by one `sigil serve` process, and every revocation is a change set
//! this process commits through [`crate::SqlStore`]. So an answer "not revoked" stays true until
//! the next commit that revokes something: the writer moves the epoch after each such batch,
//! before it answers any request of it, and an answer remembered under an older epoch is asked
//! again. PostgreSQL replicas revoke each other's tokens, and no notice reaches them as a commit
//! does: they keep asking the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many answers are kept; when full the memory starts over (the next asks read the
/// database). Bounded so that a stream of distinct tokens cannot grow the process.
const CAPACITY: usize = 16_384;

/// Tokens known not to be revoked, each with the revocation epoch it was read in.
#[derive(Debug, Default)]
pub struct NotRevoked {
    epoch: AtomicU64,
    known: Mutex<HashMap<Box<str>, u64>>,
}

impl NotRevoked {
    /// The epoch to read the database in: take it before the read, so that a revocation
    /// committed during the read leaves the answer already stale.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether `jti` was read as not revoked since the last revoking commit.
    pub fn knows(&self, jti: &str) -> bool {
        let now = self.epoch();
        self.known.lock().is_ok_and(|k| k.get(jti) == Some(&now))
    }

    /// Remembers that `jti` was read as not revoked in `epoch`.
    pub fn remember(&self, jti: &str, epoch: u64) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= CAPACITY {
                known.clear();
            }
            known.insert(jti.into(), epoch);
        }
    }

    /// A change set that revokes tokens has committed (or failed: then it costs a read per
    /// token, nothing more).
    pub fn revoked_some(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_lasts_until_the_next_revocation() {
        let m = NotRevoked::default();
        let e = m.epoch();
        assert!(!m.knows("a"));
        m.remember("a", e);
        assert!(m.knows("a"));
        m.revoked_some();
        assert!(!m.knows("a"), "a revocation ends every remembered answer");
    }

    #[test]
    fn an_answer_read_across_a_revocation_is_not_trusted() {
        let m = NotRevoked::default();
        let e = m.epoch();
        // The read began, then a revocation committed, then the read answered "not revoked".
        m.revoked_some();
        m.remember("a", e);
        assert!(!m.knows("a"));
    }

    #[test]
    fn the_memory_is_bounded() {
        let m = NotRevoked::default();
        for n in 0..=CAPACITY {
            m.remember(&n.to_string(), 0);
        }
        assert!(m.known.lock().unwrap().len() <= CAPACITY);
        assert!(m.knows(&CAPACITY.to_string()));
    }
}
