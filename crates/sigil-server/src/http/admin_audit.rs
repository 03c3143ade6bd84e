//! `/admin/v1/audit`: search, the tree's leaves and checkpoints, proofs, and traces.

use axum::Json;
use axum::extract::RawQuery;
use axum::response::{IntoResponse, Response};
use sigil_core::audit::{AuditError, AuditQuery, Checkpoint, EventType, Outcome};
use sigil_core::model::{IdentityRef, UserRef};
use sigil_core::store::StoredAudit;
use sigil_crypto::hex;
use sigil_proto::admin::{
    AuditEntryView, CheckpointView, ConsistencyProofView, InclusionProofView, LeafView, ListResponse,
};
use sigil_types::Timestamp;

use super::State;
use super::error::ApiError;
use super::extract::Admin;
use super::extract::Path;
use super::query::Params;

type Result<T> = std::result::Result<T, ApiError>;

fn entry(r: &StoredAudit) -> AuditEntryView {
    AuditEntryView {
        seq: r.seq,
        leaf_index: r.leaf_index,
        record: serde_json::to_value(&r.record).unwrap_or_default(),
    }
}

pub fn checkpoint_view(c: &Checkpoint) -> CheckpointView {
    CheckpointView {
        tree_size: c.tree_size,
        root_hash: hex(&c.root_hash),
        time: c.time,
        kid: c.kid.clone(),
        jws: c.jws.clone(),
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Store(s) => s.into(),
            AuditError::Keys(k) => k.into(),
            AuditError::BadRequest(m) => ApiError::Invalid {
                field: None,
                message: m,
            },
            AuditError::Inconsistent(m) => {
                tracing::error!(error = m, "audit tree is inconsistent");
                ApiError::Internal
            }
        }
    }
}

/// Resolves an agent name to its id so both forms match.
async fn agent_keys(app: &crate::App, agent: &str) -> Result<Vec<String>> {
    let mut keys = vec![agent.to_owned()];
    if let Ok(r) = IdentityRef::parse(agent)
        && let Some(i) = app.store.get_identity(&r).await?
    {
        keys.push(i.id.to_string());
        keys.push(i.name.to_string());
    }
    Ok(keys)
}

/// Resolves a username to the user's id (records name the subject by id) so both forms match.
async fn user_keys(app: &crate::App, user: &str) -> Result<Vec<String>> {
    let mut keys = vec![user.to_owned()];
    if let Ok(r) = UserRef::parse(user)
        && let Some(u) = app.store.get_user(&r).await?
    {
        keys.push(u.id.to_string());
        keys.push(u.username.to_string());
    }
    Ok(keys)
}

/// `GET /admin/v1/audit/records?type=&outcome=&agent=&user=&client=&request=&jti=&since=&until=`
pub async fn search(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(
        q.as_deref(),
        &[
            "type", "outcome", "agent", "user", "client", "request", "jti", "since", "until",
        ],
    )?;
    let since = p.parsed("since", Timestamp::parse_rfc3339)?;
    let until = p.parsed("until", Timestamp::parse_rfc3339)?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::invalid("since", "since must not be after until"));
    }
    let page = p.page()?;
    if let Some(c) = &page.after
        && c.parse::<i64>().is_err()
    {
        return Err(ApiError::invalid("cursor", "is not a cursor this server returned"));
    }
    let agent = match p.get("agent") {
        Some(a) => agent_keys(&app, a).await?,
        None => Vec::new(),
    };
    let query = AuditQuery {
        event_type: p.parsed("type", EventType::parse)?,
        outcome: p.parsed("outcome", Outcome::parse)?,
        agent,
        user: match p.get("user") {
            Some(u) => user_keys(&app, u).await?,
            None => Vec::new(),
        },
        client_id: p.get("client").map(str::to_owned),
        request_id: p.get("request").map(str::to_owned),
        jti: p.get("jti").map(str::to_owned),
        since,
        until,
        page,
    };
    let found = app.store.search_audit(&query).await?;
    Ok(Json(ListResponse {
        items: found.items.iter().map(entry).collect(),
        next_cursor: found.next_cursor,
    })
    .into_response())
}

fn number(p: &Params, key: &str) -> Result<Option<u64>> {
    p.parsed(key, |v| v.parse::<u64>().map_err(|_| "must be a non-negative integer"))
}

/// Where a page of a positional list starts: `key` (the documented parameter) or the `cursor`
/// a previous page's `next_cursor` gave, which holds the same number. Not both.
fn position(p: &Params, key: &str) -> Result<u64> {
    match (number(p, key)?, number(p, "cursor")?) {
        (Some(_), Some(_)) => Err(ApiError::invalid("cursor", format!("give {key} or cursor, not both"))),
        (n, c) => Ok(n.or(c).unwrap_or(0)),
    }
}

/// `GET /admin/v1/audit/leaves?from=N&limit=M`: integrated records in tree order, as stored.
pub async fn leaves(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["from"])?;
    let from = position(&p, "from")?;
    let limit = p.page()?.limit;
    let rows = app.store.list_leaves(from, limit).await?;
    let items: Vec<LeafView> = rows
        .iter()
        .map(|r| LeafView {
            leaf_index: r.leaf_index,
            leaf_hash: hex(&r.leaf_hash),
            body: r.body.clone(),
            index: Some(r.index.clone()),
        })
        .collect();
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|l| (l.leaf_index + 1).to_string()))
        .flatten();
    Ok(Json(ListResponse { items, next_cursor }).into_response())
}

/// `GET /admin/v1/audit/base`: where the stored log starts after retention.
pub async fn base(axum::extract::State(app): State, Admin(_): Admin) -> Result<Response> {
    let (size, nodes) = app.audit.base().await?;
    let frontier = nodes.iter().map(|(l, i, h)| (*l, *i, hex(h))).collect();
    Ok(Json(sigil_proto::admin::AuditBaseView {
        tree_size: size,
        frontier,
    })
    .into_response())
}

/// `GET /admin/v1/audit/checkpoint`: the latest signed tree head.
pub async fn latest_checkpoint(axum::extract::State(app): State, Admin(_): Admin) -> Result<Response> {
    match app.store.latest_checkpoint().await? {
        Some(c) => Ok(Json(checkpoint_view(&c)).into_response()),
        None => Err(ApiError::NotFound("no checkpoint yet: the log is empty".into())),
    }
}

/// `GET /admin/v1/audit/checkpoints?after=N&limit=M`
pub async fn checkpoints(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["after"])?;
    let after = position(&p, "after")?;
    let limit = p.page()?.limit;
    let list = app.store.list_checkpoints(after, limit).await?;
    let next_cursor = (list.len() == limit as usize)
        .then(|| list.last().map(|c| c.tree_size.to_string()))
        .flatten();
    Ok(Json(ListResponse {
        items: list.iter().map(checkpoint_view).collect(),
        next_cursor,
    })
    .into_response())
}

/// `GET /admin/v1/audit/proof/inclusion?leaf_index=I[&tree_size=N]` (default: latest checkpoint).
pub async fn inclusion(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["leaf_index", "tree_size"])?;
    let index = number(&p, "leaf_index")?.ok_or_else(|| ApiError::invalid("leaf_index", "leaf_index is required"))?;
    let size = match number(&p, "tree_size")? {
        Some(s) => s,
        None => app.store.latest_checkpoint().await?.map_or(0, |c| c.tree_size),
    };
    let proof = app.audit.inclusion_proof(index, size).await?;
    let leaf = app.store.list_leaves(index, 1).await?;
    let leaf_hash = leaf
        .first()
        .map(|l| l.leaf_hash)
        .ok_or_else(|| ApiError::NotFound("no such leaf".into()))?;
    let root = app.audit.root_at(size).await?;
    Ok(Json(InclusionProofView {
        leaf_index: index,
        tree_size: size,
        leaf_hash: hex(&leaf_hash),
        root_hash: hex(&root),
        proof: proof.iter().map(|h| hex(h)).collect(),
    })
    .into_response())
}

/// `GET /admin/v1/audit/proof/consistency?first=M&second=N`
pub async fn consistency(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["first", "second"])?;
    let first = number(&p, "first")?.ok_or_else(|| ApiError::invalid("first", "first is required"))?;
    let second = number(&p, "second")?.ok_or_else(|| ApiError::invalid("second", "second is required"))?;
    let proof = app.audit.consistency_proof(first, second).await?;
    Ok(Json(ConsistencyProofView {
        first,
        second,
        first_root: hex(&app.audit.root_at(first).await?),
        second_root: hex(&app.audit.root_at(second).await?),
        proof: proof.iter().map(|h| hex(h)).collect(),
    })
    .into_response())
}

/// `GET /admin/v1/audit/trace/{id}`: every record tied to a request id, a token id (`jti`), an
/// agent or a user (name or id), oldest first, for `sigil trace` to draw.
pub async fn trace(axum::extract::State(app): State, Admin(_): Admin, Path(id): Path<String>) -> Result<Response> {
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::invalid("id", "must be 1 to 256 characters"));
    }
    let mut found: Vec<StoredAudit> = Vec::new();
    // A user's trace is the same by name or by id: records about the user (as target, by id)
    // and those the user directed (as subject) both belong to it.
    let users = user_keys(&app, &id).await?;
    let mut actors = agent_keys(&app, &id).await?;
    actors.extend(
        users
            .iter()
            .filter(|u| !actors.contains(u))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let queries = [
        AuditQuery {
            request_id: Some(id.clone()),
            ..Default::default()
        },
        AuditQuery {
            jti: Some(id.clone()),
            ..Default::default()
        },
        AuditQuery {
            agent: actors,
            ..Default::default()
        },
        AuditQuery {
            user: users,
            ..Default::default()
        },
    ];
    for mut q in queries {
        q.page = sigil_core::model::PageRequest::new(None, Some(sigil_core::model::MAX_PAGE))
            .map_err(|e| ApiError::invalid(e.what, e.to_string()))?;
        found.extend(app.store.search_audit(&q).await?.items);
    }
    found.sort_by_key(|r| r.seq);
    found.dedup_by_key(|r| r.seq);
    Ok(Json(ListResponse {
        items: found.iter().map(entry).collect(),
        next_cursor: None,
    })
    .into_response())
}
