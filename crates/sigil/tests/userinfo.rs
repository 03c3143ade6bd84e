//! OpenID Connect sign-in without an API: an authorization request that names no resource,
//! whose access token reads the user's claims at `/userinfo` (Core §5.3) and nowhere else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod delegation_support;
mod oauth_support;

use delegation_support::*;
use serde_json::{Value, json};

/// The standard request without `resource`, asking for `scope`.
fn sign_in_params(fx: &Fx, challenge: &str, scope: &str) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = fx
        .with_scope(challenge, scope)
        .into_iter()
        .filter(|(k, _)| k != "resource")
        .collect();
    params.push(("nonce".into(), "n-42".into()));
    params
}

async fn carol(fx: &Fx) -> String {
    let c = fx.s.client();
    let u = c
        .create_user(
            &serde_json::from_value(
                json!({"username": "carol", "email": "carol@example.com", "display_name": "Carol Example"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    c.set_password("carol", PASSWORD).await.unwrap();
    u.id.to_string()
}

/// Signs carol in with `scope` and redeems the code: the token response.
async fn sign_in(fx: &Fx, scope: &str) -> Value {
    let (verifier, challenge) = pkce();
    let params = sign_in_params(fx, &challenge, scope);
    let consent = match fx.sign_in_as("carol", &params, PASSWORD).await {
        Ok(c) => c,
        Err(Outcome::Page(s, h)) => panic!("{s} {h}"),
        Err(Outcome::Redirect(l)) => panic!("{l}"),
    };
    assert!(consent.html.contains("asks to know who you are"), "{}", consent.html);
    let Outcome::Redirect(l) = fx.decide(&consent, "allow").await else {
        panic!("no redirect")
    };
    let (s, t) = fx.redeem(&param(&l, "code").unwrap(), &verifier).await;
    assert_eq!(s, 200, "{t}");
    t
}

async fn userinfo(fx: &Fx, method: reqwest::Method, authorization: Option<String>) -> (u16, Value, String) {
    let mut req = reqwest::Client::new().request(method, format!("{}/userinfo", fx.s.url));
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" | ");
    (status, resp.json().await.unwrap_or(Value::Null), challenge)
}

fn scope_set(s: &Value) -> std::collections::BTreeSet<String> {
    s.as_str().unwrap().split(' ').map(str::to_owned).collect()
}

#[tokio::test]
async fn a_sign_in_without_a_resource_reads_the_user_at_userinfo_and_nowhere_else() {
    let Some(fx) = fixture().await else { return };
    let carol = carol(&fx).await;
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", fx.s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = format!("{}/userinfo", fx.s.url);
    assert_eq!(discovery["userinfo_endpoint"], endpoint.as_str());

    let t = sign_in(&fx, "openid profile email").await;
    assert_eq!(
        scope_set(&t["scope"]),
        ["email", "openid", "profile"].map(String::from).into()
    );
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(
        (id["sub"].as_str(), id["nonce"].as_str()),
        (Some(carol.as_str()), Some("n-42"))
    );
    assert_eq!(
        (id["preferred_username"].as_str(), id["email"].as_str()),
        (Some("carol"), Some("carol@example.com"))
    );
    // The access token is for the UserInfo endpoint, for carol, with the agent as actor.
    let access = t["access_token"].as_str().unwrap();
    let at = claims(access);
    assert_eq!(at["aud"], endpoint.as_str());
    assert_eq!(at["sub"], carol.as_str());
    assert_eq!(at["act"]["sub"], fx.id_of("assistant").await.as_str());

    // Core §5.3.2: sub, then what the scopes release; GET and POST alike.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let (s, info, _) = userinfo(&fx, method, Some(format!("Bearer {access}"))).await;
        assert_eq!(s, 200, "{info}");
        assert_eq!(
            info,
            json!({"sub": carol, "preferred_username": "carol", "name": "Carol Example", "email": "carol@example.com"})
        );
    }
    // A token for an API is refused, as is no token, a mangled one, or another scheme.
    let api_token = fx.user_token().await["access_token"].as_str().unwrap().to_owned();
    let (s, e, challenge) = userinfo(&fx, reqwest::Method::GET, Some(format!("Bearer {api_token}"))).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_token")), "{e}");
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
    let (s, _, challenge) = userinfo(&fx, reqwest::Method::GET, None).await;
    assert_eq!(s, 401);
    assert!(
        challenge.contains("Bearer realm=") && !challenge.contains("error="),
        "{challenge}"
    );
    let (s, e, _) = userinfo(&fx, reqwest::Method::GET, Some(format!("Bearer {access}x"))).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_token")), "{e}");
    // Another scheme is no credential here: the bare challenges (RFC 6750 §3.1).
    let (s, _, challenge) = userinfo(&fx, reqwest::Method::GET, Some(format!("Basic {access}"))).await;
    assert_eq!(s, 401);
    assert!(!challenge.contains("error="), "{challenge}");
    // A header that is not one scheme and one token is a malformed request (RFC 6750 §3.1).
    let (s, e, _) = userinfo(&fx, reqwest::Method::GET, Some(format!("Bearer {access} {access}"))).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_request")), "{e}");
    // The sign-in token opens no API: token exchange refuses it as a subject for one.
    let (s, e) = fx.exchange(&fx.helper, access, None).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_target")), "{e}");

    // A narrower sign-in releases less: `openid` alone is the user id only.
    let narrow = sign_in(&fx, "openid").await;
    assert_eq!(narrow["scope"], "openid");
    // Its ID token names carol and says nothing more about her (Core §5.4).
    let id = claims(narrow["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], carol.as_str());
    assert!(
        id.get("preferred_username").is_none() && id.get("email").is_none(),
        "{id}"
    );
    let (s, info, _) = userinfo(
        &fx,
        reqwest::Method::GET,
        Some(format!("Bearer {}", narrow["access_token"].as_str().unwrap())),
    )
    .await;
    assert_eq!((s, info), (200, json!({"sub": carol})));

    // The refreshed token reads the same; once the client revokes it, nothing.
    let (s, r) = fx.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{r}");
    let refreshed = r["access_token"].as_str().unwrap().to_owned();
    let (s, _, _) = userinfo(&fx, reqwest::Method::GET, Some(format!("Bearer {refreshed}"))).await;
    assert_eq!(s, 200);
    let resp = reqwest::Client::new()
        .post(format!("{}/revoke", fx.s.url))
        .form(&[("token", refreshed.as_str()), ("client_id", fx.public.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (s, e, _) = userinfo(&fx, reqwest::Method::GET, Some(format!("Bearer {refreshed}"))).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_token")), "{e}");
    // Suspending carol cuts the first token off too.
    let (s, _, _) = userinfo(&fx, reqwest::Method::GET, Some(format!("Bearer {access}"))).await;
    assert_eq!(s, 200);
    fx.s.client()
        .update_user(
            "carol",
            &serde_json::from_value(json!({"status": "suspended"})).unwrap(),
        )
        .await
        .unwrap();
    let (s, _, _) = userinfo(&fx, reqwest::Method::GET, Some(format!("Bearer {access}"))).await;
    assert_eq!(s, 401);

    // Every read and every refusal of a token or a malformed header is in the trail (a
    // request with no token, or with another scheme, presented none).
    let reads =
        fx.s.client()
            .audit_search(&[("type", "userinfo.read".into())])
            .await
            .unwrap()
            .items;
    let granted = reads.iter().filter(|r| r.record["outcome"] == "success").count();
    assert_eq!((granted, reads.len() - granted), (5, 5), "{reads:?}");
    let assistant = fx.id_of("assistant").await;
    assert!(reads.iter().all(|r| r.record["event_type"] == "userinfo.read"));
    assert!(
        reads
            .iter()
            .filter(|r| r.record["outcome"] == "success")
            .all(|r| r.record["actors"][0] == assistant.as_str() && r.record["subject"] == carol.as_str())
    );
}

#[tokio::test]
async fn a_sign_in_ignores_api_scopes_and_a_request_without_openid_names_its_resource() {
    let Some(fx) = fixture().await else { return };
    carol(&fx).await;
    // Without openid there is nothing to sign in to: the API must be named. The UserInfo
    // endpoint is no API, and cannot be registered as one.
    let (_, challenge) = pkce();
    let mut userinfo_as_resource = sign_in_params(&fx, &challenge, "openid");
    userinfo_as_resource.push(("resource".into(), format!("{}/userinfo", fx.s.url)));
    for (params, what) in [
        (sign_in_params(&fx, &challenge, "read"), "read without a resource"),
        (userinfo_as_resource, "the UserInfo endpoint as resource"),
    ] {
        match fx.browse(&params, PASSWORD, "allow").await {
            Outcome::Redirect(l) => assert_eq!(param(&l, "error").as_deref(), Some("invalid_target"), "{what}: {l}"),
            Outcome::Page(s, h) => panic!("{what}: {s} {h}"),
        }
    }
    let refused = fx
        .s
        .client()
        .create_resource(
            &serde_json::from_value(
                json!({"uri": format!("{}/userinfo", fx.s.url), "name": "mine", "owner": "bob", "scopes": ["profile"]}),
            )
            .unwrap(),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // An API's scope in a sign-in is not understood there and is ignored (Core §3.1.2.1).
    let t = sign_in(&fx, "openid read profile").await;
    assert_eq!(scope_set(&t["scope"]), ["openid", "profile"].map(String::from).into());
    // A refresh may narrow (no openid: no ID token) but not widen the sign-in.
    let rt = t["refresh_token"].as_str().unwrap();
    let (s, e) = fx.refresh_with_scope(rt, "openid profile email").await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_scope")), "{e}");
    let (s, r) = fx.refresh_with_scope(rt, "profile").await;
    assert_eq!(s, 200, "{r}");
    assert!(r.get("id_token").is_none(), "{r}");
    let (s, r) = fx
        .refresh_with_scope(r["refresh_token"].as_str().unwrap(), "openid")
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(claims(r["id_token"].as_str().unwrap())["preferred_username"], "carol");
}

#[tokio::test]
async fn a_dpop_bound_sign_in_token_is_read_only_with_a_proof_of_its_key_and_hash() {
    let Some(fx) = fixture().await else { return };
    carol(&fx).await;
    let (key, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let (other, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let (verifier, challenge) = pkce();
    let Outcome::Redirect(l) = fx
        .browse_as(
            "carol",
            &sign_in_params(&fx, &challenge, "openid profile"),
            PASSWORD,
            "allow",
        )
        .await
    else {
        panic!("no redirect")
    };
    let token_url = format!("{}/token", fx.s.url);
    let resp = reqwest::Client::new()
        .post(&token_url)
        .header(
            "DPoP",
            oauth_support::dpop_proof(&key, "POST", &token_url, oauth_support::now(), None, None),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", param(&l, "code").unwrap().as_str()),
            ("redirect_uri", CB),
            ("code_verifier", verifier.as_str()),
            ("client_id", fx.public.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["token_type"], "DPoP", "{t}");
    let access = t["access_token"].as_str().unwrap();
    let endpoint = format!("{}/userinfo", fx.s.url);
    let ath = sigil_crypto::b64url(&sigil_crypto::sha256(access.as_bytes()));
    // RFC 9449 §4.2: the proof names the token's hash in `ath`.
    let proof = |k: &sigil_crypto::SigningKey, htm: &str, ath: &str| {
        let mut jwk = serde_json::to_value(sigil_crypto::PublicJwk::from(&k.public_jwk())).unwrap();
        jwk.as_object_mut()
            .unwrap()
            .retain(|n, _| !["kid", "alg", "use"].contains(&n.as_str()));
        oauth_support::jwt(
            &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}),
            &json!({"jti": sigil_crypto::b64url(&sigil_crypto::random_bytes::<12>().unwrap()), "htm": htm, "htu": endpoint, "iat": oauth_support::now(), "ath": ath}),
            Some(k),
        )
    };
    let get = |scheme: &'static str, proof: Option<String>| {
        let (url, access) = (endpoint.clone(), access.to_owned());
        async move {
            let mut req = reqwest::Client::new()
                .get(url)
                .header("Authorization", format!("{scheme} {access}"));
            if let Some(p) = proof {
                req = req.header("DPoP", p);
            }
            let resp = req.send().await.unwrap();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap(), challenge)
        }
    };
    let good = proof(&key, "GET", &ath);
    // A proof's iat far out of range is refused, never an overflow.
    let ancient = {
        let mut jwk = serde_json::to_value(sigil_crypto::PublicJwk::from(&key.public_jwk())).unwrap();
        jwk.as_object_mut()
            .unwrap()
            .retain(|n, _| !["kid", "alg", "use"].contains(&n.as_str()));
        oauth_support::jwt(
            &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}),
            &json!({"jti": "ancient-proof", "htm": "GET", "htu": endpoint, "iat": i64::MIN, "ath": ath}),
            Some(&key),
        )
    };
    for (scheme, p, error) in [
        ("Bearer", None, "invalid_token"),
        ("DPoP", None, "invalid_dpop_proof"),
        ("DPoP", Some(proof(&other, "GET", &ath)), "invalid_token"),
        ("DPoP", Some(proof(&key, "POST", &ath)), "invalid_dpop_proof"),
        ("DPoP", Some(proof(&key, "GET", "not-the-hash")), "invalid_dpop_proof"),
        ("DPoP", Some(ancient), "invalid_dpop_proof"),
    ] {
        let (s, e, challenge) = get(scheme, p).await;
        assert_eq!((s, e["error"].as_str()), (401, Some(error)), "{scheme}: {e}");
        assert!(challenge.contains(&format!("error=\"{error}\"")), "{challenge}");
    }
    let (s, info, _) = get("DPoP", Some(good.clone())).await;
    assert_eq!((s, info["preferred_username"].as_str()), (200, Some("carol")), "{info}");
    // RFC 9449 §11.1: a proof is good once.
    let (s, e, _) = get("DPoP", Some(good)).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_dpop_proof")), "{e}");
}
