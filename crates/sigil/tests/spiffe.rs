//! The SPIFFE issuer's X.509 authority: the bundle endpoint in the SPIFFE bundle format, and
//! X509-SVIDs that `openssl verify` accepts against it, per the X509-SVID specification.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sigil_core::spiffe::SvidKey;
use sigil_crypto::x509::{cert_pem, generate_svid_key};
use sigil_testkit::TestServer;
use sigil_types::SpiffeId;

fn openssl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_bundle_publishes_the_authorities_and_openssl_accepts_the_svids() {
    let Some(s) = TestServer::start().await else { return };
    let bundle: Value = reqwest::get(format!("{}/spiffe/bundle", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = bundle["keys"].as_array().unwrap();
    let x509: Vec<&Value> = keys.iter().filter(|k| k["use"] == "x509-svid").collect();
    let jwt: Vec<&Value> = keys.iter().filter(|k| k["use"] == "jwt-svid").collect();
    assert_eq!(x509.len(), 1, "{bundle}");
    assert_eq!(
        (x509[0]["kty"].as_str(), x509[0]["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert!(!jwt.is_empty() && jwt.iter().all(|k| k["kid"].is_string()), "{bundle}");
    assert!(bundle["spiffe_sequence"].as_u64().unwrap() > 0);
    assert_eq!(bundle["spiffe_refresh_hint"], 300);
    let ca_der = base64::engine::general_purpose::STANDARD
        .decode(x509[0]["x5c"][0].as_str().unwrap())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, cert_pem(&ca_der)).unwrap();
    let (ok, text) = openssl(&["x509", "-in", ca_pem.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        ok && text.contains("CA:TRUE") && text.contains("URI:spiffe://sigil.local"),
        "{text}"
    );

    let id = SpiffeId::parse("spiffe://sigil.local/ns/prod/sa/billing").unwrap();
    let key = generate_svid_key().unwrap();
    let leaf = s
        .app()
        .spiffe
        .sign_x509_svid(
            &id,
            SvidKey::Pkcs8(&key),
            &["billing.internal".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let leaf_pem = dir.path().join("leaf.pem");
    std::fs::write(&leaf_pem, cert_pem(&leaf)).unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca_pem.to_str().unwrap(),
        leaf_pem.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (_, text) = openssl(&["x509", "-in", leaf_pem.to_str().unwrap(), "-noout", "-text"]);
    for needle in [
        "CA:FALSE",
        "URI:spiffe://sigil.local/ns/prod/sa/billing",
        "DNS:billing.internal",
        "Digital Signature",
        "TLS Web Server Authentication",
        "TLS Web Client Authentication",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(text.matches("URI:").count(), 1, "exactly one URI SAN: {text}");
    assert!(
        !text.contains("Certificate Sign"),
        "a leaf cannot sign certificates: {text}"
    );

    // Refused: another trust domain, the trust domain itself, a garbage CSR.
    let ca = &s.app().spiffe;
    for bad in ["spiffe://other.org/a", "spiffe://sigil.local"] {
        let id = SpiffeId::parse(bad).unwrap();
        assert!(
            ca.sign_x509_svid(&id, SvidKey::Pkcs8(&key), &[], Duration::from_secs(60))
                .is_err(),
            "{bad}"
        );
    }
    let id = SpiffeId::parse("spiffe://sigil.local/a").unwrap();
    assert!(
        ca.sign_x509_svid(&id, SvidKey::Csr(b"garbage"), &[], Duration::from_secs(60))
            .is_err()
    );

    // The authority is stored (sealed): after a restart on the same data it is the same one.
    if std::env::var("SIGIL_TEST_BACKEND").as_deref() != Ok("postgres") {
        let data = s.data_dir.clone();
        let _keep = s.stop().await;
        let again = TestServer::start_exact(sigil_testkit::Options {
            data_dir: Some(data),
            ..Default::default()
        })
        .await;
        let after: Value = reqwest::get(format!("{}/spiffe/bundle", again.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let x509_after: Vec<&Value> = after["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["use"] == "x509-svid")
            .collect();
        assert_eq!(x509_after, x509, "the same CA after a restart");
    }
}

async fn sigil(s: &TestServer, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .env("SIGIL_URL", &s.url)
        .env("SIGIL_ADMIN_TOKEN", &s.admin_token)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn registration_entries_are_managed_and_checked() {
    let Some(s) = TestServer::start().await else { return };
    let c = s.client();
    c.create_user(&serde_json::from_value(serde_json::json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    c.create_identity(
        sigil_testkit::Family::Workloads,
        &serde_json::from_value(serde_json::json!({"name": "billing", "owner": "alice", "kind": "service"})).unwrap(),
    )
    .await
    .unwrap();
    let (code, out, err) = sigil(
        &s,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://sigil.local/ns/prod/sa/billing",
            "--parent-id",
            "spiffe://sigil.local/node/host-1",
            "--selector",
            "unix:uid:1000",
            "--selector",
            "unix:path:/usr/bin/billing",
            "--identity",
            "billing",
            "--x509-ttl",
            "30m",
            "--dns",
            "billing.internal",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["spiffe_id"], "spiffe://sigil.local/ns/prod/sa/billing");
    assert_eq!(
        e["selectors"],
        serde_json::json!(["unix:path:/usr/bin/billing", "unix:uid:1000"])
    );
    assert_eq!(
        (e["x509_ttl_seconds"].as_u64(), e["jwt_ttl_seconds"].as_u64()),
        (Some(1800), Some(300))
    );
    let id = e["id"].as_str().unwrap().to_owned();

    let listed = c
        .list_entries(&[("parent_id", "spiffe://sigil.local/node/host-1".into())])
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        c.list_entries(&[("parent_id", "spiffe://sigil.local/node/other".into())])
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Bad input: the precise field, exit code 3, nothing created.
    for (args, field) in [
        (vec!["--spiffe-id", "spiffe://sigil.local/a/../b"], "'.' or '..'"),
        (vec!["--spiffe-id", "spiffe://other.org/a"], "trust domain sigil.local"),
        (vec!["--spiffe-id", "spiffe://sigil.local"], "not the trust domain"),
        (vec!["--spiffe-id", "SPIFFE://sigil.local/a"], "spiffe://"),
    ] {
        let mut full = vec!["entry", "create"];
        full.extend(args);
        full.extend([
            "--parent-id",
            "spiffe://sigil.local/node/host-1",
            "--selector",
            "unix:uid:1",
        ]);
        let (code, _, err) = sigil(&s, &full).await;
        assert_eq!(code, 3, "{full:?}: {err}");
        assert!(err.to_lowercase().contains(field), "{err}");
    }
    for (selector, ok) in [
        ("unix:uid:abc", false),
        ("unix:pid:1", false),
        ("unix:sha256:00", false),
        ("unix:gid:20", true),
    ] {
        let (code, _, err) = sigil(
            &s,
            &[
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://sigil.local/x",
                "--parent-id",
                "spiffe://sigil.local/node/h",
                "--selector",
                selector,
            ],
        )
        .await;
        assert_eq!(code == 0, ok, "{selector}: {err}");
    }
    let (code, _, err) = sigil(
        &s,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://sigil.local/y",
            "--parent-id",
            "spiffe://sigil.local/node/h",
            "--selector",
            "unix:uid:1",
            "--identity",
            "nobody",
        ],
    )
    .await;
    assert_eq!(code, 3, "{err}");

    // Update replaces every field; delete removes; both are audited.
    let (code, out, err) = sigil(
        &s,
        &[
            "entry",
            "update",
            &id,
            "--spiffe-id",
            "spiffe://sigil.local/ns/prod/sa/billing",
            "--parent-id",
            "spiffe://sigil.local/node/host-2",
            "--selector",
            "unix:uid:1001",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let u: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(u["parent_id"], "spiffe://sigil.local/node/host-2");
    assert!(u.get("identity").is_none() && u["version"] == 2, "{u}");
    let (code, _, err) = sigil(&s, &["entry", "delete", &id]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = sigil(&s, &["entry", "show", &id]).await;
    assert_eq!(code, 1);
    for t in ["entry.created", "entry.updated", "entry.deleted"] {
        let found = c.audit_search(&[("type", t.into())]).await.unwrap();
        assert!(!found.items.is_empty(), "{t}");
    }
}

/// A SPIFFE ID stands for one registry identity, and node IDs and workload IDs stay apart: a
/// workload SVID must never pass as a node's, and a banned node's ID is never given out again.
#[tokio::test]
async fn one_spiffe_id_one_identity_and_nodes_kept_apart() {
    let Some(s) = TestServer::start().await else { return };
    let c = s.client();
    c.create_user(&serde_json::from_value(serde_json::json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    for name in ["billing", "payroll"] {
        c.create_identity(
            sigil_testkit::Family::Workloads,
            &serde_json::from_value(serde_json::json!({"name": name, "owner": "alice", "kind": "service"})).unwrap(),
        )
        .await
        .unwrap();
    }
    let entry = |id: &str, parent: &str, identity: Option<&str>| {
        sigil_testkit::workload::entry(id, parent, &["unix:uid:1000".to_owned()], identity)
    };
    let status = |e: sigil_client::ClientError| e.status().map(|s| s.as_u16());
    c.create_entry(&entry(
        "spiffe://sigil.local/billing",
        "spiffe://sigil.local/host/a",
        Some("billing"),
    ))
    .await
    .unwrap();
    // The same ID on another host for the same identity is fine; for another identity it is not.
    c.create_entry(&entry(
        "spiffe://sigil.local/billing",
        "spiffe://sigil.local/host/b",
        Some("billing"),
    ))
    .await
    .unwrap();
    let e = c
        .create_entry(&entry(
            "spiffe://sigil.local/billing",
            "spiffe://sigil.local/host/c",
            Some("payroll"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status(e), Some(409));
    // The very same entry twice (a retried create) is a conflict, not a copy.
    let e = c
        .create_entry(&entry(
            "spiffe://sigil.local/billing",
            "spiffe://sigil.local/host/b",
            Some("billing"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status(e), Some(409));
    // Parents name a node: not the trust domain, not the entry itself.
    for parent in ["spiffe://sigil.local", "spiffe://sigil.local/self"] {
        let e = c
            .create_entry(&entry("spiffe://sigil.local/self", parent, None))
            .await
            .unwrap_err();
        assert_eq!(status(e), Some(400), "{parent}");
    }

    // A node's ID is no workload's, and a workload's no node's.
    let join = |id: &str| {
        let c = s.client();
        let id = id.to_owned();
        async move {
            c.create_join_token(&sigil_proto::node::JoinTokenRequest {
                spiffe_id: Some(id),
                ttl_seconds: None,
            })
            .await
        }
    };
    let node_id = "spiffe://sigil.local/host/a";
    let token = join(node_id).await.unwrap().token;
    sigil_testkit::workload::attest_node(&s.url, &token).await;
    let e = c
        .create_entry(&entry(node_id, "spiffe://sigil.local/host/b", None))
        .await
        .unwrap_err();
    assert_eq!(status(e), Some(409));
    let e = c
        .create_entry(&entry("spiffe://sigil.local/sigil/node/x", node_id, None))
        .await
        .unwrap_err();
    assert_eq!(status(e), Some(409));
    assert_eq!(
        status(join("spiffe://sigil.local/billing").await.unwrap_err()),
        Some(400)
    );

    // A banned node gets no new credential: not through a new join token, nor an older one.
    let earlier = join(node_id).await.unwrap().token;
    c.ban_node(node_id).await.unwrap();
    assert_eq!(status(join(node_id).await.unwrap_err()), Some(400));
    let (_, csr) = sigil_node::agent::new_key_and_csr().unwrap();
    let refused = sigil_node::client::NodeClient::new(&s.url)
        .unwrap()
        .attest(&earlier, &csr)
        .await;
    assert!(refused.is_err_and(|e| e.is_auth()));
}

#[tokio::test]
async fn a_jwt_svid_is_a_client_credential_at_the_token_endpoint() {
    let Some(s) = TestServer::start().await else { return };
    let c = s.client();
    c.create_user(&serde_json::from_value(serde_json::json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    c.create_identity(
        sigil_testkit::Family::Workloads,
        &serde_json::from_value(serde_json::json!({"name": "billing", "owner": "alice", "kind": "service", "ceiling": {"scopes": ["read"]}}))
            .unwrap(),
    )
    .await
    .unwrap();
    c.create_resource(
        &serde_json::from_value(serde_json::json!({"uri": "https://ledger.example.com", "name": "ledger", "owner": "alice", "scopes": ["read", "write"]}))
            .unwrap(),
    )
    .await
    .unwrap();
    let entry = |id: &str, identity: Option<&str>| sigil_proto::admin::EntryRequest {
        spiffe_id: id.into(),
        parent_id: "spiffe://sigil.local/node/host-1".into(),
        selectors: vec!["unix:uid:1000".into()],
        identity: identity.map(str::to_owned),
        x509_ttl_seconds: None,
        jwt_ttl_seconds: None,
        dns_names: vec![],
    };
    c.create_entry(&entry("spiffe://sigil.local/billing", Some("billing")))
        .await
        .unwrap();
    c.create_entry(&entry("spiffe://sigil.local/unmapped", None))
        .await
        .unwrap();

    let token_endpoint = format!("{}/token", s.url);
    let svid = |id: &str, aud: &str| {
        let key = s.app().spiffe.jwt_signing_key().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        sigil_core::spiffe::jwt_svid::mint(
            &key,
            &sigil_types::TrustDomain::parse("sigil.local").unwrap(),
            &SpiffeId::parse(id).unwrap(),
            &[aud.to_owned()],
            now,
            300,
            sigil_crypto::b64url(&sigil_crypto::random_bytes::<12>().unwrap()),
        )
        .unwrap()
    };
    let ask = |assertion: String| {
        let endpoint = token_endpoint.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(endpoint)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", "https://ledger.example.com"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let good = svid("spiffe://sigil.local/billing", &token_endpoint);
    let (st, v) = ask(good.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["scope"], "read", "the workload's ceiling applies");
    let payload = v["access_token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let billing = c
        .get_identity(sigil_testkit::Family::Workloads, "billing")
        .await
        .unwrap()
        .id
        .to_string();
    assert_eq!(claims["sub"], billing.as_str());
    assert_eq!(claims["client_id"], "spiffe://sigil.local/billing");
    let issued = c.audit_search(&[("type", "token.issued".into())]).await.unwrap();
    let record = &issued.items.iter().max_by_key(|e| e.seq).unwrap().record;
    assert_eq!(record["auth"]["method"], "jwt_svid", "{record}");

    // Replay, another audience, no identity for the SPIFFE ID, no entry at all.
    for (assertion, why) in [
        (good, "replay"),
        (
            svid("spiffe://sigil.local/billing", "https://elsewhere.example.com"),
            "audience",
        ),
        (svid("spiffe://sigil.local/unmapped", &token_endpoint), "no identity"),
        (svid("spiffe://sigil.local/stranger", &token_endpoint), "no entry"),
    ] {
        let (st, v) = ask(assertion).await;
        assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")), "{why}: {v}");
    }
}
