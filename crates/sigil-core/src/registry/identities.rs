//! Agents and workloads: non-human identities, each with a human owner and a lifecycle.

use sigil_proto::admin::{CreateIdentity, UpdateIdentity};
use sigil_types::{IdentityId, IdentityKind, IdentityStatus, StatusChange, UserId};

use super::{Ctx, Registry, RegistryError};
use crate::audit::{AuditRecord, EventType};
use crate::model::{Identity, IdentityFamily, IdentityQuery, IdentityRef, Meta, Page, UserRef};
use crate::store::{Change, ChangeSet};

impl Registry {
    pub async fn create_identity(
        &self,
        ctx: &Ctx,
        family: IdentityFamily,
        req: CreateIdentity,
    ) -> Result<Identity, RegistryError> {
        let kind = req.kind.unwrap_or(match family {
            IdentityFamily::Agents => IdentityKind::Agent,
            IdentityFamily::Workloads => IdentityKind::Service,
        });
        if IdentityFamily::of(kind) != family {
            return Err(RegistryError::invalid(
                "kind",
                format!(
                    "kind {kind} is not {}; use the {} endpoint",
                    crate::store::with_article(family.noun()),
                    IdentityFamily::of(kind).noun()
                ),
            ));
        }
        let now = self.clock.now();
        if let Some(exp) = req.expires_at
            && exp <= now
        {
            return Err(RegistryError::invalid("expires_at", "expires_at must be in the future"));
        }
        let owner = self.resolve_owner(&req.owner).await?;
        let (ms, rnd) = self.id_parts();
        let identity = Identity {
            id: IdentityId::generate(ms, rnd),
            name: req.name,
            kind,
            description: req.description,
            owner,
            team: req.team,
            labels: req.labels,
            status: IdentityStatus::Active,
            expires_at: req.expires_at,
            ceiling: req.ceiling,
            last_used_at: None,
            tokens_not_before: None,
            token_ttl_seconds: self.check_ttl(req.token_ttl_seconds)?,
            dpop_required: req.dpop_required,
            meta: Meta::new(now, &ctx.principal),
        };
        let audit = self
            .identity_event(ctx, EventType::IdentityCreated, &identity)
            .detail("owner", identity.owner.as_str())
            .detail("kind", identity.kind.as_str());
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::InsertIdentity(identity.clone()))
                    .audit(audit),
            )
            .await?;
        Ok(identity)
    }

    /// Looks an identity up; with a family, one of the other family is "not found".
    pub async fn get_identity(
        &self,
        family: Option<IdentityFamily>,
        r: &IdentityRef,
    ) -> Result<Identity, RegistryError> {
        let noun = family.map_or("identity", IdentityFamily::noun);
        match self.store.get_identity(r).await? {
            Some(i) if family.is_none_or(|f| IdentityFamily::of(i.kind) == f) => Ok(i),
            _ => Err(RegistryError::not_found(noun, r)),
        }
    }

    pub async fn list_identities(&self, q: &IdentityQuery) -> Result<Page<Identity>, RegistryError> {
        Ok(self.store.list_identities(q).await?)
    }

    pub async fn update_identity(
        &self,
        ctx: &Ctx,
        family: Option<IdentityFamily>,
        r: &IdentityRef,
        patch: UpdateIdentity,
    ) -> Result<Identity, RegistryError> {
        let new_owner = match &patch.owner {
            Some(o) => Some(self.resolve_owner(o).await?),
            None => None,
        };
        self.retrying(&format!("identity:{r}"), || async {
            let old = self.get_identity(family, r).await?;
            ctx.precondition(old.meta.version)?;
            if old.status.is_final() && (patch.ceiling.is_some() || patch.expires_at.is_some()) {
                return Err(RegistryError::Conflict(format!(
                    "the identity is {}, which is final: its ceiling and expiry no longer change",
                    old.status
                )));
            }
            let mut new = old.clone();
            let mut changed = Vec::new();
            if let Some(v) = &patch.description {
                new.description = v.clone();
                changed.push("description");
            }
            if let Some(v) = &new_owner {
                new.owner = v.clone();
                changed.push("owner");
            }
            if let Some(v) = &patch.team {
                new.team = v.clone();
                changed.push("team");
            }
            if let Some(v) = &patch.labels {
                new.labels = v.clone();
                changed.push("labels");
            }
            if let Some(v) = &patch.expires_at {
                if let Some(exp) = v
                    && *exp <= self.clock.now()
                {
                    // As at creation: to end an identity now, suspend, revoke or decommission it.
                    return Err(RegistryError::invalid("expires_at", "expires_at must be in the future"));
                }
                new.expires_at = *v;
                changed.push("expires_at");
            }
            if let Some(v) = &patch.ceiling {
                new.ceiling = v.clone();
                changed.push("ceiling");
            }
            if let Some(v) = patch.token_ttl_seconds {
                new.token_ttl_seconds = self.check_ttl(v)?;
                changed.push("token_ttl_seconds");
            }
            if let Some(v) = patch.dpop_required {
                new.dpop_required = v;
                changed.push("dpop_required");
            }
            if new == old {
                return Ok(old);
            }
            new.meta = old.meta.touched(self.clock.now(), &ctx.principal);
            let mut audit = self
                .identity_event(ctx, EventType::IdentityUpdated, &new)
                .detail("changed", changed);
            if new.owner != old.owner {
                audit = audit
                    .detail("from_owner", old.owner.as_str())
                    .detail("to_owner", new.owner.as_str());
            }
            self.store
                .commit(
                    ChangeSet::new()
                        .change(Change::UpdateIdentity {
                            identity: new.clone(),
                            expected_version: old.meta.version,
                        })
                        .audit(audit),
                )
                .await?;
            Ok(new)
        })
        .await
    }

    /// Moves an identity through its lifecycle. Asking for the state it is already in changes
    /// nothing; a transition the lifecycle does not allow is a conflict.
    pub async fn change_status(
        &self,
        ctx: &Ctx,
        family: Option<IdentityFamily>,
        r: &IdentityRef,
        change: StatusChange,
        reason: Option<String>,
    ) -> Result<Identity, RegistryError> {
        self.retrying(&format!("identity:{r}"), || async {
            let old = self.get_identity(family, r).await?;
            ctx.precondition(old.meta.version)?;
            let target = change.target();
            if old.status == target {
                return Ok(old);
            }
            if !change.allowed_from().contains(&old.status) {
                return Err(RegistryError::Conflict(format!(
                    "cannot {change} an identity that is {}",
                    old.status
                )));
            }
            if change == StatusChange::Resume {
                wait_out_cutoff_second(old.tokens_not_before, self.clock.now()).await;
            }
            let now = self.clock.now();
            if change == StatusChange::Resume && old.is_expired(now) {
                return Err(RegistryError::Conflict(
                    "the identity has expired; extend expires_at before resuming it".into(),
                ));
            }
            let mut new = old.clone();
            new.status = target;
            if target != sigil_types::IdentityStatus::Active {
                // Every token issued so far dies with this change, on every replica.
                new.tokens_not_before = Some(cutoff_after(now));
            }
            new.meta = old.meta.touched(now, &ctx.principal);
            let mut audit = self
                .identity_event(ctx, EventType::IdentityStatusChanged, &new)
                .detail("from", old.status.as_str())
                .detail("to", target.as_str());
            audit.action = Some(change.as_str().to_owned());
            audit.reason = reason.clone();
            self.store
                .commit(
                    ChangeSet::new()
                        .change(Change::UpdateIdentity {
                            identity: new.clone(),
                            expected_version: old.meta.version,
                        })
                        .audit(audit),
                )
                .await?;
            Ok(new)
        })
        .await
    }

    pub(super) async fn resolve_owner(&self, owner: &str) -> Result<UserId, RegistryError> {
        let r = UserRef::parse(owner).map_err(|e| RegistryError::invalid("owner", e.to_string()))?;
        match self.store.get_user(&r).await? {
            Some(u) => Ok(u.id),
            None => Err(RegistryError::invalid(
                "owner",
                format!("owner {owner:?} is not a registered user"),
            )),
        }
    }

    /// Access-token lifetimes an identity may ask for: 10 s up to the server's maximum.
    fn check_ttl(&self, ttl: Option<u32>) -> Result<Option<u32>, RegistryError> {
        let max = self.max_token_ttl_secs;
        match ttl {
            Some(t) if !(10..=max).contains(&t) => Err(RegistryError::invalid(
                "token_ttl_seconds",
                format!("must be between 10 and {max} (the server's oauth.max_access_token_ttl)"),
            )),
            other => Ok(other),
        }
    }

    fn identity_event(&self, ctx: &Ctx, t: EventType, i: &Identity) -> AuditRecord {
        AuditRecord::new(self.clock.now(), t, &ctx.principal, ctx.rid()).target(
            IdentityFamily::of(i.kind).noun(),
            i.id.as_str(),
            i.name.as_str(),
        )
    }
}

/// How far past a suspension its cut-off lies. An issuance checks the principal's status, then
/// commits: one that read "active" just before the suspension committed lands just after it,
/// stamped with its own (earlier or later) clock reading, and the cut-off must still cover it —
/// also on a replica whose cached read (at most a second old) predates the suspension. Nothing
/// legitimate is issued inside the margin: the principal is not active then.
pub(crate) const CUTOFF_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The cut-off for a suspension (or revocation, decommissioning) made at `now`.
pub(crate) fn cutoff_after(now: sigil_types::Timestamp) -> sigil_types::Timestamp {
    now.plus(CUTOFF_MARGIN)
}

/// Tokens carry `iat` in whole seconds, and a token whose `iat` is not after the second its
/// identity's tokens were cut off in is dead (it may predate the cut). A resume before the end
/// of that second (the cut-off lies [`CUTOFF_MARGIN`] past the suspension) therefore waits for
/// the next one, or the tokens issued right after it would be dead on arrival.
pub(super) async fn wait_out_cutoff_second(cut_off: Option<sigil_types::Timestamp>, now: sigil_types::Timestamp) {
    let Some(cut_off) = cut_off else { return };
    let next_second = (cut_off.unix_seconds() + 1).saturating_mul(1_000_000);
    let wait = next_second.saturating_sub(now.unix_micros());
    // Never longer than the margin and a second: a cut-off further ahead (another replica's
    // clock running fast) is waited for as far as that bound, not skipped.
    let longest = u64::try_from(CUTOFF_MARGIN.as_micros()).unwrap_or(u64::MAX) + 1_000_000;
    if let Ok(micros @ 1..) = u64::try_from(wait) {
        let micros = micros.min(longest);
        tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
    }
}

/// Refuses to make new credentials or registrations (`what`) for an identity in a final state.
pub(crate) fn refuse_final(identity: &Identity, what: &str) -> Result<(), RegistryError> {
    if identity.status.is_final() {
        return Err(RegistryError::Conflict(format!(
            "{} is {}, which is final: no new {what} for it",
            identity.name, identity.status
        )));
    }
    Ok(())
}
