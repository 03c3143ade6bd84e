//! The registry through the admin API: happy paths, lifecycle rules, and every kind of bad input
//! (each gets a precise problem+json error and changes nothing).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use serde_json::{Value, json};
use sigil_testkit::{Family, TestServer};

/// Raw HTTP, for bodies and headers the typed client would never send.
async fn raw(
    s: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let http = reqwest::Client::new();
    let mut req = http.request(method.parse().unwrap(), format!("{}{path}", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let (st, v, _) = raw(
        s,
        "POST",
        path,
        Some(&s.admin_token),
        Some(("application/json", body.to_string().into_bytes())),
    )
    .await;
    (st, v)
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let (st, v, _) = raw(s, "GET", path, Some(&s.admin_token), None).await;
    (st, v)
}

async fn audit_count(s: &TestServer) -> usize {
    s.app().store.list_audit(0, 100_000).await.unwrap().len()
}

macro_rules! server {
    () => {
        match TestServer::start().await {
            Some(s) => s,
            None => return,
        }
    };
}

async fn seed(s: &TestServer) {
    assert_eq!(
        post(
            s,
            "/admin/v1/users",
            json!({"username": "alice", "email": "alice@example.com", "groups": ["hr"]})
        )
        .await
        .0,
        201
    );
    assert_eq!(post(s, "/admin/v1/users", json!({"username": "bob"})).await.0, 201);
}

#[tokio::test]
async fn registry_round_trip() {
    let s = server!();
    seed(&s).await;
    let (st, agent) = post(
        &s,
        "/admin/v1/agents",
        json!({
            "name": "hr-assistant", "owner": "alice", "description": "answers HR questions",
            "labels": {"env": "prod"}, "ceiling": {"scopes": ["employees:read"]}, "team": "people-ops"
        }),
    )
    .await;
    assert_eq!(st, 201, "{agent}");
    assert_eq!(agent["kind"], "agent");
    assert_eq!(agent["status"], "active");
    assert_eq!(agent["created_by"], "admin:bootstrap");
    let alice = get(&s, "/admin/v1/users/alice").await.1;
    assert_eq!(agent["owner"], alice["id"]);

    // By id and by name; an agent is not a workload.
    let id = agent["id"].as_str().unwrap();
    assert_eq!(
        get(&s, &format!("/admin/v1/agents/{id}")).await.1["name"],
        "hr-assistant"
    );
    assert_eq!(get(&s, "/admin/v1/workloads/hr-assistant").await.0, 404);

    let (st, job) = post(
        &s,
        "/admin/v1/workloads",
        json!({"name": "nightly-etl", "owner": "bob", "kind": "job"}),
    )
    .await;
    assert_eq!(st, 201, "{job}");
    let (st, res) = post(&s, "/admin/v1/resources", json!({"uri": "https://hr.example.com/api", "name": "hr-api", "owner": "alice", "scopes": ["employees:read", "employees:write"]})).await;
    assert_eq!(st, 201, "{res}");

    // Filters.
    let c = s.client();
    let by_owner = c
        .list_identities(Family::Agents, &[("owner", "alice".into())])
        .await
        .unwrap();
    assert_eq!(by_owner.items.len(), 1);
    let by_label = c
        .list_identities(Family::Agents, &[("label", "env=prod".into())])
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 1);
    let none = c
        .list_identities(Family::Agents, &[("label", "env=dev".into())])
        .await
        .unwrap();
    assert!(none.items.is_empty());
    let jobs = c
        .list_identities(Family::Workloads, &[("kind", "job".into())])
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1);
    let hr = c.list_users(&[("group", "hr".into())]).await.unwrap();
    assert_eq!(hr.items.len(), 1);
    assert_eq!(
        get(&s, "/admin/v1/resources/hr-api").await.1["uri"],
        "https://hr.example.com/api"
    );

    // PATCH: null clears, absent keeps.
    let (st, v, _) = raw(
        &s,
        "PATCH",
        "/admin/v1/agents/hr-assistant",
        Some(&s.admin_token),
        Some((
            "application/json",
            br#"{"description": null, "labels": {"env": "dev"}}"#.to_vec(),
        )),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(v.get("description").is_none());
    assert_eq!(v["labels"]["env"], "dev");
    assert_eq!(v["team"], "people-ops");
    assert_eq!(v["version"], 2);
}

/// Short lists read whole (here initial access tokens) page like every other list: `limit`
/// and the `cursor` they return, a cursor they never returned or an unknown parameter is a 400.
#[tokio::test]
async fn short_lists_page_and_refuse_unknown_parameters() {
    let s = server!();
    seed(&s).await;
    for _ in 0..3 {
        let (st, v) = post(&s, "/admin/v1/registration-tokens", json!({"owner": "alice"})).await;
        assert_eq!(st, 201, "{v}");
    }
    let (st, first) = get(&s, "/admin/v1/registration-tokens?limit=2").await;
    assert_eq!((st, first["items"].as_array().unwrap().len()), (200, 2), "{first}");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (st, rest) = get(&s, &format!("/admin/v1/registration-tokens?limit=2&cursor={cursor}")).await;
    assert_eq!((st, rest["items"].as_array().unwrap().len()), (200, 1), "{rest}");
    assert!(rest.get("next_cursor").is_none(), "{rest}");
    assert_ne!(first["items"][0]["id"], rest["items"][0]["id"]);
    for bad in [
        "cursor=99",
        "cursor=0",
        "cursor=abc",
        "limit=0",
        "owner=alice",
        "bogus=1",
    ] {
        let (st, v) = get(&s, &format!("/admin/v1/registration-tokens?{bad}")).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    for path in [
        "/admin/v1/keys",
        "/admin/v1/policies",
        "/admin/v1/nodes",
        "/admin/v1/trusted-issuers",
    ] {
        assert_eq!(get(&s, &format!("{path}?bogus=1")).await.0, 400, "{path}");
        assert_eq!(get(&s, &format!("{path}?limit=1")).await.0, 200, "{path}");
    }
}

#[tokio::test]
async fn lifecycle_transitions_are_checked() {
    let s = server!();
    seed(&s).await;
    post(&s, "/admin/v1/agents", json!({"name": "bot", "owner": "alice"})).await;
    let step = |action: &'static str| {
        let s = &s;
        async move { post(s, &format!("/admin/v1/agents/bot/{action}"), json!({"reason": "test"})).await }
    };
    assert_eq!(step("suspend").await.1["status"], "suspended");
    assert_eq!(step("suspend").await.0, 200, "asking for the current state is a no-op");
    assert_eq!(step("resume").await.1["status"], "active");
    assert_eq!(step("revoke").await.1["status"], "revoked");
    let before = audit_count(&s).await;
    let (st, p) = step("resume").await;
    assert_eq!(st, 409);
    assert_eq!(p["type"], "urn:sigil:problem:conflict");
    assert!(p["detail"].as_str().unwrap().contains("revoked"));
    assert_eq!(step("suspend").await.0, 409);
    // Revoked is final: decommissioning would erase that the identity was compromised.
    assert_eq!(step("decommission").await.0, 409);
    assert_eq!(
        audit_count(&s).await,
        before,
        "a refused transition changes nothing, not even the trail"
    );
    post(&s, "/admin/v1/agents", json!({"name": "retired", "owner": "alice"})).await;
    let (_, p) = post(&s, "/admin/v1/agents/retired/decommission", json!({})).await;
    assert_eq!(p["status"], "decommissioned");
    for a in ["suspend", "resume", "revoke"] {
        let (st, _) = post(&s, &format!("/admin/v1/agents/retired/{a}"), json!({})).await;
        assert_eq!(st, 409, "{a} after decommission");
    }
    assert_eq!(step("explode").await.0, 404);

    // Expiry: an expired active identity is effectively suspended and cannot be resumed as is.
    let soon = sigil_types::Timestamp::from_unix_seconds(
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3) as i64,
    );
    let (st, v) = post(
        &s,
        "/admin/v1/agents",
        json!({"name": "temp", "owner": "alice", "expires_at": soon.to_rfc3339()}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let v = get(&s, "/admin/v1/agents/temp").await.1;
    assert_eq!(v["status"], "active");
    assert_eq!(v["effective_status"], "suspended");
    // Listing by status goes by the status in effect, as shown.
    let names = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(names(get(&s, "/admin/v1/agents?status=suspended").await.1).contains(&"temp".to_owned()));
    assert!(!names(get(&s, "/admin/v1/agents?status=active").await.1).contains(&"temp".to_owned()));
    // A past expires_at is refused on update as on create.
    let (st, _, _) = raw(
        &s,
        "PATCH",
        "/admin/v1/agents/temp",
        Some(&s.admin_token),
        Some((
            "application/json",
            br#"{"expires_at": "2001-01-01T00:00:00Z"}"#.to_vec(),
        )),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(post(&s, "/admin/v1/agents/temp/suspend", json!({})).await.0, 200);
    assert_eq!(post(&s, "/admin/v1/agents/temp/resume", json!({})).await.0, 409);
}

#[tokio::test]
async fn owners_cannot_be_deleted_without_transfer() {
    let s = server!();
    seed(&s).await;
    post(&s, "/admin/v1/agents", json!({"name": "bot", "owner": "alice"})).await;
    post(
        &s,
        "/admin/v1/resources",
        json!({"uri": "urn:example:r", "name": "r", "owner": "alice"}),
    )
    .await;
    let (st, p, _) = raw(&s, "DELETE", "/admin/v1/users/alice", Some(&s.admin_token), None).await;
    assert_eq!(st, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("transfer"));
    let (st, _, _) = raw(
        &s,
        "DELETE",
        "/admin/v1/users/alice?transfer_to=nobody",
        Some(&s.admin_token),
        None,
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(
        get(&s, "/admin/v1/users/alice").await.0,
        200,
        "still there after refused deletes"
    );
    let (st, _, _) = raw(
        &s,
        "DELETE",
        "/admin/v1/users/alice?transfer_to=bob",
        Some(&s.admin_token),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let bob = get(&s, "/admin/v1/users/bob").await.1;
    assert_eq!(get(&s, "/admin/v1/agents/bot").await.1["owner"], bob["id"]);
    assert_eq!(get(&s, "/admin/v1/resources/r").await.1["owner"], bob["id"]);
    assert_eq!(get(&s, "/admin/v1/users/alice").await.0, 404);
}

#[tokio::test]
async fn bad_input_is_refused_precisely_and_changes_nothing() {
    let s = server!();
    seed(&s).await;
    let before = audit_count(&s).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/admin/v1/users",
            json!({"username": "carol", "role": "admin"}),
            400,
            "unknown field",
        ),
        ("/admin/v1/users", json!({"username": "has space"}), 400, "username"),
        (
            "/admin/v1/users",
            json!({"username": "alice"}),
            409,
            "a user with this username already exists",
        ),
        (
            "/admin/v1/users",
            json!({"username": "x", "email": "not-an-email"}),
            400,
            "email",
        ),
        ("/admin/v1/agents", json!({"name": "bot"}), 400, "owner"),
        (
            "/admin/v1/agents",
            json!({"name": "bot", "owner": "nobody"}),
            400,
            "not a registered user",
        ),
        (
            "/admin/v1/agents",
            json!({"name": "Bad_Name!", "owner": "alice"}),
            400,
            "name",
        ),
        (
            "/admin/v1/agents",
            json!({"name": "bot", "owner": "alice", "kind": "job"}),
            400,
            "workload",
        ),
        (
            "/admin/v1/agents",
            json!({"name": "bot", "owner": "alice", "ceiling": {"scopes": ["a b"]}}),
            400,
            "scope",
        ),
        (
            "/admin/v1/agents",
            json!({"name": "bot", "owner": "alice", "expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "future",
        ),
        (
            "/admin/v1/agents",
            json!({"name": "bot", "owner": "alice", "expires_at": "tomorrow"}),
            400,
            "RFC 3339",
        ),
        (
            "/admin/v1/agents",
            json!({"name": "bot", "owner": "alice", "status": "active"}),
            400,
            "unknown field",
        ),
        (
            "/admin/v1/resources",
            json!({"uri": "https://x.example/#frag", "name": "x", "owner": "alice"}),
            400,
            "fragment",
        ),
        (
            "/admin/v1/resources",
            json!({"uri": "relative/path", "name": "x", "owner": "alice"}),
            400,
            "absolute",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (st, p) = post(&s, path, body.clone()).await;
        assert_eq!(st, status, "{path} {body} → {p}");
        assert!(p["type"].as_str().unwrap().starts_with("urn:sigil:problem:"), "{p}");
        assert_eq!(p["status"], status);
        let text = p.to_string();
        assert!(text.contains(needle), "{body}: expected {needle:?} in {text}");
    }
    // Malformed JSON, wrong content type, oversized body, query parameters nobody knows.
    let (st, p, h) = raw(
        &s,
        "POST",
        "/admin/v1/users",
        Some(&s.admin_token),
        Some(("application/json", b"{\"username\":".to_vec())),
    )
    .await;
    assert_eq!(st, 400, "{p}");
    assert_eq!(h["content-type"], "application/problem+json");
    // A path segment that is not UTF-8 is a problem too, not axum's plain text.
    let (st, p, h) = raw(&s, "GET", "/admin/v1/agents/%FF", Some(&s.admin_token), None).await;
    assert_eq!(st, 400, "{p}");
    assert_eq!(h["content-type"], "application/problem+json");
    // A struct's fields as an array are not an API body.
    let (st, p, _) = raw(
        &s,
        "POST",
        "/admin/v1/users",
        Some(&s.admin_token),
        Some(("application/json", br#" ["arrayuser",null,null,[],null]"#.to_vec())),
    )
    .await;
    assert_eq!(st, 400, "{p}");
    assert!(p.to_string().contains("expected a JSON object"), "{p}");
    assert_eq!(get(&s, "/admin/v1/users/arrayuser").await.0, 404);
    // Nor is an object that names a member twice (which value would count?).
    let (st, p, _) = raw(
        &s,
        "POST",
        "/admin/v1/users",
        Some(&s.admin_token),
        Some((
            "application/json",
            br#"{"username": "twice", "username": "other"}"#.to_vec(),
        )),
    )
    .await;
    assert_eq!(st, 400, "{p}");
    assert!(p.to_string().contains("appears twice"), "{p}");
    assert_eq!(get(&s, "/admin/v1/users/twice").await.0, 404);
    assert_eq!(get(&s, "/admin/v1/users/other").await.0, 404);
    let (st, _, _) = raw(
        &s,
        "POST",
        "/admin/v1/users",
        Some(&s.admin_token),
        Some(("text/plain", b"{}".to_vec())),
    )
    .await;
    assert_eq!(st, 415);
    let big = format!(
        "{{\"username\":\"carol\",\"display_name\":\"{}\"}}",
        "x".repeat(100_000)
    );
    let (st, p, _) = raw(
        &s,
        "POST",
        "/admin/v1/users",
        Some(&s.admin_token),
        Some(("application/json", big.into_bytes())),
    )
    .await;
    assert_eq!(st, 413, "{p}");
    assert_eq!(get(&s, "/admin/v1/agents?colour=red").await.0, 400);
    assert_eq!(get(&s, "/admin/v1/agents?status=sleeping").await.0, 400);
    assert_eq!(get(&s, "/admin/v1/agents?limit=0").await.0, 400);
    assert_eq!(get(&s, "/admin/v1/agents?limit=9999").await.0, 400);
    assert_eq!(get(&s, "/admin/v1/agents?cursor=';drop").await.0, 400);
    assert_eq!(get(&s, "/admin/v1/users/has%20space").await.0, 400);
    // A user's id under /agents is well formed and names no agent: 404, not malformed.
    let alice = get(&s, "/admin/v1/users/alice").await.1;
    let alice_id = alice["id"].as_str().unwrap();
    assert_eq!(get(&s, &format!("/admin/v1/agents/{alice_id}")).await.0, 404);
    // A body on an action must be JSON like every other body; an empty one is fine.
    let (st, _, _) = raw(
        &s,
        "POST",
        "/admin/v1/agents/hr-assistant/suspend",
        Some(&s.admin_token),
        Some(("text/plain", b"reason=x".to_vec())),
    )
    .await;
    assert_eq!(st, 415);
    assert_eq!(get(&s, "/admin/v1/nothing-here").await.0, 404);
    let (st, _, _) = raw(&s, "PUT", "/admin/v1/users", Some(&s.admin_token), None).await;
    assert_eq!(st, 405);

    assert_eq!(
        audit_count(&s).await,
        before,
        "refused requests leave no trace but nothing else either"
    );
    assert_eq!(s.client().list_users(&[]).await.unwrap().items.len(), 2);
    assert_eq!(
        s.client()
            .list_identities(Family::Agents, &[])
            .await
            .unwrap()
            .items
            .len(),
        0
    );
}

#[tokio::test]
async fn admin_credential_is_required_and_failures_are_audited() {
    let s = server!();
    let before = audit_count(&s).await;
    let (st, p, h) = raw(&s, "GET", "/admin/v1/users", None, None).await;
    assert_eq!(st, 401);
    // RFC 6750 §3.1: no credential, no error code; a wrong one is invalid_token.
    assert_eq!(h["www-authenticate"], "Bearer realm=\"sigil-admin\"");
    assert_eq!(p["type"], "urn:sigil:problem:unauthorized");
    let (st, _, h) = raw(&s, "GET", "/admin/v1/users", Some("sigil_admin_wrong"), None).await;
    assert_eq!(st, 401);
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let (st, _, _) = raw(
        &s,
        "POST",
        "/admin/v1/users",
        Some("not-even-close"),
        Some(("application/json", br#"{"username":"mallory"}"#.to_vec())),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(
        get(&s, "/admin/v1/users/mallory").await.0,
        404,
        "an unauthenticated write changes nothing"
    );
    let records = s.app().store.list_audit(0, 1000).await.unwrap();
    let failures: Vec<_> = records
        .iter()
        .skip(before)
        .filter(|r| r.record.event_type.as_str() == "admin.auth_failed")
        .collect();
    assert_eq!(failures.len(), 3);
    assert!(
        !records
            .iter()
            .any(|r| r.record.canonical_json().contains("sigil_admin_wrong")),
        "tokens are never recorded"
    );
    // Health endpoints stay public.
    assert_eq!(raw(&s, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(raw(&s, "GET", "/readyz", None, None).await.0, 200);
}

#[tokio::test]
async fn every_change_is_audited_with_its_actor() {
    let s = server!();
    seed(&s).await;
    post(&s, "/admin/v1/agents", json!({"name": "bot", "owner": "alice"})).await;
    post(&s, "/admin/v1/agents/bot/suspend", json!({"reason": "investigating"})).await;
    let records = s.app().store.list_audit(0, 1000).await.unwrap();
    let last = &records.last().unwrap().record;
    assert_eq!(last.event_type.as_str(), "identity.status_changed");
    assert_eq!(last.actors, vec!["admin:bootstrap".to_owned()]);
    assert_eq!(last.reason.as_deref(), Some("investigating"));
    assert_eq!(last.details["from"], "active");
    assert_eq!(last.details["to"], "suspended");
    assert!(last.request_id.as_deref().unwrap().starts_with("req_"));
    let kinds: Vec<&str> = records.iter().map(|r| r.record.event_type.as_str()).collect();
    for k in [
        "key.created",
        "admin.credential_created",
        "user.created",
        "identity.created",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
}

#[tokio::test]
async fn metrics_and_request_ids() {
    let s = server!();
    let (st, _, h) = raw(&s, "GET", "/healthz", None, None).await;
    assert_eq!(st, 200);
    assert!(h["x-request-id"].to_str().unwrap().starts_with("req_"));
    // A caller's id comes back exactly as sent, whatever shape it has (AuthZEN: the PDP returns
    // the PEP's identifier), even one too long or too odd to be recorded as it is.
    let long = "x".repeat(300);
    let sent: Vec<reqwest::header::HeaderValue> = [
        "urn:uuid:6f0c/4+a=b".as_bytes(),
        b"span 42 of trace 7",
        long.as_bytes(),
        b"tab\there",
        "\u{fc}nicode".as_bytes(),
    ]
    .into_iter()
    .map(|v| reqwest::header::HeaderValue::from_bytes(v).unwrap())
    .collect();
    for v in &sent {
        let resp = reqwest::Client::new()
            .get(format!("{}/healthz", s.url))
            .header("x-request-id", v.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(&resp.headers()["x-request-id"], v);
    }
    // A caller's id never becomes the id audit records go by: a refused request that names an
    // admin request's id does not join that request's trace.
    let (st, _, h) = raw(
        &s,
        "POST",
        "/admin/v1/users",
        Some(&s.admin_token),
        Some(("application/json", br#"{"username": "traced"}"#.to_vec())),
    )
    .await;
    assert_eq!(st, 201);
    let rid = h["x-request-id"].to_str().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{}/token", s.url))
        .header("x-request-id", &rid)
        .basic_auth("cli_nobody", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let found = s.client().audit_search(&[("request", rid.clone())]).await.unwrap();
    assert_eq!(found.items.len(), 1, "{rid} belongs to the admin's request only");
    // Methods outside RFC 9110 are one metrics label, not one per name.
    for n in 0..3 {
        let odd = reqwest::Method::from_bytes(format!("ODD{n}").as_bytes()).unwrap();
        reqwest::Client::new()
            .request(odd, format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap();
    }
    let text = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("sigil_http_requests_total"), "{text}");
    assert!(text.contains("# HELP sigil_http_requests_total "), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
    assert!(text.contains("sigil_http_request_duration_seconds"), "{text}");
    assert!(!text.contains("ODD0") && text.contains("method=\"OTHER\""), "{text}");
    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is a 400.
    let addr = s.url.trim_start_matches("http://").to_owned();
    for head in ["", "Host: a\r\nHost: b\r\n"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!("GET /healthz HTTP/1.1\r\n{head}Connection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
    }
    // A broken chunked body is a framing error (RFC 9112 §7.1): 400, not "too large", at the
    // OAuth, AuthZEN, admin and sign-in endpoints alike.
    for (path, auth) in [
        ("/token", String::new()),
        (
            "/admin/v1/users",
            format!("Authorization: Bearer {}\r\n", s.admin_token),
        ),
        ("/authorize/login", String::new()),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(!answer.contains("text/plain"), "{path}: {answer}");
    }
    // Every answer says nosniff; admin answers are not stored by caches.
    let (_, _, h) = raw(&s, "GET", "/admin/v1/users", Some(&s.admin_token), None).await;
    assert_eq!(
        (&h["x-content-type-options"], &h["cache-control"]),
        (
            &"nosniff".parse::<reqwest::header::HeaderValue>().unwrap(),
            &"no-store".parse::<reqwest::header::HeaderValue>().unwrap()
        )
    );
}

/// Concurrent updates of one identity each re-read and re-apply their patch: all succeed, and
/// every one of them shows in the version count (no lost update).
#[tokio::test]
async fn concurrent_patches_of_one_identity_all_land() {
    let s = server!();
    seed(&s).await;
    let (_, created) = post(&s, "/admin/v1/agents", json!({"name": "busy", "owner": "alice"})).await;
    let start = created["version"].as_i64().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (url, token) = (format!("{}/admin/v1/agents/busy", s.url), s.admin_token.clone());
        tasks.spawn(async move {
            let resp = reqwest::Client::new()
                .patch(url)
                .bearer_auth(token)
                .json(&json!({"description": format!("edit {n}")}))
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        });
    }
    let statuses = tasks.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (_, now) = get(&s, "/admin/v1/agents/busy").await;
    assert_eq!(now["version"].as_i64().unwrap(), start + 20, "{now}");
}

/// RFC 9110 §13.1.1: a change with `If-Match` applies only to the version it names; every
/// representation carries its version as the entity tag.
#[tokio::test]
async fn if_match_guards_changes_with_the_version_as_entity_tag() {
    let s = server!();
    seed(&s).await;
    post(&s, "/admin/v1/agents", json!({"name": "tagged", "owner": "alice"})).await;
    let (st, v, h) = raw(&s, "GET", "/admin/v1/agents/tagged", Some(&s.admin_token), None).await;
    assert_eq!(st, 200);
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", v["version"]));
    let patch = |if_match: &str, description: &str| {
        let (url, token, if_match) = (
            format!("{}/admin/v1/agents/tagged", s.url),
            s.admin_token.clone(),
            if_match.to_owned(),
        );
        let body = json!({ "description": description });
        async move {
            let resp = reqwest::Client::new()
                .patch(url)
                .bearer_auth(token)
                .header("if-match", if_match)
                .json(&body)
                .send()
                .await
                .unwrap();
            let etag = resp.headers().get("etag").map(|e| e.to_str().unwrap().to_owned());
            (resp.status().as_u16(), etag)
        }
    };
    // A stale tag, a weak tag and a tag that names no version all fail, and change nothing.
    for stale in ["\"999\"", &format!("W/{etag}"), "\"abc\""] {
        assert_eq!(patch(stale, "nope").await.0, 412, "{stale}");
    }
    let (_, now) = get(&s, "/admin/v1/agents/tagged").await;
    assert!(now.get("description").is_none_or(Value::is_null), "{now}");
    // The current tag (in a list) and `*` succeed; the answer carries the new tag.
    let (st, next) = patch(&format!("\"999\", {etag}"), "first").await;
    assert_eq!(st, 200);
    let next = next.unwrap();
    assert_ne!(next, etag);
    assert_eq!(
        patch(&etag, "lost update").await.0,
        412,
        "the old tag no longer matches"
    );
    assert_eq!(patch("*", "second").await.0, 200);
    let (_, now) = get(&s, "/admin/v1/agents/tagged").await;
    assert_eq!(now["description"], "second");
    // Deleting a user is guarded the same way.
    post(&s, "/admin/v1/users", json!({"username": "temp"})).await;
    let (st, _, _) = raw(&s, "GET", "/admin/v1/users/temp", Some(&s.admin_token), None).await;
    assert_eq!(st, 200);
    let resp = reqwest::Client::new()
        .delete(format!("{}/admin/v1/users/temp", s.url))
        .bearer_auth(&s.admin_token)
        .header("if-match", "\"999\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 412);
    assert_eq!(get(&s, "/admin/v1/users/temp").await.0, 200);
}

/// Browser-based OAuth clients (an MCP client in a web page) may call discovery, keys, token,
/// revocation and registration across origins; the admin API and introspection stay closed.
#[tokio::test]
async fn cors_opens_only_the_browser_client_endpoints() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    let http = reqwest::Client::new();
    let origin = "https://app.example.net";
    let preflight = |path: &str, method: &str| {
        http.request(reqwest::Method::OPTIONS, format!("{}{path}", s.url))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization,dpop,content-type")
            .send()
    };
    for (path, method) in [
        ("/token", "POST"),
        ("/register", "POST"),
        ("/register/cli_x", "PUT"),
        ("/revoke", "POST"),
        ("/.well-known/oauth-authorization-server", "GET"),
    ] {
        let r = preflight(path, method).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "*", "{path}");
        let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("dpop"),
            "{path}: {allowed}"
        );
        assert!(
            h["access-control-allow-methods"].to_str().unwrap().contains(method),
            "{path}"
        );
    }
    let r = http
        .get(format!("{}/.well-known/openid-configuration", s.url))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = http
        .post(format!("{}/token", s.url))
        .header("origin", origin)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("www-authenticate")
    );
    // A wrong method is still the JSON 405 with Allow.
    let r = http.get(format!("{}/token", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    // Server-to-server endpoints send no CORS headers.
    for (path, method) in [
        ("/admin/v1/users", "GET"),
        ("/introspect", "POST"),
        ("/access/v1/evaluation", "POST"),
    ] {
        let r = preflight(path, method).await.unwrap();
        assert!(!r.headers().contains_key("access-control-allow-origin"), "{path}");
    }
    let r = http
        .get(format!("{}/admin/v1/users", s.url))
        .bearer_auth(&s.admin_token)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}
