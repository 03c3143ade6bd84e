//! Domain entities → admin API views.

use sigil_proto::admin::{IdentityView, KeyView, ResourceView, UserView};
use sigil_types::Timestamp;

use crate::keys::StoredKey;
use crate::model::{Identity, Resource, User};

pub fn user_view(u: &User) -> UserView {
    UserView {
        id: u.id.to_string(),
        username: u.username.clone(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        groups: u.groups.clone(),
        status: u.status,
        created_at: u.meta.created_at,
        updated_at: u.meta.updated_at,
        created_by: u.meta.created_by.as_str().to_owned(),
        updated_by: u.meta.updated_by.as_str().to_owned(),
        version: u.meta.version,
    }
}

pub fn identity_view(i: &Identity, now: Timestamp) -> IdentityView {
    IdentityView {
        id: i.id.to_string(),
        name: i.name.clone(),
        kind: i.kind,
        description: i.description.clone(),
        owner: i.owner.to_string(),
        team: i.team.clone(),
        labels: i.labels.clone(),
        status: i.status,
        effective_status: i.effective_status(now),
        expires_at: i.expires_at,
        ceiling: i.ceiling.clone(),
        token_ttl_seconds: i.token_ttl_seconds,
        dpop_required: i.dpop_required,
        last_used_at: i.last_used_at,
        created_at: i.meta.created_at,
        updated_at: i.meta.updated_at,
        created_by: i.meta.created_by.as_str().to_owned(),
        updated_by: i.meta.updated_by.as_str().to_owned(),
        version: i.meta.version,
    }
}

pub fn resource_view(r: &Resource) -> ResourceView {
    ResourceView {
        id: r.id.to_string(),
        uri: r.uri.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        owner: r.owner.to_string(),
        scopes: r.scopes.clone(),
        servers: r.servers.iter().map(ToString::to_string).collect(),
        created_at: r.meta.created_at,
        updated_at: r.meta.updated_at,
        created_by: r.meta.created_by.as_str().to_owned(),
        updated_by: r.meta.updated_by.as_str().to_owned(),
        version: r.meta.version,
    }
}

pub fn key_view(k: &StoredKey) -> KeyView {
    KeyView {
        kid: k.kid.clone(),
        alg: k.alg.as_str().to_owned(),
        state: k.state.as_str().to_owned(),
        created_at: k.created_at,
        activate_at: k.activate_at,
        retired_at: k.retired_at,
        remove_after: k.remove_after,
    }
}
