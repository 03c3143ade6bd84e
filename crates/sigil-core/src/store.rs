//! The storage port. Reads are grouped by aggregate; every write goes through [`Store::commit`],
//! which applies a set of changes and their audit records atomically.

use async_trait::async_trait;
use sigil_types::{IdentityId, ResourceId, UserId};

use crate::admin_auth::AdminCredential;
use std::collections::HashMap;

use crate::audit::merkle::Hash;
use crate::audit::{AuditQuery, AuditRecord, Checkpoint, Integration, LeaseClaim};
use crate::keys::StoredKey;
use crate::model::{
    Identity, IdentityQuery, IdentityRef, Page, Resource, ResourceQuery, ResourceRef, User, UserQuery, UserRef,
};
use crate::oauth::OAuthClient;

/// "an identity", "a user": the noun with its indefinite article, for messages.
pub fn with_article(noun: &str) -> String {
    // "a user", "a URI": a leading `u` sounding like "you" takes "a".
    let you = ["us", "uri", "uni"].iter().any(|p| noun.starts_with(p));
    let vowel = noun.starts_with(['a', 'e', 'i', 'o', 'u']) && !you;
    format!("{} {noun}", if vowel { "an" } else { "a" })
}

/// Storage failures, by what the caller can do about them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A unique field is already taken.
    #[error("{} with this {field} already exists", with_article(entity))]
    Duplicate { entity: &'static str, field: &'static str },
    /// The row changed since it was read (optimistic concurrency), or was removed meanwhile.
    #[error("the {entity} was changed by another request; retry")]
    Stale { entity: &'static str },
    /// A row that the change refers to does not exist.
    #[error("the referenced {entity} does not exist")]
    MissingReference { entity: &'static str },
    /// The row is still referenced by others (e.g. a user who still owns identities).
    #[error("the {entity} is still referenced")]
    StillReferenced { entity: &'static str },
    /// The database cannot be reached or failed; details are logged, not returned.
    #[error("storage is unavailable")]
    Unavailable(String),
    /// Stored data could not be read back into domain types.
    #[error("stored data is invalid")]
    Corrupt(String),
}

/// Rows of each table one [`Change::PurgeExpired`] forgets at most, as the server purges: a
/// chunk takes tens of milliseconds of the writer's time on tables of millions of rows, where
/// the whole of a minute's expiries in one delete took seconds.
pub const PURGE_CHUNK: u32 = 500;

/// One write. Inserts fail on duplicates; updates and deletes name the version they read and
/// fail with [`StoreError::Stale`] if it is no longer current (no lost updates).
#[derive(Debug, Clone)]
pub enum Change {
    InsertUser(User),
    UpdateUser {
        user: User,
        expected_version: i64,
    },
    DeleteUser {
        id: UserId,
        expected_version: i64,
    },
    InsertIdentity(Identity),
    UpdateIdentity {
        identity: Identity,
        expected_version: i64,
    },
    /// Moves every identity and resource owned by `from` to `to` (before deleting a user).
    TransferOwnership {
        from: UserId,
        to: UserId,
        by: String,
        at: sigil_types::Timestamp,
    },
    InsertResource(Resource),
    UpdateResource {
        resource: Resource,
        expected_version: i64,
    },
    DeleteResource {
        id: ResourceId,
        expected_version: i64,
    },
    InsertSigningKey(StoredKey),
    UpdateSigningKey {
        key: StoredKey,
        expected_version: i64,
    },
    DeleteSigningKey {
        kid: String,
        expected_version: i64,
    },
    InsertAdminCredential(AdminCredential),
    /// Sets a named setting only if it is not set yet (first writer wins across replicas).
    InsertSetting {
        name: String,
        value: Vec<u8>,
    },
    /// Takes or renews a lease; `Stale` if another holder's lease has not expired.
    AcquireLease(LeaseClaim),
    /// Places records in the Merkle tree and stores a checkpoint; `Stale` unless the lease is
    /// still held and every record is still unintegrated.
    IntegrateAudit(Box<Integration>),
    /// Deletes integrated records below leaf `before` (retention). Tree nodes stay, and
    /// `frontier` stores the prefix's frontier nodes below the stored levels (hashed from the
    /// leaves about to go), so roots and proofs for every later size still verify. `Stale`
    /// unless the integrator lease is held.
    PruneAudit {
        lease: LeaseClaim,
        before: u64,
        frontier: Vec<(u32, u64, Hash)>,
    },
    InsertClient(OAuthClient),
    UpdateClient {
        client: OAuthClient,
        expected_version: i64,
    },
    InsertRegistrationToken(crate::oauth::client::RegistrationToken),
    /// Revokes an initial access token; `Stale` if there is none with this id.
    DeleteRegistrationToken {
        id: String,
    },
    DeleteClient {
        client_id: String,
        expected_version: i64,
    },
    /// Marks a client assertion's `jti` used; `Duplicate` if it already was (replay).
    RecordAssertion {
        client_id: String,
        jti: String,
        expires_at: i64,
    },
    /// Marks an authorization grant assertion (an ID-JAG) of `issuer` used; `Duplicate` if it
    /// already was (replay).
    RecordGrantAssertion {
        issuer: String,
        jti: String,
        expires_at: i64,
    },
    /// Marks a DPoP proof's `jti` used; `Duplicate` if it already was (replay).
    RecordDpopProof {
        jti: String,
        expires_at: i64,
    },
    /// Records that an identity was used (a token was issued to it). Not a versioned edit: it
    /// neither bumps nor checks the version, and losing one to a concurrent update is harmless.
    TouchIdentity {
        id: IdentityId,
        at: sigil_types::Timestamp,
    },
    /// Stores a new policy set version; `Duplicate` if the number is taken (retry with the next).
    InsertPolicyVersion(crate::policy::PolicyVersion),
    /// Makes a stored version the active one; `MissingReference` if it does not exist.
    ActivatePolicy {
        version: u64,
        at: sigil_types::Timestamp,
        by: String,
    },
    /// Revokes an access token by its `jti` until it would have expired anyway.
    RevokeToken {
        jti: String,
        expires_at: i64,
        revoked_at: sigil_types::Timestamp,
    },
    /// Sets (or replaces) a user's password hash (Argon2id PHC string).
    SetUserPassword {
        user_id: UserId,
        hash: String,
        at: sigil_types::Timestamp,
    },
    /// Stores a new authorization code or refresh token.
    InsertGrant(crate::oauth::grant::Grant),
    /// Marks a code redeemed or a refresh token rotated; `Stale` if it already was, so two
    /// concurrent redemptions cannot both succeed.
    UseGrant {
        handle_hash: String,
        at: sigil_types::Timestamp,
    },
    /// Remembers an access token issued under a grant family, so revoking the family revokes it.
    RecordFamilyToken {
        family_id: String,
        jti: String,
        expires_at: i64,
    },
    /// Forgets the single-use marks (client assertions, DPoP proofs, sign-in tickets), the
    /// revocations, the token lineage and the authorization codes and refresh tokens of
    /// whatever expired before `before` (Unix seconds), and grant families with nothing left:
    /// an expired token, code, assertion or proof is refused for its expiry alone, so these
    /// rows only grow the tables. At most `limit` rows of each table go per change, so one
    /// purge never holds the writer for long ([`OAuthStore::expired_left`] says whether to go
    /// on); emptied families go in the change that finds less than `limit` everywhere.
    /// Idempotent; every replica may run it.
    PurgeExpired {
        before: i64,
        limit: u32,
    },
    /// Remembers an access token issued by token exchange from the access token `parent_jti`:
    /// revoking the parent (or its grant family) revokes it, and what was derived from it.
    RecordDerivedToken {
        parent_jti: String,
        jti: String,
        expires_at: i64,
    },
    /// Revokes a grant family: its codes and refresh tokens stop working and the access tokens
    /// recorded for it (and every token exchanged from them) are revoked.
    RevokeFamily {
        family_id: String,
        at: sigil_types::Timestamp,
    },
    /// Registers an external identity provider; `Duplicate` if its issuer is registered.
    InsertTrustedIssuer(crate::oauth::trusted::TrustedIssuer),
    /// Removes one; `Stale` if it does not exist.
    DeleteTrustedIssuer {
        id: String,
    },
    /// Creates a registration entry; `Duplicate` if its id is taken.
    InsertEntry(crate::spiffe::entries::RegistrationEntry),
    /// Replaces an entry if it is still at `expected_version` (else `Stale`).
    UpdateEntry {
        entry: crate::spiffe::entries::RegistrationEntry,
        expected_version: i64,
    },
    DeleteEntry {
        id: String,
        expected_version: i64,
    },
    /// Rotation: the active X.509 and JWT authorities become `retired` and the named prepared
    /// ones `active`; `Stale` if they are not prepared.
    ActivateAuthorities {
        x509_id: String,
        jwt_kid: String,
    },
    /// Federates with a trust domain; `Duplicate` if it already is.
    InsertFederation(crate::spiffe::federation::Federation),
    /// Ends a federation; `Stale` if there is none.
    DeleteFederation {
        trust_domain: String,
    },
    /// Records a bundle fetch: the bundle now held (the last good one after a failure) and the
    /// error, if the fetch failed.
    SetFederatedBundle {
        trust_domain: String,
        bundle_json: Option<String>,
        refreshed_at: sigil_types::Timestamp,
        error: Option<String>,
    },
    /// Stores a JWT authority of the trust domain; `Duplicate` if its kid is taken.
    InsertJwtAuthority(crate::spiffe::StoredJwtAuthority),
    /// Stores a node join token.
    InsertJoinToken(crate::spiffe::nodes::JoinToken),
    /// Spends a join token; `Stale` if it was already spent.
    UseJoinToken {
        token_hash: String,
        at: sigil_types::Timestamp,
    },
    /// Withdraws every unspent join token for a node ID; `Stale` if there is none.
    RevokeJoinTokens {
        spiffe_id: String,
    },
    /// Records an attested node, or its renewed SVID.
    UpsertNode(crate::spiffe::nodes::AttestedNode),
    /// Bans a node; `Stale` if there is no such node.
    BanNode {
        spiffe_id: String,
        at: sigil_types::Timestamp,
    },
    /// Stores an X.509 authority of the trust domain; `Duplicate` if its id is taken.
    InsertX509Authority(crate::spiffe::StoredAuthority),
    /// Records how far a SIEM sink has delivered (the next leaf index to deliver).
    SetSinkPosition {
        name: String,
        delivered: u64,
    },
}

/// Changes and the audit records that describe them: all are committed, or none.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
    pub audit: Vec<AuditRecord>,
}

impl ChangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether committing this revokes access tokens (one and what was exchanged from it, or a
    /// grant family's), so what is remembered as not revoked must be asked again.
    pub fn revokes_tokens(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c, Change::RevokeToken { .. } | Change::RevokeFamily { .. }))
    }

    /// Whether committing this changes something token issuance reads (clients, identities,
    /// resources, users), so read caches must drop what they hold.
    pub fn touches_registry(&self) -> bool {
        self.changes.iter().any(|c| {
            !matches!(
                c,
                Change::RecordAssertion { .. }
                    | Change::RecordGrantAssertion { .. }
                    | Change::TouchIdentity { .. }
                    | Change::RecordDpopProof { .. }
                    | Change::RevokeToken { .. }
                    | Change::AcquireLease(_)
                    | Change::IntegrateAudit(_)
                    | Change::PruneAudit { .. }
                    | Change::SetSinkPosition { .. }
                    | Change::InsertSetting { .. }
                    | Change::InsertAdminCredential(_)
                    | Change::InsertRegistrationToken(_)
                    | Change::DeleteRegistrationToken { .. }
                    | Change::InsertGrant(_)
                    | Change::SetUserPassword { .. }
                    | Change::InsertTrustedIssuer(_)
                    | Change::InsertX509Authority(_)
                    | Change::InsertJoinToken(_)
                    | Change::InsertJwtAuthority(_)
                    | Change::InsertFederation(_)
                    | Change::DeleteFederation { .. }
                    | Change::SetFederatedBundle { .. }
                    | Change::ActivateAuthorities { .. }
                    | Change::UseJoinToken { .. }
                    | Change::RevokeJoinTokens { .. }
                    | Change::UpsertNode(_)
                    | Change::BanNode { .. }
                    | Change::DeleteTrustedIssuer { .. }
                    | Change::UseGrant { .. }
                    | Change::RecordFamilyToken { .. }
                    | Change::RecordDerivedToken { .. }
                    | Change::PurgeExpired { .. }
                    | Change::RevokeFamily { .. }
            )
        })
    }

    pub fn change(mut self, c: Change) -> Self {
        self.changes.push(c);
        self
    }

    pub fn audit(mut self, r: AuditRecord) -> Self {
        self.audit.push(r);
        self
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait UserStore: Send + Sync {
    async fn get_user(&self, r: &UserRef) -> StoreResult<Option<User>>;
    async fn list_users(&self, q: &UserQuery) -> StoreResult<Page<User>>;
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn get_identity(&self, r: &IdentityRef) -> StoreResult<Option<Identity>>;
    async fn list_identities(&self, q: &IdentityQuery) -> StoreResult<Page<Identity>>;
    /// How many identities and resources `owner` owns (for refusing to delete an owner).
    async fn count_owned(&self, owner: &UserId) -> StoreResult<u64>;
    async fn count_identities(&self) -> StoreResult<u64>;
    async fn identity_ids_owned_by(&self, owner: &UserId) -> StoreResult<Vec<IdentityId>>;
}

#[async_trait]
pub trait ResourceStore: Send + Sync {
    async fn get_resource(&self, r: &ResourceRef) -> StoreResult<Option<Resource>>;
    async fn list_resources(&self, q: &ResourceQuery) -> StoreResult<Page<Resource>>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn list_signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    async fn get_setting(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
}

#[async_trait]
pub trait AdminStore: Send + Sync {
    async fn find_admin_credential(&self, token_hash: &str) -> StoreResult<Option<AdminCredential>>;
    async fn get_admin_credential_by_name(&self, name: &str) -> StoreResult<Option<AdminCredential>>;
}

/// A stored audit record: the sequence number the database gave it at insert, its place in the
/// tree once integrated, and the exact stored JSON the leaf hash covers.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAudit {
    pub seq: i64,
    pub leaf_index: Option<u64>,
    pub leaf_hash: Option<Hash>,
    pub body: String,
    pub record: AuditRecord,
}

/// An integrated record exactly as stored, unparsed: what verification hashes (a tampered body
/// that no longer parses must still be shown, not hidden behind an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLeaf {
    pub seq: i64,
    pub leaf_index: u64,
    pub leaf_hash: Hash,
    pub body: String,
    /// The columns it is found by, as stored (not evidence: checked against the body).
    pub index: sigil_proto::admin::AuditIndex,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Records with a sequence number above `after`, in sequence order.
    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<StoredAudit>>;
    /// Integrated records with leaf index `>= from`, in leaf order.
    async fn list_leaves(&self, from: u64, limit: u32) -> StoreResult<Vec<StoredLeaf>>;
    /// Records matching `q`, newest first (cursor: sequence number).
    async fn search_audit(&self, q: &AuditQuery) -> StoreResult<Page<StoredAudit>>;
    /// Records not yet in the tree, oldest first: (seq, stored JSON).
    async fn pending_audit(&self, limit: u32) -> StoreResult<Vec<(i64, String)>>;
    /// Leaves in the tree.
    async fn audit_tree_size(&self) -> StoreResult<u64>;
    /// Perfect subtree hashes at the given (level, index) coordinates (missing ones are absent).
    async fn audit_nodes(&self, coords: &[(u32, u64)]) -> StoreResult<HashMap<(u32, u64), Hash>>;
    /// The leaf hashes of integrated records with `from <= leaf_index < to`, in leaf order.
    async fn audit_leaf_hashes(&self, from: u64, to: u64) -> StoreResult<Vec<(u64, Hash)>>;
    async fn latest_checkpoint(&self) -> StoreResult<Option<Checkpoint>>;
    /// Checkpoints with tree size above `after`, smallest first.
    async fn list_checkpoints(&self, after: u64, limit: u32) -> StoreResult<Vec<Checkpoint>>;
    async fn sink_position(&self, name: &str) -> StoreResult<Option<u64>>;
    /// The first leaf still stored (records below it were pruned); the tree size if none remain.
    async fn audit_base(&self) -> StoreResult<u64>;
    /// Where retention may cut: the largest checkpointed tree size at or below the first leaf
    /// recorded at or after `cutoff`.
    async fn audit_prune_point(&self, cutoff: sigil_types::Timestamp) -> StoreResult<Option<u64>>;
}

#[async_trait]
pub trait OAuthStore: Send + Sync {
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<OAuthClient>>;
    /// The client whose registration access token (RFC 7592) has this keyed hash.
    async fn client_by_registration_token(&self, token_hash: &str) -> StoreResult<Option<OAuthClient>>;
    async fn list_clients(
        &self,
        identity: Option<&IdentityId>,
        page: &crate::model::PageRequest,
    ) -> StoreResult<Page<OAuthClient>>;
    async fn is_token_revoked(&self, jti: &str) -> StoreResult<bool>;
    /// Whether any row [`Change::PurgeExpired`] with this `before` would forget is left.
    async fn expired_left(&self, before: i64) -> StoreResult<bool>;
    async fn find_registration_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<crate::oauth::client::RegistrationToken>>;
    /// The initial access tokens not yet expired at `now`, newest first.
    async fn list_registration_tokens(
        &self,
        now: sigil_types::Timestamp,
    ) -> StoreResult<Vec<crate::oauth::client::RegistrationToken>>;
}

/// Reads for delegation: users' passwords and delegated grants.
#[async_trait]
pub trait DelegationStore: Send + Sync {
    /// The user's password hash, if a password was set.
    async fn user_password_hash(&self, user: &UserId) -> StoreResult<Option<String>>;
    /// A code or refresh token by the keyed hash of its value, with its family's state.
    async fn get_grant(&self, handle_hash: &str) -> StoreResult<Option<crate::oauth::grant::Grant>>;
    async fn get_entry(&self, id: &str) -> StoreResult<Option<crate::spiffe::entries::RegistrationEntry>>;
    /// Entries, optionally only those of one parent (node) or one SPIFFE ID, by id.
    async fn list_entries(
        &self,
        parent_id: Option<&str>,
        spiffe_id: Option<&str>,
    ) -> StoreResult<Vec<crate::spiffe::entries::RegistrationEntry>>;
    /// The trust domain's X.509 authorities, oldest first.
    async fn list_x509_authorities(&self) -> StoreResult<Vec<crate::spiffe::StoredAuthority>>;
    /// A node join token by the keyed hash of its value.
    async fn get_join_token(&self, token_hash: &str) -> StoreResult<Option<crate::spiffe::nodes::JoinToken>>;
    async fn get_node(&self, spiffe_id: &str) -> StoreResult<Option<crate::spiffe::nodes::AttestedNode>>;
    /// The SPIFFE IDs of banned nodes.
    async fn list_banned_nodes(&self) -> StoreResult<Vec<String>>;
    /// Every attested node, by SPIFFE ID.
    async fn list_nodes(&self) -> StoreResult<Vec<crate::spiffe::nodes::AttestedNode>>;
    /// Federated trust domains, by trust domain.
    async fn list_federations(&self) -> StoreResult<Vec<crate::spiffe::federation::Federation>>;
    /// The trust domain's JWT authorities, oldest first.
    async fn list_jwt_authorities(&self) -> StoreResult<Vec<crate::spiffe::StoredJwtAuthority>>;
    /// Every trusted external issuer, by issuer.
    async fn list_trusted_issuers(&self) -> StoreResult<Vec<crate::oauth::trusted::TrustedIssuer>>;
}

#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Every version, newest first, with its text.
    async fn list_policy_versions(&self) -> StoreResult<Vec<crate::policy::PolicyVersion>>;
    async fn get_policy_version(&self, version: u64) -> StoreResult<Option<crate::policy::PolicyVersion>>;
    /// The latest activations, newest first.
    async fn policy_activations(&self, limit: u32) -> StoreResult<Vec<crate::policy::PolicyActivation>>;
}

/// Everything Sigil stores. Both backends (SQLite, PostgreSQL) pass one conformance suite.
#[async_trait]
pub trait Store:
    UserStore
    + IdentityStore
    + ResourceStore
    + KeyStore
    + AdminStore
    + AuditStore
    + OAuthStore
    + PolicyStore
    + DelegationStore
    + std::fmt::Debug
{
    /// Applies `changes` and appends `audit`, atomically and durably: when this returns `Ok` the
    /// write survives a crash; when it returns `Err` nothing of it was applied.
    async fn commit(&self, changes: ChangeSet) -> StoreResult<()>;
    /// Checks that the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes pending writes and closes connections (graceful shutdown).
    async fn close(&self);
    /// Human-readable backend name, for logs and the start-up banner.
    fn backend(&self) -> &'static str;
    /// Counts committed changes to clients, identities, resources and users made through this
    /// process. Read caches compare it to drop entries at once after a local change.
    fn registry_epoch(&self) -> u64 {
        0
    }
}
