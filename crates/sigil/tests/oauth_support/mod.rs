//! The shared fixture of the OAuth token service tests: a server with a user, an agent, a
//! resource, a private_key_jwt client and a client_secret_basic client.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test support; each test file uses part of it"
)]

use serde_json::{Value, json};
use sigil_crypto::{Algorithm, PublicJwk, SigningKey, b64url};
use sigil_testkit::{Family, TestServer};

pub struct Fixture {
    pub s: TestServer,
    pub key: SigningKey,
    pub key_client: String,
    pub secret_client: String,
    pub secret: String,
}

pub const API: &str = "https://api.example.com";

pub async fn fixture() -> Option<Fixture> {
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

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn jwt(header: &Value, claims: &Value, key: Option<&SigningKey>) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = key.map(|k| k.sign(input.as_bytes()).unwrap()).unwrap_or_default();
    format!("{input}.{}", b64url(&sig))
}

impl Fixture {
    pub fn token_url(&self) -> String {
        format!("{}/token", self.s.url)
    }

    pub fn claims(&self) -> Value {
        let id = &self.key_client;
        json!({"iss": id, "sub": id, "aud": self.token_url(), "iat": now(), "exp": now() + 60, "jti": b64url(&sigil_crypto::random_bytes::<12>().unwrap())})
    }

    pub fn assertion(&self, claims: &Value) -> String {
        jwt(
            &json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}),
            claims,
            Some(&self.key),
        )
    }

    pub async fn post(
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

    pub async fn with_assertion(&self, a: &str, extra: &[(&str, &str)]) -> (u16, Value) {
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

    pub async fn issued(&self) -> usize {
        let c = self.s.client();
        c.audit_search(&[("type", "token.issued".into())])
            .await
            .unwrap()
            .items
            .len()
    }
}

/// A DPoP proof (RFC 9449 §4.2) signed by `key`.
pub fn dpop_proof(
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

pub async fn dpop_post(
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
