//! The registry of users, non-human identities and resources: the inventory every other
//! capability hangs on. Every change is committed together with its audit record.

mod error;
mod identities;
mod resources;
mod users;
mod views;

use std::sync::Arc;

pub use error::RegistryError;
pub(crate) use identities::refuse_final;
pub use views::{identity_view, key_view, resource_view, user_view};

use crate::model::Principal;
use crate::store::{Store, StoreError};
use crate::{Clock, Rng};

/// Who is asking, for attribution in `updated_by` and the audit trail.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Principal,
    pub request_id: Option<String>,
    /// The request's `If-Match` precondition on the record it changes, if it sent one.
    pub if_match: Option<IfMatch>,
}

/// An `If-Match` precondition (RFC 9110 §13.1.1) on a record's version, which is its entity
/// tag: the change applies only to the version the caller last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current version.
    Any,
    /// The versions the caller's strong entity tags name (none when no tag names a version).
    Versions(Vec<i64>),
}

impl Ctx {
    pub fn new(principal: Principal, request_id: Option<String>) -> Self {
        Self {
            principal,
            request_id,
            if_match: None,
        }
    }

    #[must_use]
    pub fn with_if_match(mut self, if_match: Option<IfMatch>) -> Self {
        self.if_match = if_match;
        self
    }

    /// Checked against the record as read, inside the read-modify-write: a change between the
    /// read and the commit makes the commit stale, and the re-read fails the precondition.
    pub(crate) fn precondition(&self, version: i64) -> Result<(), RegistryError> {
        match &self.if_match {
            None | Some(IfMatch::Any) => Ok(()),
            Some(IfMatch::Versions(v)) if v.contains(&version) => Ok(()),
            Some(IfMatch::Versions(_)) => Err(RegistryError::PreconditionFailed(format!(
                "If-Match does not name the current version (\"{version}\")"
            ))),
        }
    }

    pub(crate) fn rid(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

/// How often a read-modify-write is retried when another writer changed the row in between.
const MAX_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
    /// The longest access-token lifetime an identity may ask for: the server's maximum.
    max_token_ttl_secs: u32,
    /// One lock per record being read-modified-written by this process: concurrent updates of
    /// one record queue here instead of colliding in the store and retrying. Across replicas
    /// the version check and [`Self::retrying`] still decide.
    row_locks: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, rng: Arc<dyn Rng>) -> Self {
        Self {
            store,
            clock,
            rng,
            max_token_ttl_secs: 86_400,
            row_locks: Arc::default(),
        }
    }

    /// Caps the `token_ttl_seconds` identities may be given at the server's maximum access-token
    /// lifetime, so a larger value is refused instead of being silently cut at issuance.
    #[must_use]
    pub fn with_max_token_ttl(mut self, max: std::time::Duration) -> Self {
        self.max_token_ttl_secs = u32::try_from(max.as_secs()).unwrap_or(u32::MAX).max(10);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn id_parts(&self) -> (u64, [u8; 10]) {
        let ms = u64::try_from(self.clock.now().unix_millis()).unwrap_or(0);
        (ms, self.rng.bytes10())
    }

    /// Runs a read-modify-write until it commits or fails for a reason other than a concurrent
    /// update. Each attempt re-reads, so a patch is applied to the latest version: no lost update.
    /// `record` names the record (kind and reference) for this process's queue of its writers.
    async fn retrying<T, F, Fut>(&self, record: &str, mut attempt: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let lock = self.row_lock(record);
        let _queued = lock.lock().await;
        let mut last = RegistryError::Store(StoreError::Stale { entity: "entity" });
        for n in 0..MAX_ATTEMPTS {
            match attempt().await {
                Err(RegistryError::Store(e @ StoreError::Stale { .. })) => last = RegistryError::Store(e),
                other => return other,
            }
            // Writers that collided on one row would collide again if they all retried at once
            // (each commit waits for a group commit of a few ms): spread them out, at random,
            // over a window that doubles with each attempt.
            let mut b = [0u8; 4];
            self.rng.fill(&mut b);
            let window_us = 1_000u64 << n;
            tokio::time::sleep(std::time::Duration::from_micros(
                u64::from(u32::from_le_bytes(b)) % window_us,
            ))
            .await;
        }
        Err(last)
    }

    /// The lock for `record`; locks nobody holds or waits for are dropped on the way.
    fn row_lock(&self, record: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.row_locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(record.to_owned()).or_default())
    }
}
