//! Dynamic client registration (RFC 7591) and its management API (RFC 7592).

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
use sigil_testkit::Family;

/// An initial access token of alice's, for ten minutes, for `identity` (or a new agent).
async fn alices_registration_token(f: &Fixture, identity: Option<&str>) -> sigil_proto::admin::RegistrationTokenView {
    f.s.client()
        .create_registration_token(&sigil_proto::admin::CreateRegistrationToken {
            owner: "alice".into(),
            identity: identity.map(str::to_owned),
            ttl_seconds: Some(600),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn dynamic_client_registration_rfc7591_and_7592() {
    let Some(f) = fixture().await else { return };
    let c = f.s.client();
    let iat = alices_registration_token(&f, None).await;
    let http = reqwest::Client::new();
    let reg = format!("{}/register", f.s.url);
    // No initial access token: 401 with a bare challenge (RFC 6750 §3.1: the caller may not
    // have known it needed one); a wrong one: 401 invalid_token.
    let r = http.post(&reg).json(&json!({"client_name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"sigil\"");
    let r = http
        .post(&reg)
        .bearer_auth("sigil_iat_nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    // Bad metadata: 400 invalid_client_metadata or invalid_redirect_uri, nothing created.
    for (bad, error) in [
        (json!({"grant_types": ["authorization_code"]}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["http://x.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://x.example/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (json!({"grant_types": ["implicit"]}), "invalid_client_metadata"),
        (json!({"response_types": ["token"]}), "invalid_client_metadata"),
        (
            json!({"id_token_signed_response_alg": "HS256"}),
            "invalid_client_metadata",
        ),
        (json!({"token_endpoint_auth_method": "none"}), "invalid_client_metadata"),
        (
            json!({"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"], "redirect_uris": ["https://x.example/cb"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}}),
            "invalid_client_metadata",
        ),
        (json!({"client_name": 7}), "invalid_client_metadata"),
        (json!({"client_name": "pay\u{202E}lanigiro"}), "invalid_client_metadata"),
        (json!({"client_name": "a\u{0}b"}), "invalid_client_metadata"),
        (json!({"grant_types": []}), "invalid_client_metadata"),
        (json!({"grant_types": ["refresh_token"]}), "invalid_client_metadata"),
        // RFC 7591 §2.1: response types and grant types must agree.
        (
            json!({"grant_types": ["client_credentials"], "response_types": ["code"], "redirect_uris": ["https://x.example/cb"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["authorization_code"], "response_types": [], "redirect_uris": ["https://x.example/cb"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "none", "jwks_uri": "https://keys.example.com/jwks"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "HS256", "jwks_uri": "https://keys.example.com/jwks"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://keys.example.com/jwks#k1"}),
            "invalid_client_metadata",
        ),
        // A registrant's jwks_uri is fetched from public hosts only.
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://127.1:9/jwks"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://LocalHost/jwks"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://[::ffff:10.0.0.1]/jwks"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"], "jwks": {"keys": [
                {"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                {"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            ]}}),
            "invalid_client_metadata",
        ),
        // Descriptive metadata is what RFC 7591 §2 says it is, or it is refused.
        (json!({"contacts": "ops@example.com"}), "invalid_client_metadata"),
        (json!({"logo_uri": "javascript:alert(1)"}), "invalid_client_metadata"),
        (json!({"client_uri": "notauri"}), "invalid_client_metadata"),
        (json!({"tos_uri": "ftp://x.example/tos"}), "invalid_client_metadata"),
        (json!({"scope": "a \"b"}), "invalid_client_metadata"),
        (
            json!({"redirect_uris": [" https://x.example/cb"]}),
            "invalid_redirect_uri",
        ),
        // Keys that could never verify: RSA under 2048 bits (RFC 7518 §3.3), an alg for
        // another key type.
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "RSA", "n": sigil_crypto::b64url(&[0xc5; 128]), "e": "AQAB"}]}}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "alg": "RS256"}]}}),
            "invalid_client_metadata",
        ),
    ] {
        let r = http.post(&reg).bearer_auth(&iat.token).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], error, "{bad}");
    }
    // Metadata naming a member twice: which one would count?
    let r = http
        .post(&reg)
        .bearer_auth(&iat.token)
        .header("content-type", "application/json")
        .body(r#"{"client_name": "a", "client_name": "b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client_metadata");
    let before = c.list_identities(Family::Agents, &[]).await.unwrap().items.len();
    assert_eq!(before, 1, "refused registrations created no identity");
    // An oversized body is refused like any other request to the OAuth endpoints: JSON.
    let r = http
        .post(&reg)
        .bearer_auth(&iat.token)
        .json(&json!({"client_name": "x".repeat(100_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");

    let r = http
        .post(&reg)
        .bearer_auth(&iat.token)
        .json(&json!({"client_name": "Research agent", "grant_types": ["client_credentials"], "unknown_field": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("unknown_field").is_none(), "unknown metadata is ignored");
    assert_eq!(body["client_name"], "Research agent");
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(body["client_secret_expires_at"], 0);
    let (id, secret, rat, uri) = (
        body["client_id"].as_str().unwrap(),
        body["client_secret"].as_str().unwrap(),
        body["registration_access_token"].as_str().unwrap(),
        body["registration_client_uri"].as_str().unwrap(),
    );
    // The new agent has an empty ceiling: the client can hold no scope yet.
    let (st, e, _) = f
        .post(
            "/token",
            &[("grant_type", "client_credentials"), ("resource", API)],
            Some((id, secret)),
        )
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_scope")), "{e}");
    // A client registered for sign-ins gets that grant (and its refresh tokens), not others.
    let r = http
        .post(&reg)
        .bearer_auth(&iat.token)
        .json(&json!({"grant_types": ["authorization_code"], "redirect_uris": ["https://app.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let code_only: Value = r.json().await.unwrap();
    assert_eq!(code_only["grant_types"], json!(["authorization_code", "refresh_token"]));
    let (st, e, _) = f
        .post(
            "/token",
            &[("grant_type", "client_credentials"), ("resource", API)],
            Some((
                code_only["client_id"].as_str().unwrap(),
                code_only["client_secret"].as_str().unwrap(),
            )),
        )
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("unauthorized_client")), "{e}");
    // RFC 7591 §2: redirect URIs with grant_types left out mean authorization_code alone.
    let r = http
        .post(&reg)
        .bearer_auth(&iat.token)
        .json(&json!({"redirect_uris": ["https://app.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let defaulted: Value = r.json().await.unwrap();
    assert_eq!(defaulted["grant_types"], json!(["authorization_code", "refresh_token"]));

    // RFC 7592: read, update, delete with the registration access token only. Each read and
    // update answers with a new token (§3 requires one in the response; Sigil keeps only
    // hashes), and the old one stops working (§2.1).
    // A HEAD has no body to carry a new token, so it leaves the current one in force.
    let r = http.head(uri).bearer_auth(rat).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(uri).bearer_auth(rat).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let read: Value = r.json().await.unwrap();
    assert!(read.get("client_secret").is_none());
    assert_eq!(read["registration_client_uri"], uri);
    let rat = read["registration_access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        http.get(uri)
            .bearer_auth(body["registration_access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(uri).bearer_auth(&iat.token).send().await.unwrap().status(),
        401
    );
    // §2.2: fields the server issued must not come back; a secret, if sent, must be current.
    for bad in [
        json!({"client_id": id, "registration_access_token": rat}),
        json!({"client_id": id, "client_id_issued_at": 1}),
        json!({"client_id": id, "client_secret": "sigil_cs_wrong"}),
    ] {
        let r = http.put(uri).bearer_auth(&rat).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_client_metadata", "{bad}");
    }
    let r = http
        .put(uri)
        .bearer_auth(&rat)
        // null is "delete it", like a member left out (RFC 7592 §2.2).
        .json(&json!({"client_id": id, "client_secret": secret, "client_name": "Renamed", "client_uri": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["client_name"], "Renamed");
    let rat = updated["registration_access_token"].as_str().unwrap().to_owned();
    let rat = rat.as_str();
    let changes = c
        .audit_search(&[("type", "client.updated".into())])
        .await
        .unwrap()
        .items;
    assert_eq!(changes.len(), 1, "an RFC 7592 update is audited");
    assert_eq!(changes[0].record["actors"][0], format!("client:{id}"));
    assert_eq!(changes[0].record["client_id"], id);
    // A suspended agent is quarantined: its registration access token neither reads, changes
    // nor deletes the registration (and is not rotated by trying); resumed, it works again.
    let agent = c.get_client(id).await.unwrap().identity;
    c.change_status(Family::Agents, &agent, "suspend", &Default::default())
        .await
        .unwrap();
    for r in [
        http.get(uri).bearer_auth(rat).send().await.unwrap(),
        http.put(uri)
            .bearer_auth(rat)
            .json(&json!({"client_id": id, "redirect_uris": ["https://evil.example/cb"], "grant_types": ["authorization_code"]}))
            .send()
            .await
            .unwrap(),
        http.delete(uri).bearer_auth(rat).send().await.unwrap(),
    ] {
        assert_eq!(r.status(), 401);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    c.change_status(Family::Agents, &agent, "resume", &Default::default())
        .await
        .unwrap();
    assert_eq!(c.get_client(id).await.unwrap().redirect_uris, Vec::<String>::new());
    let r = http
        .put(uri)
        .bearer_auth(rat)
        .json(&json!({"client_id": "cli_other", "client_name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(http.delete(uri).bearer_auth(rat).send().await.unwrap().status(), 204);
    assert_eq!(http.get(uri).bearer_auth(rat).send().await.unwrap().status(), 401);
    // The agent registration made for it alone goes with it: decommissioned, not left active.
    let agents = c.list_identities(Family::Agents, &[]).await.unwrap().items;
    let made = agents.iter().find(|a| a.name.as_str().starts_with("dcr-")).unwrap();
    assert_eq!(made.status.as_str(), "decommissioned");
    assert!(
        agents
            .iter()
            .any(|a| a.name.as_str() == "bot" && a.status.as_str() == "active")
    );
    let (st, _, _) = f
        .post(
            "/token",
            &[("grant_type", "client_credentials"), ("resource", API)],
            Some((id, secret)),
        )
        .await;
    assert_eq!(st, 401, "a deleted client cannot authenticate");
}

#[tokio::test]
async fn deleting_a_client_ends_its_access_tokens() {
    let Some(f) = fixture().await else { return };
    let (st, v, _) = f
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("resource", API),
                ("scope", "read"),
            ],
            Some((&f.secret_client, &f.secret)),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let token = v["access_token"].as_str().unwrap();
    let c = f.s.client();
    assert_eq!(c.introspect_token(token).await.unwrap()["active"], true);
    // RFC 7592 §2.3: the server SHOULD invalidate the deleted client's active access tokens.
    c.delete_client(&f.secret_client).await.unwrap();
    assert_eq!(c.introspect_token(token).await.unwrap()["active"], false);
}

/// RFC 7592 §2.1–2.3: a registration access token presented for a client that does not exist
/// is refused and revoked at once; the client it belongs to stays registered, and an audit
/// record says why its token stopped working.
#[tokio::test]
async fn a_registration_access_token_used_for_no_client_is_revoked() {
    let Some(f) = fixture().await else { return };
    let iat = alices_registration_token(&f, None).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/register", f.s.url))
        .bearer_auth(&iat.token)
        .json(&json!({"client_name": "probe", "grant_types": ["client_credentials"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let rat = body["registration_access_token"].as_str().unwrap();
    let own = body["registration_client_uri"].as_str().unwrap();
    let client_id = body["client_id"].as_str().unwrap();
    let r = http
        .get(format!("{}/register/cli_nosuchclient", f.s.url))
        .bearer_auth(rat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(own).bearer_auth(rat).send().await.unwrap();
    assert_eq!(r.status(), 401, "the token was revoked");
    let c = f.s.client();
    assert!(c.get_client(client_id).await.is_ok(), "the client stays registered");
    let found = c
        .audit_search(&[("type", "client.updated".into()), ("client", client_id.into())])
        .await
        .unwrap();
    let revoked = found
        .items
        .iter()
        .find(|e| e.record["details"]["presented_for"] == "cli_nosuchclient");
    assert!(revoked.is_some(), "{:?}", found.items);
}

/// An initial access token speaks for its owner: it is refused for someone else's identity,
/// and it stops working for good once the owner is suspended (like her access tokens).
#[tokio::test]
async fn initial_access_tokens_end_with_their_owner() {
    let Some(f) = fixture().await else { return };
    let c = f.s.client();
    c.create_user(&serde_json::from_value(json!({"username": "bob"})).unwrap())
        .await
        .unwrap();
    let token = |owner: &str, identity: Option<&str>| sigil_proto::admin::CreateRegistrationToken {
        owner: owner.into(),
        identity: identity.map(Into::into),
        ttl_seconds: Some(600),
    };
    let e = c
        .create_registration_token(&token("bob", Some("bot")))
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(400), "{e}");
    let iat = c.create_registration_token(&token("bob", None)).await.unwrap();
    let register = || async {
        reqwest::Client::new()
            .post(format!("{}/register", f.s.url))
            .bearer_auth(&iat.token)
            .json(&json!({"grant_types": ["client_credentials"]}))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(register().await, 201);
    // A revoked token registers nothing more; revoking it twice is a 404.
    let spare = c.create_registration_token(&token("alice", None)).await.unwrap();
    let listed = c.list_registration_tokens().await.unwrap().items;
    assert!(listed.iter().any(|t| t.id == spare.id) && listed.iter().any(|t| t.id == iat.id));
    c.revoke_registration_token(&spare.id).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/register", f.s.url))
        .bearer_auth(&spare.token)
        .json(&json!({"grant_types": ["client_credentials"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e = c.revoke_registration_token(&spare.id).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404));
    assert!(
        !c.list_registration_tokens()
            .await
            .unwrap()
            .items
            .iter()
            .any(|t| t.id == spare.id)
    );
    let status = |s: &str| serde_json::from_value::<sigil_proto::admin::UpdateUser>(json!({"status": s})).unwrap();
    c.update_user("bob", &status("suspended")).await.unwrap();
    assert_eq!(register().await, 401, "a suspended owner's token registers nothing");
    c.update_user("bob", &status("active")).await.unwrap();
    assert_eq!(register().await, 401, "resuming her does not revive it");
}

/// RFC 7591 §2 `scope` is what the client "can use when requesting access tokens": a registered
/// scope bounds every token; racing requests with one registration access token get 401, not
/// 503; a client without the code grant is refused at /authorize before anyone signs in.
#[tokio::test]
async fn registered_metadata_is_what_the_client_gets() {
    let Some(f) = fixture().await else { return };
    let iat = alices_registration_token(&f, Some("bot")).await;
    let http = reqwest::Client::new();
    let reg = format!("{}/register", f.s.url);
    let registered: Value = http
        .post(&reg)
        .bearer_auth(&iat.token)
        .json(&json!({"client_name": "reader", "scope": "read", "grant_types": ["client_credentials"], "redirect_uris": ["https://app.example.com/cb"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = registered["client_id"].as_str().unwrap().to_owned();
    let secret = registered["client_secret"].as_str().unwrap().to_owned();
    let token = |scope: &'static str| {
        let (http, url, id, secret) = (http.clone(), format!("{}/token", f.s.url), id.clone(), secret.clone());
        async move {
            let mut form = vec![("grant_type", "client_credentials"), ("resource", API)];
            if !scope.is_empty() {
                form.push(("scope", scope));
            }
            let r = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(token("read").await.1["scope"], "read");
    assert_eq!(
        token("").await.1["scope"],
        "read",
        "the registered scope, not all the ceiling allows"
    );
    for outside in ["write", "read write"] {
        let (st, v) = token(outside).await;
        assert_eq!((st, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");
    }

    // Eight reads at once with one registration access token: one wins and rotates it, the
    // others are told the token is no longer good (never a 503).
    let uri = registered["registration_client_uri"].as_str().unwrap().to_owned();
    let rat = registered["registration_access_token"].as_str().unwrap().to_owned();
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let read = http.get(&uri).bearer_auth(&rat).send();
        reads.spawn(async move { read.await.unwrap().status().as_u16() });
    }
    let statuses = reads.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");

    // Not registered for the code grant: /authorize says so to the client at once.
    let challenge = sigil_crypto::b64url(&sigil_crypto::sha256(
        b"a-verifier-of-at-least-forty-three-characters-long",
    ));
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/authorize", f.s.url))
        .query(&[
            ("response_type", "code"),
            ("client_id", id.as_str()),
            ("redirect_uri", "https://app.example.com/cb"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("resource", API),
            ("state", "s1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("https://app.example.com/cb?"), "{location}");
    assert!(location.contains("error=unauthorized_client"), "{location}");
    assert!(location.contains("state=s1"), "{location}");
}

/// RFC 7592: of requests racing with one registration access token, one wins. A read rotates
/// the token, so a deletion authorised by the token the read retired must fail (401
/// `invalid_token`), never succeed beside it or answer 503.
#[tokio::test]
async fn reads_and_deletes_racing_with_one_registration_access_token_have_one_winner() {
    let Some(f) = fixture().await else { return };
    let iat = alices_registration_token(&f, None).await;
    let http = reqwest::Client::new();
    const ROUNDS: usize = 12;
    const EACH: usize = 4;
    let mut losers = 0;
    for round in 0..ROUNDS {
        let body: Value = http
            .post(format!("{}/register", f.s.url))
            .bearer_auth(&iat.token)
            .json(&json!({"client_name": format!("racer {round}"), "grant_types": ["client_credentials"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let uri = body["registration_client_uri"].as_str().unwrap().to_owned();
        let rat = body["registration_access_token"].as_str().unwrap().to_owned();
        let mut requests = tokio::task::JoinSet::new();
        for n in 0..2 * EACH {
            let req = if n % 2 == 0 { http.get(&uri) } else { http.delete(&uri) };
            let sent = req.bearer_auth(&rat).send();
            requests.spawn(async move { sent.await.unwrap().status().as_u16() });
        }
        let statuses = requests.join_all().await;
        let winners = statuses.iter().filter(|s| matches!(s, 200 | 204)).count();
        assert!(
            winners == 1 && statuses.iter().all(|s| matches!(s, 200 | 204 | 401)),
            "round {round}: {statuses:?}"
        );
        losers += statuses.len() - 1;
    }
    // Each loser is in the trail, denied, under the client it asked about.
    let refused =
        f.s.client()
            .audit_search(&[("type", "registration.refused".into()), ("limit", "500".into())])
            .await
            .unwrap()
            .items;
    assert_eq!(refused.len(), losers);
}
