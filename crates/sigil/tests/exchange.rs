//! Token exchange (RFC 8693) end to end: a user's delegated token is exchanged by sub-agents,
//! building `act` chains that show in the token, in introspection and in the audit trail; the
//! exchange stays on the consented resource, bound actor tokens need their key, and the chain's
//! depth is limited.

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

/// Revoking the token a chain was built on revokes every token exchanged from it, at any
/// depth; revoking the grant family (a reused refresh token) does too.
#[tokio::test]
async fn revoking_the_base_of_a_chain_revokes_the_chain() {
    let Some(fx) = fixture().await else { return };
    let user = fx.user_token().await;
    let subject = user["access_token"].as_str().unwrap();
    let exchanged = |v: Value| v["access_token"].as_str().unwrap().to_owned();
    let (s, v) = fx.exchange(&fx.helper, subject, Some("read")).await;
    assert_eq!(s, 200, "{v}");
    let t2 = exchanged(v);
    let (s, v) = fx.exchange(&fx.intern, &t2, None).await;
    assert_eq!(s, 200, "{v}");
    let t3 = exchanged(v);
    // The middle of the chain is revoked: what was built on it ends, what it was built on not.
    fx.s.client().revoke_token(&t2).await.unwrap();
    assert_eq!(fx.introspect(&t2).await["active"], false);
    assert_eq!(
        fx.introspect(&t3).await["active"],
        false,
        "derived from a revoked token"
    );
    assert_eq!(fx.introspect(subject).await["active"], true);
    // A reused refresh token revokes its family, and the chains built on the family's tokens.
    let (s, v) = fx.exchange(&fx.helper, subject, Some("read")).await;
    assert_eq!(s, 200, "{v}");
    let t4 = exchanged(v);
    let refresh = user["refresh_token"].as_str().unwrap();
    assert_eq!(fx.refresh(refresh).await.0, 200);
    let (s, v) = fx.refresh(refresh).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    assert_eq!(fx.introspect(subject).await["active"], false);
    assert_eq!(
        fx.introspect(&t4).await["active"],
        false,
        "derived from the revoked family"
    );
}

#[tokio::test]
async fn token_exchange_builds_an_act_chain_that_shows_everywhere() {
    let Some(fx) = fixture().await else { return };
    let user = fx.user_token().await;
    let subject = user["access_token"].as_str().unwrap();
    // The helper acts for alice through the assistant: user → assistant → helper.
    let (s, v) = fx.exchange(&fx.helper, subject, Some("read")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["issued_token_type"], AT);
    assert_eq!(v["scope"], "read");
    let t2 = v["access_token"].as_str().unwrap().to_owned();
    let c = claims(&t2);
    let (assistant, helper, intern) = (
        fx.id_of("assistant").await,
        fx.id_of("helper").await,
        fx.id_of("intern").await,
    );
    assert_eq!(c["sub"], claims(subject)["sub"]);
    assert_eq!(c["act"]["sub"], helper.as_str());
    assert_eq!(c["act"]["act"]["sub"], assistant.as_str());
    assert!(c["exp"].as_i64().unwrap() <= claims(subject)["exp"].as_i64().unwrap());

    // A third actor: user → assistant → helper → intern.
    let (s, v) = fx.exchange(&fx.intern, &t2, None).await;
    assert_eq!(s, 200, "{v}");
    let t3 = v["access_token"].as_str().unwrap().to_owned();
    let c3 = claims(&t3);
    assert_eq!(c3["act"]["sub"], intern.as_str());
    assert_eq!(c3["act"]["act"]["sub"], helper.as_str());
    assert_eq!(c3["act"]["act"]["act"]["sub"], assistant.as_str());
    // The intern's ceiling holds only read.
    assert_eq!(v["scope"], "read");
    let i = fx.introspect(&t3).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["act"]["act"]["act"]["sub"], assistant.as_str());

    // The audit trail records the whole chain, outermost actor first.
    let exchanged =
        fx.s.client()
            .audit_search(&[("type", "token.exchanged".into())])
            .await
            .unwrap();
    assert_eq!(exchanged.items.len(), 2);
    let record = &exchanged.items.iter().max_by_key(|e| e.seq).unwrap().record;
    assert_eq!(record["actors"], json!([intern, helper, assistant]), "{record}");
    assert_eq!(record["subject"], c["sub"]);
    // Search finds a sub-agent's action under every agent of its chain, by name or by id.
    for (agent, expected) in [("assistant", 2), ("helper", 2), (assistant.as_str(), 2), ("intern", 1)] {
        let found =
            fx.s.client()
                .audit_search(&[("type", "token.exchanged".into()), ("agent", agent.into())])
                .await
                .unwrap();
        assert_eq!(found.items.len(), expected, "{agent}");
    }

    // `sigil trace` shows the chain as a tree, in delegation order under the user.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["trace", c3["jti"].as_str().unwrap()])
        .env("SIGIL_URL", &fx.s.url)
        .env("SIGIL_ADMIN_TOKEN", &fx.s.admin_token)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {text}"))
    };
    let (u, a, h, i) = (at(c["sub"].as_str().unwrap()), at(&assistant), at(&helper), at(&intern));
    assert!(u < a && a < h && h < i, "{text}");
    assert!(text.contains("token.exchanged"), "{text}");
    assert!(
        lines[i].find('└').unwrap() > lines[h].find('└').unwrap(),
        "nested: {text}"
    );

    // Refusals: a scope outside the actor's ceiling (invalid_scope); an actor already in the
    // chain, a garbled subject token, a missing subject token type (RFC 8693 §2.2.2:
    // invalid_request).
    let (s, v) = fx.exchange(&fx.intern, &t2, Some("write")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");
    let (s, v) = fx.exchange(&fx.helper, &t3, None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    let (s, v) = fx.exchange(&fx.helper, "eyJhbGciOiJub25lIn0.e30.", None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    let (s, v) = fx
        .token(
            &[("grant_type", EXCHANGE), ("subject_token", subject), ("resource", API)],
            Some(&fx.helper),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    // A resource where nothing is permitted to the chain, no scope asked: the target itself is
    // refused (RFC 8693 §2.2.2: invalid_target).
    fx.s.client()
        .create_resource(
            &serde_json::from_value(
                json!({"uri": "https://ledger.example.com", "name": "ledger", "owner": "bob", "scopes": ["x:read"]}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let (s, v) = fx
        .token(
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", subject),
                ("subject_token_type", AT),
                ("resource", "https://ledger.example.com"),
            ],
            Some(&fx.helper),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_target")), "{v}");

    // Suspending an actor in the middle kills every token whose chain holds it.
    fx.s.client()
        .change_status(Family::Agents, "helper", "suspend", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the read cache's second
    assert_eq!(fx.introspect(&t3).await["active"], false);
    assert_eq!(fx.introspect(subject).await["active"], true);
}

#[tokio::test]
async fn an_exchange_stays_on_the_resource_the_user_consented_to() {
    let Some(fx) = fixture().await else { return };
    const OTHER: &str = "https://payroll.example.com/api";
    fx.s.client()
        .create_resource(
            &serde_json::from_value(
                json!({"uri": OTHER, "name": "payroll", "owner": "bob", "scopes": ["read", "write"]}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let user = fx.user_token().await;
    let subject = user["access_token"].as_str().unwrap();
    let exchange_for = |target: Vec<(&'static str, &'static str)>| {
        let mut form = vec![
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", AT),
        ];
        form.extend(target);
        form
    };
    // Alice consented to the hr API: her token does not carry her to payroll, whatever the
    // agents' ceilings allow there.
    let (s, v) = fx
        .token(
            &exchange_for(vec![("resource", OTHER), ("scope", "read")]),
            Some(&fx.helper),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_target")), "{v}");
    let (s, v) = fx
        .token(&exchange_for(vec![("audience", OTHER)]), Some(&fx.helper))
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_target")), "{v}");
    // The same URI as both resource and audience (RFC 8693 §2.1) is one target.
    let (s, v) = fx
        .token(
            &exchange_for(vec![("resource", API), ("audience", API)]),
            Some(&fx.helper),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(claims(v["access_token"].as_str().unwrap())["aud"], API);
    // The root URL written the way a URL parser writes it (`…/`) is the same target, and the
    // token's audience the registered spelling.
    const SLASHED: &str = "https://hr.example.com/";
    assert_eq!(SLASHED, format!("{API}/"));
    let (s, v) = fx
        .token(
            &exchange_for(vec![("resource", SLASHED), ("audience", API)]),
            Some(&fx.helper),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(claims(v["access_token"].as_str().unwrap())["aud"], API);
    let (s, v) = fx
        .token(
            &exchange_for(vec![("resource", API), ("audience", OTHER)]),
            Some(&fx.helper),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_target")), "{v}");
}

#[tokio::test]
async fn a_bound_actor_token_needs_its_key() {
    let Some(fx) = fixture().await else { return };
    let token_url = format!("{}/token", fx.s.url);
    let (key, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let proof = || oauth_support::dpop_proof(&key, "POST", &token_url, oauth_support::now(), None, None);
    // The helper's own token, bound to its DPoP key.
    let resp = reqwest::Client::new()
        .post(&token_url)
        .basic_auth(&fx.helper.0, Some(&fx.helper.1))
        .header("DPoP", proof())
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", API),
            ("scope", "read"),
        ])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let bound = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(v["token_type"], "DPoP", "{v}");
    let user = fx.user_token().await;
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", user["access_token"].as_str().unwrap()),
        ("subject_token_type", AT),
        ("actor_token", bound.as_str()),
        ("actor_token_type", AT),
        ("resource", API),
    ];
    // Without the key it proves nothing (RFC 9449 §7.1), as for a subject token.
    let (s, v) = fx.token(&form, Some(&fx.helper)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    let resp = reqwest::Client::new()
        .post(&token_url)
        .basic_auth(&fx.helper.0, Some(&fx.helper.1))
        .header("DPoP", proof())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// A DPoP-bound subject token is exchanged only with a proof of its key; without one the
/// subject token cannot be used, which RFC 8693 §2.2.2 answers with `invalid_request` (the
/// proof itself, absent, is not what is invalid).
#[tokio::test]
async fn a_bound_subject_token_needs_its_key() {
    let Some(fx) = fixture().await else { return };
    let token_url = format!("{}/token", fx.s.url);
    let (key, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let proof = || oauth_support::dpop_proof(&key, "POST", &token_url, oauth_support::now(), None, None);
    let exchange = |client: &(String, String), subject: &str, dpop: bool| {
        let mut req = reqwest::Client::new()
            .post(&token_url)
            .basic_auth(&client.0, Some(&client.1))
            .form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", subject),
                ("subject_token_type", AT),
                ("resource", API),
            ]);
        if dpop {
            req = req.header("DPoP", proof());
        }
        req.send()
    };
    let user = fx.user_token().await;
    let resp = exchange(&fx.helper, user["access_token"].as_str().unwrap(), true)
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token_type"], "DPoP", "{v}");
    let bound = v["access_token"].as_str().unwrap().to_owned();
    let resp = exchange(&fx.intern, &bound, false).await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let resp = exchange(&fx.intern, &bound, true).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// A subject token's type must be what the token is: a user's access token sent as an ID
/// token is refused, and the answer names the type to send.
#[tokio::test]
async fn a_subject_token_sent_under_another_type_is_refused() {
    let Some(fx) = fixture().await else { return };
    let user = fx.user_token().await;
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", user["access_token"].as_str().unwrap()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ("resource", API),
    ];
    let (s, v) = fx.token(&form, Some(&fx.helper)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("the subject token is an access token"),
        "{v}"
    );
}

#[tokio::test]
async fn the_chain_depth_is_limited_by_config() {
    let Some(fx) = fixture_with("[oauth]\nmax_delegation_depth = 2\n").await else {
        return;
    };
    let user = fx.user_token().await;
    let (s, v) = fx
        .exchange(&fx.helper, user["access_token"].as_str().unwrap(), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = fx.exchange(&fx.intern, v["access_token"].as_str().unwrap(), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(v["error_description"].as_str().unwrap().contains("at most 2"));
}
