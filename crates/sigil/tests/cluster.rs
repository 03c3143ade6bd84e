//! Two `sigil serve` replicas on one PostgreSQL database are one cluster: a write through one
//! is visible through the other at once, and key changes reach the other within a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::time::{Duration, Instant};

use serde_json::json;
use sigil_testkit::{Client, Family};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_state() {
    let Some((a, b, token)) = sigil_testkit::replica_pair().await else {
        eprintln!("!!! SKIPPING two-replica test: it needs PostgreSQL");
        return;
    };
    assert!(
        a.admin_token.is_empty() != b.admin_token.is_empty(),
        "one bootstrap credential for the cluster"
    );
    let ca = Client::new(&a.url, Some(token.clone())).unwrap();
    let cb = Client::new(&b.url, Some(token)).unwrap();
    assert_eq!(
        a.app().keys.active().unwrap().kid(),
        b.app().keys.active().unwrap().kid(),
        "one signing key"
    );

    ca.create_user(&serde_json::from_value(json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    ca.create_identity(
        Family::Agents,
        &serde_json::from_value(json!({"name": "bot", "owner": "alice"})).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        cb.get_identity(Family::Agents, "bot").await.unwrap().status.as_str(),
        "active"
    );

    cb.change_status(Family::Agents, "bot", "suspend", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        ca.get_identity(Family::Agents, "bot").await.unwrap().status.as_str(),
        "suspended"
    );

    // Concurrent creates through both replicas: every one lands, names stay unique.
    let mut tasks = Vec::new();
    for n in 0..40 {
        let c = if n % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(async move {
            c.create_user(&serde_json::from_value(json!({"username": format!("u{}", n % 20)})).unwrap())
                .await
                .is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 20, "each of the 20 names is created exactly once across replicas");

    // Both replicas wrote audit records concurrently and both run an integrator: the lease lets
    // one at a time extend the tree, and the whole log verifies from either replica.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.app().store.pending_audit(1).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "records were not integrated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = a.app().store.list_audit(0, 100_000).await.unwrap().len() as u64;
    assert_eq!(
        a.app().store.audit_tree_size().await.unwrap(),
        total,
        "every record has exactly one leaf"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["audit", "verify"])
        .env("SIGIL_URL", &b.url)
        .env(
            "SIGIL_ADMIN_TOKEN",
            if a.admin_token.is_empty() {
                &b.admin_token
            } else {
                &a.admin_token
            },
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let next = ca.rotate_key(&Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let jwks: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", b.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if jwks.to_string().contains(&next.kid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica b did not publish the new key within 1.5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replicas remember the nodes they have seen, so a ban must still reach them: a node banned
/// through one replica is refused by the other within a second (and by the first at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_banned_through_one_replica_is_refused_by_the_other() {
    let Some((a, b, token)) = sigil_testkit::replica_pair().await else {
        eprintln!("!!! SKIPPING two-replica test: it needs PostgreSQL");
        return;
    };
    let ca = Client::new(&a.url, Some(token)).unwrap();
    let node_id = "spiffe://sigil.local/node/replicated";
    let join = ca
        .create_join_token(&sigil_proto::node::JoinTokenRequest {
            spiffe_id: Some(node_id.into()),
            ttl_seconds: None,
        })
        .await
        .unwrap()
        .token;
    let node = sigil_testkit::workload::attest_node(&a.url, &join).await;
    let entries_at = |base: &str| {
        let client = sigil_node::client::NodeClient::new(base).unwrap();
        let node = &node;
        async move { client.entries(node).await }
    };
    // Both replicas know the node now.
    entries_at(&a.url).await.unwrap();
    entries_at(&b.url).await.unwrap();

    let banned_at = Instant::now();
    ca.ban_node(node_id).await.unwrap();
    let refused = |r: Result<_, sigil_node::client::ClientError>| r.is_err_and(|e| e.is_auth());
    assert!(refused(entries_at(&a.url).await), "at once where it was banned");
    loop {
        if refused(entries_at(&b.url).await) {
            break;
        }
        assert!(
            banned_at.elapsed() < Duration::from_millis(1500),
            "the other replica still serves a banned node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A suspension through one replica ends the agent's token on the other within milliseconds:
/// the committing replica announces the change (PostgreSQL `NOTIFY`) and the other drops its
/// cached registry reads, instead of waiting out their one-second age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_through_one_replica_ends_tokens_on_the_other_at_once() {
    let Some((a, b, token)) = sigil_testkit::replica_pair().await else {
        eprintln!("!!! SKIPPING two-replica test: it needs PostgreSQL");
        return;
    };
    let ca = Client::new(&a.url, Some(token.clone())).unwrap();
    let cb = Client::new(&b.url, Some(token)).unwrap();
    let client = sigil_testkit::oauth::agent_with_secret_client(&ca).await;
    let token = sigil_testkit::oauth::client_credentials_token(&b.url, &client).await;
    let access_token = token["access_token"].as_str().expect("a token").to_owned();
    // Replica b has the agent in its read cache now.
    assert_eq!(cb.introspect_token(&access_token).await.unwrap()["active"], true);

    ca.change_status(Family::Agents, "bot", "suspend", &Default::default())
        .await
        .unwrap();
    let suspended_at = Instant::now();
    while cb.introspect_token(&access_token).await.unwrap()["active"] == true {
        assert!(
            suspended_at.elapsed() < Duration::from_millis(400),
            "replica b still calls the token active"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
