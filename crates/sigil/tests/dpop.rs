//! DPoP (RFC 9449) at the token endpoint: bound tokens, every kind of bad proof, server nonces.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod oauth_support;

use oauth_support::*;
use serde_json::{Value, json};
use sigil_crypto::{Algorithm, PublicJwk, SigningKey, b64url};
use sigil_testkit::{Family, TestServer};

#[tokio::test]
async fn dpop_binds_tokens_and_rejects_bad_proofs() {
    let Some(f) = fixture().await else { return };
    let c = f.s.client();
    let dc = c
        .create_client(&serde_json::from_value(json!({"identity": "bot", "token_endpoint_auth_method": "client_secret_basic", "dpop_bound_access_tokens": true})).unwrap())
        .await
        .unwrap();
    let (id, secret) = (dc.client_id.as_str(), dc.client_secret.clone().unwrap());
    let (key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let url = f.token_url();

    let (st, e, _) = dpop_post(&f, id, &secret, None).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "required for this client: {e}"
    );

    let good = dpop_proof(&key, "POST", &url, now(), None, None);
    let (st, body, _) = dpop_post(&f, id, &secret, Some(&good)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap();
    let claims: Value =
        serde_json::from_slice(&sigil_crypto::b64url_decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let jkt = PublicJwk::from(&key.public_jwk()).thumbprint().unwrap();
    assert_eq!(claims["cnf"]["jkt"], jkt.as_str());
    let (_, i, _) = f
        .post("/introspect", &[("token", token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(i["token_type"], "DPoP");
    assert_eq!(i["cnf"]["jkt"], jkt.as_str());

    let (st, e, _) = dpop_post(&f, id, &secret, Some(&good)).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "replayed proof: {e}"
    );
    // RFC 7519 §2: a NumericDate may have a fraction (Python's time.time()).
    let fractional = jwt(
        &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": PublicJwk::from(&key.public_jwk())}),
        &json!({"jti": "fractional-iat", "htm": "POST", "htu": url, "iat": now() as f64 + 0.25}),
        Some(&key),
    );
    let (st, body, _) = dpop_post(&f, id, &secret, Some(&fractional)).await;
    assert_eq!(st, 200, "{body}");
    let bad = [
        ("other method", dpop_proof(&key, "GET", &url, now(), None, None)),
        (
            "other url",
            dpop_proof(&key, "POST", "https://elsewhere.example/token", now(), None, None),
        ),
        ("stale", dpop_proof(&key, "POST", &url, now() - 600, None, None)),
        ("future", dpop_proof(&key, "POST", &url, now() + 600, None, None)),
        (
            "private key in header",
            dpop_proof(
                &key,
                "POST",
                &url,
                now(),
                None,
                Some(("d", "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")),
            ),
        ),
        ("wrong typ", {
            let p = dpop_proof(&key, "POST", &url, now(), None, None);
            let claims = p.split('.').nth(1).unwrap().to_owned();
            let h = json!({"typ": "JWT", "alg": "EdDSA", "jwk": PublicJwk::from(&key.public_jwk())});
            let input = format!("{}.{claims}", b64url(h.to_string().as_bytes()));
            format!("{input}.{}", b64url(&key.sign(input.as_bytes()).unwrap()))
        }),
        (
            "alg none",
            jwt(
                &json!({"typ": "dpop+jwt", "alg": "none", "jwk": PublicJwk::from(&key.public_jwk())}),
                &json!({"jti": "x", "htm": "POST", "htu": url, "iat": now()}),
                None,
            ),
        ),
        (
            "critical header extension",
            jwt(
                &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": PublicJwk::from(&key.public_jwk()), "crit": ["urn:example:x"], "urn:example:x": 1}),
                &json!({"jti": "crit", "htm": "POST", "htu": url, "iat": now()}),
                Some(&key),
            ),
        ),
        (
            "empty jti",
            jwt(
                &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": PublicJwk::from(&key.public_jwk())}),
                &json!({"jti": " ", "htm": "POST", "htu": url, "iat": now()}),
                Some(&key),
            ),
        ),
        (
            "jti longer than the replay cache keeps",
            jwt(
                &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": PublicJwk::from(&key.public_jwk())}),
                &json!({"jti": "j".repeat(257), "htm": "POST", "htu": url, "iat": now()}),
                Some(&key),
            ),
        ),
        ("garbage", "not-a-jwt".into()),
    ];
    for (what, p) in bad {
        let (st, e, _) = dpop_post(&f, &f.secret_client, &f.secret, Some(&p)).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{what}: {e}"
        );
    }
}

#[tokio::test]
async fn dpop_nonces_when_configured() {
    let opts = sigil_testkit::Options {
        config_toml: Some("[oauth]\ndpop_nonce = true\n".into()),
        ..Default::default()
    };
    let Some(s) = TestServer::start_with(opts).await else {
        return;
    };
    let c = s.client();
    c.create_user(&serde_json::from_value(json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    c.create_identity(
        Family::Agents,
        &serde_json::from_value(json!({"name": "bot", "owner": "alice", "ceiling": {"scopes": ["read"]}})).unwrap(),
    )
    .await
    .unwrap();
    c.create_resource(
        &serde_json::from_value(json!({"uri": API, "name": "api", "owner": "alice", "scopes": ["read"]})).unwrap(),
    )
    .await
    .unwrap();
    let sc = c
        .create_client(
            &serde_json::from_value(json!({"identity": "bot", "token_endpoint_auth_method": "client_secret_basic"}))
                .unwrap(),
        )
        .await
        .unwrap();
    let f = Fixture {
        s,
        key: SigningKey::generate(Algorithm::EdDsa).unwrap().0,
        key_client: String::new(),
        secret_client: sc.client_id,
        secret: sc.client_secret.unwrap(),
    };
    let (key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let (st, e, h) = dpop_post(
        &f,
        &f.secret_client,
        &f.secret,
        Some(&dpop_proof(&key, "POST", &f.token_url(), now(), None, None)),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("use_dpop_nonce")), "{e}");
    let nonce = h["dpop-nonce"].to_str().unwrap().to_owned();
    let (st, body, _) = dpop_post(
        &f,
        &f.secret_client,
        &f.secret,
        Some(&dpop_proof(&key, "POST", &f.token_url(), now(), Some(&nonce), None)),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, e, _) = dpop_post(
        &f,
        &f.secret_client,
        &f.secret,
        Some(&dpop_proof(&key, "POST", &f.token_url(), now(), Some("made-up"), None)),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("use_dpop_nonce")));
}
