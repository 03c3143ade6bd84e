//! The OAuth token service: client_credentials with private_key_jwt and client secrets, RFC 9068
//! tokens, resource indicators, introspection, revocation, and every bad input the issue lists
//! (each gets the precise RFC 6749 §5.2 error and changes nothing).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod oauth_support;

use base64::Engine as _;
use oauth_support::*;
use serde_json::{Value, json};
use sigil_crypto::{Algorithm, SigningKey, b64url};
use sigil_testkit::Family;

/// RFC 7662 §4: a client learns about a token only if its identity holds the token or serves
/// the token's audience (any workload while the resource names no servers); to any other
/// client the token is inactive (§2.2), and the refusal is in the audit trail.
#[tokio::test]
async fn only_the_holder_and_the_audiences_servers_introspect_a_token() {
    let Some(f) = fixture().await else { return };
    let c = f.s.client();
    let (st, body) = f.with_assertion(&f.assertion(&f.claims()), &[("scope", "read")]).await;
    assert_eq!(st, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    c.create_identity(
        Family::Workloads,
        &serde_json::from_value(json!({"name": "api-server", "owner": "alice"})).unwrap(),
    )
    .await
    .unwrap();
    let rs = c
        .create_client(
            &serde_json::from_value(
                json!({"identity": "api-server", "token_endpoint_auth_method": "client_secret_basic"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let rs_secret = rs.client_secret.unwrap();
    let introspect = |who: (&'static str, String, String)| {
        let f = &f;
        async move {
            let (st, i, _) = f.post("/introspect", &[("token", token)], Some((&who.1, &who.2))).await;
            assert_eq!(st, 200, "{}: {i}", who.0);
            i
        }
    };
    let rs_caller = || ("resource server", rs.client_id.clone(), rs_secret.clone());
    // An agent that neither holds the token nor serves its audience learns nothing, and the
    // refusal is in the trail.
    c.create_identity(
        Family::Agents,
        &serde_json::from_value(json!({"name": "snoop", "owner": "alice"})).unwrap(),
    )
    .await
    .unwrap();
    let snoop = c
        .create_client(
            &serde_json::from_value(json!({"identity": "snoop", "token_endpoint_auth_method": "client_secret_basic"}))
                .unwrap(),
        )
        .await
        .unwrap();
    let snoop_caller = (
        "another agent",
        snoop.client_id.clone(),
        snoop.client_secret.clone().unwrap(),
    );
    assert_eq!(introspect(snoop_caller).await, json!({"active": false}));
    let records = c.audit_search(&[("type", "token.introspected".into())]).await.unwrap();
    assert!(
        records.items.iter().any(|r| r.record["outcome"] == "denied"
            && r.record["reason"].as_str().is_some_and(|x| x.contains("audience"))
            && r.record["details"]["active"] == false
            && r.record["actors"].to_string().contains(&snoop.client_id)),
        "the refusal is audited: {:?}",
        records.items
    );
    // A value that is no token of ours gets the inactive answer, and the call is still in the
    // trail (RFC 7662 §2.2, RFC 7009 §2.2: answered like any inactive or unknown token).
    let (rs_id, rs_pw) = (rs.client_id.clone(), rs_secret.clone());
    for (endpoint, event) in [("/introspect", "token.introspected"), ("/revoke", "token.revoked")] {
        let (st, body, _) = f.post(endpoint, &[("token", "x.y.z")], Some((&rs_id, &rs_pw))).await;
        assert_eq!(st, 200, "{endpoint}: {body}");
        let records = c.audit_search(&[("type", event.into())]).await.unwrap().items;
        assert!(
            records.iter().any(
                |r| r.record["details"]["token"] == "not a valid access token of this issuer"
                    && r.record["actors"].to_string().contains(&rs_id)
            ),
            "{endpoint}: {records:?}"
        );
    }
    // While the resource names no servers, any workload may ask.
    assert_eq!(
        introspect(rs_caller()).await["active"],
        true,
        "open until servers are named"
    );
    // Naming servers narrows it to them.
    let update = serde_json::from_value(json!({"servers": ["bot"]})).unwrap();
    c.update_resource("api", &update).await.unwrap();
    assert_eq!(
        introspect(rs_caller()).await,
        json!({"active": false}),
        "not a named server"
    );
    let update = serde_json::from_value(json!({"servers": ["api-server"]})).unwrap();
    let api = c.update_resource("api", &update).await.unwrap();
    assert_eq!(api.servers.len(), 1, "{api:?}");
    let i = introspect(rs_caller()).await;
    assert_eq!(
        (i["active"].clone(), i["aud"].clone()),
        (json!(true), json!(API)),
        "{i}"
    );
    // Another client of the holder's own identity learns about it too.
    let holder = ("holder's other client", f.secret_client.clone(), f.secret.clone());
    assert_eq!(introspect(holder).await["active"], true);
    // Serving some other API does not count.
    c.create_resource(
        &serde_json::from_value(
            json!({"uri": "https://other.example.com", "name": "other", "owner": "alice", "servers": ["api-server"]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let update = serde_json::from_value(json!({"servers": ["bot"]})).unwrap();
    c.update_resource("api", &update).await.unwrap();
    assert_eq!(introspect(rs_caller()).await, json!({"active": false}));
    // A server must be a registered identity.
    let bad = serde_json::from_value(json!({"servers": ["nobody"]})).unwrap();
    let e = c.update_resource("api", &bad).await.unwrap_err();
    assert!(e.to_string().contains("not a registered"), "{e}");
    // A token for an API that is gone is for none, even once the URI is registered again.
    assert_eq!(c.introspect_token(token).await.unwrap()["active"], true);
    c.delete_resource("api").await.unwrap();
    assert_eq!(c.introspect_token(token).await.unwrap()["active"], false);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c.create_resource(
        &serde_json::from_value(
            json!({"uri": API, "name": "api", "owner": "alice", "scopes": ["read"], "servers": ["api-server"]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(c.introspect_token(token).await.unwrap()["active"], false);
    assert_eq!(introspect(rs_caller()).await, json!({"active": false}));
}

#[tokio::test]
async fn private_key_jwt_and_secret_clients_get_rfc9068_tokens() {
    let Some(f) = fixture().await else { return };
    let (st, body) = f.with_assertion(&f.assertion(&f.claims()), &[("scope", "read")]).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "read");
    let token = body["access_token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&sigil_crypto::b64url_decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    let claims: Value = serde_json::from_slice(&sigil_crypto::b64url_decode(parts[1]).unwrap()).unwrap();
    for c in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"] {
        assert!(claims.get(c).is_some(), "RFC 9068 claim {c} missing: {claims}");
    }
    assert_eq!(claims["aud"], API);
    assert_eq!(claims["iss"], f.s.url.as_str());
    assert_eq!(claims["client_id"], f.key_client.as_str());
    // The inventory shows when the agent last got a token.
    let bot = f.s.client().get_identity(Family::Agents, "bot").await.unwrap();
    let used = bot.last_used_at.expect("last_used_at is recorded on issuance");
    assert!((used.unix_seconds() - now()).abs() < 60, "{used:?}");

    // Secret client, Basic and post; no scope asked: everything the ceiling and resource allow.
    let (st, b, h) = f
        .post(
            "/token",
            &[("grant_type", "client_credentials"), ("resource", API)],
            Some((&f.secret_client, &f.secret)),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["scope"], "read write");
    assert_eq!(h["cache-control"], "no-store");
    let (st, _, _) = f
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("resource", API),
                ("client_id", &f.secret_client),
                ("client_secret", &f.secret),
            ],
            None,
        )
        .await;
    assert_eq!(st, 200);
    // The root resource asked for the way a URL parser writes it (`…/`, as `URL.href` gives):
    // the same resource, and the audience is its registered spelling.
    let (st, b, _) = f
        .post(
            "/token",
            &[("grant_type", "client_credentials"), ("resource", &format!("{API}/"))],
            Some((&f.secret_client, &f.secret)),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let payload = b["access_token"].as_str().unwrap().split('.').nth(1).unwrap();
    let twin: Value = serde_json::from_slice(&sigil_crypto::b64url_decode(payload).unwrap()).unwrap();
    assert_eq!(twin["aud"], API);
    // So it cannot be registered a second time in its other spelling, and a URI naming its
    // scheme's default port (which parsers drop) is not registered at all.
    for (uri, status) in [
        (format!("{API}/"), 409),
        ("https://other.example.com:443/p".to_owned(), 400),
    ] {
        let e =
            f.s.client()
                .create_resource(
                    &serde_json::from_value(json!({"uri": uri, "name": "twin", "owner": "alice", "scopes": ["read"]}))
                        .unwrap(),
                )
                .await
                .unwrap_err();
        assert_eq!(e.status().map(|s| s.as_u16()), Some(status), "{uri}: {e}");
    }

    // Introspection by the secret client (as a resource server would), then revocation.
    let (st, i, _) = f
        .post("/introspect", &[("token", token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(st, 200);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["scope"], "read");
    // RFC 7009 §2.1: another client's token is refused, and stays valid.
    let (st, v, _) = f
        .post("/revoke", &[("token", token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("unauthorized_client")), "{v}");
    let (_, i, _) = f
        .post("/introspect", &[("token", token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(i["active"], true, "a client cannot revoke another client's token");
    let a = f.assertion(&f.claims());
    // The holder revokes with its assertion; the assertion is then spent, so presented again,
    // there or at introspection, it is a replay.
    for (path, expected) in [
        ("/revoke", (200, None)),
        ("/revoke", (401, Some("invalid_client"))),
        ("/introspect", (401, Some("invalid_client"))),
    ] {
        let (st, e, _) = f
            .post(
                path,
                &[
                    ("token", token),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &a),
                ],
                None,
            )
            .await;
        assert_eq!((st, e["error"].as_str()), expected, "{path}: {e}");
    }
    let (_, i, _) = f
        .post("/introspect", &[("token", token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(i, json!({"active": false}));
    let (_, i, _) = f
        .post(
            "/introspect",
            &[("token", "garbage")],
            Some((&f.secret_client, &f.secret)),
        )
        .await;
    assert_eq!(i, json!({"active": false}));
    let (st, i, _) = f.post("/introspect", &[("token", token)], None).await;
    assert_eq!(st, 401, "introspection needs an authenticated caller: {i}");
    // A body that is not a form: unauthenticated (no credential anywhere) before malformed.
    for (auth, status, error) in [
        (None, 401, "invalid_client"),
        (Some((&f.secret_client, &f.secret)), 400, "invalid_request"),
    ] {
        for endpoint in ["/introspect", "/revoke"] {
            let mut req = reqwest::Client::new()
                .post(format!("{}{endpoint}", f.s.url))
                .json(&json!({ "token": token }));
            if let Some((id, secret)) = auth {
                req = req.basic_auth(id, Some(secret));
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), status, "{endpoint} {auth:?}");
            if status == 401 {
                assert!(r.headers().contains_key("www-authenticate"), "{endpoint}");
            }
            assert_eq!(r.json::<Value>().await.unwrap()["error"], error, "{endpoint} {auth:?}");
        }
    }
    // A bearer caller: the scheme in any case; a bad bearer credential is an RFC 6750 answer.
    let bearer = |credential: String| {
        reqwest::Client::new()
            .post(format!("{}/introspect", f.s.url))
            .header("authorization", credential)
            .form(&[("token", token)])
            .send()
    };
    let ok = bearer(format!("bEaReR {}", f.s.admin_token)).await.unwrap();
    assert_eq!(ok.status(), 200);
    let bad = bearer("Bearer not-a-credential".into()).await.unwrap();
    assert_eq!(bad.status(), 401);
    let challenge = bad.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_token");
}

#[tokio::test]
async fn suspension_kills_tokens_and_refuses_new_ones() {
    let Some(f) = fixture().await else { return };
    let (_, body) = f.with_assertion(&f.assertion(&f.claims()), &[]).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let c = f.s.client();
    c.change_status(Family::Agents, "bot", "suspend", &Default::default())
        .await
        .unwrap();
    let (st, e) = f.with_assertion(&f.assertion(&f.claims()), &[]).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("invalid_client")), "{e}");
    // The refused attempt is in the agent's trail.
    let refused = c
        .audit_search(&[("type", "token.refused".into()), ("agent", "bot".into())])
        .await
        .unwrap();
    assert_eq!(refused.items.len(), 1, "{:?}", refused.items);
    assert_eq!(c.introspect_token(&token).await.unwrap()["active"], false);
    // Its clients are quarantined at every endpoint: introspection and revocation refuse
    // them (and record the attempt in the agent's trail); nothing is revoked.
    for (endpoint, event) in [("/introspect", "token.introspected"), ("/revoke", "token.revoked")] {
        let (st, e, _) = f
            .post(endpoint, &[("token", &token)], Some((&f.secret_client, &f.secret)))
            .await;
        assert_eq!(
            (st, e["error"].as_str()),
            (401, Some("invalid_client")),
            "{endpoint}: {e}"
        );
        let records = c
            .audit_search(&[("type", event.into()), ("agent", "bot".into())])
            .await
            .unwrap()
            .items;
        assert_eq!(records.len(), 1, "{endpoint}: {records:?}");
        assert_eq!(records[0].record["outcome"], "denied");
        assert_eq!(records[0].record["action"], &endpoint[1..]);
    }
    // Resumed at once, in the second of the suspension: tokens issued after it still work.
    c.change_status(Family::Agents, "bot", "resume", &Default::default())
        .await
        .unwrap();
    let (_, i, _) = f
        .post("/introspect", &[("token", &token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(i["active"], false, "resuming does not bring old tokens back");
    let (st, fresh) = f.with_assertion(&f.assertion(&f.claims()), &[]).await;
    assert_eq!(st, 200);
    let fresh = fresh["access_token"].as_str().unwrap();
    let (_, i, _) = f
        .post("/introspect", &[("token", fresh)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(i["active"], true, "a token issued after the resume is alive: {i}");
    // A failed client authentication at introspection is in the trail too.
    let (st, _, _) = f
        .post(
            "/introspect",
            &[("token", fresh)],
            Some((&f.secret_client, "sigil_cs_wrong")),
        )
        .await;
    assert_eq!(st, 401);
    let denied = c
        .audit_search(&[("type", "token.introspected".into()), ("agent", "bot".into())])
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.record["outcome"] == "denied")
        .count();
    assert_eq!(denied, 2);
}

#[tokio::test]
async fn bad_assertions_are_invalid_client_and_change_nothing() {
    let Some(f) = fixture().await else { return };
    let base = f.claims();
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let pk = f.key.public_jwk();
    let cases: Vec<(&str, String)> = vec![
        ("alg none", jwt(&json!({"alg": "none", "kid": "k1"}), &base, None)),
        ("HS256 with the public key", {
            let h = json!({"alg": "HS256", "kid": "k1"});
            let input = format!(
                "{}.{}",
                b64url(h.to_string().as_bytes()),
                b64url(base.to_string().as_bytes())
            );
            let key = aws_lc_rs_hmac(pk.x.unwrap_or_default().as_bytes(), input.as_bytes());
            format!("{input}.{}", b64url(&key))
        }),
        (
            "unknown kid",
            jwt(&json!({"alg": "EdDSA", "kid": "nope"}), &base, Some(&f.key)),
        ),
        ("expired", f.assertion(&with("exp", json!(now() - 10)))),
        ("not yet valid", f.assertion(&with("nbf", json!(now() + 3600)))),
        ("too far in the future", f.assertion(&with("exp", json!(now() + 7200)))),
        (
            "wrong aud",
            f.assertion(&with("aud", json!("https://elsewhere.example/token"))),
        ),
        (
            "an aud also naming another party",
            f.assertion(&with("aud", json!([f.token_url(), "https://elsewhere.example"]))),
        ),
        (
            "critical header extension",
            jwt(
                &json!({"alg": "EdDSA", "kid": "k1", "crit": ["urn:example:x"], "urn:example:x": true}),
                &base,
                Some(&f.key),
            ),
        ),
        (
            "another kind of JWT",
            jwt(
                &json!({"alg": "EdDSA", "kid": "k1", "typ": "dpop+jwt"}),
                &base,
                Some(&f.key),
            ),
        ),
        ("no jti", {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove("jti");
            f.assertion(&c)
        }),
        ("iss != sub", f.assertion(&with("sub", json!("someone-else")))),
        ("signed by another key", {
            let (other, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
            jwt(&json!({"alg": "EdDSA", "kid": "k1"}), &base, Some(&other))
        }),
        ("not a JWT", "abc.def".into()),
    ];
    let before = f.issued().await;
    for (what, a) in cases {
        let (st, e) = f.with_assertion(&a, &[]).await;
        assert_eq!(st, 401, "{what}: {e}");
        assert_eq!(e["error"], "invalid_client", "{what}: {e}");
    }
    // Replay: the same assertion twice.
    let a = f.assertion(&f.claims());
    assert_eq!(f.with_assertion(&a, &[]).await.0, 200);
    let (st, e) = f.with_assertion(&a, &[]).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed jti: {e}"
    );
    assert!(e["error_description"].as_str().unwrap().contains("replay"));
    assert_eq!(f.issued().await, before + 1, "only the one good request issued a token");
    let refused =
        f.s.client()
            .audit_search(&[("type", "token.refused".into())])
            .await
            .unwrap()
            .items
            .len();
    assert!(refused >= 15, "every refusal is audited ({refused})");
}

fn aws_lc_rs_hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // A forged HS256 signature keyed with the public key bytes (the classic confusion attack).
    let mut k = key.to_vec();
    k.extend_from_slice(msg);
    sigil_crypto::sha256(&k).to_vec()
}

#[tokio::test]
async fn bad_requests_get_precise_errors() {
    let Some(f) = fixture().await else { return };
    let basic = Some((f.secret_client.as_str(), f.secret.as_str()));
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("grant_type", "client_credentials"), ("resource", API)],
            Some((f.secret_client.as_str(), "sigil_cs_wrong")),
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "client_credentials"), ("resource", API)],
            Some(("cli_unknown", "sigil_cs_wrong")),
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "client_credentials"), ("resource", API)],
            None,
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "password"), ("resource", API)],
            basic,
            400,
            "unsupported_grant_type",
        ),
        (vec![("resource", API)], basic, 400, "invalid_request"),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
                ("resource", API),
            ],
            basic,
            400,
            "invalid_request",
        ),
        // RFC 8707 §2: a required resource that is missing is `invalid_target`.
        (vec![("grant_type", "client_credentials")], basic, 400, "invalid_target"),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("resource", "https://unknown.example"),
            ],
            basic,
            400,
            "invalid_target",
        ),
        (
            vec![("grant_type", "client_credentials"), ("resource", "not a uri")],
            basic,
            400,
            "invalid_target",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("resource", API),
                ("resource", "https://b.example"),
            ],
            basic,
            400,
            "invalid_target",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("resource", API),
                ("scope", "admin"),
            ],
            basic,
            400,
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("resource", API),
                ("scope", "read unheard-of"),
            ],
            basic,
            400,
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("resource", API),
                ("client_secret", f.secret.as_str()),
                ("client_id", f.secret_client.as_str()),
            ],
            basic,
            400,
            "invalid_request",
        ),
    ];
    let before = f.issued().await;
    for (form, auth, status, code) in cases {
        let (st, e, h) = f.post("/token", &form, auth).await;
        assert_eq!((st, e["error"].as_str()), (status, Some(code)), "{form:?}: {e}");
        assert_eq!(h["cache-control"], "no-store");
        if st == 401 {
            assert!(h.contains_key("www-authenticate"));
        }
    }
    // Wrong content type and an oversized body.
    let http = reqwest::Client::new();
    let r = http
        .post(f.token_url())
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = format!("grant_type=client_credentials&scope={}", "a".repeat(200_000));
    let r = http
        .post(f.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    // Two Authorization headers (a good one first): ambiguous, so malformed.
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", f.secret_client, f.secret))
    );
    let r = http
        .post(f.token_url())
        .header("authorization", &good)
        .header("authorization", "Basic Ym9ndXM6Ym9ndXM=")
        .form(&[("grant_type", "client_credentials"), ("resource", API)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    assert_eq!(f.issued().await, before, "no bad request issued a token");
}

#[tokio::test]
async fn metadata_and_jwks_verify_issued_tokens() {
    let Some(f) = fixture().await else { return };
    let meta: Value = reqwest::get(format!("{}/.well-known/oauth-authorization-server", f.s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], f.s.url.as_str());
    assert_eq!(meta["token_endpoint"], f.token_url());
    let same: Value = reqwest::get(format!("{}/.well-known/openid-configuration", f.s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta, same);
    // Without Sigil's own TLS listener no client can present a certificate: no mTLS advertised.
    assert!(
        !meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tls_client_auth"))
    );
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], false);
    assert_eq!(meta["request_uri_parameter_supported"], false);
    let jwks: sigil_crypto::Jwks = reqwest::get(meta["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, body) = f.with_assertion(&f.assertion(&f.claims()), &[]).await;
    let v = sigil_crypto::verify_compact(body["access_token"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(v.typ.as_deref(), Some("at+jwt"));
}

#[tokio::test]
async fn per_identity_token_lifetime_and_dpop_requirement() {
    let Some(f) = fixture().await else { return };
    let c = f.s.client();
    let basic = Some((f.secret_client.as_str(), f.secret.as_str()));
    let form = [("grant_type", "client_credentials"), ("resource", API)];
    c.update_identity(
        Family::Agents,
        "bot",
        &serde_json::from_value(json!({"token_ttl_seconds": 60})).unwrap(),
    )
    .await
    .unwrap();
    let (st, b, _) = f.post("/token", &form, basic).await;
    assert_eq!((st, b["expires_in"].as_u64()), (200, Some(60)), "{b}");
    // The server's maximum (1h by default) bounds what an identity may ask for.
    let err = c
        .update_identity(
            Family::Agents,
            "bot",
            &serde_json::from_value(json!({"token_ttl_seconds": 86400})).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{err}");
    let (_, b, _) = f.post("/token", &form, basic).await;
    assert_eq!(b["expires_in"], 60, "the refused change changed nothing");
    c.update_identity(
        Family::Agents,
        "bot",
        &serde_json::from_value(json!({"token_ttl_seconds": 3600})).unwrap(),
    )
    .await
    .unwrap();
    let (_, b, _) = f.post("/token", &form, basic).await;
    assert_eq!(b["expires_in"], 3600);
    assert!(
        c.update_identity(
            Family::Agents,
            "bot",
            &serde_json::from_value(json!({"token_ttl_seconds": 5})).unwrap()
        )
        .await
        .is_err()
    );
    // Requiring DPoP on the identity applies to all its clients.
    c.update_identity(
        Family::Agents,
        "bot",
        &serde_json::from_value(json!({"dpop_required": true, "token_ttl_seconds": null})).unwrap(),
    )
    .await
    .unwrap();
    let (st, e, _) = f.post("/token", &form, basic).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_dpop_proof")), "{e}");
    let (key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let (st, b, _) = dpop_post(
        &f,
        &f.secret_client,
        &f.secret,
        Some(&dpop_proof(&key, "POST", &f.token_url(), now(), None, None)),
    )
    .await;
    assert_eq!(
        (st, b["token_type"].as_str(), b["expires_in"].as_u64()),
        (200, Some("DPoP"), Some(300)),
        "{b}"
    );
}
