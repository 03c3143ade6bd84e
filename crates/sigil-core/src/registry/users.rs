//! Users: the humans who own identities and for whom agents act.

use sigil_proto::admin::{CreateUser, UpdateUser};
use sigil_types::{UserId, UserStatus};

use super::{Ctx, Registry, RegistryError};
use crate::audit::{AuditRecord, EventType};
use crate::model::{Meta, Page, User, UserQuery, UserRef};
use crate::store::{Change, ChangeSet};

impl Registry {
    pub async fn create_user(&self, ctx: &Ctx, req: CreateUser) -> Result<User, RegistryError> {
        let now = self.clock.now();
        let (ms, rnd) = self.id_parts();
        let user = User {
            id: UserId::generate(ms, rnd),
            username: req.username,
            email: req.email,
            display_name: req.display_name,
            groups: req.groups,
            status: req.status.unwrap_or(UserStatus::Active),
            tokens_not_before: None,
            meta: Meta::new(now, &ctx.principal),
        };
        let audit = self.user_event(ctx, EventType::UserCreated, &user);
        self.store
            .commit(ChangeSet::new().change(Change::InsertUser(user.clone())).audit(audit))
            .await?;
        Ok(user)
    }

    pub async fn get_user(&self, r: &UserRef) -> Result<User, RegistryError> {
        self.store
            .get_user(r)
            .await?
            .ok_or_else(|| RegistryError::not_found("user", r))
    }

    pub async fn list_users(&self, q: &UserQuery) -> Result<Page<User>, RegistryError> {
        Ok(self.store.list_users(q).await?)
    }

    pub async fn update_user(&self, ctx: &Ctx, r: &UserRef, patch: UpdateUser) -> Result<User, RegistryError> {
        self.retrying(&format!("user:{r}"), || async {
            let old = self.get_user(r).await?;
            ctx.precondition(old.meta.version)?;
            let mut new = old.clone();
            let mut changed = Vec::new();
            if let Some(v) = &patch.email {
                new.email = v.clone();
                changed.push("email");
            }
            if let Some(v) = &patch.display_name {
                new.display_name = v.clone();
                changed.push("display_name");
            }
            if let Some(v) = &patch.groups {
                new.groups = v.clone();
                changed.push("groups");
            }
            if let Some(v) = patch.status {
                new.status = v;
                changed.push("status");
            }
            if new == old {
                return Ok(old);
            }
            if new.status != old.status && new.status == UserStatus::Active {
                super::identities::wait_out_cutoff_second(old.tokens_not_before, self.clock.now()).await;
            }
            let now = self.clock.now();
            if new.status != old.status && new.status != UserStatus::Active {
                // Every token and grant issued for her so far dies with this change.
                new.tokens_not_before = Some(super::identities::cutoff_after(now));
            }
            new.meta = old.meta.touched(now, &ctx.principal);
            let audit = self
                .user_event(ctx, EventType::UserUpdated, &new)
                .detail("changed", changed);
            self.store
                .commit(
                    ChangeSet::new()
                        .change(Change::UpdateUser {
                            user: new.clone(),
                            expected_version: old.meta.version,
                        })
                        .audit(audit),
                )
                .await?;
            Ok(new)
        })
        .await
    }

    /// Deletes a user. A user who still owns identities or resources is refused unless
    /// `transfer_to` names who takes them over; the transfer and the deletion are one commit.
    pub async fn delete_user(
        &self,
        ctx: &Ctx,
        r: &UserRef,
        transfer_to: Option<&UserRef>,
    ) -> Result<(), RegistryError> {
        self.retrying(&format!("user:{r}"), || async {
            let user = self.get_user(r).await?;
            ctx.precondition(user.meta.version)?;
            let mut cs = ChangeSet::new();
            match transfer_to {
                Some(to_ref) => {
                    let to = self
                        .store
                        .get_user(to_ref)
                        .await?
                        .ok_or_else(|| RegistryError::invalid("transfer_to", format!("user {to_ref} does not exist")))?;
                    if to.id == user.id {
                        return Err(RegistryError::invalid("transfer_to", "cannot transfer ownership to the user being deleted"));
                    }
                    let now = self.clock.now();
                    for id in self.store.identity_ids_owned_by(&user.id).await? {
                        cs = cs.audit(
                            AuditRecord::new(now, EventType::IdentityOwnerTransferred, &ctx.principal, ctx.rid())
                                .target("identity", id.as_str(), id.as_str())
                                .detail("from", user.id.as_str())
                                .detail("to", to.id.as_str()),
                        );
                    }
                    cs = cs.change(Change::TransferOwnership {
                        from: user.id.clone(),
                        to: to.id.clone(),
                        by: ctx.principal.as_str().to_owned(),
                        at: now,
                    });
                }
                None => {
                    let owned = self.store.count_owned(&user.id).await?;
                    if owned > 0 {
                        return Err(RegistryError::Conflict(format!(
                            "user {} still owns {owned} identities or resources; transfer ownership first (transfer_to)",
                            user.username
                        )));
                    }
                }
            }
            let audit = self.user_event(ctx, EventType::UserDeleted, &user);
            cs = cs
                .change(Change::DeleteUser { id: user.id.clone(), expected_version: user.meta.version })
                .audit(audit);
            self.store.commit(cs).await?;
            Ok(())
        })
        .await
    }

    fn user_event(&self, ctx: &Ctx, t: EventType, u: &User) -> AuditRecord {
        AuditRecord::new(self.clock.now(), t, &ctx.principal, ctx.rid()).target(
            "user",
            u.id.as_str(),
            u.username.as_str(),
        )
    }
}
