//! Test support: a real Sigil server in-process on an ephemeral port, with its own temporary
//! SQLite database (or a fresh PostgreSQL database when `SIGIL_TEST_BACKEND=postgres`), a clock
//! the test can move, and an admin client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sigil_core::FakeClock;
use sigil_core::{Clock, SystemClock};
use sigil_server::{Config, Flags, Running};
use sigil_types::Timestamp;

pub use sigil_client::{Client, Family};

pub mod oauth;
pub mod workload;

/// Which database the test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend chosen for this test run by `SIGIL_TEST_BACKEND` (`sqlite` by default).
pub fn backend() -> Backend {
    match std::env::var("SIGIL_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

/// A database location for a test server; `None` means PostgreSQL was asked for but is absent.
pub async fn database_url() -> Option<Option<String>> {
    match backend() {
        Backend::Sqlite => Some(None),
        Backend::Postgres => sigil_store::testing::fresh_postgres_database().await.map(Some),
    }
}

/// Knobs for a test server.
#[derive(Debug, Default)]
pub struct Options {
    /// Start the clock here and let the test move it; `None` uses the wall clock.
    pub fake_clock_at: Option<Timestamp>,
    /// Use this database URL (e.g. a shared PostgreSQL database for a two-replica test).
    pub database_url: Option<String>,
    /// Extra `sigil.toml` text.
    pub config_toml: Option<String>,
    /// The master key (base64) to use instead of a generated file (replicas must share it).
    pub master_key: Option<String>,
    /// Keep state here instead of a fresh temporary directory (to restart on the same data).
    pub data_dir: Option<PathBuf>,
}

/// A running in-process server.
#[derive(Debug)]
pub struct TestServer {
    pub url: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    pub clock: Option<Arc<FakeClock>>,
    pub running: Option<Running>,
    _dir: tempfile::TempDir,
    /// The TLS certificate and key files of a [`Self::start_tls`] server.
    _tls_dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server on the run's backend; `None` if that backend is PostgreSQL and none answers.
    pub async fn start() -> Option<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(mut opts: Options) -> Option<Self> {
        if opts.database_url.is_none() {
            opts.database_url = database_url().await?;
        }
        Some(Self::start_exact(opts).await)
    }

    /// Starts with exactly these options (no backend choice from the environment).
    pub async fn start_exact(opts: Options) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
        let config_file = dir.path().join("sigil.toml");
        std::fs::write(&config_file, opts.config_toml.unwrap_or_default()).unwrap_or_else(|e| fail(&e.to_string()));
        let flags = Flags {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.clone()),
            database_url: opts.database_url,
            ..Flags::default()
        };
        let config = Config::load(Some(&config_file), &|_| None, &flags).unwrap_or_else(|e| fail(&e.to_string()));
        let fake = opts.fake_clock_at.map(|t| Arc::new(FakeClock::new(t)));
        let clock: Arc<dyn Clock> = match &fake {
            Some(f) => Arc::clone(f) as Arc<dyn Clock>,
            None => Arc::new(SystemClock),
        };
        let master = opts.master_key.map(zeroize::Zeroizing::new);
        let running = sigil_server::start(config, clock, master)
            .await
            .unwrap_or_else(|e| fail(&format!("server start: {e}")));
        let admin_token = read_token(&data_dir);
        Self {
            url: running.url(),
            admin_token,
            data_dir,
            clock: fake,
            running: Some(running),
            _dir: dir,
            _tls_dir: None,
        }
    }

    /// A server listening with TLS, with a fresh self-signed certificate for `localhost`;
    /// returns it with the certificate (PEM) clients must trust. `None` as for [`Self::start`].
    pub async fn start_tls() -> Option<(Self, String)> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
            .unwrap_or_else(|e| fail(&format!("TLS certificate: {e}")));
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, cert.cert.pem()).unwrap_or_else(|e| fail(&e.to_string()));
        std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap_or_else(|e| fail(&e.to_string()));
        let toml = format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert_file.display(),
            key_file.display()
        );
        let mut server = Self::start_with(Options {
            config_toml: Some(toml),
            ..Options::default()
        })
        .await?;
        server._tls_dir = Some(dir);
        Some((server, cert.cert.pem()))
    }

    /// An admin client for this server.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.admin_token.clone())).unwrap_or_else(|e| fail(&e.to_string()))
    }

    /// A client with no (or a given) credential.
    pub fn client_with_token(&self, token: Option<&str>) -> Client {
        Client::new(&self.url, token.map(str::to_owned)).unwrap_or_else(|e| fail(&e.to_string()))
    }

    pub fn app(&self) -> &Arc<sigil_server::App> {
        match &self.running {
            Some(r) => &r.app,
            None => fail("server already stopped"),
        }
    }

    /// Moves the fake clock (the server must have been started with one).
    pub fn advance(&self, d: std::time::Duration) {
        match &self.clock {
            Some(c) => c.advance(d),
            None => fail("this server runs on the wall clock"),
        }
    }

    /// Shuts the server down gracefully; returns its temporary directory so the caller can
    /// keep the data (for a restart) for as long as it holds it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown().await;
        }
        self._dir
    }
}

fn read_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-token"))
        .map(|t| t.trim().to_owned())
        .unwrap_or_default()
}

fn fail(msg: &str) -> ! {
    // Test support: a broken fixture must stop the test loudly.
    #[expect(clippy::panic, reason = "test fixture failure")]
    {
        panic!("sigil-testkit: {msg}")
    }
}

/// Two replicas on one fresh PostgreSQL database with one master key, and the cluster's admin
/// token (exactly one of them created it); `None` when no PostgreSQL answers.
pub async fn replica_pair() -> Option<(TestServer, TestServer, String)> {
    let url = sigil_store::testing::fresh_postgres_database().await?;
    let key = sigil_crypto::MasterKey::generate()
        .unwrap_or_else(|e| fail(&e.to_string()))
        .to_base64()
        .to_string();
    let opts = || Options {
        database_url: Some(url.clone()),
        master_key: Some(key.clone()),
        ..Options::default()
    };
    let (a, b) = tokio::join!(TestServer::start_exact(opts()), TestServer::start_exact(opts()));
    let token = if a.admin_token.is_empty() {
        b.admin_token.clone()
    } else {
        a.admin_token.clone()
    };
    Some((a, b, token))
}
