//! The trust domain's CA as an intermediate under an operator's upstream CA: the bundle
//! publishes the upstream CA, SVIDs come with the intermediate, and `openssl verify` accepts the
//! chain to the upstream root. Node attestation and proofs work through the chain.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use base64::Engine;
use serde_json::Value;
use sigil_crypto::x509::cert_pem;
use sigil_node::proto::X509svidRequest;
use sigil_testkit::workload::{NodeAgent, entry, my_uid, with_security_header};
use sigil_testkit::{Options, TestServer};

const NODE_ID: &str = "spiffe://sigil.local/node/up";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Splits concatenated DER certificates (each a SEQUENCE with a long-form length).
fn split_der(mut der: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        assert_eq!(der[0], 0x30);
        let (header, len) = match der[1] {
            0x81 => (3, usize::from(der[2])),
            0x82 => (4, usize::from(der[2]) << 8 | usize::from(der[3])),
            n => (2, usize::from(n)),
        };
        out.push(der[..header + len].to_vec());
        der = &der[header + len..];
    }
    out
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn svids_chain_through_the_intermediate_to_the_upstream_ca() {
    // The operator's CA.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example Corp Root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let upstream = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("up.pem"), dir.path().join("up.key"));
    std::fs::write(&cert_file, upstream.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let toml = format!(
        "[spiffe]\nupstream_ca_cert = \"{}\"\nupstream_ca_key = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    );
    let Some(s) = TestServer::start_with(Options {
        config_toml: Some(toml),
        ..Options::default()
    })
    .await
    else {
        return;
    };

    // The bundle publishes the upstream CA, not the intermediate.
    let bundle: Value = reqwest::get(format!("{}/spiffe/bundle", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x509: Vec<&Value> = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .collect();
    assert_eq!(x509.len(), 1, "{bundle}");
    let published = base64::engine::general_purpose::STANDARD
        .decode(x509[0]["x5c"][0].as_str().unwrap())
        .unwrap();
    assert_eq!(published, upstream.der().to_vec());

    // A workload's SVID from the node agent (which attested and signs its proofs through the
    // chain) carries the intermediate after the leaf.
    s.client()
        .create_entry(&entry(
            "spiffe://sigil.local/up/app",
            NODE_ID,
            &[format!("unix:uid:{}", my_uid())],
            None,
        ))
        .await
        .unwrap();
    let node = NodeAgent::start(&s.url, Some(s.join_token(NODE_ID).await)).await;
    let mut api = node.client().await;
    let mut stream = api
        .fetch_x509svid(with_security_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let svid = stream.message().await.unwrap().unwrap().svids.remove(0);
    let certs = split_der(&svid.x509_svid);
    assert_eq!(certs.len(), 2, "the leaf, then the intermediate");
    assert_eq!(svid.bundle, upstream.der().to_vec());
    let anchors = vec![upstream.der().to_vec()];
    sigil_crypto::svid_verify::verify_svid_chain(&certs[0], &certs[1..], &anchors, now()).unwrap();
    assert!(
        sigil_crypto::svid_verify::verify_svid(&certs[0], &anchors, now()).is_err(),
        "the leaf is not signed by the upstream CA itself"
    );
    let (ca, mid, leaf) = (
        dir.path().join("ca.pem"),
        dir.path().join("mid.pem"),
        dir.path().join("leaf.pem"),
    );
    std::fs::write(&ca, cert_pem(upstream.der())).unwrap();
    std::fs::write(&mid, cert_pem(&certs[1])).unwrap();
    std::fs::write(&leaf, cert_pem(&certs[0])).unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-untrusted",
        mid.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (_, text) = openssl(&["x509", "-in", mid.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        text.contains("CA:TRUE, pathlen:0") && text.contains("URI:spiffe://sigil.local"),
        "{text}"
    );
    node.stop().await;
}
