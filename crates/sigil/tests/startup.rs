//! Starting the server: zero config, refusals with clear messages, TLS, `sigil config`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::process::Command;

use sigil_testkit::{Options, TestServer};

fn sigil(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .current_dir(dir)
        .env_remove("SIGIL_DATABASE_URL")
        .env_remove("SIGIL_DATA_DIR")
        .output()
        .expect("run sigil")
}

#[test]
fn plain_http_off_loopback_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = sigil(&["serve", "--listen", "0.0.0.0:0"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain HTTP is allowed only on loopback"), "{err}");
    assert!(
        !dir.path().join("sigil-data").exists(),
        "nothing is created when start-up is refused"
    );
}

/// Each connection is a file descriptor: started under a low soft limit, the server raises it
/// to the hard limit, so a crowd of slow clients cannot lock out everyone else at 1,024.
#[cfg(target_os = "linux")]
#[test]
fn serve_raises_its_open_file_limit_to_the_hard_limit() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 256 && exec '{}' serve --listen 127.0.0.1:0",
            env!("CARGO_BIN_EXE_sigil")
        ))
        .current_dir(dir.path())
        .env_remove("SIGIL_DATABASE_URL")
        .env_remove("SIGIL_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(banner.contains("listening on"), "{banner}");
    let row = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_ne!(fields[3], "256", "still the low soft limit: {row}");
    assert_eq!(fields[3], fields[4], "soft = hard: {row}");
}

#[test]
fn malformed_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "listen = 8080\n").unwrap();
    std::fs::write(dir.path().join("unknown.toml"), "colour = \"blue\"\n").unwrap();
    for f in ["bad.toml", "unknown.toml", "missing.toml"] {
        let out = sigil(&["config", "check", f], dir.path());
        assert_eq!(out.status.code(), Some(3), "{f}");
        let out = sigil(&["serve", "--config", f], dir.path());
        assert_eq!(
            out.status.code(),
            Some(3),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let example = sigil(&["config", "example"], dir.path());
    assert_eq!(example.status.code(), Some(0));
    std::fs::write(dir.path().join("example.toml"), &example.stdout).unwrap();
    let out = sigil(&["config", "check", "example.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn db_migrate_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let out = sigil(&["db", "migrate"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied"));
    let out = sigil(&["db", "migrate"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}

#[tokio::test]
async fn restart_keeps_state_and_shows_the_token_once() {
    let Some(url) = sigil_testkit::database_url().await else {
        return;
    };
    let s = TestServer::start_with(Options {
        database_url: url,
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(s.running.as_ref().unwrap().new_admin_token.is_some());
    let token = s.admin_token.clone();
    let data_dir = s.data_dir.clone();
    let kid = s.app().keys.active().unwrap().kid().to_owned();
    s.client()
        .create_user(&serde_json::from_value(serde_json::json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    // Everything in the data directory is its owner's alone: the database (and its WAL) holds
    // sealed keys, hashed secrets and the audit trail.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700);
        for entry in std::fs::read_dir(&data_dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path) & 0o077, 0, "{} is open to others", path.display());
        }
    }
    // Same data directory (and database) again: same key, same credential, no new token shown.
    let config = sigil_server::Config::load(
        None,
        &|_| None,
        &sigil_server::Flags {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.clone()),
            database_url: s.app().config.database_url.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let running = s.running;
    running.unwrap().shutdown().await.unwrap();
    let again = sigil_server::start(config, std::sync::Arc::new(sigil_core::SystemClock), None)
        .await
        .unwrap();
    assert!(again.new_admin_token.is_none());
    assert_eq!(again.app.keys.active().unwrap().kid(), kid);
    let c = sigil_testkit::Client::new(&again.url(), Some(token)).unwrap();
    assert_eq!(c.get_user("alice").await.unwrap().username.as_str(), "alice");
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_master_key_is_refused() {
    let Some(url) = sigil_testkit::database_url().await else {
        return;
    };
    let s = TestServer::start_with(Options {
        database_url: url.clone(),
        ..Options::default()
    })
    .await
    .unwrap();
    let data_dir = s.data_dir.clone();
    let db = s.app().config.database_url.clone();
    let _keep = s.stop().await;
    let config = sigil_server::Config::load(
        None,
        &|_| None,
        &sigil_server::Flags {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir),
            database_url: db,
            ..Default::default()
        },
    )
    .unwrap();
    let other = sigil_crypto::MasterKey::generate().unwrap().to_base64();
    let err = sigil_server::start(
        config.clone(),
        std::sync::Arc::new(sigil_core::SystemClock),
        Some(other),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("master key"), "{err}");
    // A lost key file is named as lost, and no new key file takes its place.
    std::fs::remove_file(&config.master_key_file).unwrap();
    let err = sigil_server::start(config.clone(), std::sync::Arc::new(sigil_core::SystemClock), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is missing"), "{err}");
    assert!(!config.master_key_file.exists(), "no stray key file was written");
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let Some((s, ca)) = TestServer::start_tls().await else {
        return;
    };
    assert!(s.url.starts_with("https://"));
    let port = s.url.rsplit(':').next().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let resp = http
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "no plain HTTP on a TLS listener"
    );
}
