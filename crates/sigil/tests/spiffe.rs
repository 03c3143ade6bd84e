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
