//! X509-SVIDs as OAuth client credentials over mutual TLS (RFC 8705 `tls_client_auth`, the
//! SPIFFE ID as the certificate's name): the access token is bound to the certificate
//! (`cnf.x5t#S256`); a certificate from another CA gets `invalid_client`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use sigil_core::spiffe::SvidKey;
use sigil_crypto::x509::{SvidRequest, X509Authority, cert_pem, generate_svid_key};
use sigil_testkit::TestServer;
use sigil_types::SpiffeId;

const LEDGER: &str = "https://ledger.example.com";
const BILLING: &str = "spiffe://sigil.local/billing";

fn key_pem(pkcs8: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn an_x509_svid_over_mutual_tls_gets_a_certificate_bound_token() {
    let Some((s, server_ca)) = TestServer::start_tls().await else {
        return;
    };
    // The testkit's admin client speaks plain HTTP: talk to the TLS listener with its CA.
    let admin = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server_ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let port = s.url.rsplit(':').next().unwrap().to_owned();
    let base = format!("https://localhost:{port}");
    let post = |path: &str, body: Value| {
        admin
            .post(format!("{base}{path}"))
            .bearer_auth(&s.admin_token)
            .json(&body)
            .send()
    };
    assert!(
        post("/admin/v1/users", json!({"username": "alice"}))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        post(
            "/admin/v1/workloads",
            json!({"name": "billing", "owner": "alice", "kind": "service", "ceiling": {"scopes": ["read"]}})
        )
        .await
        .unwrap()
        .status()
        .is_success()
    );
    assert!(
        post(
            "/admin/v1/resources",
            json!({"uri": LEDGER, "name": "ledger", "owner": "alice", "scopes": ["read"]})
        )
        .await
        .unwrap()
        .status()
        .is_success()
    );
    assert!(
        post("/admin/v1/entries", json!({"spiffe_id": BILLING, "parent_id": "spiffe://sigil.local/node/a", "selectors": ["unix:uid:1"], "identity": "billing"}))
            .await
            .unwrap()
            .status()
            .is_success()
    );

    // The workload's X509-SVID, as the node agent would hand it out.
    let key = generate_svid_key().unwrap();
    let svid = s
        .app()
        .spiffe
        .sign_x509_svid(
            &SpiffeId::parse(BILLING).unwrap(),
            SvidKey::Pkcs8(&key),
            &[],
            Duration::from_secs(600),
        )
        .unwrap();
    let mtls = |cert_der: &[u8], key: &[u8]| {
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", cert_pem(cert_der), key_pem(key)).as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(server_ca.as_bytes()).unwrap()])
            .identity(identity)
            .build()
            .unwrap()
    };
    let token_at = |client: reqwest::Client, client_id: &'static str| {
        let url = format!("{base}/token");
        async move {
            let resp = client
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", LEDGER),
                    ("client_id", client_id),
                ])
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };

    let (st, v) = token_at(mtls(&svid, &key), BILLING).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    let claims = claims_of(v["access_token"].as_str().unwrap());
    let thumbprint = sigil_crypto::b64url(&sigil_crypto::sha256(&svid));
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint.as_str(), "{claims}");
    assert_eq!(claims["client_id"], BILLING);
    assert_eq!(claims["scope"], "read");

    // The audit record names the method and the certificate.
    let issued = admin
        .get(format!("{base}/admin/v1/audit/records?type=token.issued"))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let record = &issued["items"].as_array().unwrap().last().unwrap()["record"];
    assert_eq!(record["auth"]["method"], "tls_client_auth", "{record}");
    assert_eq!(record["auth"]["cert_fingerprint"], thumbprint.as_str());

    // Introspection reports the binding.
    let intro: Value = admin
        .post(format!("{base}/introspect"))
        .bearer_auth(&s.admin_token)
        .form(&[("token", v["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intro["active"], true);
    assert_eq!(intro["cnf"]["x5t#S256"], thumbprint.as_str(), "{intro}");

    // A certificate for the same SPIFFE ID from another CA, a client_id that is not the
    // certificate's, and no certificate at all are refused.
    let rogue_ca = X509Authority::generate_root("spiffe://sigil.local", now() - 60, now() + 3600).unwrap();
    let rogue_key = generate_svid_key().unwrap();
    let rogue = rogue_ca
        .sign_for_key(
            &rogue_key,
            &SvidRequest {
                spiffe_id: BILLING,
                dns_names: &[],
                not_before: now() - 10,
                not_after: now() + 600,
            },
        )
        .unwrap();
    let (st, v) = token_at(mtls(&rogue, &rogue_key), BILLING).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")), "{v}");
    let (st, v) = token_at(mtls(&svid, &key), "spiffe://sigil.local/other").await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")), "{v}");
    let (st, v) = token_at(admin.clone(), BILLING).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")), "{v}");

    // A workload is a resource server too: it asks AuthZEN for decisions over the same mutual
    // TLS; a certificate from another CA is refused there as well.
    let ask = |client: reqwest::Client| {
        let url = format!("{base}/access/v1/evaluation");
        async move {
            let body = json!({
                "subject": {"type": "workload", "id": "billing"},
                "action": {"name": "token.issue"},
                "resource": {"type": "resource", "id": LEDGER},
            });
            let resp = client.post(url).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or_default())
        }
    };
    let (st, d) = ask(mtls(&svid, &key)).await;
    assert_eq!(st, 200, "{d}");
    assert!(d["decision"].is_boolean(), "{d}");
    let (st, d) = ask(mtls(&rogue, &rogue_key)).await;
    assert_eq!((st, d["error"].as_str()), (401, Some("invalid_client")), "{d}");

    // The metadata says so (RFC 8705 §3.3).
    let meta: Value = admin
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tls_client_auth"))
    );
}
