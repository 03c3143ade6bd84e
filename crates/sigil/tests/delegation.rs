//! Delegation end to end: a user signs in and consents at /authorize, the client redeems the
//! code with PKCE, refresh tokens rotate with reuse detection, ID tokens; token exchange is in
//! `exchange.rs`.

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
use sigil_testkit::Family;

/// Suspending a user ends her tokens and grants; resuming her does not bring them back.
#[tokio::test]
async fn a_user_suspension_ends_her_tokens_for_good() {
    let Some(fx) = fixture().await else { return };
    let t = fx.user_token().await;
    let (access, refresh) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let c = fx.s.client();
    let status = |s: &str| serde_json::from_value(json!({ "status": s })).unwrap();
    c.update_user("alice", &status("suspended")).await.unwrap();
    assert_eq!(fx.introspect(access).await["active"], false);
    c.update_user("alice", &status("active")).await.unwrap();
    assert_eq!(
        fx.introspect(access).await["active"],
        false,
        "resuming her revives nothing"
    );
    let (s, v) = fx.refresh(refresh).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let fresh = fx.user_token().await;
    assert_eq!(
        fx.introspect(fresh["access_token"].as_str().unwrap()).await["active"],
        true
    );
}

/// Relying-party libraries ask for `openid profile email` by default: in an OpenID request the
/// OpenID Connect scope values the resource does not define are ignored (Core §3.1.2.1), at
/// /authorize and on refresh, and `scope=openid` alone refreshes the whole grant.
#[tokio::test]
async fn openid_connect_scope_values_are_ignored_not_refused() {
    let Some(fx) = fixture().await else { return };
    let (verifier, challenge) = pkce();
    let params = fx.with_scope(&challenge, "openid profile email offline_access read");
    let code = match fx.browse(&params, PASSWORD, "allow").await {
        Outcome::Redirect(l) => param(&l, "code").unwrap_or_else(|| panic!("{l}")),
        Outcome::Page(s, html) => panic!("{s} {html}"),
    };
    let (s, t) = fx.redeem(&code, &verifier).await;
    assert_eq!((s, t["scope"].as_str()), (200, Some("openid read")), "{t}");
    assert!(t["id_token"].is_string(), "{t}");
    let refresh = |rt: String, scope: &'static str| {
        let fx = &fx;
        async move {
            fx.token(
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &fx.public),
                    ("scope", scope),
                ],
                None,
            )
            .await
        }
    };
    let (s, r) = refresh(t["refresh_token"].as_str().unwrap().to_owned(), "openid").await;
    assert_eq!((s, r["scope"].as_str()), (200, Some("openid read")), "{r}");
    let (s, r) = refresh(r["refresh_token"].as_str().unwrap().to_owned(), "openid profile read").await;
    assert_eq!((s, r["scope"].as_str()), (200, Some("openid read")), "{r}");
    // Outside an OpenID request, `profile` is just a scope the resource does not define.
    let params = fx.with_scope(&challenge, "profile read");
    match fx.browse(&params, PASSWORD, "allow").await {
        Outcome::Redirect(l) => assert_eq!(param(&l, "error").as_deref(), Some("invalid_scope"), "{l}"),
        Outcome::Page(s, html) => panic!("{s} {html}"),
    }
}

#[tokio::test]
async fn code_flow_with_pkce_issues_a_delegated_token_and_rotating_refresh_tokens() {
    let Some(fx) = fixture().await else { return };
    let t = fx.user_token().await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "read write");
    let c = claims(t["access_token"].as_str().unwrap());
    let alice = fx.s.client().get_user("alice").await.unwrap().id.to_string();
    assert_eq!(c["sub"], alice.as_str());
    assert_eq!(c["aud"], API);
    assert_eq!(c["client_id"], fx.public.as_str());
    assert_eq!(c["act"]["sub"], fx.id_of("assistant").await.as_str());

    // Rotation: each refresh token works once and yields a new one.
    let r1 = t["refresh_token"].as_str().unwrap().to_owned();
    let i = fx.introspect(&r1).await;
    assert_eq!(
        i["active"], true,
        "a live refresh token introspects as active (RFC 7662): {i}"
    );
    assert_eq!(
        (i["sub"].as_str(), i["aud"].as_str()),
        (Some(alice.as_str()), Some(API))
    );
    assert_eq!(
        (i["client_id"].as_str(), i["scope"].as_str()),
        (Some(fx.public.as_str()), Some("read write"))
    );
    let (s, t2) = fx.refresh(&r1).await;
    assert_eq!(s, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(fx.introspect(&r1).await, json!({"active": false}), "spent");
    assert_eq!(fx.introspect(&r2).await["active"], true);
    // Narrowing on refresh is allowed, widening is not.
    let (s, v) = fx.refresh_with_scope(&r2, "read admin").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    // A narrowed refresh narrows that access token only: the new refresh token keeps the
    // consented scope (RFC 6749 §6), so the next refresh without a scope gets all of it back.
    let (s, narrow) = fx.refresh_with_scope(&r2, "read").await;
    assert_eq!((s, narrow["scope"].as_str()), (200, Some("read")), "{narrow}");
    let r3 = narrow["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(fx.introspect(&r3).await["scope"], "read write");
    let (s, full) = fx.refresh(&r3).await;
    assert_eq!((s, full["scope"].as_str()), (200, Some("read write")), "{full}");
    let r2 = full["refresh_token"].as_str().unwrap().to_owned();
    let t2 = full;
    // A scope the agent's ceiling has lost since the consent: asked for by name it is
    // invalid_scope (RFC 6749 §5.2), not a dead grant.
    let ceiling = |scopes: Value| {
        serde_json::from_value::<sigil_proto::admin::UpdateIdentity>(json!({"ceiling": {"scopes": scopes}})).unwrap()
    };
    let c = fx.s.client();
    c.update_identity(Family::Agents, "assistant", &ceiling(json!(["read"])))
        .await
        .unwrap();
    let (s, v) = fx.refresh_with_scope(&r2, "write").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");
    c.update_identity(Family::Agents, "assistant", &ceiling(json!(["read", "write"])))
        .await
        .unwrap();
    // openid was not asked for at sign-in: asking for it at refresh widens the grant.
    let (s, v) = fx.refresh_with_scope(&r2, "openid").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");

    // Reusing the spent r1 revokes the family: r2 and the tokens issued so far die.
    let access2 = t2["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fx.introspect(&access2).await["active"], true);
    let (s, v) = fx.refresh(&r1).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (s, v) = fx.refresh(&r2).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    assert_eq!(fx.introspect(&access2).await["active"], false);
    assert_eq!(
        fx.introspect(t["access_token"].as_str().unwrap()).await["active"],
        false
    );
    let reused =
        fx.s.client()
            .audit_search(&[("type", "grant.reused".into())])
            .await
            .unwrap();
    assert_eq!(reused.items.len(), 1);

    // Revoking a refresh token (RFC 7009) ends its consent: refresh and access tokens die.
    let t = fx.user_token().await;
    fx.s.client()
        .revoke_token(t["refresh_token"].as_str().unwrap())
        .await
        .unwrap();
    let (s, _) = fx.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 400);
    assert_eq!(
        fx.introspect(t["access_token"].as_str().unwrap()).await["active"],
        false
    );

    // The public client revokes its own refresh token by client_id (RFC 7009 §2.1).
    let t = fx.user_token().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/revoke", fx.s.url))
        .form(&[
            ("token", t["refresh_token"].as_str().unwrap()),
            ("client_id", fx.public.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (s, _) = fx.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 400);
    // Introspection stays for authenticated resource servers only.
    let resp = reqwest::Client::new()
        .post(format!("{}/introspect", fx.s.url))
        .form(&[
            ("token", t["access_token"].as_str().unwrap()),
            ("client_id", fx.public.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Suspending the agent cuts off its refresh tokens for good: resuming does not revive them.
    let t = fx.user_token().await;
    let c = fx.s.client();
    c.change_status(Family::Agents, "assistant", "suspend", &Default::default())
        .await
        .unwrap();
    // While it is suspended, its client's sign-ins are refused (access_denied) and recorded
    // in the agent's trail.
    let (_, challenge) = pkce();
    match fx.sign_in(&fx.standard(&challenge), PASSWORD).await {
        Err(Outcome::Redirect(l)) => assert_eq!(param(&l, "error").as_deref(), Some("access_denied"), "{l}"),
        _ => panic!("a suspended agent's client got the sign-in page"),
    }
    let denied = c
        .audit_search(&[("type", "authorization.denied".into()), ("agent", "assistant".into())])
        .await
        .unwrap()
        .items;
    assert_eq!(denied.len(), 1, "{denied:?}");
    c.change_status(Family::Agents, "assistant", "resume", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the read cache's second
    let (s, v) = fx.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    // A fresh sign-in works again; the agent's own token lifetime bounds the tokens it holds
    // for users too.
    c.update_identity(
        Family::Agents,
        "assistant",
        &serde_json::from_value(json!({"token_ttl_seconds": 60})).unwrap(),
    )
    .await
    .unwrap();
    let t = fx.user_token().await;
    assert_eq!(t["expires_in"], 60, "{t}");
    let (s, v) = fx.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!((s, v["expires_in"].as_u64()), (200, Some(60)), "{v}");
}

#[tokio::test]
async fn code_misuse_is_refused_and_a_reused_code_revokes_its_tokens() {
    let Some(fx) = fixture().await else { return };
    let (verifier, challenge) = pkce();
    let code = fx.code(&challenge).await;
    // Wrong verifier or redirect URI: invalid_grant; a client without the code grant:
    // unauthorized_client. The code survives all of them.
    let (wrong, _) = pkce();
    let (s, v) = fx.redeem(&code, &wrong).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    // A PKCE mismatch (a sign of an intercepted code) is in the trail, as every refusal is.
    let refused =
        fx.s.client()
            .audit_search(&[("type", "token.refused".into())])
            .await
            .unwrap()
            .items;
    assert!(
        refused.iter().any(|e| e.record["action"] == "authorization_code"),
        "{refused:?}"
    );
    // A verifier no client could have made (RFC 7636 §4.1) is a malformed request.
    for malformed in ["a".repeat(42), "a".repeat(129), format!("{}+/", "a".repeat(43))] {
        let (s, v) = fx.redeem(&code, &malformed).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    }
    let (s, v) = fx
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9/other"),
                ("code_verifier", &verifier),
                ("client_id", &fx.public),
            ],
            None,
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (s, v) = fx
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
                ("code_verifier", &verifier),
            ],
            Some(&fx.assistant),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unauthorized_client")), "{v}");
    let (s, v) = fx
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
                ("client_id", &fx.public),
            ],
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "missing verifier: {v}"
    );

    let (s, first) = fx.redeem(&code, &verifier).await;
    assert_eq!(s, 200, "{first}");
    let (s, v) = fx.redeem(&code, &verifier).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    assert_eq!(
        fx.introspect(first["access_token"].as_str().unwrap()).await["active"],
        false
    );
    let (s, _) = fx
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
                ("client_id", &fx.public),
            ],
            None,
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn bad_authorization_requests_get_the_standard_answer() {
    let Some(fx) = fixture().await else { return };
    let (_, challenge) = pkce();
    let with = |k: &str, v: Option<&str>| {
        let mut p: Vec<(String, String)> = fx.standard(&challenge).into_iter().filter(|(n, _)| n != k).collect();
        if let Some(v) = v {
            p.push((k.to_owned(), v.to_owned()));
        }
        p
    };
    // Before the redirect URI is trusted, errors are shown, never redirected.
    for p in [
        with("redirect_uri", Some("http://127.0.0.1:9/evil")),
        with("client_id", Some("cli_unknown")),
    ] {
        match fx.browse(&p, PASSWORD, "allow").await {
            Outcome::Page(400, _) => {}
            Outcome::Page(s, h) => panic!("{s} {h}"),
            Outcome::Redirect(l) => panic!("redirected to {l}"),
        }
    }
    // Each refusal is in the trail, with the client asked for; the known client's under its
    // agent.
    let refused =
        fx.s.client()
            .audit_search(&[("type", "authorization.denied".into())])
            .await
            .unwrap()
            .items;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().any(|r| r.record["client_id"] == "cli_unknown"));
    let agent_denials =
        fx.s.client()
            .audit_search(&[("type", "authorization.denied".into()), ("agent", "assistant".into())])
            .await
            .unwrap()
            .items;
    assert_eq!(agent_denials.len(), 1, "{agent_denials:?}");
    // After it, they go back to the client with state and iss.
    for (p, error) in [
        (with("code_challenge", None), "invalid_request"),
        (with("code_challenge_method", Some("plain")), "invalid_request"),
        (with("response_type", Some("token")), "unsupported_response_type"),
        (with("resource", Some("https://unknown.example.com")), "invalid_target"),
        (with("scope", Some("read nonsense")), "invalid_scope"),
        (with("response_mode", Some("form_post")), "invalid_request"),
        // Sigil has no sign-in session, so a request that allows no page cannot succeed.
        (with("prompt", Some("none")), "login_required"),
        (with("prompt", Some("none login")), "invalid_request"),
        // Request objects would carry parameters Sigil does not read (OIDC Core §6).
        (
            with("request", Some("eyJhbGciOiJub25lIn0.e30.")),
            "request_not_supported",
        ),
        (
            with("request_uri", Some("https://client.example/req")),
            "request_uri_not_supported",
        ),
        (with("dpop_jkt", Some("not-a-thumbprint")), "invalid_request"),
        (with("max_age", Some("abc")), "invalid_request"),
        (with("id_token_hint", Some("not.an.id-token")), "invalid_request"),
        // A repeated parameter is the client's error once its redirect URI is known to be good.
        (
            [
                fx.standard(&challenge),
                vec![("nonce".into(), "a".into()), ("nonce".into(), "b".into())],
            ]
            .concat(),
            "invalid_request",
        ),
    ] {
        match fx.browse(&p, PASSWORD, "allow").await {
            Outcome::Redirect(l) => {
                assert_eq!(param(&l, "error").as_deref(), Some(error), "{l}");
                assert_eq!(param(&l, "state").as_deref(), Some("xyz-123"));
                assert!(param(&l, "iss").is_some());
            }
            Outcome::Page(s, h) => panic!("{error}: {s} {h}"),
        }
    }
    // OpenID Connect requires redirect_uri even when the client registered only one.
    let mut oidc = with("redirect_uri", None);
    oidc.retain(|(k, _)| k != "scope");
    oidc.push(("scope".into(), "openid read".into()));
    assert!(matches!(
        fx.browse(&oidc, PASSWORD, "allow").await,
        Outcome::Page(400, _)
    ));
    // A repeated redirect URI cannot be trusted: shown, not redirected.
    let twice = [fx.standard(&challenge), vec![("redirect_uri".into(), CB.into())]].concat();
    assert!(matches!(
        fx.browse(&twice, PASSWORD, "allow").await,
        Outcome::Page(400, _)
    ));
    // OpenID Connect Core §3.1.2.1: the request may be POSTed as a form as well.
    let resp = no_redirects()
        .post(format!("{}/authorize", fx.s.url))
        .form(&fx.standard(&challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let sign_in = resp.text().await.unwrap();
    assert!(sign_in.contains("/authorize/login"));
    // The agent's owner is named once the user has signed in, not to whoever opens the page.
    assert!(!sign_in.contains("owned by"), "{sign_in}");
    let Ok(consent) = fx.sign_in(&fx.standard(&challenge), PASSWORD).await else {
        panic!("no consent page")
    };
    assert!(consent.html.contains("owned by bob"), "{}", consent.html);

    // A wrong password shows the sign-in page again; a declined consent is access_denied.
    match fx.browse(&fx.standard(&challenge), "wrong password!!", "allow").await {
        Outcome::Page(200, html) => assert!(html.contains("wrong username or password")),
        Outcome::Page(s, h) => panic!("{s} {h}"),
        Outcome::Redirect(l) => panic!("{l}"),
    }
    match fx.browse(&fx.standard(&challenge), PASSWORD, "deny").await {
        Outcome::Redirect(l) => assert_eq!(param(&l, "error").as_deref(), Some("access_denied")),
        Outcome::Page(s, h) => panic!("{s} {h}"),
    }
    // A loopback redirect URI matches on any port (RFC 8252 §7.3); another path does not.
    let (verifier, challenge2) = pkce();
    let mut native: Vec<(String, String)> = fx
        .standard(&challenge2)
        .into_iter()
        .filter(|(k, _)| k != "redirect_uri")
        .collect();
    native.push(("redirect_uri".into(), "http://127.0.0.1:51234/callback".into()));
    let Outcome::Redirect(l) = fx.browse(&native, PASSWORD, "allow").await else {
        panic!("no redirect")
    };
    assert!(l.starts_with("http://127.0.0.1:51234/callback?"), "{l}");
    let (s, v) = fx
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &param(&l, "code").unwrap()),
                ("redirect_uri", "http://127.0.0.1:51234/callback"),
                ("code_verifier", &verifier),
                ("client_id", &fx.public),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    native.retain(|(k, _)| k != "redirect_uri");
    native.push(("redirect_uri".into(), "http://127.0.0.1:51234/elsewhere".into()));
    assert!(matches!(
        fx.browse(&native, PASSWORD, "allow").await,
        Outcome::Page(400, _)
    ));

    // CSRF: a login form posted without the browser's cookie is refused.
    let http = no_redirects();
    let params = fx.standard(&challenge);
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let html = http
        .get(fx.authorize_url(&pairs))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = http
        .post(format!("{}/authorize/login", fx.s.url))
        .form(&[
            ("request", hidden(&html, "request").unwrap().as_str()),
            ("csrf", hidden(&html, "csrf").unwrap().as_str()),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    // Nothing but the loopback sign-in was granted by any of this.
    let granted =
        fx.s.client()
            .audit_search(&[("type", "authorization.granted".into())])
            .await
            .unwrap();
    assert_eq!(granted.items.len(), 1);
}

#[tokio::test]
async fn consent_shows_only_what_policy_permits_and_is_given_once() {
    let Some(fx) = fixture().await else { return };
    let (_, challenge) = pkce();
    let params = fx.with_scope(&challenge, "read admin");
    let Ok(consent) = fx.sign_in(&params, PASSWORD).await else {
        panic!("no consent page")
    };
    // The assistant's ceiling has no admin: the user is not asked to approve it.
    assert!(consent.html.contains("<code>read</code>"), "{}", consent.html);
    assert!(!consent.html.contains("<code>admin</code>"), "{}", consent.html);
    let Outcome::Redirect(first) = fx.decide(&consent, "allow").await else {
        panic!("no redirect")
    };
    assert!(param(&first, "code").is_some());
    // Posting the same consent form again yields no second answer, either way.
    for decision in ["allow", "deny"] {
        match fx.decide(&consent, decision).await {
            Outcome::Page(400, html) => assert!(html.contains("already given"), "{html}"),
            Outcome::Page(s, h) => panic!("{s} {h}"),
            Outcome::Redirect(l) => panic!("second answer to a {decision}: {l}"),
        }
    }
}

#[tokio::test]
async fn openid_scope_adds_an_id_token_about_the_user() {
    let Some(fx) = fixture().await else { return };
    let (verifier, challenge) = pkce();
    let mut params = fx.with_scope(&challenge, "openid read");
    params.push(("nonce".into(), "n-0S6_WzA2Mj".into()));
    let Outcome::Redirect(l) = fx.browse(&params, PASSWORD, "allow").await else {
        panic!("no redirect")
    };
    let (s, t) = fx.redeem(&param(&l, "code").unwrap(), &verifier).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["scope"], "openid read");
    let id = t["id_token"].as_str().expect("an ID token");
    let c = claims(id);
    let alice = fx.s.client().get_user("alice").await.unwrap().id.to_string();
    assert_eq!(c["iss"], fx.s.url.as_str());
    assert_eq!(c["sub"], alice.as_str());
    assert_eq!(c["aud"], fx.public.as_str());
    assert_eq!(c["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(c["preferred_username"], "alice");
    assert!(c["auth_time"].as_i64().unwrap() <= c["iat"].as_i64().unwrap());
    // Signed RS256 by default (OpenID Connect Core §15.1), verifiable with the published keys.
    assert_eq!(header(id)["alg"], "RS256");
    let jwks: sigil_crypto::Jwks = reqwest::get(format!("{}/.well-known/jwks.json", fx.s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sigil_crypto::verify_compact(id, &jwks).expect("the ID token verifies against the JWKS");
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", fx.s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["id_token_signing_alg_values_supported"][0], "RS256");
    // The access token is still for the resource only.
    assert_eq!(claims(t["access_token"].as_str().unwrap())["scope"], "read");
    // A refresh that leaves `openid` out of its scope gets no ID token, and its scope says so
    // (RFC 6749 §5.1); one that keeps it, or names no scope, gets a fresh one.
    let (s, r) = fx
        .refresh_with_scope(t["refresh_token"].as_str().unwrap(), "read")
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["scope"], "read");
    assert!(r.get("id_token").is_none(), "{r}");
    let (s, r) = fx.refresh(r["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["scope"], "openid read");
    assert!(r["id_token"].is_string(), "{r}");
    // Without openid there is no ID token.
    let plain = fx.user_token().await;
    assert!(plain.get("id_token").is_none());
}

#[tokio::test]
async fn auth_time_is_the_sign_in_and_max_age_bounds_its_age_at_consent() {
    let Some(fx) = fixture().await else { return };
    let (verifier, challenge) = pkce();
    let mut params = fx.with_scope(&challenge, "openid read");
    // Consent a second after signing in: auth_time is the sign-in, not the click.
    let Ok(consent) = fx.sign_in(&params, PASSWORD).await else {
        panic!("no consent page")
    };
    let signed_in = oauth_support::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let Outcome::Redirect(l) = fx.decide(&consent, "allow").await else {
        panic!("no redirect")
    };
    let (s, t) = fx.redeem(&param(&l, "code").unwrap(), &verifier).await;
    assert_eq!(s, 200, "{t}");
    let c = claims(t["id_token"].as_str().unwrap());
    assert!(c["auth_time"].as_i64().unwrap() <= signed_in, "{c}");
    assert!(c["auth_time"].as_i64().unwrap() < c["iat"].as_i64().unwrap(), "{c}");
    // With max_age=0 the same pause makes the sign-in too old: the user signs in again.
    params.push(("max_age".into(), "0".into()));
    let Ok(consent) = fx.sign_in(&params, PASSWORD).await else {
        panic!("no consent page")
    };
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    match fx.decide(&consent, "allow").await {
        Outcome::Page(200, html) => assert!(html.contains("sign in again") && html.contains("/authorize/login")),
        Outcome::Page(s, h) => panic!("{s} {h}"),
        Outcome::Redirect(l) => panic!("consent counted past max_age: {l}"),
    }
}

#[tokio::test]
async fn id_token_hint_names_who_must_sign_in() {
    // OpenID Connect Core §3.1.2.1: another user signing in than the hint names is refused.
    let Some(fx) = fixture().await else { return };
    fx.s.client().set_password("bob", PASSWORD).await.unwrap();
    let id_token_of = |user: &'static str| {
        let fx = &fx;
        async move {
            let (verifier, challenge) = pkce();
            let mut params = fx.standard(&challenge);
            params.retain(|(k, _)| k != "scope");
            params.push(("scope".into(), "openid read".into()));
            let Outcome::Redirect(l) = fx.browse_as(user, &params, PASSWORD, "allow").await else {
                panic!("no redirect")
            };
            let (s, t) = fx.redeem(&param(&l, "code").unwrap(), &verifier).await;
            assert_eq!(s, 200, "{t}");
            t["id_token"].as_str().unwrap().to_owned()
        }
    };
    let (alice, bob) = (id_token_of("alice").await, id_token_of("bob").await);
    let (_, challenge) = pkce();
    let hinted = |hint: &str| {
        let mut params = fx.standard(&challenge);
        params.push(("id_token_hint".into(), hint.to_owned()));
        params
    };
    match fx.browse(&hinted(&bob), PASSWORD, "allow").await {
        Outcome::Redirect(l) => assert_eq!(param(&l, "error").as_deref(), Some("login_required"), "{l}"),
        Outcome::Page(s, h) => panic!("{s} {h}"),
    }
    match fx.browse(&hinted(&alice), PASSWORD, "allow").await {
        Outcome::Redirect(l) => assert!(param(&l, "code").is_some(), "{l}"),
        Outcome::Page(s, h) => panic!("{s} {h}"),
    }
}

#[tokio::test]
async fn a_client_that_registered_eddsa_id_tokens_gets_them() {
    // A rotation takes effect a second after it is asked for (the last part of the test).
    let Some(fx) = fixture_with("[keys]\npublish_ahead = \"1s\"\n").await else {
        return;
    };
    let iat =
        fx.s.client()
            .create_registration_token(&sigil_proto::admin::CreateRegistrationToken {
                owner: "bob".into(),
                identity: Some("assistant".into()),
                ttl_seconds: Some(600),
            })
            .await
            .unwrap();
    let registered: Value = reqwest::Client::new()
        .post(format!("{}/register", fx.s.url))
        .bearer_auth(&iat.token)
        .json(&json!({
            "redirect_uris": [CB],
            "token_endpoint_auth_method": "none",
            "id_token_signed_response_alg": "EdDSA",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registered["id_token_signed_response_alg"], "EdDSA", "{registered}");
    let client_id = registered["client_id"].as_str().unwrap();
    // The standard request, from this client, with openid.
    let openid_request = |challenge: &str| -> Vec<(String, String)> {
        fx.standard(challenge)
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "client_id" => (k, client_id.to_owned()),
                "scope" => (k, "openid read".to_owned()),
                _ => (k, v),
            })
            .collect()
    };
    let (verifier, challenge) = pkce();
    let params = openid_request(&challenge);
    let Outcome::Redirect(l) = fx.browse(&params, PASSWORD, "allow").await else {
        panic!("no redirect")
    };
    let code = param(&l, "code").unwrap();
    let (s, t) = fx
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
                ("code_verifier", &verifier),
                ("client_id", client_id),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(header(t["id_token"].as_str().unwrap())["alg"], "EdDSA");

    // A rotation to ES256 retires the EdDSA key: the client learns it at /authorize, before
    // anyone signs in, rather than from a failure at the token endpoint after consent.
    fx.s.client()
        .rotate_key(&sigil_proto::admin::RotateKeyRequest {
            alg: Some("ES256".into()),
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    fx.s.app().keys.maintain().await.unwrap();
    assert_eq!(fx.s.app().keys.active().unwrap().alg().as_str(), "ES256");
    let (_, challenge) = pkce();
    let Outcome::Redirect(l) = fx.browse(&openid_request(&challenge), PASSWORD, "allow").await else {
        panic!("no redirect")
    };
    assert_eq!(param(&l, "error").as_deref(), Some("invalid_request"), "{l}");
    assert!(
        param(&l, "error_description")
            .unwrap()
            .contains("id_token_signed_response_alg")
    );
}

#[tokio::test]
async fn dpop_jkt_binds_the_code_to_the_key() {
    // RFC 9449 §10: the code may only be redeemed with a proof of the key the request named.
    let Some(fx) = fixture().await else { return };
    let (key, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let (other, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let jkt = sigil_crypto::PublicJwk::from(&key.public_jwk()).thumbprint().unwrap();
    let token_url = format!("{}/token", fx.s.url);
    let redeem = |code: String, verifier: String, proof: Option<String>| {
        let (url, public) = (token_url.clone(), fx.public.clone());
        async move {
            let mut req = reqwest::Client::new().post(url).form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", CB),
                ("code_verifier", verifier.as_str()),
                ("client_id", public.as_str()),
            ]);
            if let Some(p) = proof {
                req = req.header("DPoP", p);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let proof = |k: &sigil_crypto::SigningKey| {
        oauth_support::dpop_proof(k, "POST", &token_url, oauth_support::now(), None, None)
    };
    let bound_code = || async {
        let (verifier, challenge) = pkce();
        let mut params = fx.standard(&challenge);
        params.push(("dpop_jkt".into(), jkt.clone()));
        let Outcome::Redirect(l) = fx.browse(&params, PASSWORD, "allow").await else {
            panic!("no redirect")
        };
        (param(&l, "code").unwrap(), verifier)
    };
    for wrong in [None, Some(proof(&other))] {
        let (code, verifier) = bound_code().await;
        let (s, v) = redeem(code, verifier, wrong).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    }
    let (code, verifier) = bound_code().await;
    let (s, v) = redeem(code, verifier, Some(proof(&key))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "DPoP");
    assert_eq!(claims(v["access_token"].as_str().unwrap())["cnf"]["jkt"], jkt.as_str());
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_username_for_a_while() {
    let Some(fx) = fixture().await else { return };
    let (_, challenge) = pkce();
    for _ in 0..5 {
        match fx.browse(&fx.standard(&challenge), "not the password", "allow").await {
            Outcome::Page(200, html) => assert!(html.contains("wrong username or password"), "{html}"),
            Outcome::Page(s, h) => panic!("{s} {h}"),
            Outcome::Redirect(l) => panic!("{l}"),
        }
    }
    // Now even the right password is refused, and the attempt is recorded.
    match fx.browse(&fx.standard(&challenge), PASSWORD, "allow").await {
        Outcome::Page(200, html) => assert!(html.contains("too many failed sign-ins"), "{html}"),
        Outcome::Page(s, h) => panic!("{s} {h}"),
        Outcome::Redirect(l) => panic!("{l}"),
    }
    let failed =
        fx.s.client()
            .audit_search(&[("type", "user.login_failed".into())])
            .await
            .unwrap();
    assert_eq!(failed.items.len(), 6);
}
