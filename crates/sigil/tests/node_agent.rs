//! The node agent end to end: join-token attestation, the SPIFFE Workload API on a unix socket
//! (security header, unix attestation, streams that push and end), JWT-SVIDs that the Workload
//! API validates and the token endpoint accepts, and the audit trail from attestation to token.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use serde_json::{Value, json};
use sigil_node::proto::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use sigil_testkit::TestServer;
use sigil_testkit::workload::{NodeAgent, attest_node, entry, my_uid, with_security_header as with_header};
use tonic::Code;

async fn setup_registry(s: &TestServer) {
    let c = s.client();
    c.create_user(&serde_json::from_value(json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    c.create_identity(
        sigil_testkit::Family::Workloads,
        &serde_json::from_value(
            json!({"name": "billing", "owner": "alice", "kind": "service", "ceiling": {"scopes": ["read"]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    c.create_resource(
        &serde_json::from_value(
            json!({"uri": "https://ledger.example.com", "name": "ledger", "owner": "alice", "scopes": ["read"]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
}

const NODE_ID: &str = "spiffe://sigil.local/node/host-1";

#[tokio::test]
async fn a_workload_gets_its_svids_through_the_workload_api() {
    let Some(s) = TestServer::start().await else { return };
    setup_registry(&s).await;
    let c = s.client();
    let uid = format!("unix:uid:{}", my_uid());
    let billing = c
        .create_entry(&entry(
            "spiffe://sigil.local/billing",
            NODE_ID,
            std::slice::from_ref(&uid),
            Some("billing"),
        ))
        .await
        .unwrap();
    // An entry for another uid and one for another node: this workload gets neither.
    c.create_entry(&entry(
        "spiffe://sigil.local/other",
        NODE_ID,
        &["unix:uid:4294967".into()],
        None,
    ))
    .await
    .unwrap();
    c.create_entry(&entry(
        "spiffe://sigil.local/elsewhere",
        "spiffe://sigil.local/node/host-2",
        std::slice::from_ref(&uid),
        None,
    ))
    .await
    .unwrap();

    let node = NodeAgent::start(&s.url, Some(s.join_token(NODE_ID).await)).await;
    let mut api = node.client().await;

    // No security header: refused.
    let err = api.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut stream = api
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.svids.len(), 1, "only the entry that matches on this node");
    let svid = &first.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://sigil.local/billing");
    // The SVID chains to the bundle it comes with, and its key is the key of the certificate.
    let bundle = s.app().spiffe.authorities().unwrap();
    let verified = sigil_crypto::svid_verify::verify_svid(&svid.x509_svid, &bundle, now()).unwrap();
    assert_eq!(verified.spiffe_id, "spiffe://sigil.local/billing");
    assert_eq!(svid.bundle, bundle.concat());
    let proof = sigil_crypto::svid_verify::sign_node_proof(&svid.x509_svid_key, &svid.x509_svid, b"{}").unwrap();
    sigil_crypto::svid_verify::verify_node_proof(&proof, &bundle, now()).unwrap();

    // Bundles, X.509 and JWT, keyed by the trust domain.
    let mut xb = api
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let xb = xb.message().await.unwrap().unwrap();
    assert_eq!(xb.bundles["spiffe://sigil.local"], bundle.concat());
    let mut jb = api
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let jb = jb.message().await.unwrap().unwrap();
    let jwks: Value = serde_json::from_slice(&jb.bundles["spiffe://sigil.local"]).unwrap();
    assert!(
        jwks["keys"].as_array().unwrap().iter().all(|k| k["use"] == "jwt-svid"),
        "{jwks}"
    );

    // A JWT-SVID: validated by the Workload API for its audience only.
    let token_endpoint = format!("{}/token", s.url);
    let err = api
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let jwt = api
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![token_endpoint.clone()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwt.svids.len(), 1);
    assert_eq!(jwt.svids[0].spiffe_id, "spiffe://sigil.local/billing");
    let token = jwt.svids[0].svid.clone();
    let ok = validate_jwt_svid(&mut api, &token_endpoint, &token).await.unwrap();
    assert_eq!(ok.spiffe_id, "spiffe://sigil.local/billing");
    assert!(ok.claims.unwrap().fields.contains_key("exp"));
    let wrong = validate_jwt_svid(&mut api, "https://elsewhere.example.com", &token)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    let err = api
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["x".into()],
            spiffe_id: "spiffe://sigil.local/other".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "not this workload's ID");

    // The JWT-SVID is the workload's client credential: from nothing to an access token.
    let token_with = |assertion: String| {
        let token_endpoint = token_endpoint.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(&token_endpoint)
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
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        }
    };
    token_with(token.clone()).await;
    // Sigil spends a JWT-SVID used as a client assertion, so the agent does not serve the
    // same one again for Sigil's own URLs: the next fetch is a fresh SVID that works too.
    let again = api
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![token_endpoint.clone()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .svids[0]
        .svid
        .clone();
    assert_ne!(again, token, "a single-use JWT-SVID is not cached");
    token_with(again).await;

    // The trace of the workload identity: its SVIDs (with the node and the attested workload),
    // then the token they obtained.
    let trace = c.audit_trace("billing").await.unwrap();
    let types: Vec<&str> = trace
        .items
        .iter()
        .filter_map(|e| e.record["event_type"].as_str())
        .collect();
    let svid_at = types
        .iter()
        .position(|t| *t == "svid.issued")
        .expect("svid.issued in the trace");
    let token_at = types
        .iter()
        .position(|t| *t == "token.issued")
        .expect("token.issued in the trace");
    assert!(svid_at < token_at, "{types:?}");
    let jwt_record = trace
        .items
        .iter()
        .map(|e| &e.record)
        .find(|r| r["event_type"] == "svid.issued" && r["details"]["svid_type"] == "jwt")
        .unwrap();
    assert_eq!(jwt_record["actors"][0], format!("node:{NODE_ID}"));
    assert_eq!(jwt_record["details"]["workload"]["uid"], my_uid());

    // Deleting the entry ends the stream with PermissionDenied, and the refusal is audited.
    c.delete_entry(&billing.id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    let err = api.fetch_x509svid(with_header(X509svidRequest {})).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Nor any bundle (as SPIRE's agent without `allow_unauthenticated_verifiers`); our own
    // domain's JWT-SVIDs still validate.
    assert_eq!(
        first_x509_bundles(&mut api).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let err = api
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let ok = validate_jwt_svid(&mut api, &token_endpoint, &token).await.unwrap();
    assert_eq!(ok.spiffe_id, "spiffe://sigil.local/billing");
    let mut denied = Vec::new();
    for _ in 0..50 {
        denied = c
            .audit_search(&[("type", "workload.denied".into())])
            .await
            .unwrap()
            .items;
        if !denied.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(denied[0].record["details"]["workload"]["uid"], my_uid());

    node.stop().await;
}

type WorkloadClient = sigil_node::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient<tonic::transport::Channel>;

async fn validate_jwt_svid(
    api: &mut WorkloadClient,
    audience: &str,
    svid: &str,
) -> Result<sigil_node::proto::ValidateJwtsvidResponse, tonic::Status> {
    let request = ValidateJwtsvidRequest {
        audience: audience.to_owned(),
        svid: svid.to_owned(),
    };
    Ok(api.validate_jwtsvid(with_header(request)).await?.into_inner())
}

/// The first X.509 bundles message of a fresh stream, or the status the call or the stream
/// ended with (before the agent's first sync the refusal comes on the stream).
async fn first_x509_bundles(
    api: &mut WorkloadClient,
) -> Result<std::collections::HashMap<String, Vec<u8>>, tonic::Status> {
    let mut stream = api
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer within 10 s")?;
    first
        .map(|m| m.bundles)
        .ok_or_else(|| tonic::Status::unknown("the stream ended without a status"))
}

#[tokio::test]
async fn processes_no_entry_selects_get_the_bundle_only_from_an_agent_that_allows_verifiers() {
    let Some(s) = TestServer::start().await else { return };
    let strict = NodeAgent::start(&s.url, Some(s.join_token(NODE_ID).await)).await;
    let refused = first_x509_bundles(&mut strict.client().await).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    strict.stop().await;

    let open = NodeAgent::start_with(
        &s.url,
        Some(s.join_token("spiffe://sigil.local/node/host-2").await),
        true,
    )
    .await;
    let bundles = first_x509_bundles(&mut open.client().await).await.unwrap();
    let ours = s.app().spiffe.authorities().unwrap().concat();
    assert_eq!(
        bundles.len(),
        1,
        "ours only: federated bundles are for registered workloads"
    );
    assert_eq!(bundles["spiffe://sigil.local"], ours);
    open.stop().await;
}

#[tokio::test]
async fn join_tokens_are_single_use_and_checked() {
    let Some(s) = TestServer::start().await else { return };
    let token = s.join_token(NODE_ID).await;
    let csr = || {
        let key = sigil_crypto::x509::generate_svid_key().unwrap();
        base64_std(&sigil_crypto::x509::make_csr(&key).unwrap())
    };
    let attest = |join_token: String, csr: String| {
        let url = format!("{}/spiffe/v1/node/attest", s.url);
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .json(&json!({"join_token": join_token, "csr": csr}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = attest("sigil_jt_wrong".into(), csr()).await;
    assert_eq!(st, 401, "{v}");
    // A node that has not attested yet is "banned" by withdrawing its unspent join tokens.
    let leaked = s.join_token("spiffe://sigil.local/node/not-yet").await;
    s.client().ban_node("spiffe://sigil.local/node/not-yet").await.unwrap();
    let (st, v) = attest(leaked, csr()).await;
    assert_eq!(st, 401, "a withdrawn join token: {v}");
    let (st, v) = attest(token.clone(), "bm90IGEgY3Ny".into()).await;
    assert_eq!(st, 400, "a CSR that does not parse: {v}");
    let (st, v) = attest(token.clone(), csr()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["spiffe_id"], NODE_ID);
    let (st, v) = attest(token, csr()).await;
    assert_eq!(st, 401, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("already used"), "{v}");

    // An expired token.
    let (st, _) = attest(s.join_token("spiffe://sigil.local/node/host-9").await, csr()).await;
    assert_eq!(st, 200);
    let refused = s
        .client()
        .audit_search(&[("type", "node.attested".into()), ("outcome", "denied".into())])
        .await
        .unwrap();
    assert_eq!(
        refused.items.len(),
        3,
        "the unknown, the withdrawn and the reused token are audited"
    );

    // Join tokens for another trust domain or a malformed ID are refused at creation.
    for bad in [
        "spiffe://other.test/node",
        "spiffe://sigil.local/a//b",
        "http://sigil.local/node",
    ] {
        let err = s
            .client()
            .create_join_token(&sigil_proto::node::JoinTokenRequest {
                spiffe_id: Some(bad.into()),
                ttl_seconds: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{bad}");
    }
}

#[tokio::test]
async fn node_api_calls_need_a_valid_node_proof_and_banned_nodes_are_refused() {
    let Some(s) = TestServer::start().await else { return };
    let url = |p: &str| format!("{}/spiffe/v1/node/{p}", s.url);
    let http = reqwest::Client::new();
    let resp = http.get(url("entries")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(url("entries"))
        .header("authorization", "SigilNode not.a.proof")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A certificate from another CA (a self-made "SVID") is refused.
    let foreign =
        sigil_crypto::x509::X509Authority::generate_root("spiffe://sigil.local", now() - 60, now() + 3600).unwrap();
    let key = sigil_crypto::x509::generate_svid_key().unwrap();
    let leaf = foreign
        .sign_for_key(
            &key,
            &sigil_crypto::x509::SvidRequest {
                spiffe_id: NODE_ID,
                dns_names: &[],
                not_before: now() - 10,
                not_after: now() + 600,
            },
        )
        .unwrap();
    let claims = json!({"aud": url("").trim_end_matches('/'), "iat": now(), "exp": now() + 60});
    let proof = sigil_crypto::svid_verify::sign_node_proof(&key, &leaf, claims.to_string().as_bytes()).unwrap();
    let resp = http
        .get(url("entries"))
        .header("authorization", format!("SigilNode {proof}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // An attested node works until it is banned.
    let node = NodeAgent::start(&s.url, Some(s.join_token(NODE_ID).await)).await;
    let _api = node.client().await;
    let nodes = s.client().list_nodes().await.unwrap();
    assert_eq!(nodes.items.len(), 1);
    assert!(!nodes.items[0].banned);
    node.stop().await;

    // A node attested by hand: its proof is accepted (and the node remembered) until the ban,
    // which takes effect on the very next call.
    let other_id = "spiffe://sigil.local/node/by-hand";
    let by_hand = attest_node(&s.url, &s.join_token(other_id).await).await;
    let api = sigil_node::client::NodeClient::new(&s.url).unwrap();
    api.entries(&by_hand).await.unwrap();
    api.entries(&by_hand).await.unwrap();
    s.client().ban_node(NODE_ID).await.unwrap();
    s.client().ban_node(other_id).await.unwrap();
    assert!(api.entries(&by_hand).await.unwrap_err().is_auth());
    assert!(s.client().list_nodes().await.unwrap().items.iter().all(|n| n.banned));
    // Every refused proof is in the audit trail; the banned node's is named as its own.
    let failed = s
        .client()
        .audit_search(&[("type", "node.auth_failed".into())])
        .await
        .unwrap();
    assert!(failed.items.len() >= 3, "{:?}", failed.items);
    assert!(
        failed
            .items
            .iter()
            .any(|e| e.record["actors"][0] == format!("node:{other_id}")
                && e.record["reason"].as_str().unwrap_or_default().contains("banned")),
        "{:?}",
        failed.items
    );
    let err = s.client().ban_node("spiffe://sigil.local/node/nope").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn a_ca_rotation_reaches_workloads_without_a_gap() {
    let Some(s) = TestServer::start().await else { return };
    let c = s.client();
    let uid = format!("unix:uid:{}", my_uid());
    c.create_entry(&entry(
        "spiffe://sigil.local/app",
        NODE_ID,
        std::slice::from_ref(&uid),
        None,
    ))
    .await
    .unwrap();
    let node = NodeAgent::start(&s.url, Some(s.join_token(NODE_ID).await)).await;
    let mut api = node.client().await;
    let mut svids = api
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut bundles = api
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = svids.message().await.unwrap().unwrap().svids.remove(0);
    let old_ca = s.app().spiffe.authorities().unwrap();
    assert_eq!(old_ca.len(), 1);
    bundles.message().await.unwrap().unwrap();

    // Step one: the new authority is published (workloads learn it) but does not sign yet.
    let listed = c.rotate_authorities("prepare").await.unwrap().items;
    assert_eq!(
        listed.iter().filter(|a| a.status == "prepared").count(),
        2,
        "{listed:?}"
    );
    let err = c.rotate_authorities("prepare").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "one rotation at a time");
    let both = s.app().spiffe.authorities().unwrap();
    assert_eq!(both.len(), 2);
    let pushed = tokio::time::timeout(Duration::from_secs(10), bundles.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pushed.bundles["spiffe://sigil.local"], both.concat());

    // Step two: the new authority signs; the node re-signs every SVID at its next sync, and the
    // old SVID still verifies against the bundle meanwhile.
    let activated = std::time::Instant::now();
    c.rotate_authorities("activate").await.unwrap();
    let new_ca: Vec<Vec<u8>> = both.iter().filter(|c| !old_ca.contains(c)).cloned().collect();
    let rotated = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = svids.message().await.unwrap().unwrap();
            let svid = msg.svids.into_iter().next().unwrap();
            if sigil_crypto::svid_verify::verify_svid(&svid.x509_svid, &new_ca, now()).is_ok() {
                return svid;
            }
        }
    })
    .await
    .expect("a new SVID signed by the new authority reaches the workload");
    eprintln!(
        "new SVID reached the workload {:?} after activation",
        activated.elapsed()
    );
    assert_ne!(rotated.x509_svid, first.x509_svid);
    sigil_crypto::svid_verify::verify_svid(&first.x509_svid, &both, now()).expect("the old SVID still verifies");
    let listed = c.list_authorities().await.unwrap().items;
    assert_eq!(listed.iter().filter(|a| a.status == "retired").count(), 2, "{listed:?}");
    assert_eq!(
        c.rotate_authorities("activate")
            .await
            .unwrap_err()
            .status()
            .map(|s| s.as_u16()),
        Some(409)
    );

    // JWT-SVIDs are signed by the new JWT authority, and the old ones stay valid.
    let jwt = api
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["aud".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let header: Value =
        serde_json::from_slice(&sigil_crypto::b64url_decode(jwt.svids[0].svid.split('.').next().unwrap()).unwrap())
            .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], s.app().spiffe.jwt_signing_key().unwrap().kid());
    node.stop().await;
}
