//! The shared fixture of the delegation tests: a server with users, agents, clients and a
//! resource, and a browser that drives the sign-in and consent pages.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test support; each test file uses part of it"
)]

use serde_json::{Value, json};
use sigil_crypto::b64url;
use sigil_testkit::{Family, TestServer};

pub const API: &str = "https://hr.example.com";
pub const CB: &str = "http://127.0.0.1:9/callback";
pub const PASSWORD: &str = "correct horse battery";
pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

pub struct Fx {
    pub s: TestServer,
    /// The public client of the `assistant` agent (authorization code + PKCE).
    pub public: String,
    /// Confidential clients (id, secret) of the agents that exchange tokens.
    pub assistant: (String, String),
    pub helper: (String, String),
    pub intern: (String, String),
}

pub async fn secret_client(s: &TestServer, identity: &str) -> (String, String) {
    let v = s
        .client()
        .create_client(
            &serde_json::from_value(json!({"identity": identity, "token_endpoint_auth_method": "client_secret_basic"}))
                .unwrap(),
        )
        .await
        .unwrap();
    (v.client_id, v.client_secret.unwrap())
}

pub async fn fixture() -> Option<Fx> {
    fixture_with("").await
}

pub async fn fixture_with(config: &str) -> Option<Fx> {
    let s = TestServer::start_with(sigil_testkit::Options {
        config_toml: Some(config.to_owned()),
        ..Default::default()
    })
    .await?;
    let c = s.client();
    for u in ["alice", "bob"] {
        c.create_user(&serde_json::from_value(json!({"username": u})).unwrap())
            .await
            .unwrap();
    }
    c.set_password("alice", PASSWORD).await.unwrap();
    for (name, scopes) in [
        ("assistant", json!(["read", "write"])),
        ("helper", json!(["read", "write"])),
        ("intern", json!(["read"])),
    ] {
        c.create_identity(
            Family::Agents,
            &serde_json::from_value(json!({"name": name, "owner": "bob", "ceiling": {"scopes": scopes}})).unwrap(),
        )
        .await
        .unwrap();
    }
    c.create_resource(
        &serde_json::from_value(
            json!({"uri": API, "name": "hr", "owner": "bob", "scopes": ["read", "write", "admin"]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let public = c
        .create_client(
            &serde_json::from_value(
                json!({"identity": "assistant", "token_endpoint_auth_method": "none", "redirect_uris": [CB]}),
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .client_id;
    Some(Fx {
        assistant: secret_client(&s, "assistant").await,
        helper: secret_client(&s, "helper").await,
        intern: secret_client(&s, "intern").await,
        public,
        s,
    })
}

pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'"),
    )
}

pub fn pkce() -> (String, String) {
    let verifier = b64url(&sigil_crypto::random_bytes::<32>().unwrap());
    let challenge = b64url(&sigil_crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

pub fn query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

pub fn param(url: &str, k: &str) -> Option<String> {
    query(url).into_iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in browser looking at the consent page.
pub struct Consent {
    pub cookie: String,
    pub request: String,
    pub csrf: String,
    pub ticket: String,
    pub html: String,
}

/// What a browser at the sign-in and consent pages ends up with.
pub enum Outcome {
    /// A redirect to the client (the Location header).
    Redirect(String),
    /// A page shown instead, with its status.
    Page(u16, String),
}

impl Fx {
    pub fn authorize_url(&self, params: &[(&str, &str)]) -> String {
        let mut u = url::Url::parse(&format!("{}/authorize", self.s.url)).unwrap();
        u.query_pairs_mut().extend_pairs(params);
        u.to_string()
    }

    pub fn standard(&self, challenge: &str) -> Vec<(String, String)> {
        [
            ("response_type", "code"),
            ("client_id", self.public.as_str()),
            ("redirect_uri", CB),
            ("scope", "read write"),
            ("state", "xyz-123"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("resource", API),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// The standard request asking for `scope` instead.
    pub fn with_scope(&self, challenge: &str, scope: &str) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = self
            .standard(challenge)
            .into_iter()
            .filter(|(k, _)| k != "scope")
            .collect();
        params.push(("scope".into(), scope.into()));
        params
    }

    /// Drives the pages like a browser: GET /authorize, sign in, then allow or deny.
    pub async fn browse(&self, params: &[(String, String)], password: &str, decision: &str) -> Outcome {
        self.browse_as("alice", params, password, decision).await
    }

    pub async fn browse_as(&self, user: &str, params: &[(String, String)], password: &str, decision: &str) -> Outcome {
        match self.sign_in_as(user, params, password).await {
            Ok(consent) => self.decide(&consent, decision).await,
            Err(o) => o,
        }
    }

    /// GET /authorize and sign in as alice: the consent page, or what was shown or redirected
    /// instead.
    pub async fn sign_in(&self, params: &[(String, String)], password: &str) -> Result<Consent, Outcome> {
        self.sign_in_as("alice", params, password).await
    }

    pub async fn sign_in_as(
        &self,
        user: &str,
        params: &[(String, String)],
        password: &str,
    ) -> Result<Consent, Outcome> {
        let http = no_redirects();
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let resp = http.get(self.authorize_url(&pairs)).send().await.unwrap();
        if resp.status().is_redirection() {
            return Err(Outcome::Redirect(
                resp.headers()["location"].to_str().unwrap().to_owned(),
            ));
        }
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let html = resp.text().await.unwrap();
        if status != 200 {
            return Err(Outcome::Page(status, html));
        }
        let cookie = cookie.expect("the sign-in page sets the CSRF cookie");
        let request = hidden(&html, "request").unwrap();
        let csrf = hidden(&html, "csrf").unwrap();
        let resp = http
            .post(format!("{}/authorize/login", self.s.url))
            .header("cookie", &cookie)
            .form(&[
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("username", user),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            return Err(Outcome::Redirect(
                resp.headers()["location"].to_str().unwrap().to_owned(),
            ));
        }
        let html = resp.text().await.unwrap();
        // A refused sign-in is the form again (200), without a consent ticket.
        let Some(ticket) = hidden(&html, "ticket").filter(|_| status == 200) else {
            return Err(Outcome::Page(status, html));
        };
        // The API the agent would act at, or (a sign-in only) that it asks for no API at all.
        assert!(
            html.contains("assistant") && (html.contains("hr.example.com") || html.contains("no access to any API")),
            "{html}"
        );
        Ok(Consent {
            ticket,
            cookie,
            request,
            csrf,
            html,
        })
    }

    pub async fn decide(&self, c: &Consent, decision: &str) -> Outcome {
        let resp = no_redirects()
            .post(format!("{}/authorize/consent", self.s.url))
            .header("cookie", &c.cookie)
            .form(&[
                ("request", c.request.as_str()),
                ("csrf", c.csrf.as_str()),
                ("ticket", c.ticket.as_str()),
                ("decision", decision),
            ])
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            303 => Outcome::Redirect(resp.headers()["location"].to_str().unwrap().to_owned()),
            s => Outcome::Page(s, resp.text().await.unwrap()),
        }
    }

    pub async fn code(&self, challenge: &str) -> String {
        match self.browse(&self.standard(challenge), PASSWORD, "allow").await {
            Outcome::Redirect(l) => {
                assert!(l.starts_with(CB), "{l}");
                assert_eq!(param(&l, "state").as_deref(), Some("xyz-123"));
                assert_eq!(param(&l, "iss").as_deref(), Some(self.s.url.as_str()));
                param(&l, "code").expect("a code")
            }
            Outcome::Page(s, html) => panic!("no redirect: {s} {html}"),
        }
    }

    pub async fn token(&self, form: &[(&str, &str)], basic: Option<&(String, String)>) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(format!("{}/token", self.s.url)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// The public client refreshes with `refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &self.public),
            ],
            None,
        )
        .await
    }

    /// A refresh that names a scope (narrowing, or asking for more than the grant).
    pub async fn refresh_with_scope(&self, refresh_token: &str, scope: &str) -> (u16, Value) {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &self.public),
                ("scope", scope),
            ],
            None,
        )
        .await
    }

    pub async fn redeem(&self, code: &str, verifier: &str) -> (u16, Value) {
        self.token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", CB),
                ("code_verifier", verifier),
                ("client_id", &self.public),
            ],
            None,
        )
        .await
    }

    pub async fn user_token(&self) -> Value {
        let (verifier, challenge) = pkce();
        let code = self.code(&challenge).await;
        let (s, v) = self.redeem(&code, &verifier).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn exchange(&self, client: &(String, String), subject: &str, scope: Option<&str>) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", AT),
            ("resource", API),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.token(&form, Some(client)).await
    }

    pub async fn introspect(&self, token: &str) -> Value {
        self.s.client().introspect_token(token).await.unwrap()
    }

    pub async fn id_of(&self, agent: &str) -> String {
        self.s
            .client()
            .get_identity(Family::Agents, agent)
            .await
            .unwrap()
            .id
            .to_string()
    }
}

pub fn header(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&base64_url(header)).unwrap()
}

pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64_url(payload)).unwrap()
}

pub fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}
