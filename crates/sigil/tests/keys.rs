//! Key rotation on a fake clock: a new key is published before it signs, and a retired key stays
//! published until everything it signed has expired.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use sigil_testkit::{Options, TestServer};
use sigil_types::Timestamp;

async fn jwks_kids(s: &TestServer) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The ID token key (RS256), which token-key rotations leave alone.
fn id_token_kid(s: &TestServer) -> String {
    s.app()
        .keys
        .id_token_key(sigil_crypto::Algorithm::Rs256)
        .unwrap()
        .kid()
        .to_owned()
}

#[tokio::test]
async fn rotation_publishes_first_and_retires_late() {
    let opts = Options {
        fake_clock_at: Some(Timestamp::from_unix_seconds(1_900_000_000)),
        config_toml: Some("[keys]\npublish_ahead = \"10m\"\nretire_after = \"1h\"\n".into()),
        ..Options::default()
    };
    let Some(s) = TestServer::start_with(opts).await else {
        return;
    };
    let app = s.app().clone();
    let first = app.keys.active().unwrap().kid().to_owned();
    let id_key = id_token_kid(&s);
    let mut published = jwks_kids(&s).await;
    published.sort();
    let mut expected = vec![first.clone(), id_key.clone()];
    expected.sort();
    assert_eq!(published, expected);

    let next = s.client().rotate_key(&Default::default()).await.unwrap();
    assert_eq!(next.state, "pending");
    assert!(jwks_kids(&s).await.contains(&next.kid), "published before it signs");
    assert_eq!(app.keys.active().unwrap().kid(), first, "the old key still signs");
    assert!(
        s.client().rotate_key(&Default::default()).await.is_err(),
        "one rotation at a time"
    );

    s.advance(Duration::from_secs(9 * 60));
    app.keys.maintain().await.unwrap();
    assert_eq!(app.keys.active().unwrap().kid(), first, "not before publish_ahead");

    s.advance(Duration::from_secs(2 * 60));
    app.keys.maintain().await.unwrap();
    assert_eq!(app.keys.active().unwrap().kid(), next.kid);
    let kids = jwks_kids(&s).await;
    assert!(
        kids.contains(&first) && kids.contains(&next.kid),
        "retired key still published: {kids:?}"
    );

    s.advance(Duration::from_secs(61 * 60));
    app.keys.maintain().await.unwrap();
    assert_eq!(
        jwks_kids(&s).await,
        vec![id_key.clone(), next.kid.clone()],
        "retired key removed after retire_after"
    );
    assert_eq!(id_token_kid(&s), id_key, "a token key rotation leaves the ID token key");
    let listed = s.client().list_keys().await.unwrap();
    assert_eq!(listed.items.len(), 2);
    let events: Vec<String> = app
        .store
        .list_audit(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.record.event_type.as_str().to_owned())
        .collect();
    for e in ["key.created", "key.activated", "key.retired", "key.removed"] {
        assert!(events.iter().any(|x| x == e), "{e} missing from {events:?}");
    }
}

#[tokio::test]
async fn the_id_token_key_rotates_on_its_own() {
    let opts = Options {
        fake_clock_at: Some(Timestamp::from_unix_seconds(1_900_000_000)),
        ..Options::default()
    };
    let Some(s) = TestServer::start_with(opts).await else {
        return;
    };
    let app = s.app().clone();
    let (token_key, id_key) = (app.keys.active().unwrap().kid().to_owned(), id_token_kid(&s));
    let rs256 = sigil_proto::admin::RotateKeyRequest {
        alg: Some("RS256".into()),
    };
    let next = s.client().rotate_key(&rs256).await.unwrap();
    assert_eq!((next.alg.as_str(), next.state.as_str()), ("RS256", "pending"));
    assert!(
        s.client().rotate_key(&rs256).await.is_err(),
        "one ID token key rotation at a time"
    );
    let token_rotation = s.client().rotate_key(&Default::default()).await.unwrap();
    assert_eq!(token_rotation.state, "pending", "the token key rotates independently");

    s.advance(Duration::from_secs(11 * 60));
    app.keys.maintain().await.unwrap();
    assert_eq!(id_token_kid(&s), next.kid);
    assert_eq!(app.keys.active().unwrap().kid(), token_rotation.kid);
    let states: Vec<(String, String)> = s
        .client()
        .list_keys()
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|k| (k.kid, k.state))
        .collect();
    for old in [&token_key, &id_key] {
        assert!(
            states.contains(&(old.clone(), "retired".to_owned())),
            "{old} retired: {states:?}"
        );
    }
}

#[tokio::test]
async fn es256_keys_can_be_chosen() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    let k = s
        .client()
        .rotate_key(&sigil_proto::admin::RotateKeyRequest {
            alg: Some("ES256".into()),
        })
        .await
        .unwrap();
    assert_eq!(k.alg, "ES256");
    let v: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kid"] == k.kid.as_str())
        .cloned()
        .unwrap();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert!(
        s.client()
            .rotate_key(&sigil_proto::admin::RotateKeyRequest {
                alg: Some("HS256".into())
            })
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rs256_configured_signs_access_tokens_with_the_one_rsa_key() {
    // RFC 9068 §2.1: for resource servers that verify RS256 only.
    let opts = Options {
        config_toml: Some("[keys]\nalgorithm = \"RS256\"\n".into()),
        ..Options::default()
    };
    let Some(s) = TestServer::start_with(opts).await else {
        return;
    };
    assert_eq!(jwks_kids(&s).await, vec![id_token_kid(&s)], "one key signs everything");
    let client = sigil_testkit::oauth::agent_with_secret_client(&s.client()).await;
    let token = sigil_testkit::oauth::client_credentials_token(&s.url, &client).await;
    let access = token["access_token"].as_str().expect("a token");
    let jwks: sigil_crypto::Jwks = reqwest::get(format!("{}/.well-known/jwks.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verified = sigil_crypto::verify_compact(access, &jwks).expect("verifies against the JWKS");
    assert_eq!(verified.kid, id_token_kid(&s));
    assert_eq!(verified.typ.as_deref(), Some("at+jwt"));
}
