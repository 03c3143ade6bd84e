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

use serde_json::{Value, json};
use sigil_crypto::{Algorithm, PublicJwk, SigningKey, b64url};
use sigil_testkit::{Family, TestServer};

struct Fixture {
    s: TestServer,
    key: SigningKey,
    key_client: String,
    secret_client: String,
    secret: String,
}

const API: &str = "https://api.example.com";

async fn fixture() -> Option<Fixture> {
    let s = TestServer::start().await?;
    let c = s.client();
    c.create_user(&serde_json::from_value(json!({"username": "alice"})).unwrap())
        .await
        .unwrap();
    c.create_identity(
        Family::Agents,
        &serde_json::from_value(json!({"name": "bot", "owner": "alice", "ceiling": {"scopes": ["read", "write"]}}))
            .unwrap(),
    )
    .await
    .unwrap();
    c.create_resource(
        &serde_json::from_value(
            json!({"uri": API, "name": "api", "owner": "alice", "scopes": ["read", "write", "admin"]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let (key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let mut jwk = PublicJwk::from(&key.public_jwk());
    jwk.kid = Some("k1".into());
    let key_client = c
        .create_client(
            &serde_json::from_value(
                json!({"identity": "bot", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk]}}),
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .client_id;
    let sc = c
        .create_client(
            &serde_json::from_value(json!({"identity": "bot", "token_endpoint_auth_method": "client_secret_basic"}))
                .unwrap(),
        )
        .await
        .unwrap();
    Some(Fixture {
        s,
        key,
        key_client,
        secret_client: sc.client_id,
        secret: sc.client_secret.unwrap(),
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn jwt(header: &Value, claims: &Value, key: Option<&SigningKey>) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = key.map(|k| k.sign(input.as_bytes()).unwrap()).unwrap_or_default();
    format!("{input}.{}", b64url(&sig))
}

impl Fixture {
    fn token_url(&self) -> String {
        format!("{}/token", self.s.url)
    }

    fn claims(&self) -> Value {
        let id = &self.key_client;
        json!({"iss": id, "sub": id, "aud": self.token_url(), "iat": now(), "exp": now() + 60, "jti": b64url(&sigil_crypto::random_bytes::<12>().unwrap())})
    }

    fn assertion(&self, claims: &Value) -> String {
        jwt(
            &json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}),
            claims,
            Some(&self.key),
        )
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let http = reqwest::Client::new();
        let mut req = http.post(format!("{}{path}", self.s.url)).form(form);
        if let Some((u, p)) = basic {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.json().await.unwrap_or(Value::Null), headers)
    }

    async fn with_assertion(&self, a: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("resource", API),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", a),
        ];
        form.extend_from_slice(extra);
        let (s, v, _) = self.post("/token", &form, None).await;
        (s, v)
    }

    async fn issued(&self) -> usize {
        let c = self.s.client();
        c.audit_search(&[("type", "token.issued".into())])
            .await
            .unwrap()
            .items
            .len()
    }
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

    // Introspection by the secret client (as a resource server would), then revocation.
    let (st, i, _) = f
        .post("/introspect", &[("token", token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(st, 200);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["scope"], "read");
    let (st, _, _) = f
        .post("/revoke", &[("token", token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(st, 200);
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
    let (_, i, _) = f
        .post("/introspect", &[("token", &token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(i["active"], false);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c.change_status(Family::Agents, "bot", "resume", &Default::default())
        .await
        .unwrap();
    let (_, i, _) = f
        .post("/introspect", &[("token", &token)], Some((&f.secret_client, &f.secret)))
        .await;
    assert_eq!(i["active"], false, "resuming does not bring old tokens back");
    let (st, _) = f.with_assertion(&f.assertion(&f.claims()), &[]).await;
    assert_eq!(st, 200);
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
    assert!(refused >= 12, "every refusal is audited ({refused})");
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
        (
            vec![("grant_type", "client_credentials")],
            basic,
            400,
            "invalid_request",
        ),
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

fn dpop_proof(
    key: &SigningKey,
    htm: &str,
    htu: &str,
    iat: i64,
    nonce: Option<&str>,
    extra_jwk: Option<(&str, &str)>,
) -> String {
    let mut jwk = serde_json::to_value(PublicJwk::from(&key.public_jwk())).unwrap();
    let obj = jwk.as_object_mut().unwrap();
    obj.remove("kid");
    obj.remove("alg");
    obj.remove("use");
    if let Some((k, v)) = extra_jwk {
        obj.insert(k.into(), json!(v));
    }
    let mut claims =
        json!({"jti": b64url(&sigil_crypto::random_bytes::<12>().unwrap()), "htm": htm, "htu": htu, "iat": iat});
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    jwt(
        &json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}),
        &claims,
        Some(key),
    )
}

async fn dpop_post(
    f: &Fixture,
    client: &str,
    secret: &str,
    proof: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let http = reqwest::Client::new();
    let mut req = http
        .post(f.token_url())
        .form(&[("grant_type", "client_credentials"), ("resource", API)])
        .basic_auth(client, Some(secret));
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

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

#[tokio::test]
async fn dynamic_client_registration_rfc7591_and_7592() {
    let Some(f) = fixture().await else { return };
    let c = f.s.client();
    let iat = c
        .create_registration_token(&sigil_proto::admin::CreateRegistrationToken {
            owner: "alice".into(),
            identity: None,
            ttl_seconds: Some(600),
        })
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let reg = format!("{}/register", f.s.url);
    // No or wrong initial access token: 401 invalid_token.
    let r = http.post(&reg).json(&json!({"client_name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let r = http
        .post(&reg)
        .bearer_auth("sigil_iat_nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
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
    ] {
        let r = http.post(&reg).bearer_auth(&iat.token).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], error, "{bad}");
    }
    let before = c.list_identities(Family::Agents, &[]).await.unwrap().items.len();
    assert_eq!(before, 1, "refused registrations created no identity");

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

    // RFC 7592: read, update, delete with the registration access token only. Each read and
    // update answers with a new token (§3 requires one in the response; Sigil keeps only
    // hashes), and the old one stops working (§2.1).
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
    let r = http
        .put(uri)
        .bearer_auth(&rat)
        .json(&json!({"client_id": id, "client_name": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["client_name"], "Renamed");
    let rat = updated["registration_access_token"].as_str().unwrap().to_owned();
    let rat = rat.as_str();
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
    // The server's maximum (1h by default) caps what an identity asks for.
    c.update_identity(
        Family::Agents,
        "bot",
        &serde_json::from_value(json!({"token_ttl_seconds": 86400})).unwrap(),
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
