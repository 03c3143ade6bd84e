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

/// Cached values are shared, not copied: a hit on the token path used to clone the whole
/// client, identity, user and resource records (two dozen allocations a token).
#[derive(Debug)]
pub struct RegistryReads {
    store: Arc<dyn Store>,
    clients: ReadCache<String, Option<Arc<OAuthClient>>>,
    users: ReadCache<UserRef, Option<Arc<User>>>,
    identities: ReadCache<IdentityRef, Option<Arc<Identity>>>,
    resources: ReadCache<ResourceRef, Option<Arc<Resource>>>,
}

/// Looks `key` up in `cache` for the store's current epoch, else reads (only then is the read
/// started) and caches it.
async fn through<K, Q, V, F>(
    store: &dyn Store,
    cache: &ReadCache<K, Option<Arc<V>>>,
    key: &Q,
    read: impl FnOnce() -> F,
) -> Result<Option<Arc<V>>, StoreError>
where
    K: Eq + std::hash::Hash + Clone + std::borrow::Borrow<Q>,
    Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    F: Future<Output = Result<Option<V>, StoreError>>,
{
    let epoch = store.registry_epoch();
    if let Some(v) = cache.get(key, epoch) {
        return Ok(v);
    }
    let v = read().await?.map(Arc::new);
    cache.put(key.to_owned(), epoch, v.clone());
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

    pub async fn client(&self, id: &str) -> Result<Option<Arc<OAuthClient>>, StoreError> {
        through(&*self.store, &self.clients, id, || self.store.get_client(id)).await
    }

    pub async fn user(&self, r: &UserRef) -> Result<Option<Arc<User>>, StoreError> {
        through(&*self.store, &self.users, r, || self.store.get_user(r)).await
    }

    pub async fn identity(&self, r: &IdentityRef) -> Result<Option<Arc<Identity>>, StoreError> {
        through(&*self.store, &self.identities, r, || self.store.get_identity(r)).await
    }

    /// A resource by id or URI; a root URL is found whichever way its trailing slash is
    /// written ([`sigil_types::ResourceUri::root_twin`]).
    pub async fn resource(&self, r: &ResourceRef) -> Result<Option<Arc<Resource>>, StoreError> {
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

    async fn resource_exactly(&self, r: &ResourceRef) -> Result<Option<Arc<Resource>>, StoreError> {
        through(&*self.store, &self.resources, r, || self.store.get_resource(r)).await
    }

    /// A user's username (policy entities name users by it); the id itself if the user is gone.
    pub async fn username(&self, id: &UserId) -> Result<String, StoreError> {
        Ok(self
            .user(&UserRef::Id(id.clone()))
            .await?
            .map_or_else(|| id.to_string(), |u| u.username.to_string()))
    }
}
