//! Crash safety with the real binary: every write the server acknowledged survives `kill -9`,
//! and SIGTERM shuts down cleanly with exit code 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sigil_testkit::Client;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: tokio::process::Child,
    url: String,
}

async fn spawn(data_dir: &std::path::Path, db: Option<&str>, master_key: &str) -> Proc {
    let port = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env("SIGIL_MASTER_KEY", master_key)
        .env("SIGIL_LOG_LEVEL", "warn")
        .env_remove("SIGIL_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(u) = db {
        cmd.args(["--database-url", u]);
    }
    let child = cmd.spawn().expect("spawn sigil serve");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Proc { child, url }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let Some(db) = sigil_testkit::database_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = sigil_crypto::MasterKey::generate().unwrap().to_base64();
    let mut first = spawn(dir.path(), db.as_deref(), &key).await;
    let token = std::fs::read_to_string(dir.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for t in 0..16 {
        let c = Client::new(&first.url, Some(token.clone())).unwrap();
        let acked = Arc::clone(&acked);
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{t}-{i}");
                let req = serde_json::from_value(serde_json::json!({"username": name})).unwrap();
                match c.create_user(&req).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once the burst has landed enough writes, not after a fixed time: on a
    // loaded CI machine a debug build may land only a few dozen in half a second.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.child.start_kill().unwrap(); // SIGKILL: no shutdown hook runs.
    first.child.wait().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "the burst should have landed many writes, got {}",
        acked.len()
    );

    let mut second = spawn(dir.path(), db.as_deref(), &key).await;
    let c = Client::new(&second.url, Some(token)).unwrap();
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "500".to_owned())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page = c.list_users(&q).await.unwrap();
        all.extend(page.items.into_iter().map(|u| u.username.to_string()));
        match page.next_cursor {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let missing: Vec<_> = acked.iter().filter(|n| !all.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost after kill -9: {missing:?}",
        missing.len()
    );

    // SIGTERM: graceful stop, exit 0.
    let pid = second.child.id().unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), second.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}
