//! Policy set versions: upload (compiled and validated before anything is stored), activation,
//! rollback, and the per-replica active engine that follows the store within a second.

use std::sync::{Arc, RwLock};

use sigil_core::audit::{AuditRecord, EventType, PolicyEvidence};
use sigil_core::model::Principal;
use sigil_core::policy::{PolicyActivation, PolicyVersion};
use sigil_core::ports::Clock;
use sigil_core::store::{Change, ChangeSet, Store, StoreError};

use crate::{Engine, PolicyError};

/// Retries when two replicas pick the same next version number at once.
const UPLOAD_ATTEMPTS: usize = 5;
/// The limit on one upload (policies plus schema fragment).
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PolicyAdminError {
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    #[error("policy version {0} does not exist")]
    NotFound(u64),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an upload or activation changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Activated {
    pub version: u64,
    pub previous: u64,
}

#[derive(Debug)]
pub struct PolicyService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    current: RwLock<Arc<Engine>>,
}

impl PolicyService {
    /// Starts with the built-in policies alone (version 0); [`Self::refresh`] then installs the
    /// active version from the store.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Self, PolicyError> {
        Ok(Self {
            store,
            clock,
            current: RwLock::new(Arc::new(Engine::compile(0, "", None)?)),
        })
    }

    /// The engine deciding now on this replica.
    pub fn current(&self) -> Arc<Engine> {
        match self.current.read() {
            Ok(e) => Arc::clone(&e),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn install(&self, engine: Engine) {
        let engine = Arc::new(engine);
        match self.current.write() {
            Ok(mut e) => *e = engine,
            Err(poisoned) => *poisoned.into_inner() = engine,
        }
    }

    /// Follows the store: if another replica (or this one) activated a different version, compile
    /// and install it. Called every 200 ms by the server.
    pub async fn refresh(&self) -> Result<(), PolicyAdminError> {
        let active = self.active_version().await?;
        if active == self.current().version() {
            return Ok(());
        }
        let engine = self.compile_stored(active).await?;
        tracing::info!(version = active, "policy version installed");
        self.install(engine);
        Ok(())
    }

    async fn active_version(&self) -> Result<u64, StoreError> {
        Ok(self.store.policy_activations(1).await?.first().map_or(0, |a| a.version))
    }

    async fn compile_stored(&self, version: u64) -> Result<Engine, PolicyAdminError> {
        let v = self
            .store
            .get_policy_version(version)
            .await?
            .ok_or(PolicyAdminError::NotFound(version))?;
        Ok(Engine::compile(version, &v.policies, v.schema.as_deref())?)
    }

    /// Validates and stores a new version (not yet active). Invalid policies change nothing.
    pub async fn upload(
        &self,
        policies: String,
        schema: Option<String>,
        description: Option<String>,
        by: &Principal,
        request_id: Option<&str>,
    ) -> Result<PolicyVersion, PolicyAdminError> {
        if policies.len() + schema.as_ref().map_or(0, String::len) > MAX_POLICY_BYTES {
            return Err(PolicyError::one(format!("a policy set is at most {MAX_POLICY_BYTES} bytes")).into());
        }
        let compiled = Engine::compile(0, &policies, schema.as_deref())?;
        for _ in 0..UPLOAD_ATTEMPTS {
            let next = self
                .store
                .list_policy_versions()
                .await?
                .first()
                .map_or(1, |v| v.version + 1);
            let now = self.clock.now();
            let version = PolicyVersion {
                version: next,
                policies: policies.clone(),
                schema: schema.clone(),
                description: description.clone(),
                created_at: now,
                created_by: by.as_str().to_owned(),
            };
            let mut record = AuditRecord::new(now, EventType::PolicyUploaded, by, request_id)
                .detail("policy_count", compiled.policy_count())
                .detail("bytes", policies.len());
            record.policy = Some(PolicyEvidence {
                version: next.to_string(),
                determining: Vec::new(),
            });
            let cs = ChangeSet::new()
                .change(Change::InsertPolicyVersion(version.clone()))
                .audit(record);
            match self.store.commit(cs).await {
                Ok(()) => return Ok(version),
                Err(StoreError::Duplicate { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(PolicyAdminError::Conflict(
            "other uploads kept taking the next version number; retry".into(),
        ))
    }

    /// Makes `version` the active one, here at once and on other replicas within a second.
    pub async fn activate(
        &self,
        version: u64,
        by: &Principal,
        request_id: Option<&str>,
    ) -> Result<Activated, PolicyAdminError> {
        let engine = self.compile_stored(version).await?;
        let previous = self.active_version().await?;
        if version == previous {
            // Already active: nothing changes and nothing is recorded, so the activation history
            // (which rollback reads) holds each switch once, not a version after itself.
            self.install(engine);
            return Ok(Activated { version, previous });
        }
        let now = self.clock.now();
        let mut record =
            AuditRecord::new(now, EventType::PolicyActivated, by, request_id).detail("previous_version", previous);
        record.policy = Some(PolicyEvidence {
            version: version.to_string(),
            determining: Vec::new(),
        });
        let cs = ChangeSet::new()
            .change(Change::ActivatePolicy {
                version,
                at: now,
                by: by.as_str().to_owned(),
            })
            .audit(record);
        match self.store.commit(cs).await {
            Ok(()) => {}
            Err(StoreError::MissingReference { .. }) => return Err(PolicyAdminError::NotFound(version)),
            Err(e) => return Err(e.into()),
        }
        self.install(engine);
        Ok(Activated { version, previous })
    }

    /// Activates again the version that was active before the current one: before the first
    /// activation, that is version 0, the built-in policies alone.
    pub async fn rollback(&self, by: &Principal, request_id: Option<&str>) -> Result<Activated, PolicyAdminError> {
        let history = self.store.policy_activations(2).await?;
        if history.is_empty() {
            return Err(PolicyAdminError::Conflict(
                "no version was ever activated: the built-in policies (version 0) are active".into(),
            ));
        }
        let before = history.get(1).map_or(0, |a| a.version);
        self.activate(before, by, request_id).await
    }

    pub async fn list(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        self.store.list_policy_versions().await
    }

    pub async fn get(&self, version: u64) -> Result<Option<PolicyVersion>, StoreError> {
        self.store.get_policy_version(version).await
    }

    pub async fn activations(&self, limit: u32) -> Result<Vec<PolicyActivation>, StoreError> {
        self.store.policy_activations(limit).await
    }

    /// Compiles a stored version without activating it (for `test` and `explain`).
    pub async fn engine_for(&self, version: Option<u64>) -> Result<Arc<Engine>, PolicyAdminError> {
        match version {
            None => Ok(self.current()),
            Some(v) if v == self.current().version() => Ok(self.current()),
            Some(v) => Ok(Arc::new(self.compile_stored(v).await?)),
        }
    }
}

/// The token endpoint's question, decided by the active version as Sigil's `token.issue` action
/// for every principal of the chain.
impl sigil_core::oauth::policy::IssuancePolicy for PolicyService {
    fn decide_scopes(
        &self,
        q: &sigil_core::oauth::policy::ScopeQuestion<'_>,
    ) -> Result<Vec<sigil_core::oauth::policy::ScopeAnswer>, String> {
        let engine = self.current();
        use sigil_core::oauth::policy::ChainPrincipal;
        let query = crate::Query {
            chain: q
                .chain
                .iter()
                .map(|m| match *m {
                    ChainPrincipal::User(u) => crate::ChainMember::User(u),
                    ChainPrincipal::Identity { identity, owner } => crate::ChainMember::Identity { identity, owner },
                })
                .collect(),
            action: crate::TOKEN_ISSUE,
            resource: crate::ResourceInput::Registered {
                resource: q.resource,
                owner: q.resource_owner,
            },
            context: crate::RequestContext {
                now: q.now,
                scopes: std::collections::BTreeSet::new(),
                audience: Some(q.resource.uri.to_string()),
                auth_method: if q.dpop_bound {
                    "dpop".into()
                } else {
                    q.auth_method.to_owned()
                },
                environment: None,
                purpose: None,
                scope: None,
            },
        };
        // One entity set for every scope: only the context's `scope` differs.
        let contexts: Vec<crate::RequestContext> = q
            .scopes
            .iter()
            .map(|scope| crate::RequestContext {
                scope: Some((*scope).to_owned()),
                ..query.context.clone()
            })
            .collect();
        let decisions = engine.decide_each(&query, &contexts).map_err(|e| e.0)?;
        Ok(decisions
            .iter()
            .map(|d| sigil_core::oauth::policy::ScopeAnswer {
                allowed: d.allowed,
                policy_version: d.version,
                determining: d.determining_policies(),
                reason: d.deny_reason(),
            })
            .collect())
    }
}
