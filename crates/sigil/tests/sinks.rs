//! SIEM export: a webhook receiver that is down and then up gets every event exactly in order with
//! no gap; a file sink resumes after a restart from where it stopped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_testkit::{Options, TestServer};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn add_users(s: &TestServer, prefix: &str, n: usize) {
    let c = s.client();
    for i in 0..n {
        c.create_user(&serde_json::from_value(json!({"username": format!("{prefix}{i}")})).unwrap())
            .await
            .unwrap();
    }
}

async fn tree_size(s: &TestServer) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.app().store.pending_audit(1).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.app().store.audit_tree_size().await.unwrap()
}

/// Sequences in order of first arrival; duplicates (at-least-once) are allowed and dropped.
fn first_arrivals(all: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    all.iter().copied().filter(|s| seen.insert(*s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_then_up_gets_everything_in_order() {
    let port = free_port();
    let toml = format!(
        "[[audit.sinks]]\ntype = \"webhook\"\nname = \"siem\"\nurl = \"http://127.0.0.1:{port}/ingest\"\nbatch = 7\n"
    );
    let Some(s) = TestServer::start_with(Options {
        config_toml: Some(toml),
        ..Options::default()
    })
    .await
    else {
        return;
    };
    add_users(&s, "early", 12).await;
    // The receiver is down: delivery fails and backs off; requests are unaffected.
    tokio::time::sleep(Duration::from_millis(700)).await;
    add_users(&s, "late", 8).await;

    let received: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |axum::Json(events): axum::Json<Vec<Value>>| {
            let sink = Arc::clone(&sink);
            async move {
                let mut r = sink.lock().unwrap();
                for e in events {
                    assert!(e["record"]["event_type"].is_string(), "each event carries its record");
                    r.push(e["sequence"].as_u64().unwrap());
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let total = tree_size(&s).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = first_arrivals(&received.lock().unwrap());
        if got.len() as u64 >= total {
            assert_eq!(got, (0..total).collect::<Vec<_>>(), "every event, in order, no gap");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {total} events arrived",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_resumes_after_restart() {
    let Some(db) = sigil_testkit::database_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let toml = format!(
        "[[audit.sinks]]\ntype = \"file\"\nname = \"local\"\npath = \"{}\"\n",
        file.display()
    );
    let opts = || Options {
        config_toml: Some(toml.clone()),
        data_dir: Some(dir.path().join("data")),
        database_url: db.clone(),
        master_key: Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
        ..Options::default()
    };
    let read = || -> Vec<u64> {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["sequence"].as_u64().unwrap())
            .collect()
    };
    let wait_for = |n: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while (first_arrivals(&read()).len() as u64) < n {
            assert!(Instant::now() < deadline, "file sink stalled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    let s = TestServer::start_exact(opts()).await;
    add_users(&s, "a", 5).await;
    let first = tree_size(&s).await;
    wait_for(first).await;
    let _keep = s.stop().await;

    let s = TestServer::start_exact(opts()).await;
    add_users(&s, "b", 5).await;
    let total = tree_size(&s).await;
    assert!(total > first);
    wait_for(total).await;
    assert_eq!(
        first_arrivals(&read()),
        (0..total).collect::<Vec<_>>(),
        "resumed where it stopped, nothing lost"
    );
}
