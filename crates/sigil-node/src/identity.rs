//! The node's own identity: its X509-SVID and private key, kept in the data directory so a
//! restarted agent resumes without a new join token, and renewed at half-life.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The node's SVID and key.
pub struct NodeIdentity {
    pub spiffe_id: String,
    pub cert_der: Vec<u8>,
    /// Intermediates after the SVID (under an upstream CA).
    pub chain: Vec<Vec<u8>>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write {path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("the stored node identity is unusable: {0}")]
    Corrupt(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    spiffe_id: String,
    /// Standard base64 DER of the intermediates.
    #[serde(default)]
    chain: Vec<String>,
    issued_at: i64,
    expires_at: i64,
}

impl NodeIdentity {
    pub fn new(
        spiffe_id: String,
        cert_der: Vec<u8>,
        chain: Vec<Vec<u8>>,
        key_pkcs8: Zeroizing<Vec<u8>>,
        issued_at: i64,
        expires_at: i64,
    ) -> Self {
        Self {
            spiffe_id,
            cert_der,
            chain,
            key_pkcs8,
            issued_at,
            expires_at,
        }
    }

    /// Signs a node proof (claims JSON) with this SVID's key.
    pub fn sign_proof(&self, claims: &[u8]) -> Result<String, sigil_crypto::CryptoError> {
        sigil_crypto::svid_verify::sign_node_proof_with_chain(&self.key_pkcs8, &self.cert_der, &self.chain, claims)
    }

    /// Past half its lifetime: time to renew.
    pub fn needs_renewal(&self, now: i64) -> bool {
        now >= self.issued_at + (self.expires_at - self.issued_at) / 2
    }

    fn paths(dir: &Path) -> [PathBuf; 3] {
        [
            dir.join("node.json"),
            dir.join("node-svid.der"),
            dir.join("node-key.der"),
        ]
    }

    /// Loads the identity saved in `dir`, if there is one that has not expired.
    pub fn load(dir: &Path, now: i64) -> Result<Option<Self>, IdentityError> {
        let [meta, cert, key] = Self::paths(dir);
        if !meta.exists() {
            return Ok(None);
        }
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| IdentityError::Io {
                path: p.to_owned(),
                why: e.to_string(),
            })
        };
        let stored: Stored =
            serde_json::from_slice(&read(&meta)?).map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        if stored.expires_at <= now {
            return Ok(None);
        }
        let chain = stored
            .chain
            .iter()
            .map(|c| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map_err(|e| IdentityError::Corrupt(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Self {
            spiffe_id: stored.spiffe_id,
            cert_der: read(&cert)?,
            chain,
            key_pkcs8: Zeroizing::new(read(&key)?),
            issued_at: stored.issued_at,
            expires_at: stored.expires_at,
        }))
    }

    /// Saves the identity to `dir` (the key readable by the owner only), replacing files
    /// atomically so a crash never leaves a key beside the wrong certificate for long.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let io = |p: &Path, e: std::io::Error| IdentityError::Io {
            path: p.to_owned(),
            why: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let [meta, cert, key] = Self::paths(dir);
        let stored = Stored {
            spiffe_id: self.spiffe_id.clone(),
            chain: self
                .chain
                .iter()
                .map(|c| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(c)
                })
                .collect(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        };
        let meta_bytes = serde_json::to_vec(&stored).map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        write_private(&key, &self.key_pkcs8).map_err(|e| io(&key, e))?;
        write_private(&cert, &self.cert_der).map_err(|e| io(&cert, e))?;
        write_private(&meta, &meta_bytes).map_err(|e| io(&meta, e))?;
        Ok(())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
