//! The one typed configuration: defaults < config file < `SIGIL_*` environment < flags.
//! Unknown keys are rejected; every value is validated before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sigil_crypto::Algorithm;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The config file's shape (all optional; defaults fill the rest).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub issuer: Option<String>,
    pub trust_domain: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub keys: Option<KeysFile>,
    #[serde(default)]
    pub log: Option<LogFile>,
    #[serde(default)]
    pub limits: Option<LimitsFile>,
    #[serde(default)]
    pub audit: Option<AuditFile>,
    #[serde(default)]
    pub oauth: Option<OAuthFile>,
    #[serde(default)]
    pub spiffe: Option<SpiffeFile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeFile {
    /// An operator CA (PEM certificate and PKCS#8 P-256 key) under which the trust domain's
    /// authorities are intermediates.
    pub upstream_ca_cert: Option<PathBuf>,
    pub upstream_ca_key: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthFile {
    /// Lifetime of access tokens (default 5m, at most 1h).
    pub access_token_ttl: Option<String>,
    /// The longest lifetime any identity may set for its tokens (default 1h).
    pub max_access_token_ttl: Option<String>,
    /// Require server nonces in DPoP proofs (RFC 9449 §8).
    pub dpop_nonce: Option<bool>,
    /// Most actors a delegated token's `act` chain may hold (default 4).
    pub max_delegation_depth: Option<usize>,
    /// Lifetime of refresh tokens (default 30d); each use rotates the token.
    pub refresh_token_ttl: Option<String>,
    /// Accept OAuth Client ID Metadata Documents (a client_id that is an https URL); every such
    /// client acts as this agent (name or id), whose ceiling bounds them all. Unset: refused.
    pub client_metadata_identity: Option<String>,
    /// Also accept http://127.0.0.1 and localhost documents (development and tests only).
    pub client_metadata_allow_loopback: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// Records older than this may be pruned (e.g. "365d"); unset keeps everything.
    pub retain: Option<String>,
    #[serde(default)]
    pub sinks: Vec<SinkFile>,
}

/// A SIEM sink in the config file (`[[audit.sinks]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum SinkFile {
    File {
        name: String,
        path: PathBuf,
        max_bytes: Option<u64>,
        keep: Option<u32>,
    },
    Webhook {
        name: String,
        url: String,
        batch: Option<u32>,
        bearer_token_env: Option<String>,
    },
}

/// A validated SIEM sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// JSON Lines, one event per line, rotated to `path.1 … path.keep` past `max_bytes`.
    File {
        name: String,
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    /// Batches of events POSTed as a JSON array; retried with backoff until a 2xx.
    Webhook {
        name: String,
        url: url::Url,
        batch: u32,
        bearer_token: Option<String>,
    },
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        match self {
            Self::File { name, .. } | Self::Webhook { name, .. } => name,
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    pub algorithm: Option<String>,
    pub publish_ahead: Option<String>,
    pub retire_after: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_body_bytes: Option<usize>,
    pub node_api_in_flight: Option<usize>,
    pub node_api_queue: Option<usize>,
    pub max_connections: Option<usize>,
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub listen: Option<String>,
    pub issuer: Option<String>,
    pub trust_domain: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None` until the listener is bound: then it defaults to `http(s)://<listen address>`.
    pub issuer: Option<url::Url>,
    pub trust_domain: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub master_key_file: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub key_algorithm: Algorithm,
    pub publish_ahead: Duration,
    pub retire_after: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    /// Client connections open at once (TLS handshakes in progress count separately); past it
    /// the listener stops accepting until one closes.
    pub max_connections: usize,
    /// The upstream CA's certificate and key files, when the trust domain's CA is an
    /// intermediate under it.
    pub upstream_ca: Option<(PathBuf, PathBuf)>,
    /// Node API calls served at once; more get 503 with Retry-After (load shedding).
    pub node_api_in_flight: usize,
    /// Node API calls that may wait (up to a second) for a turn.
    pub node_api_queue: usize,
    pub audit_sinks: Vec<SinkConfig>,
    pub audit_retain: Option<Duration>,
    pub access_token_ttl: Duration,
    pub max_access_token_ttl: Duration,
    pub dpop_nonce: bool,
    pub max_delegation_depth: usize,
    pub refresh_token_ttl: Duration,
    pub metadata_documents: sigil_core::oauth::metadata_doc::MetadataDocuments,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./sigil-data";
/// About 100 MB of connection state at most, and far below the open-file limit `sigil serve`
/// raises itself to.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Config {
    /// Reads `file` (if any), overlays `env` (`SIGIL_*` variables) and `flags`, and validates.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>, flags: &Flags) -> Result<Self, ConfigError> {
        let f = match file {
            Some(p) => parse_file(p)?,
            None => FileConfig::default(),
        };
        let pick = |flag: Option<String>, var: &str, file: Option<String>| flag.or_else(|| env(var)).or(file);
        let pick_path = |flag: Option<PathBuf>, var: &str, file: Option<PathBuf>| {
            flag.or_else(|| env(var).map(PathBuf::from)).or(file)
        };
        let tls = f.tls.clone().unwrap_or_default();
        let keys = f.keys.clone().unwrap_or_default();
        let log = f.log.clone().unwrap_or_default();

        let listen_s =
            pick(flags.listen.clone(), "SIGIL_LISTEN", f.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_s
            .parse()
            .map_err(|_| invalid("listen", format!("{listen_s:?} is not an address like 127.0.0.1:8080")))?;
        let data_dir = pick_path(flags.data_dir.clone(), "SIGIL_DATA_DIR", f.data_dir.clone())
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let cert = pick_path(flags.tls_cert.clone(), "SIGIL_TLS_CERT", tls.cert);
        let key = pick_path(flags.tls_key.clone(), "SIGIL_TLS_KEY", tls.key);
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "tls",
                    "give both a certificate (--tls-cert) and a key (--tls-key)",
                ));
            }
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(invalid(
                "listen",
                format!(
                    "refusing to serve plain HTTP on {listen}: plain HTTP is allowed only on loopback; give --tls-cert and --tls-key, or listen on 127.0.0.1"
                ),
            ));
        }
        let issuer = pick(flags.issuer.clone(), "SIGIL_ISSUER", f.issuer.clone())
            .map(|s| parse_issuer(&s))
            .transpose()?;
        let trust_domain = pick(flags.trust_domain.clone(), "SIGIL_TRUST_DOMAIN", f.trust_domain.clone())
            .unwrap_or_else(|| "sigil.local".into());
        check_trust_domain(&trust_domain)?;
        let database_url = pick(flags.database_url.clone(), "SIGIL_DATABASE_URL", f.database_url.clone());
        if let Some(u) = &database_url
            && !(u.starts_with("postgres://") || u.starts_with("postgresql://") || u.starts_with("sqlite://"))
        {
            return Err(invalid(
                "database_url",
                "must start with postgres://, postgresql:// or sqlite://",
            ));
        }
        let master_key_file = pick_path(None, "SIGIL_MASTER_KEY_FILE", f.master_key_file.clone())
            .unwrap_or_else(|| data_dir.join("master.key"));
        let alg_s = pick(None, "SIGIL_KEYS_ALGORITHM", keys.algorithm).unwrap_or_else(|| "EdDSA".into());
        let key_algorithm =
            Algorithm::parse(&alg_s).ok_or_else(|| invalid("keys.algorithm", "must be EdDSA, ES256 or RS256"))?;
        let publish_ahead = parse_duration("keys.publish_ahead", keys.publish_ahead.as_deref().unwrap_or("10m"))?;
        let retire_after = parse_duration("keys.retire_after", keys.retire_after.as_deref().unwrap_or("1h"))?;
        if retire_after < Duration::from_secs(60) {
            return Err(invalid(
                "keys.retire_after",
                "must be at least 1m: retired keys must outlive the tokens they signed",
            ));
        }
        let log_level = pick(None, "SIGIL_LOG_LEVEL", log.level).unwrap_or_else(|| "info".into());
        let log_format = match pick(None, "SIGIL_LOG_FORMAT", log.format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid("log.format", format!("{other:?} is not text or json")));
            }
        };
        let spiffe = f.spiffe.clone().unwrap_or_default();
        let upstream_ca = match (spiffe.upstream_ca_cert, spiffe.upstream_ca_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(invalid("spiffe", "give both upstream_ca_cert and upstream_ca_key"));
            }
        };
        let node_api_in_flight = f.limits.as_ref().and_then(|l| l.node_api_in_flight).unwrap_or(64);
        if !(1..=100_000).contains(&node_api_in_flight) {
            return Err(invalid("limits.node_api_in_flight", "must be between 1 and 100000"));
        }
        let node_api_queue = f.limits.as_ref().and_then(|l| l.node_api_queue).unwrap_or(4096);
        if node_api_queue > 1_000_000 {
            return Err(invalid("limits.node_api_queue", "must be at most 1000000"));
        }
        let max_connections = f
            .limits
            .as_ref()
            .and_then(|l| l.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(16..=1_000_000).contains(&max_connections) {
            return Err(invalid("limits.max_connections", "must be between 16 and 1000000"));
        }
        let max_body_bytes = f.limits.and_then(|l| l.max_body_bytes).unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(invalid("limits.max_body_bytes", "must be between 1024 and 16777216"));
        }
        let audit = f.audit.clone().unwrap_or_default();
        let audit_retain = audit
            .retain
            .as_deref()
            .map(|r| parse_duration("audit.retain", r))
            .transpose()?;
        if audit_retain.is_some_and(|r| r < Duration::from_secs(3600)) {
            return Err(invalid("audit.retain", "must be at least 1h"));
        }
        let audit_sinks = audit
            .sinks
            .iter()
            .map(|s| sink(s, env))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = audit_sinks.iter().map(SinkConfig::name).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(invalid("audit.sinks", "sink names must be unique"));
        }
        let ttl = f
            .oauth
            .as_ref()
            .and_then(|o| o.access_token_ttl.as_deref())
            .unwrap_or("5m");
        let access_token_ttl = parse_duration("oauth.access_token_ttl", ttl)?;
        if access_token_ttl < Duration::from_secs(10) || access_token_ttl > Duration::from_secs(3600) {
            return Err(invalid("oauth.access_token_ttl", "must be between 10s and 1h"));
        }
        let max = f
            .oauth
            .as_ref()
            .and_then(|o| o.max_access_token_ttl.as_deref())
            .unwrap_or("1h");
        let max_access_token_ttl = parse_duration("oauth.max_access_token_ttl", max)?;
        if max_access_token_ttl < access_token_ttl || max_access_token_ttl > Duration::from_secs(86_400) {
            return Err(invalid(
                "oauth.max_access_token_ttl",
                "must be at least oauth.access_token_ttl and at most 1d",
            ));
        }
        if retire_after < max_access_token_ttl {
            return Err(invalid(
                "keys.retire_after",
                "must be at least oauth.max_access_token_ttl: retired keys must outlive their tokens",
            ));
        }
        let dpop_nonce = f.oauth.as_ref().and_then(|o| o.dpop_nonce).unwrap_or(false);
        let max_delegation_depth = f.oauth.as_ref().and_then(|o| o.max_delegation_depth).unwrap_or(4);
        if !(1..=16).contains(&max_delegation_depth) {
            return Err(invalid("oauth.max_delegation_depth", "must be between 1 and 16"));
        }
        let refresh = f
            .oauth
            .as_ref()
            .and_then(|o| o.refresh_token_ttl.as_deref())
            .unwrap_or("30d");
        let refresh_token_ttl = parse_duration("oauth.refresh_token_ttl", refresh)?;
        if refresh_token_ttl < Duration::from_secs(60) || refresh_token_ttl > Duration::from_secs(365 * 86_400) {
            return Err(invalid("oauth.refresh_token_ttl", "must be between 1m and 365d"));
        }
        let metadata_documents = sigil_core::oauth::metadata_doc::MetadataDocuments {
            identity: f.oauth.as_ref().and_then(|o| o.client_metadata_identity.clone()),
            allow_loopback: f
                .oauth
                .as_ref()
                .and_then(|o| o.client_metadata_allow_loopback)
                .unwrap_or(false),
        };
        Ok(Self {
            metadata_documents,
            max_delegation_depth,
            refresh_token_ttl,
            max_access_token_ttl,
            dpop_nonce,
            access_token_ttl,
            audit_sinks,
            audit_retain,
            listen,
            issuer,
            trust_domain,
            data_dir,
            database_url,
            master_key_file,
            tls,
            key_algorithm,
            publish_ahead,
            retire_after,
            log_level,
            log_format,
            max_body_bytes,
            max_connections,
            node_api_in_flight,
            node_api_queue,
            upstream_ca,
        })
    }

    /// The configuration `sigil serve` uses with no file, no environment and no flags.
    pub fn zero() -> Self {
        // Defaults are valid by construction; fall back to a loopback-only literal just in case.
        Self::load(None, &|_| None, &Flags::default()).unwrap_or_else(|_| Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: None,
            trust_domain: "sigil.local".into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            database_url: None,
            master_key_file: PathBuf::from(DEFAULT_DATA_DIR).join("master.key"),
            tls: None,
            key_algorithm: Algorithm::EdDsa,
            publish_ahead: Duration::from_secs(600),
            retire_after: Duration::from_secs(3600),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            max_body_bytes: 64 * 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            node_api_in_flight: 64,
            node_api_queue: 4096,
            upstream_ca: None,
            audit_sinks: Vec::new(),
            audit_retain: None,
            access_token_ttl: Duration::from_secs(300),
            max_access_token_ttl: Duration::from_secs(3600),
            dpop_nonce: false,
            max_delegation_depth: 4,
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            metadata_documents: Default::default(),
        })
    }
}

fn sink(s: &SinkFile, env: &dyn Fn(&str) -> Option<String>) -> Result<SinkConfig, ConfigError> {
    let check_name = |n: &str| {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(n.to_owned())
        } else {
            Err(invalid(
                "audit.sinks.name",
                format!("{n:?}: use lowercase letters, digits, '-' or '_'"),
            ))
        }
    };
    match s {
        SinkFile::File {
            name,
            path,
            max_bytes,
            keep,
        } => Ok(SinkConfig::File {
            name: check_name(name)?,
            path: path.clone(),
            max_bytes: max_bytes.unwrap_or(100 * 1024 * 1024).max(4096),
            keep: keep.unwrap_or(5).clamp(1, 1000),
        }),
        SinkFile::Webhook {
            name,
            url,
            batch,
            bearer_token_env,
        } => {
            let u = url::Url::parse(url).map_err(|e| invalid("audit.sinks.url", format!("{url:?}: {e}")))?;
            let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
                return Err(invalid(
                    "audit.sinks.url",
                    "must be https (plain http only to a loopback address)",
                ));
            }
            let bearer_token = match bearer_token_env {
                Some(var) => {
                    Some(env(var).ok_or_else(|| invalid("audit.sinks.bearer_token_env", format!("{var} is not set")))?)
                }
                None => None,
            };
            Ok(SinkConfig::Webhook {
                name: check_name(name)?,
                url: u,
                batch: batch.unwrap_or(100).clamp(1, 10_000),
                bearer_token,
            })
        }
    }
}

/// Checks a config file without starting anything (`sigil config check`).
pub fn parse_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

fn parse_issuer(s: &str) -> Result<url::Url, ConfigError> {
    let u = url::Url::parse(s).map_err(|e| invalid("issuer", format!("{s:?} is not a URL: {e}")))?;
    // RFC 8414 §2: https, no query or fragment. Plain http only for a loopback issuer.
    let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
        return Err(invalid(
            "issuer",
            "must be an https URL (http only for a loopback address)",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(invalid("issuer", "must not have a query or fragment (RFC 8414 §2)"));
    }
    // Every endpoint URL is built on the issuer, and clients refuse or strip credentials in
    // URLs (RFC 9110 §4.2.4 deprecates userinfo in http(s) URIs).
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid("issuer", "must not carry a user name or password"));
    }
    // Sigil serves its endpoints and metadata at the root of its origin; an issuer with a path
    // would advertise endpoints nothing serves (and RFC 8414 §3.1 metadata under another URL).
    if u.path() != "/" {
        return Err(invalid(
            "issuer",
            "must be an origin without a path (Sigil serves its endpoints at the root)",
        ));
    }
    Ok(u)
}

/// SPIFFE trust domain name rules: lowercase letters, digits, dots, dashes and underscores.
fn check_trust_domain(s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "trust_domain",
            "must be lowercase letters, digits, '.', '-' or '_' (SPIFFE trust domain rules)",
        ))
    }
}

/// Parses `90s`, `10m`, `1h`, `7d`, `500ms`.
pub fn parse_duration(key: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| invalid(key, format!("{s:?} is not a duration like 30s, 10m, 1h or 7d")))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(invalid(key, format!("{s:?} is not a duration like 30s, 10m, 1h or 7d")));
        }
    };
    // Beyond ten years no setting makes sense, and timestamps computed from it would overflow.
    if secs > MAX_DURATION_SECS {
        return Err(invalid(
            key,
            format!("{s:?} is longer than the 3650d any duration may be"),
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// Ten years: the longest duration any setting takes.
const MAX_DURATION_SECS: u64 = 3650 * 86_400;

/// A commented example (`sigil config example`).
pub const EXAMPLE: &str = r#"# sigil.toml — every key is optional; these are the defaults.
# Precedence: defaults < this file < SIGIL_* environment variables < command-line flags.
# Unknown keys are an error.

# Where the HTTP API listens (--listen, SIGIL_LISTEN). Plain HTTP only on loopback;
# any other address needs [tls].
listen = "127.0.0.1:8080"

# The issuer URL in tokens and metadata (--issuer, SIGIL_ISSUER). Defaults to
# http://<listen>, or https://<listen> with TLS.
# issuer = "https://sigil.example.com"

# SPIFFE trust domain (--trust-domain, SIGIL_TRUST_DOMAIN).
trust_domain = "sigil.local"

# State directory: SQLite database, master key, admin token (--data-dir, SIGIL_DATA_DIR).
data_dir = "./sigil-data"

# Use PostgreSQL instead of the embedded SQLite (--database-url, SIGIL_DATABASE_URL).
# Every replica pointed at the same database forms one cluster; all must share the master key.
# database_url = "postgres://sigil@db.example.com/sigil"

# The master key file (SIGIL_MASTER_KEY_FILE); SIGIL_MASTER_KEY (base64) takes precedence.
# master_key_file = "./sigil-data/master.key"

# [tls]
# cert = "/etc/sigil/tls.crt"   # PEM chain (--tls-cert, SIGIL_TLS_CERT)
# key = "/etc/sigil/tls.key"    # PEM private key (--tls-key, SIGIL_TLS_KEY)

[keys]
algorithm = "EdDSA"      # or "ES256"; "RS256" signs everything with the RSA ID token key (SIGIL_KEYS_ALGORITHM)
publish_ahead = "10m"    # a new key is in the JWKS this long before it signs
retire_after = "1h"      # a retired key stays published this long (>= longest token lifetime)

[log]
level = "info"           # SIGIL_LOG_LEVEL; also accepts tracing filter directives
format = "text"          # or "json" (SIGIL_LOG_FORMAT)

[limits]
max_body_bytes = 65536   # request bodies above this get 413
max_connections = 4096   # client connections open at once; more wait in the backlog until one closes
node_api_in_flight = 64  # node API calls served at once
node_api_queue = 4096    # more may wait up to 1s for a turn; beyond that 503 + Retry-After

[spiffe]
# upstream_ca_cert = "/etc/sigil/upstream-ca.pem"   # the trust domain's CA becomes an intermediate
# upstream_ca_key = "/etc/sigil/upstream-ca.key"    # under this CA (PKCS#8 P-256 key, PEM)

[oauth]
access_token_ttl = "5m"  # default lifetime of access tokens (10s to 1h)
max_access_token_ttl = "1h"  # the most an identity may set (`token_ttl_seconds`); <= keys.retire_after
dpop_nonce = false       # require server-provided nonces in DPoP proofs (RFC 9449 §8)
refresh_token_ttl = "30d"  # refresh tokens rotate on each use; reuse revokes the grant family
max_delegation_depth = 4   # most actors in a delegated token's act chain
# client_metadata_identity = "mcp-clients"  # accept Client ID Metadata Documents, acting as this agent
# client_metadata_allow_loopback = false    # also fetch documents from loopback hosts (development only)

[audit]
# retain = "365d"        # prune records older than this (only at a signed checkpoint); unset: keep all
# SIEM sinks: every record, in order, at least once; each event carries its "sequence" (leaf index).
# [[audit.sinks]]
# type = "file"
# name = "siem-file"
# path = "/var/log/sigil/audit.jsonl"
# max_bytes = 104857600   # rotate to audit.jsonl.1 … past this size
# keep = 5
# [[audit.sinks]]
# type = "webhook"
# name = "siem-http"
# url = "https://siem.example.com/ingest"
# batch = 100
# bearer_token_env = "SIEM_TOKEN"   # sent as Authorization: Bearer …
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn zero_config_is_loopback_sqlite() {
        let c = Config::load(None, &none, &Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./sigil-data"));
        assert!(c.database_url.is_none());
        assert_eq!(c.trust_domain, "sigil.local");
    }

    #[test]
    fn plain_http_off_loopback_is_refused() {
        let flags = Flags {
            listen: Some("0.0.0.0:8080".into()),
            ..Flags::default()
        };
        let e = Config::load(None, &none, &flags).unwrap_err().to_string();
        assert!(e.contains("plain HTTP is allowed only on loopback"), "{e}");
    }

    #[test]
    fn precedence_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "trust_domain = \"file.test\"\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let env = |k: &str| (k == "SIGIL_TRUST_DOMAIN").then(|| "env.test".to_owned());
        let c = Config::load(Some(&p), &env, &Flags::default()).unwrap();
        assert_eq!(c.trust_domain, "env.test");
        assert_eq!(c.listen.port(), 9000);
        let flags = Flags {
            trust_domain: Some("flag.test".into()),
            ..Flags::default()
        };
        assert_eq!(Config::load(Some(&p), &env, &flags).unwrap().trust_domain, "flag.test");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "listn = \"127.0.0.1:1\"\n").unwrap();
        assert!(
            Config::load(Some(&p), &none, &Flags::default())
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
        std::fs::write(&p, "[keys]\nretire_after = \"soon\"\n").unwrap();
        assert!(Config::load(Some(&p), &none, &Flags::default()).is_err());
        std::fs::write(&p, "[keys]\npublish_ahead = \"99999999999999999d\"\n").unwrap();
        let err = Config::load(Some(&p), &none, &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.publish_ahead") && err.contains("3650d"), "{err}");
        std::fs::write(&p, "issuer = \"http://example.com\"\n").unwrap();
        assert!(Config::load(Some(&p), &none, &Flags::default()).is_err());
        std::fs::write(&p, "issuer = \"https://sigil.example.com/tenant1\"\n").unwrap();
        let err = Config::load(Some(&p), &none, &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a path"), "{err}");
        std::fs::write(&p, "issuer = \"https://sigil.example.com/\"\n").unwrap();
        assert!(Config::load(Some(&p), &none, &Flags::default()).is_ok());
    }

    #[test]
    fn example_parses() {
        let f: FileConfig = toml::from_str(EXAMPLE).unwrap();
        assert!(f.keys.is_some());
    }
}
