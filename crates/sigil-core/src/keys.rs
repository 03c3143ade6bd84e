//! The key manager: signing keys live here, sealed at rest under the master key; everything that
//! signs asks the manager. Rotation publishes a new key before it signs anything, and keeps a
//! retired key published until every token it signed has expired.
//!
//! Keys have one of two roles, told by their algorithm: the *token key* (EdDSA or ES256) signs
//! access tokens, ID-JAGs and audit checkpoints; the *ID token key* (RS256) signs OpenID Connect
//! ID tokens, because OpenID Connect makes RS256 the algorithm every relying party can verify and
//! the default one (Core §15.1, Discovery §3, Registration §2). Each role has its own active key
//! and rotates on its own. Configured with RS256 (for resource servers that verify nothing else,
//! RFC 9068 §2.1), the ID token key signs everything and is the only key in use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sigil_crypto::{Algorithm, Jwk, Jwks, MasterKey, SealedBlob, SigningKey};
use sigil_types::{ParseError, Timestamp};

use crate::Clock;
use crate::audit::{AuditRecord, EventType};
use crate::model::Principal;
use crate::store::{Change, ChangeSet, Store, StoreError};

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing (so verifiers can fetch it first).
    Pending,
    /// The key that signs.
    Active,
    /// No longer signs; published until `remove_after`.
    Retired,
}

impl KeyState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "retired" => Ok(Self::Retired),
            _ => Err(ParseError {
                what: "key state",
                why: format!("unknown state {s:?}"),
            }),
        }
    }
}

/// A signing key as stored: public part in clear, private part sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: Algorithm,
    pub state: KeyState,
    pub public_jwk: Jwk,
    pub sealed_private: SealedBlob,
    pub created_at: Timestamp,
    pub activate_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    pub remove_after: Option<Timestamp>,
    pub version: i64,
}

/// What a key signs; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Tokens,
    IdTokens,
}

impl KeyRole {
    /// The ID token algorithm OpenID Connect requires.
    pub const ID_TOKEN_ALGORITHM: Algorithm = Algorithm::Rs256;

    pub fn of(alg: Algorithm) -> Self {
        if alg == Self::ID_TOKEN_ALGORITHM {
            Self::IdTokens
        } else {
            Self::Tokens
        }
    }
}

/// How keys are made and rotated (from config).
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// The token key's algorithm (EdDSA or ES256; RS256 makes the ID token key sign everything).
    pub algorithm: Algorithm,
    /// How long a new key is published before it starts signing.
    pub publish_ahead: Duration,
    /// How long a retired key stays published: at least the longest lifetime of anything it
    /// signed, plus clock skew.
    pub retire_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a signing key could not be unsealed: the master key does not match this database")]
    WrongMasterKey,
    #[error("key material is invalid: {0}")]
    Crypto(#[from] sigil_crypto::CryptoError),
    #[error("no active signing key")]
    NoActiveKey,
    #[error("a rotation is already pending (key {0}); wait for it to activate")]
    RotationPending(String),
}

/// The keys loaded in memory, replaced as a whole on refresh.
#[derive(Debug, Default)]
struct KeyRing {
    /// (kid, version) of every stored key: tells whether a refresh changed anything.
    fingerprint: Vec<(String, i64)>,
    signers: HashMap<String, Arc<SigningKey>>,
    /// The token key.
    active: Option<Arc<SigningKey>>,
    id_token_key: Option<Arc<SigningKey>>,
    jwks: Arc<Jwks>,
    keys: Vec<StoredKey>,
}

/// Holds the decrypted keys and signs with the active one.
#[derive(Debug)]
pub struct KeyManager {
    master: Arc<MasterKey>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: KeyPolicy,
    ring: RwLock<Arc<KeyRing>>,
}

const SEAL_CONTEXT: &str = "sigil signing key v1:";

impl KeyManager {
    pub fn new(master: Arc<MasterKey>, store: Arc<dyn Store>, clock: Arc<dyn Clock>, policy: KeyPolicy) -> Self {
        Self {
            master,
            store,
            clock,
            policy,
            ring: RwLock::new(Arc::new(KeyRing::default())),
        }
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().map(|r| Arc::clone(&r)).unwrap_or_default()
    }

    /// The token key that signs now, if one is loaded.
    pub fn active(&self) -> Option<Arc<SigningKey>> {
        let ring = self.ring();
        match KeyRole::of(self.policy.algorithm) {
            KeyRole::Tokens => ring.active.clone(),
            KeyRole::IdTokens => ring.id_token_key.clone(),
        }
    }

    /// The key that signs ID tokens with `alg`: the ID token key for RS256, the token key when
    /// a client registered the token key's own algorithm; `None` for any other algorithm.
    pub fn id_token_key(&self, alg: Algorithm) -> Option<Arc<SigningKey>> {
        match KeyRole::of(alg) {
            KeyRole::IdTokens => self.ring().id_token_key.clone(),
            KeyRole::Tokens => self.active().filter(|k| k.alg() == alg),
        }
    }

    /// The algorithms ID tokens can be signed with now, the default (RS256) first.
    pub fn id_token_algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = [self.ring().id_token_key.clone(), self.active()]
            .into_iter()
            .flatten()
            .map(|k| k.alg())
            .collect();
        algs.dedup();
        algs
    }

    /// Signs `msg` with the active key; returns the key that signed and the signature.
    pub fn sign(&self, msg: &[u8]) -> Result<(Arc<SigningKey>, Vec<u8>), KeyError> {
        let key = self.active().ok_or(KeyError::NoActiveKey)?;
        let sig = key.sign(msg)?;
        Ok((key, sig))
    }

    /// Every published key (pending, active, retired).
    pub fn jwks(&self) -> Arc<Jwks> {
        Arc::clone(&self.ring().jwks)
    }

    pub fn stored_keys(&self) -> Vec<StoredKey> {
        self.ring().keys.clone()
    }

    pub fn is_ready(&self) -> bool {
        self.active().is_some() && self.ring().id_token_key.is_some()
    }

    /// Reloads keys from the store; unseals only keys not already in memory.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let mut stored = self.store.list_signing_keys().await?;
        stored.sort_by(|a, b| a.activate_at.cmp(&b.activate_at).then_with(|| a.kid.cmp(&b.kid)));
        let fingerprint: Vec<(String, i64)> = stored.iter().map(|k| (k.kid.clone(), k.version)).collect();
        let old = self.ring();
        if old.fingerprint == fingerprint && !old.fingerprint.is_empty() {
            return Ok(());
        }
        let mut signers = HashMap::new();
        for k in &stored {
            let signer = match old.signers.get(&k.kid) {
                Some(s) => Arc::clone(s),
                None => Arc::new(self.unseal(k)?),
            };
            signers.insert(k.kid.clone(), signer);
        }
        // The newest active key of each role signs; there is normally exactly one.
        let active_for = |role| {
            stored
                .iter()
                .rev()
                .find(|k| k.state == KeyState::Active && KeyRole::of(k.alg) == role)
                .and_then(|k| signers.get(&k.kid).cloned())
        };
        let (active, id_token_key) = (active_for(KeyRole::Tokens), active_for(KeyRole::IdTokens));
        let jwks = Jwks {
            keys: stored.iter().map(|k| k.public_jwk.clone()).collect(),
        };
        let ring = KeyRing {
            fingerprint,
            signers,
            active,
            id_token_key,
            jwks: Arc::new(jwks),
            keys: stored,
        };
        if let Ok(mut w) = self.ring.write() {
            *w = Arc::new(ring);
        }
        Ok(())
    }

    fn unseal(&self, k: &StoredKey) -> Result<SigningKey, KeyError> {
        let pkcs8 = self
            .master
            .open(&k.sealed_private, &format!("{SEAL_CONTEXT}{}", k.kid))
            .map_err(|_| KeyError::WrongMasterKey)?;
        Ok(SigningKey::from_pkcs8(k.kid.clone(), k.alg, &pkcs8)?)
    }

    fn new_key(&self, alg: Algorithm, state: KeyState, activate_at: Timestamp) -> Result<StoredKey, KeyError> {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        let sealed = self.master.seal(&pkcs8, &format!("{SEAL_CONTEXT}{}", key.kid()))?;
        Ok(StoredKey {
            kid: key.kid().to_owned(),
            alg,
            state,
            public_jwk: key.public_jwk(),
            sealed_private: sealed,
            created_at: self.clock.now(),
            activate_at,
            retired_at: None,
            remove_after: None,
            version: 1,
        })
    }

    fn key_event(&self, t: EventType, k: &StoredKey, by: &Principal, request_id: Option<&str>) -> AuditRecord {
        let record = AuditRecord::new(self.clock.now(), t, by, request_id)
            .target("key", &k.kid, &k.kid)
            .detail("alg", k.alg.as_str())
            .detail("state", k.state.as_str());
        if t != EventType::KeyCreated {
            return record;
        }
        // The log keeps every key's public half: checkpoints signed by a key that rotation has
        // since removed from the JWKS still verify against the record of its creation.
        record.detail("public_jwk", serde_json::to_value(&k.public_jwk).unwrap_or_default())
    }

    /// On first start: makes the first key of each role, active at once (nothing signed before
    /// it exists). A database from before ID token keys existed gets its first one here too.
    pub async fn ensure_bootstrapped(&self) -> Result<(), KeyError> {
        self.refresh().await?;
        let mut wanted = vec![self.policy.algorithm];
        if KeyRole::of(self.policy.algorithm) == KeyRole::Tokens {
            wanted.push(KeyRole::ID_TOKEN_ALGORITHM);
        }
        for alg in wanted {
            let role = KeyRole::of(alg);
            let ring = self.ring();
            if ring
                .keys
                .iter()
                .any(|k| k.state == KeyState::Active && KeyRole::of(k.alg) == role)
            {
                continue;
            }
            let key = self.new_key(alg, KeyState::Active, self.clock.now())?;
            let audit = self.key_event(EventType::KeyCreated, &key, &Principal::system(), None);
            let res = self
                .store
                .commit(ChangeSet::new().change(Change::InsertSigningKey(key)).audit(audit))
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "bootstrap key not written (another replica may have made one)");
            }
        }
        self.refresh().await?;
        if self.is_ready() {
            Ok(())
        } else {
            Err(KeyError::NoActiveKey)
        }
    }

    /// Starts a rotation of the role of `alg` (default: the token key): a new key is published
    /// now and signs from `publish_ahead` on.
    pub async fn rotate(
        &self,
        alg: Option<Algorithm>,
        by: &Principal,
        request_id: Option<&str>,
    ) -> Result<StoredKey, KeyError> {
        self.refresh().await?;
        let alg = alg.unwrap_or(self.policy.algorithm);
        if let Some(p) = self
            .ring()
            .keys
            .iter()
            .find(|k| k.state == KeyState::Pending && KeyRole::of(k.alg) == KeyRole::of(alg))
        {
            return Err(KeyError::RotationPending(p.kid.clone()));
        }
        let now = self.clock.now();
        let key = self.new_key(alg, KeyState::Pending, now.plus(self.policy.publish_ahead))?;
        let audit = self
            .key_event(EventType::KeyCreated, &key, by, request_id)
            .detail("activate_at", key.activate_at.to_rfc3339());
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::InsertSigningKey(key.clone()))
                    .audit(audit),
            )
            .await?;
        self.refresh().await?;
        Ok(key)
    }

    /// Advances key states whose time has come: activates a due pending key (retiring the old
    /// active one of its role) and removes retired keys past `remove_after`. Safe to run on every
    /// replica: versioned updates let exactly one of them win each step.
    pub async fn maintain(&self) -> Result<(), KeyError> {
        self.refresh().await?;
        let now = self.clock.now();
        let keys = self.ring().keys.clone();
        let sys = Principal::system();
        for due in keys
            .iter()
            .filter(|k| k.state == KeyState::Pending && k.activate_at <= now)
        {
            let mut cs = ChangeSet::new();
            let same_role = |k: &&StoredKey| k.state == KeyState::Active && KeyRole::of(k.alg) == KeyRole::of(due.alg);
            for old in keys.iter().filter(same_role) {
                let mut retired = old.clone();
                retired.state = KeyState::Retired;
                retired.retired_at = Some(now);
                retired.remove_after = Some(now.plus(self.policy.retire_after));
                retired.version = old.version + 1;
                cs = cs
                    .audit(self.key_event(EventType::KeyRetired, &retired, &sys, None))
                    .change(Change::UpdateSigningKey {
                        key: retired,
                        expected_version: old.version,
                    });
            }
            let mut active = due.clone();
            active.state = KeyState::Active;
            active.version = due.version + 1;
            cs = cs
                .audit(self.key_event(EventType::KeyActivated, &active, &sys, None))
                .change(Change::UpdateSigningKey {
                    key: active,
                    expected_version: due.version,
                });
            ignore_stale(self.store.commit(cs).await)?;
        }
        for gone in keys
            .iter()
            .filter(|k| k.state == KeyState::Retired && k.remove_after.is_some_and(|t| t <= now))
        {
            let cs = ChangeSet::new()
                .change(Change::DeleteSigningKey {
                    kid: gone.kid.clone(),
                    expected_version: gone.version,
                })
                .audit(self.key_event(EventType::KeyRemoved, gone, &sys, None));
            ignore_stale(self.store.commit(cs).await)?;
        }
        self.refresh().await
    }
}

/// Another replica already made the same step: that is success for us.
fn ignore_stale(r: Result<(), StoreError>) -> Result<(), KeyError> {
    match r {
        Ok(()) | Err(StoreError::Stale { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Checks that `master` is the key this database was initialised with, recording it on first use,
/// so a replica started with the wrong master key refuses to start instead of failing later.
pub async fn check_master_key(store: &dyn Store, master: &MasterKey) -> Result<(), KeyError> {
    const NAME: &str = "master_key_check";
    const CONTEXT: &str = "sigil master key check v1";
    if let Some(blob) = store.get_setting(NAME).await? {
        return master
            .open(&SealedBlob(blob), CONTEXT)
            .map(|_| ())
            .map_err(|_| KeyError::WrongMasterKey);
    }
    let sealed = master.seal(b"sigil", CONTEXT)?;
    let cs = ChangeSet::new().change(Change::InsertSetting {
        name: NAME.into(),
        value: sealed.0,
    });
    match store.commit(cs).await {
        Ok(()) | Err(StoreError::Duplicate { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Read back: if another replica won the race with a different key, we find out now.
    let blob = store.get_setting(NAME).await?.ok_or(KeyError::WrongMasterKey)?;
    master
        .open(&SealedBlob(blob), CONTEXT)
        .map(|_| ())
        .map_err(|_| KeyError::WrongMasterKey)
}
