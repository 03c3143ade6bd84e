//! Resources: the APIs and MCP servers that accept Sigil tokens (RFC 8707 resource indicators).

use sigil_proto::admin::{CreateResource, UpdateResource};
use sigil_types::{IdentityId, ResourceId};

use super::{Ctx, Registry, RegistryError};
use crate::audit::{AuditRecord, EventType};
use crate::model::{IdentityRef, Meta, Page, Resource, ResourceQuery, ResourceRef};
use crate::store::{Change, ChangeSet};

impl Registry {
    pub async fn create_resource(&self, ctx: &Ctx, req: CreateResource) -> Result<Resource, RegistryError> {
        if req.uri.names_default_port() {
            return Err(RegistryError::invalid(
                "uri",
                "must not name the scheme's default port (a URL parser drops it, so clients would send the URI without it)",
            ));
        }
        // `https://x` and `https://x/` are one URL, and requests find either spelling.
        if let Some(twin) = req.uri.root_twin()
            && self
                .store
                .get_resource(&ResourceRef::Uri(twin.clone()))
                .await?
                .is_some()
        {
            return Err(RegistryError::Conflict(format!(
                "{twin} is already registered, and is the same URL"
            )));
        }
        let owner = self.resolve_owner(&req.owner).await?;
        let servers = self.resolve_servers(&req.servers).await?;
        let now = self.clock.now();
        let (ms, rnd) = self.id_parts();
        let resource = Resource {
            id: ResourceId::generate(ms, rnd),
            uri: req.uri,
            name: req.name,
            description: req.description,
            owner,
            scopes: req.scopes,
            servers,
            meta: Meta::new(now, &ctx.principal),
        };
        let audit = self
            .resource_event(ctx, EventType::ResourceCreated, &resource)
            .detail("scopes", resource.scopes.to_oauth_string())
            .detail("servers", servers_detail(&resource));
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::InsertResource(resource.clone()))
                    .audit(audit),
            )
            .await?;
        Ok(resource)
    }

    pub async fn get_resource(&self, r: &ResourceRef) -> Result<Resource, RegistryError> {
        self.store
            .get_resource(r)
            .await?
            .ok_or_else(|| RegistryError::not_found("resource", r))
    }

    pub async fn list_resources(&self, q: &ResourceQuery) -> Result<Page<Resource>, RegistryError> {
        Ok(self.store.list_resources(q).await?)
    }

    pub async fn update_resource(
        &self,
        ctx: &Ctx,
        r: &ResourceRef,
        patch: UpdateResource,
    ) -> Result<Resource, RegistryError> {
        let new_owner = match &patch.owner {
            Some(o) => Some(self.resolve_owner(o).await?),
            None => None,
        };
        let new_servers = match &patch.servers {
            Some(s) => Some(self.resolve_servers(s).await?),
            None => None,
        };
        self.retrying(&format!("resource:{r}"), || async {
            let old = self.get_resource(r).await?;
            ctx.precondition(old.meta.version)?;
            let mut new = old.clone();
            let mut changed = Vec::new();
            if let Some(v) = &patch.name {
                new.name = v.clone();
                changed.push("name");
            }
            if let Some(v) = &patch.description {
                new.description = v.clone();
                changed.push("description");
            }
            if let Some(v) = &new_owner {
                new.owner = v.clone();
                changed.push("owner");
            }
            if let Some(v) = &patch.scopes {
                new.scopes = v.clone();
                changed.push("scopes");
            }
            if let Some(v) = &new_servers {
                new.servers = v.clone();
                changed.push("servers");
            }
            if new == old {
                return Ok(old);
            }
            new.meta = old.meta.touched(self.clock.now(), &ctx.principal);
            let audit = self
                .resource_event(ctx, EventType::ResourceUpdated, &new)
                .detail("changed", changed)
                .detail("servers", servers_detail(&new));
            self.store
                .commit(
                    ChangeSet::new()
                        .change(Change::UpdateResource {
                            resource: new.clone(),
                            expected_version: old.meta.version,
                        })
                        .audit(audit),
                )
                .await?;
            Ok(new)
        })
        .await
    }

    pub async fn delete_resource(&self, ctx: &Ctx, r: &ResourceRef) -> Result<(), RegistryError> {
        self.retrying(&format!("resource:{r}"), || async {
            let res = self.get_resource(r).await?;
            ctx.precondition(res.meta.version)?;
            let audit = self.resource_event(ctx, EventType::ResourceDeleted, &res);
            self.store
                .commit(
                    ChangeSet::new()
                        .change(Change::DeleteResource {
                            id: res.id.clone(),
                            expected_version: res.meta.version,
                        })
                        .audit(audit),
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// The serving identities, by name or id, as ids: each must be a registered identity.
    async fn resolve_servers(&self, servers: &[String]) -> Result<Vec<IdentityId>, RegistryError> {
        const MAX_SERVERS: usize = 64;
        if servers.len() > MAX_SERVERS {
            return Err(RegistryError::invalid("servers", format!("at most {MAX_SERVERS}")));
        }
        let mut ids: Vec<IdentityId> = Vec::with_capacity(servers.len());
        for s in servers {
            if sigil_types::UserId::looks_like(s) {
                return Err(RegistryError::invalid(
                    "servers",
                    format!("{s:?} is a user: a resource is served by agents or workloads"),
                ));
            }
            let r = IdentityRef::parse(s).map_err(|e| RegistryError::invalid("servers", e.to_string()))?;
            let Some(identity) = self.store.get_identity(&r).await? else {
                return Err(RegistryError::invalid(
                    "servers",
                    format!("{s:?} is not a registered agent or workload"),
                ));
            };
            if identity.status.is_final() {
                return Err(RegistryError::invalid(
                    "servers",
                    format!("{s:?} is {}: it serves nothing any more", identity.status.as_str()),
                ));
            }
            if !ids.contains(&identity.id) {
                ids.push(identity.id);
            }
        }
        Ok(ids)
    }

    fn resource_event(&self, ctx: &Ctx, t: EventType, r: &Resource) -> AuditRecord {
        let mut rec = AuditRecord::new(self.clock.now(), t, &ctx.principal, ctx.rid()).target(
            "resource",
            r.id.as_str(),
            r.name.as_str(),
        );
        if let Some(target) = rec.target.as_mut() {
            target.resource = Some(r.uri.to_string());
        }
        rec
    }
}

/// The identities serving a resource, for its audit records: who may introspect its tokens
/// is a grant the trail must show.
fn servers_detail(r: &Resource) -> Vec<String> {
    r.servers.iter().map(ToString::to_string).collect()
}
