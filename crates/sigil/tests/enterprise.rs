//! Enterprise identity: an external IdP's ID token as a token exchange subject, and ID-JAG
//! (draft-ietf-oauth-identity-assertion-authz-grant) with one Sigil as the IdP and another as
//! the resource authorization server.

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

const API: &str = "https://hr.example.com";
const IDP: &str = "https://idp.example.com";
const CB: &str = "http://127.0.0.1:9/callback";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
const REFRESH: &str = "urn:ietf:params:oauth:token-type:refresh_token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const JWT_BEARER_CLIENT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn jwt(key: &SigningKey, typ: &str, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url(
            json!({"alg": "EdDSA", "kid": "idp-1", "typ": typ})
                .to_string()
                .as_bytes()
        ),
        b64url(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64url(&key.sign(input.as_bytes()).unwrap()))
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn header(token: &str) -> Value {
    use base64::Engine;
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

async fn token(s: &TestServer, form: &[(&str, &str)], basic: &(String, String)) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/token", s.url))
        .basic_auth(&basic.0, Some(&basic.1))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// Alice, an agent with a confidential client (returned), and the HR resource.
async fn seed(s: &TestServer, client: Value) -> (String, String) {
    let c = s.client();
    c.create_user(&serde_json::from_value(json!({"username": "alice", "email": "alice@example.com"})).unwrap())
        .await
        .unwrap();
    c.create_identity(
        Family::Agents,
        &serde_json::from_value(
            json!({"name": "assistant", "owner": "alice", "ceiling": {"scopes": ["read", "write"]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    c.create_resource(
        &serde_json::from_value(
            json!({"uri": API, "name": "hr", "owner": "alice", "scopes": ["read", "write", "admin"]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let mut body = json!({"identity": "assistant", "token_endpoint_auth_method": "client_secret_basic"});
    body.as_object_mut()
        .unwrap()
        .extend(client.as_object().unwrap().clone());
    let v = c.create_client(&serde_json::from_value(body).unwrap()).await.unwrap();
    (v.client_id, v.client_secret.unwrap())
}

#[tokio::test]
async fn a_trusted_idps_id_token_is_a_token_exchange_subject() {
    let Some(s) = TestServer::start().await else { return };
    let client = seed(
        &s,
        json!({"id_jag_audiences": [{"audience": "https://as.example.com"}]}),
    )
    .await;
    let (idp_key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let mut jwk = PublicJwk::from(&idp_key.public_jwk());
    jwk.kid = Some("idp-1".into());
    // A key that could never verify anything is refused when the issuer is added.
    let unusable = json!({"issuer": IDP, "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB"}]}});
    assert!(
        s.client()
            .add_trusted_issuer(&serde_json::from_value(unusable).unwrap())
            .await
            .is_err()
    );
    s.client()
        .add_trusted_issuer(
            &serde_json::from_value(
                json!({"issuer": IDP, "jwks": {"keys": [jwk]}, "username_claim": "preferred_username"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let id_token = |over: Value| {
        let mut c = json!({"iss": IDP, "sub": "00u1", "aud": client.0, "iat": now(), "exp": now() + 300, "preferred_username": "alice", "jti": b64url(&sigil_crypto::random_bytes::<8>().unwrap())});
        c.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
        jwt(&idp_key, "JWT", &c)
    };
    let exchange_as = |subject: String, subject_type: &'static str| {
        let s = &s;
        let client = client.clone();
        async move {
            token(
                s,
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &subject),
                    ("subject_token_type", subject_type),
                    ("resource", API),
                    ("scope", "read"),
                ],
                &client,
            )
            .await
        }
    };
    let exchange = |subject: String| exchange_as(subject, ID_TOKEN);
    let (st, v) = exchange(id_token(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    let c = claims(v["access_token"].as_str().unwrap());
    let alice = s.client().get_user("alice").await.unwrap().id.to_string();
    let agent = s
        .client()
        .get_identity(Family::Agents, "assistant")
        .await
        .unwrap()
        .id
        .to_string();
    assert_eq!(c["sub"], alice.as_str());
    assert_eq!(c["act"]["sub"], agent.as_str());
    assert!(c["exp"].as_i64().unwrap() <= now() + 300);
    // A subject token whose may_act (RFC 8693 §4.4) names this agent and client is honoured.
    let (st, v) = exchange(id_token(json!({"may_act": {"sub": agent, "client_id": client.0}}))).await;
    assert_eq!(st, 200, "{v}");

    // The actor may prove itself with a private_key_jwt-style assertion of its own identity
    // (actor_token_type jwt), checked as RFC 7523 §3 says and spent like a client assertion.
    let (agent_key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let mut agent_jwk = PublicJwk::from(&agent_key.public_jwk());
    agent_jwk.kid = Some("idp-1".into());
    let keyed = s
        .client()
        .create_client(
            &serde_json::from_value(json!({"identity": "assistant", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [agent_jwk]}}))
                .unwrap(),
        )
        .await
        .unwrap()
        .client_id;
    let actor_assertion = |over: Value| {
        let mut c = json!({"iss": keyed, "sub": keyed, "aud": format!("{}/token", s.url), "iat": now(), "exp": now() + 60, "jti": b64url(&sigil_crypto::random_bytes::<8>().unwrap())});
        c.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
        jwt(&agent_key, "JWT", &c)
    };
    let with_actor = |subject: String, actor: String| {
        let s = &s;
        let client = client.clone();
        async move {
            let form = [
                ("grant_type", EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", ID_TOKEN),
                ("actor_token", actor.as_str()),
                ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("resource", API),
                ("scope", "read"),
            ];
            token(s, &form, &client).await
        }
    };
    let spent = actor_assertion(json!({}));
    let (st, v) = with_actor(id_token(json!({})), spent.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        claims(v["access_token"].as_str().unwrap())["act"]["sub"],
        agent.as_str()
    );
    for bad in [
        spent,                                                            // replayed
        actor_assertion(json!({"aud": "https://elsewhere.example.com"})), // another audience
        actor_assertion(json!({"exp": now() - 120})),                     // expired
        "not.a.jwt".to_owned(),
    ] {
        let (st, v) = with_actor(id_token(json!({})), bad).await;
        assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    }

    // A trusted issuer's token names no resource of Sigil's: the exchange must (RFC 8707 §2).
    let subject = id_token(json!({}));
    let untargeted = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", ID_TOKEN),
        ("scope", "read"),
    ];
    let (st, v) = token(&s, &untargeted, &client).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_target")), "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("resource is required"),
        "{v}"
    );

    // The agent's client authenticates with an assertion that is also its actor token: one
    // proof, spent once, by the exchange.
    let both = actor_assertion(json!({}));
    let subject = id_token(json!({"aud": keyed}));
    let self_acting = |assertion: String| {
        let form = [
            ("grant_type", EXCHANGE.to_owned()),
            ("subject_token", subject.clone()),
            ("subject_token_type", ID_TOKEN.to_owned()),
            ("actor_token", assertion.clone()),
            ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt".to_owned()),
            ("resource", API.to_owned()),
            ("scope", "read".to_owned()),
            ("client_id", keyed.clone()),
            ("client_assertion_type", JWT_BEARER_CLIENT.to_owned()),
            ("client_assertion", assertion),
        ];
        let url = format!("{}/token", s.url);
        async move {
            let resp = reqwest::Client::new().post(url).form(&form).send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (st, v) = self_acting(both.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        claims(v["access_token"].as_str().unwrap())["act"]["sub"],
        agent.as_str()
    );
    let (st, v) = self_acting(both).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")), "spent: {v}");

    // Bad subjects: another audience, expired, unknown user, a forged signature, an issuer
    // nobody trusts. Each is invalid_request (RFC 8693 §2.2.2), and nothing is issued.
    let (other_key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let forged = jwt(
        &other_key,
        "JWT",
        &json!({"iss": IDP, "sub": "x", "aud": client.0, "exp": now() + 60, "preferred_username": "alice"}),
    );
    let untrusted = jwt(
        &idp_key,
        "JWT",
        &json!({"iss": "https://evil.example.com", "sub": "x", "aud": client.0, "exp": now() + 60, "preferred_username": "alice"}),
    );
    for bad in [
        id_token(json!({"aud": "someone-else"})),
        id_token(json!({"exp": now() - 120})),
        id_token(json!({"preferred_username": "mallory"})),
        forged,
        untrusted,
        // may_act naming another actor or another client, or unreadable.
        id_token(json!({"may_act": {"sub": "agt_01SOMEONEELSE"}})),
        id_token(json!({"may_act": {"sub": agent, "client_id": "another-client"}})),
        // ... or the same sub as another issuer's (RFC 8693 §4.1: iss and sub name a party).
        id_token(json!({"may_act": {"sub": agent, "iss": "https://elsewhere.example.com"}})),
        id_token(json!({"may_act": "anyone"})),
        // Already delegated at the other issuer: its chain cannot be continued here.
        id_token(json!({"act": {"sub": "idp-agent-7"}})),
        // Issued to another party (OIDC Core §3.1.3.7): several audiences without azp, or
        // an azp that is not this client.
        id_token(json!({"aud": [client.0, "other-rp"]})),
        id_token(json!({"aud": [client.0, "other-rp"], "azp": "other-rp"})),
    ] {
        let (st, v) = exchange(bad).await;
        assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    }
    let exchanged = s
        .client()
        .audit_search(&[("type", "token.exchanged".into())])
        .await
        .unwrap();
    assert_eq!(exchanged.items.len(), 4, "the four exchanges that succeeded above");
    // As a generic JWT or access token, only a plain JWT or an RFC 9068 access token passes:
    // a logout token, a security event, a DPoP proof or an ID-JAG is another kind of JWT.
    let typed = |typ: &str| {
        let c = json!({"iss": IDP, "sub": "00u1", "aud": client.0, "iat": now(), "exp": now() + 300, "preferred_username": "alice"});
        jwt(&idp_key, typ, &c)
    };
    for subject_type in [
        "urn:ietf:params:oauth:token-type:jwt",
        "urn:ietf:params:oauth:token-type:access_token",
    ] {
        for typ in ["logout+jwt", "secevent+jwt", "dpop+jwt", "oauth-id-jag+jwt; charset=x"] {
            let (st, v) = exchange_as(typed(typ), subject_type).await;
            assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")), "{typ}: {v}");
        }
        for typ in ["JWT", "at+jwt", "application/at+jwt"] {
            let (st, v) = exchange_as(typed(typ), subject_type).await;
            assert_eq!(st, 200, "{typ}: {v}");
        }
    }
    // may_act binds an ID-JAG exchange too (RFC 8693 §4.4), and so do the actor token's rules.
    let id_jag = |subject: String, extra: Vec<(&'static str, &'static str)>| {
        let s = &s;
        let client = client.clone();
        async move {
            let mut form = vec![
                ("grant_type", EXCHANGE),
                ("requested_token_type", ID_JAG),
                ("audience", "https://as.example.com"),
                ("subject_token", subject.as_str()),
                ("subject_token_type", ID_TOKEN),
            ];
            form.extend(extra);
            token(s, &form, &client).await
        }
    };
    let (st, v) = id_jag(id_token(json!({})), vec![]).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = id_jag(id_token(json!({"may_act": {"sub": "agt_01SOMEONEELSE"}})), vec![]).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    for actor in [
        vec![
            ("actor_token", "garbage"),
            ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ],
        vec![("actor_token_type", "urn:ietf:params:oauth:token-type:jwt")],
        vec![("actor_token", "garbage")],
    ] {
        let (st, v) = id_jag(id_token(json!({})), actor.clone()).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (400, Some("invalid_request")),
            "{actor:?}: {v}"
        );
    }
}

/// Alice signs in at the IdP Sigil through a confidential client; returns its refresh token.
async fn refresh_token_at(s: &TestServer, client: &(String, String)) -> String {
    sign_in_at(s, client, "read").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The same, asking for `openid`: returns the ID token.
async fn id_token_at(s: &TestServer, client: &(String, String)) -> String {
    sign_in_at(s, client, "openid read").await["id_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs the code flow at `s` for alice with `scope`; returns the token response.
async fn sign_in_at(s: &TestServer, client: &(String, String), scope: &str) -> Value {
    sign_in_for(s, client, scope, Some(API)).await
}

/// Alice signs in for `resource`, or (without one) only signs in.
async fn sign_in_for(s: &TestServer, client: &(String, String), scope: &str, resource: Option<&str>) -> Value {
    s.client().set_password("alice", "correct horse battery").await.unwrap();
    let verifier = b64url(&sigil_crypto::random_bytes::<32>().unwrap());
    let challenge = b64url(&sigil_crypto::sha256(verifier.as_bytes()));
    let mut u = url::Url::parse(&format!("{}/authorize", s.url)).unwrap();
    u.query_pairs_mut().extend_pairs([
        ("response_type", "code"),
        ("client_id", client.0.as_str()),
        ("redirect_uri", CB),
        ("scope", scope),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    if let Some(r) = resource {
        u.query_pairs_mut().append_pair("resource", r);
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(u).send().await.unwrap();
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = resp.text().await.unwrap();
    let hidden = |html: &str, name: &str| {
        let m = format!("name=\"{name}\" value=\"");
        let start = html.find(&m).unwrap() + m.len();
        html[start..start + html[start..].find('"').unwrap()].replace("&amp;", "&")
    };
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let html = http
        .post(format!("{}/authorize/login", s.url))
        .header("cookie", &cookie)
        .form(&[
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", "alice"),
            ("password", "correct horse battery"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ticket = hidden(&html, "ticket");
    let resp = http
        .post(format!("{}/authorize/consent", s.url))
        .header("cookie", &cookie)
        .form(&[
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("ticket", ticket.as_str()),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (st, v) = token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", &verifier),
        ],
        client,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v
}

#[tokio::test]
async fn id_jag_from_one_sigil_is_redeemed_at_another() {
    let Some(idp) = TestServer::start().await else { return };
    let Some(ras) = TestServer::start().await else { return };
    // The resource authorization server knows the client under its own id.
    let at_ras = seed(&ras, json!({})).await;
    let at_idp = seed(
        &idp,
        json!({"redirect_uris": [CB], "id_jag_audiences": [{"audience": ras.url, "client_id": at_ras.0}]}),
    )
    .await;
    ras.client()
        .add_trusted_issuer(
            &serde_json::from_value(json!({"issuer": idp.url, "jwks_uri": format!("{}/.well-known/jwks.json", idp.url), "username_claim": "preferred_username", "accept_id_jag": true}))
                .unwrap(),
        )
        .await
        .unwrap();
    let refresh = refresh_token_at(&idp, &at_idp).await;

    // At the IdP: refresh token → ID-JAG for the resource authorization server.
    let ask_for = |audience: String, resource: &'static str, scope: &'static str| {
        let idp = &idp;
        let at_idp = at_idp.clone();
        let refresh = refresh.clone();
        async move {
            token(
                idp,
                &[
                    ("grant_type", EXCHANGE),
                    ("requested_token_type", ID_JAG),
                    ("audience", &audience),
                    ("resource", resource),
                    ("scope", scope),
                    ("subject_token", &refresh),
                    ("subject_token_type", REFRESH),
                ],
                &at_idp,
            )
            .await
        }
    };
    let ask = |audience: String| ask_for(audience, API, "read");
    let (st, v) = ask(ras.url.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["issued_token_type"], ID_JAG);
    assert_eq!(v["token_type"], "N_A");
    let grant = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(header(&grant)["typ"], "oauth-id-jag+jwt");
    let g = claims(&grant);
    assert_eq!(g["iss"], idp.url.as_str());
    assert_eq!(g["aud"], ras.url.as_str());
    assert_eq!(g["client_id"], at_ras.0.as_str());
    assert_eq!(g["resource"], API);
    assert_eq!(g["email"], "alice@example.com");
    let (st, v) = ask("https://not-allowed.example.com".into()).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_target")), "{v}");
    // The refresh token bounds what an ID-JAG made from it may ask (draft §4.3): its consented
    // scope ("read") and resource; and a resource must be an RFC 8707 resource indicator.
    for (resource, scope, error) in [
        (API, "read write", "invalid_scope"),
        ("https://other.example.com/api", "read", "invalid_target"),
        ("https://hr.example.com/#frag", "read", "invalid_target"),
        ("api/v1", "read", "invalid_target"),
    ] {
        let (st, v) = ask_for(ras.url.clone(), resource, scope).await;
        assert_eq!((st, v["error"].as_str()), (400, Some(error)), "{resource} {scope}: {v}");
    }

    // At the resource authorization server: jwt-bearer grant → access token for alice, acted
    // on by the client's agent there; the policy narrows to the agent's ceiling.
    let redeem = |assertion: String, client: (String, String)| {
        let ras = &ras;
        async move { token(ras, &[("grant_type", JWT_BEARER), ("assertion", &assertion)], &client).await }
    };
    let (st, v) = redeem(grant.clone(), at_ras.clone()).await;
    assert_eq!(st, 200, "{v}");
    let c = claims(v["access_token"].as_str().unwrap());
    let alice_there = ras.client().get_user("alice").await.unwrap().id.to_string();
    assert_eq!(c["sub"], alice_there.as_str());
    assert_eq!(c["aud"], API);
    assert_eq!(c["scope"], "read");
    assert!(v.get("refresh_token").is_none());

    // Replayed, for another client, not an ID-JAG, or from an issuer not trusted for ID-JAGs.
    let (st, v) = redeem(grant.clone(), at_ras.clone()).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_grant")), "replay: {v}");
    let other = {
        let v = ras
            .client()
            .create_client(
                &serde_json::from_value(
                    json!({"identity": "assistant", "token_endpoint_auth_method": "client_secret_basic"}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        (v.client_id, v.client_secret.unwrap())
    };
    let (_, v) = ask(ras.url.clone()).await;
    let fresh = v["access_token"].as_str().unwrap().to_owned();
    let (st, v) = redeem(fresh.clone(), other).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "other client: {v}"
    );
    let (st, v) = redeem(fresh, at_ras.clone()).await;
    assert_eq!(st, 200, "the refused attempt did not spend it: {v}");
    // Sigil's own ID token, issued to this client, is a subject for an ID-JAG too; one issued
    // to another client is not.
    let id_token = id_token_at(&idp, &at_idp).await;
    let id_jag = |subject: String, client: (String, String)| {
        let idp = &idp;
        let ras_url = ras.url.clone();
        async move {
            token(
                idp,
                &[
                    ("grant_type", EXCHANGE),
                    ("requested_token_type", ID_JAG),
                    ("audience", &ras_url),
                    ("subject_token", &subject),
                    ("subject_token_type", ID_TOKEN),
                ],
                &client,
            )
            .await
        }
    };
    // It is not a subject for an access token: it says who signed in, not what she allowed.
    let (st, v) = token(
        &idp,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &id_token),
            ("subject_token_type", ID_TOKEN),
            ("resource", API),
        ],
        &at_idp,
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    let (st, v) = id_jag(id_token.clone(), at_idp.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        claims(v["access_token"].as_str().unwrap())["sub"],
        claims(&id_token)["sub"]
    );
    let stranger = {
        let v = idp
            .client()
            .create_client(
                &serde_json::from_value(json!({"identity": "assistant", "token_endpoint_auth_method": "client_secret_basic", "id_jag_audiences": [{"audience": ras.url}]}))
                    .unwrap(),
            )
            .await
            .unwrap();
        (v.client_id, v.client_secret.unwrap())
    };
    let (st, v) = id_jag(id_token, stranger).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");

    let idp_access = {
        let (_, v) = token(
            &idp,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            &at_idp,
        )
        .await;
        v["access_token"].as_str().unwrap().to_owned()
    };
    let (st, v) = redeem(idp_access, at_ras.clone()).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "not an ID-JAG: {v}"
    );
    // A sign-in's refresh token (no API consented) starts an ID-JAG as its ID token would:
    // its UserInfo scopes are Sigil's own, not a bound on what the other server grants.
    let sign_in = sign_in_for(&idp, &at_idp, "openid profile", None).await;
    let (st, v) = token(
        &idp,
        &[
            ("grant_type", EXCHANGE),
            ("requested_token_type", ID_JAG),
            ("audience", &ras.url),
            ("subject_token", sign_in["refresh_token"].as_str().unwrap()),
            ("subject_token_type", REFRESH),
        ],
        &at_idp,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let g = claims(v["access_token"].as_str().unwrap());
    assert!(g.get("scope").is_none() && g.get("resource").is_none(), "{g}");
}

/// An ID-JAG that says someone already acts for the user is refused, as such a subject token is
/// at token exchange: the other issuer's actor chain can be neither checked nor continued.
#[tokio::test]
async fn an_id_jag_carrying_act_is_refused() {
    let Some(s) = TestServer::start().await else { return };
    let client = seed(&s, json!({})).await;
    let (idp_key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
    let mut jwk = PublicJwk::from(&idp_key.public_jwk());
    jwk.kid = Some("idp-1".into());
    s.client()
        .add_trusted_issuer(
            &serde_json::from_value(json!({"issuer": IDP, "jwks": {"keys": [jwk]}, "username_claim": "preferred_username", "accept_id_jag": true}))
                .unwrap(),
        )
        .await
        .unwrap();
    let id_jag = |over: Value| {
        let mut c = json!({"iss": IDP, "sub": "00u1", "aud": s.url, "client_id": client.0, "resource": API,
            "scope": "read", "iat": now(), "exp": now() + 120, "preferred_username": "alice",
            "jti": b64url(&sigil_crypto::random_bytes::<8>().unwrap())});
        c.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
        jwt(&idp_key, "oauth-id-jag+jwt", &c)
    };
    let redeem = |assertion: String| {
        let (s, client) = (&s, client.clone());
        async move { token(s, &[("grant_type", JWT_BEARER), ("assertion", &assertion)], &client).await }
    };
    let (st, v) = redeem(id_jag(json!({"act": {"sub": "idp-agent-7"}}))).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (st, v) = redeem(id_jag(json!({}))).await;
    assert_eq!(st, 200, "the same ID-JAG without act is redeemed: {v}");
}
