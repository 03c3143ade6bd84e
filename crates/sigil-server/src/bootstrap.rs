//! First-start work: the data directory, the master key, the admin token file.

use std::io::Write;
use std::path::Path;

use sigil_crypto::MasterKey;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot read master key file {path}: {source}")]
    ReadKey { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("invalid master key ({origin}): it must be 32 bytes, base64-encoded")]
    BadKey { origin: String },
    #[error(
        "the master key file {path} is missing, but the database was sealed with a master key: restore the file or set SIGIL_MASTER_KEY"
    )]
    MissingKey { path: String },
    #[error("the random generator failed")]
    Random,
}

/// Creates the data directory (0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    set_mode(dir, 0o700).map_err(err)
}

/// Where the master key came from, for the start-up banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Environment,
    ExistingFile,
    CreatedFile,
}

/// Loads the master key from `SIGIL_MASTER_KEY` (base64), else from `file`, else makes a new
/// random key ([`KeyOrigin::CreatedFile`]), which the caller writes to `file` only once the
/// database has accepted it: a missing file on an existing database must not be replaced.
pub fn master_key(env_value: Option<Zeroizing<String>>, file: &Path) -> Result<(MasterKey, KeyOrigin), BootstrapError> {
    if let Some(v) = env_value {
        let k = MasterKey::from_base64(&v).map_err(|_| BootstrapError::BadKey {
            origin: "SIGIL_MASTER_KEY".into(),
        })?;
        return Ok((k, KeyOrigin::Environment));
    }
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let k = MasterKey::from_base64(&text).map_err(|_| BootstrapError::BadKey {
                origin: file.display().to_string(),
            })?;
            Ok((k, KeyOrigin::ExistingFile))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = MasterKey::generate().map_err(|_| BootstrapError::Random)?;
            Ok((k, KeyOrigin::CreatedFile))
        }
        Err(source) => Err(BootstrapError::ReadKey {
            path: file.display().to_string(),
            source,
        }),
    }
}

/// Writes a secret to a new file readable only by its owner (0600), durably.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    set_mode(path, 0o600).map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
