//! OAuth Client ID Metadata Documents (a client_id that is an https URL) and the RFC 9728
//! document Sigil prints for a resource server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod delegation_support;

use delegation_support::*;
use serde_json::{Value, json};

#[tokio::test]
async fn resource_metadata_document_names_sigil() {
    let Some(fx) = fixture().await else { return };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["resource", "metadata", "hr"])
        .env("SIGIL_URL", &fx.s.url)
        .env("SIGIL_ADMIN_TOKEN", &fx.s.admin_token)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["resource"], API);
    assert_eq!(doc["authorization_servers"], json!([fx.s.url]));
    assert_eq!(doc["scopes_supported"], json!(["admin", "read", "write"]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    // RFC 9728 §1.2: a protected resource is named by an https URL, so a URN has no document.
    fx.s.client()
        .create_resource(
            &serde_json::from_value(
                json!({"uri": "urn:example:ledger", "name": "ledger", "owner": "bob", "scopes": ["read"]}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["resource", "metadata", "ledger"])
        .env("SIGIL_URL", &fx.s.url)
        .env("SIGIL_ADMIN_TOKEN", &fx.s.admin_token)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https URL"), "{out:?}");
}

/// Serves client metadata documents (and misbehaving variants) on a loopback port.
/// The key of the `/keyed.json` client, which authenticates with private_key_jwt.
fn document_key() -> &'static sigil_crypto::SigningKey {
    static KEY: std::sync::OnceLock<sigil_crypto::SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa)
            .unwrap()
            .0
    })
}

async fn document_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let b = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let base = b.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let doc = |id: &str| {
                    json!({"client_id": id, "client_name": "Research app", "redirect_uris": [CB], "token_endpoint_auth_method": "none"})
                        .to_string()
                };
                let (status, extra, body) = match path.as_str() {
                    "/ok.json" => ("200 OK", "", doc(&format!("{base}/ok.json"))),
                    "/other.json" => ("200 OK", "", doc("https://someone-else.example.com/c.json")),
                    "/big.json" => ("200 OK", "", format!("{{\"pad\": \"{}\"}}", "x".repeat(6000))),
                    "/bad.json" => ("200 OK", "", "not json".to_owned()),
                    "/secret.json" => ("200 OK", "", {
                        let mut d: Value = serde_json::from_str(&doc(&format!("{base}/secret.json"))).unwrap();
                        d["token_endpoint_auth_method"] = json!("client_secret_basic");
                        d.to_string()
                    }),
                    "/keyed.json" => ("200 OK", "", {
                        let mut d: Value = serde_json::from_str(&doc(&format!("{base}/keyed.json"))).unwrap();
                        d["token_endpoint_auth_method"] = json!("private_key_jwt");
                        let mut jwk =
                            serde_json::to_value(sigil_crypto::PublicJwk::from(&document_key().public_jwk())).unwrap();
                        jwk["kid"] = json!("doc-1");
                        d["jwks"] = json!({"keys": [jwk]});
                        d.to_string()
                    }),
                    "/moved.json" => ("302 Found", "Location: /ok.json\r\n", String::new()),
                    "/slow.json" => {
                        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
                        ("200 OK", "", doc(&format!("{base}/slow.json")))
                    }
                    _ => ("404 Not Found", "", String::new()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

#[tokio::test]
async fn client_metadata_documents_identify_clients_by_url() {
    let config = "[oauth]\nclient_metadata_identity = \"assistant\"\nclient_metadata_allow_loopback = true\n";
    let Some(mut fx) = fixture_with(config).await else {
        return;
    };
    let docs = document_server().await;
    let meta: Value = reqwest::get(format!("{}/.well-known/oauth-authorization-server", fx.s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true);

    // The URL is the client_id: code flow with PKCE, the agent configured for documents acts.
    fx.public = format!("{docs}/ok.json");
    let (verifier, challenge) = pkce();
    let Ok(consent) = fx.sign_in(&fx.standard(&challenge), PASSWORD).await else {
        panic!("no consent page")
    };
    assert!(
        consent.html.contains("Research app") && consent.html.contains("127.0.0.1"),
        "{}",
        consent.html
    );
    let Outcome::Redirect(l) = fx.decide(&consent, "allow").await else {
        panic!("no redirect")
    };
    let (s, t) = fx.redeem(&param(&l, "code").unwrap(), &verifier).await;
    assert_eq!(s, 200, "{t}");
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(c["client_id"], fx.public.as_str());
    assert_eq!(c["act"]["sub"], fx.id_of("assistant").await.as_str());

    // Anyone can host a document, so a document client introspects only its own tokens: to
    // another one, every token it did not get is inactive (RFC 7662 §2.1, no token scanning).
    let keyed = format!("{docs}/keyed.json");
    let introspect_as_document = |token: String| {
        let (url, keyed) = (fx.s.url.clone(), keyed.clone());
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = json!({"iss": keyed, "sub": keyed, "aud": format!("{url}/token"), "iat": now, "exp": now + 60,
                                "jti": sigil_crypto::b64url(&sigil_crypto::random_bytes::<12>().unwrap())});
            let header = json!({"alg": "EdDSA", "kid": "doc-1", "typ": "JWT"});
            let input = format!(
                "{}.{}",
                sigil_crypto::b64url(header.to_string().as_bytes()),
                sigil_crypto::b64url(claims.to_string().as_bytes())
            );
            let assertion = format!(
                "{input}.{}",
                sigil_crypto::b64url(&document_key().sign(input.as_bytes()).unwrap())
            );
            let resp = reqwest::Client::new()
                .post(format!("{url}/introspect"))
                .form(&[
                    ("token", token.as_str()),
                    ("client_id", keyed.as_str()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let others = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fx.introspect(&others).await["active"], true);
    assert_eq!(introspect_as_document(others).await["active"], false);
    // The refusal is in the trail, as every refused introspection is.
    let denied =
        fx.s.client()
            .audit_search(&[("type", "token.introspected".into()), ("outcome", "denied".into())])
            .await
            .unwrap();
    assert_eq!(denied.items.len(), 1, "{:?}", denied.items);

    // Errors of a document client are shown, never redirected to a URI it chose itself.
    let mut token_flow = fx.standard(&challenge);
    token_flow.retain(|(k, _)| k != "response_type");
    token_flow.push(("response_type".into(), "token".into()));
    match fx.browse(&token_flow, PASSWORD, "allow").await {
        Outcome::Page(400, html) => assert!(html.contains("unsupported_response_type"), "{html}"),
        Outcome::Page(s, h) => panic!("{s} {h}"),
        Outcome::Redirect(l) => panic!("open redirect to {l}"),
    }

    // Bad documents are refused before anything is shown or sent anywhere.
    for bad in [
        "other.json",
        "big.json",
        "bad.json",
        "secret.json",
        "moved.json",
        "missing.json",
        "slow.json",
    ] {
        fx.public = format!("{docs}/{bad}");
        match fx.browse(&fx.standard(&challenge), PASSWORD, "allow").await {
            Outcome::Page(400, html) => assert!(html.contains("client metadata document"), "{bad}: {html}"),
            Outcome::Page(s, h) => panic!("{bad}: {s} {h}"),
            Outcome::Redirect(l) => panic!("{bad}: redirected to {l}"),
        }
    }
}

#[tokio::test]
async fn client_metadata_documents_on_private_addresses_are_refused() {
    let Some(mut fx) = fixture_with("[oauth]\nclient_metadata_identity = \"assistant\"\n").await else {
        return;
    };
    let docs = document_server().await;
    let (_, challenge) = pkce();
    for (id, why) in [
        (format!("{docs}/ok.json"), "must be https"),
        ("https://127.0.0.1/ok.json".to_owned(), "special-use"),
        ("https://10.0.0.1/c.json".to_owned(), "special-use"),
        ("https://localhost/c.json".to_owned(), "loopback name"),
        // What a name resolves to is not told to whoever named it (the log says it).
        (
            "https://localhost.localdomain/c.json".to_owned(),
            "could not be fetched",
        ),
    ] {
        fx.public = id.clone();
        match fx.browse(&fx.standard(&challenge), PASSWORD, "allow").await {
            Outcome::Page(400, html) => {
                assert!(html.contains(why), "{id}: {html}");
                assert!(id.contains("127.0.0.1") || !html.contains("127.0.0.1"), "{id}: {html}");
            }
            Outcome::Page(s, h) => panic!("{id}: {s} {h}"),
            Outcome::Redirect(l) => panic!("{id}: redirected to {l}"),
        }
    }
}
