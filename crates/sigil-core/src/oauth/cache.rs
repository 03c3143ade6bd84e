//! A read cache for the token path. Entries live at most [`MAX_AGE`] — the bound on how
//! stale security state may be on a replica — and are dropped at once when this process commits
//! any registry change (the store's epoch moves), so a suspension made through this replica takes
//! effect on its next request. With PostgreSQL, other replicas' commits move the epoch too (their
//! `NOTIFY` arrives within milliseconds); the age bound is what holds if a notice is lost.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_AGE: Duration = Duration::from_secs(1);
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct ReadCache<K, V> {
    map: Mutex<HashMap<K, (Instant, u64, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for ReadCache<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> ReadCache<K, V> {
    /// The entry for `k` if it is fresh. Values are meant to be cheap to clone (an `Arc`): a
    /// hit is on every request's path.
    pub fn get<Q: Eq + Hash + ?Sized>(&self, k: &Q, epoch: u64) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        let map = self.map.lock().ok()?;
        match map.get(k) {
            Some((at, e, v)) if *e == epoch && at.elapsed() < MAX_AGE => Some(v.clone()),
            _ => None,
        }
    }

    pub fn put(&self, k: K, epoch: u64, v: V) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_ENTRIES {
                map.retain(|_, (at, e, _)| *e == epoch && at.elapsed() < MAX_AGE);
            }
            map.insert(k, (Instant::now(), epoch, v));
        }
    }
}
