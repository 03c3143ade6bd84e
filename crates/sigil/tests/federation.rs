//! Federation: a server fetches another trust domain's bundle from its bundle endpoint, refuses
//! garbage and bundles of a third trust domain, and node agents hand the federated bundle to
//! workloads, whose JWT-SVIDs from the other domain then validate (only against that domain).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use sigil_node::proto::{ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest};
use sigil_testkit::workload::{NodeAgent, entry, my_uid, with_security_header as with_header};
use sigil_testkit::{Options, TestServer};

const NODE_ID: &str = "spiffe://sigil.local/node/fed";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn federation_state(s: &TestServer, td: &str) -> sigil_proto::node::FederationView {
    for _ in 0..100 {
        let list = s.client().list_federations().await.unwrap().items;
        if let Some(f) = list.into_iter().find(|f| f.trust_domain == td)
            && f.refreshed_at.is_some()
        {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{td} was never fetched");
}

#[tokio::test]
async fn a_federated_bundle_reaches_workloads() {
    let Some(a) = TestServer::start().await else { return };
    let b = TestServer::start_with(Options {
        config_toml: Some("trust_domain = \"other.test\"\n".into()),
        ..Options::default()
    })
    .await
    .unwrap();
    let c = a.client();
    let add = |td: &str, endpoint: String| {
        let c = a.client();
        let td = td.to_owned();
        async move {
            c.add_federation(&sigil_proto::node::FederationRequest {
                trust_domain: td,
                bundle_endpoint: endpoint,
            })
            .await
        }
    };

    // Bad requests change nothing.
    for (td, endpoint) in [
        ("sigil.local", format!("{}/spiffe/bundle", b.url)),
        ("plain.test", "http://example.com/bundle".to_owned()),
        ("userinfo.test", "https://alice:s3cret@bundles.example.com/b".to_owned()),
        ("Not A Domain", format!("{}/spiffe/bundle", b.url)),
    ] {
        let err = add(td, endpoint).await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{td}");
    }
    assert!(c.list_federations().await.unwrap().items.is_empty());

    add("other.test", format!("{}/spiffe/bundle", b.url)).await.unwrap();
    // Its bundle under another name, and an endpoint that serves no bundle.
    add("wrong.test", format!("{}/spiffe/bundle", b.url)).await.unwrap();
    add("garbage.test", format!("{}/healthz", a.url)).await.unwrap();
    let good = federation_state(&a, "other.test").await;
    assert!(good.has_bundle && good.last_error.is_none(), "{good:?}");
    let wrong = federation_state(&a, "wrong.test").await;
    assert!(!wrong.has_bundle, "{wrong:?}");
    assert!(wrong.last_error.unwrap().contains("another trust domain"));
    let garbage = federation_state(&a, "garbage.test").await;
    assert!(!garbage.has_bundle && garbage.last_error.is_some(), "{garbage:?}");
    let failures = c
        .audit_search(&[
            ("type", "federation.bundle_refreshed".into()),
            ("outcome", "error".into()),
        ])
        .await
        .unwrap();
    assert!(failures.items.len() >= 2, "refresh failures are audited");

    // A node agent of A hands B's bundle to its workloads.
    c.create_entry(&entry(
        "spiffe://sigil.local/app",
        NODE_ID,
        &[format!("unix:uid:{}", my_uid())],
        None,
    ))
    .await
    .unwrap();
    let node = NodeAgent::start(&a.url, Some(a.join_token(NODE_ID).await)).await;
    let mut api = node.client().await;
    let b_ca = b.app().spiffe.authorities().unwrap().concat();
    let mut svids = api
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = svids.message().await.unwrap().unwrap();
    assert_eq!(first.federated_bundles.get("spiffe://other.test"), Some(&b_ca));
    assert!(!first.federated_bundles.contains_key("spiffe://wrong.test"));
    let mut bundles = api
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let all = bundles.message().await.unwrap().unwrap().bundles;
    assert_eq!(all.len(), 2, "ours and other.test");

    // B's JWT-SVIDs validate on A's workloads; B's key does not vouch for A's SPIFFE IDs.
    let mint = |id: &str| {
        sigil_core::spiffe::jwt_svid::mint(
            &b.app().spiffe.jwt_signing_key().unwrap(),
            &sigil_types::TrustDomain::parse(id.trim_start_matches("spiffe://").split('/').next().unwrap()).unwrap(),
            &sigil_types::SpiffeId::parse(id).unwrap(),
            &["https://a.example.com".to_owned()],
            now(),
            300,
            format!("j{}", now()),
        )
        .unwrap()
    };
    let ok = api
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "https://a.example.com".into(),
            svid: mint("spiffe://other.test/payments"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, "spiffe://other.test/payments");
    let forged = api
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "https://a.example.com".into(),
            svid: mint("spiffe://sigil.local/app"),
        }))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::InvalidArgument);

    // Ending the federation takes the bundle away from workloads.
    c.delete_federation("other.test").await.unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = svids.message().await.unwrap().unwrap();
            if !m.federated_bundles.contains_key("spiffe://other.test") {
                return;
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the federated bundle is withdrawn");
    node.stop().await;
}
