//! Registry reads for the request paths (token endpoint, access decisions), through the
//! one-second [`ReadCache`]: entries are dropped at once when this process commits a registry
//! change, and other replicas' changes are seen within a second. One instance per process,
//! shared by every path, so a read warms the cache for all of them.

use std::sync::Arc;

use sigil_types::UserId;

use super::OAuthClient;
use super::cache::ReadCache;
use crate::model::{Identity, IdentityRef, Resource, ResourceRef, User, UserRef};
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct RegistryReads {
    store: Arc<dyn Store>,
    clients: ReadCache<String, Option<OAuthClient>>,
    users: ReadCache<String, Option<User>>,
    identities: ReadCache<String, Option<Identity>>,
    resources: ReadCache<String, Option<Resource>>,
}

/// Looks `key` up in `cache` for the store's current epoch, else reads and caches it.
async fn through<V: Clone>(
    store: &dyn Store,
    cache: &ReadCache<String, V>,
    key: String,
    read: impl Future<Output = Result<V, StoreError>>,
) -> Result<V, StoreError> {
    let epoch = store.registry_epoch();
    if let Some(v) = cache.get(&key, epoch) {
        return Ok(v);
    }
    let v = read.await?;
    cache.put(key, epoch, v.clone());
    Ok(v)
}

impl RegistryReads {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clients: ReadCache::default(),
            users: ReadCache::default(),
            identities: ReadCache::default(),
            resources: ReadCache::default(),
        }
    }

    pub async fn client(&self, id: &str) -> Result<Option<OAuthClient>, StoreError> {
        through(&*self.store, &self.clients, id.to_owned(), self.store.get_client(id)).await
    }

    pub async fn user(&self, r: &UserRef) -> Result<Option<User>, StoreError> {
        through(&*self.store, &self.users, r.to_string(), self.store.get_user(r)).await
    }

    pub async fn identity(&self, r: &IdentityRef) -> Result<Option<Identity>, StoreError> {
        through(
            &*self.store,
            &self.identities,
            r.to_string(),
            self.store.get_identity(r),
        )
        .await
    }

    /// A resource by id or URI; a root URL is found whichever way its trailing slash is
    /// written ([`sigil_types::ResourceUri::root_twin`]).
    pub async fn resource(&self, r: &ResourceRef) -> Result<Option<Resource>, StoreError> {
        if let Some(found) = self.resource_exactly(r).await? {
            return Ok(Some(found));
        }
        match r {
            ResourceRef::Uri(uri) => match uri.root_twin() {
                Some(twin) => self.resource_exactly(&ResourceRef::Uri(twin)).await,
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    async fn resource_exactly(&self, r: &ResourceRef) -> Result<Option<Resource>, StoreError> {
        through(
            &*self.store,
            &self.resources,
            format!("{r:?}"),
            self.store.get_resource(r),
        )
        .await
    }

    /// A user's username (policy entities name users by it); the id itself if the user is gone.
    pub async fn username(&self, id: &UserId) -> Result<String, StoreError> {
        Ok(self
            .user(&UserRef::Id(id.clone()))
            .await?
            .map_or_else(|| id.to_string(), |u| u.username.to_string()))
    }
}
