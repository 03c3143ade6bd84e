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
    use base64::Engine;
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
    let key = sigil_crypto::x509::generate_svid_key().unwrap();
    let csr = base64::engine::general_purpose::STANDARD.encode(sigil_crypto::x509::make_csr(&key).unwrap());
    let http = reqwest::Client::new();
    let attested: serde_json::Value = http
        .post(format!("{}/spiffe/v1/node/attest", a.url))
        .json(&json!({"join_token": join, "csr": csr}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cert = base64::engine::general_purpose::STANDARD
        .decode(attested["cert"].as_str().unwrap())
        .unwrap();
    let entries_at = |base: &str| {
        let api = format!("{base}/spiffe/v1/node");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"aud": api, "iat": now, "exp": now + 60});
        let proof = sigil_crypto::svid_verify::sign_node_proof(&key, &cert, claims.to_string().as_bytes()).unwrap();
        http.get(format!("{api}/entries"))
            .header("authorization", format!("SigilNode {proof}"))
            .send()
    };
    // Both replicas know the node now.
    assert_eq!(entries_at(&a.url).await.unwrap().status(), 200);
    assert_eq!(entries_at(&b.url).await.unwrap().status(), 200);

    let banned_at = Instant::now();
    ca.ban_node(node_id).await.unwrap();
    assert_eq!(
        entries_at(&a.url).await.unwrap().status(),
        401,
        "at once where it was banned"
    );
    loop {
        if entries_at(&b.url).await.unwrap().status() == 401 {
            break;
        }
        assert!(
            banned_at.elapsed() < Duration::from_millis(1500),
            "the other replica still serves a banned node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
