//! Policy set versions and decisions over HTTP: upload (invalid sets rejected with Cedar's
//! diagnostics, nothing stored), activation and rollback (also across two replicas), the AuthZEN
//! evaluation API with the HR and DevOps examples, the token endpoint narrowed by policy, and
//! an audit record with its evidence for every decision.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_testkit::{Family, TestServer};

const SCHEMA: &str = r#"
namespace Sigil {
  entity Employee { manager: String };
  action "employee.read" appliesTo { principal: [User, Agent], resource: [Employee], context: Context };
  action "deploy" appliesTo { principal: [User, Agent], resource: [Resource], context: Context };
}
"#;

const POLICIES: &str = r#"
@id("hr-agent-reads-all")
permit (principal == Sigil::Agent::"hr-bot", action == Sigil::Action::"employee.read", resource);
@id("managers-read-reports")
permit (principal is Sigil::User, action == Sigil::Action::"employee.read", resource)
when { resource.manager == principal.username };
@id("fleet-deploys")
permit (principal == Sigil::Agent::"fleet", action == Sigil::Action::"deploy", resource);
@id("ops-deploy")
permit (principal in Sigil::Group::"ops", action == Sigil::Action::"deploy", resource);
@id("no-marketing-reads")
forbid (principal, action == Sigil::Action::"employee.read", resource)
when { context has purpose && context.purpose == "marketing" };
@id("no-admin-tokens")
forbid (principal, action == Sigil::Action::"token.issue", resource)
when { context has scope && context.scope == "admin" };
"#;

struct Http {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Http {
    fn new(s: &TestServer) -> Self {
        Self::at(&s.url, &s.admin_token)
    }

    fn at(url: &str, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let req = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body);
        self.send(req).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let req = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token);
        self.send(req).await
    }
}

async fn registry(s: &TestServer) {
    let c = s.client();
    for (name, groups) in [
        ("alice", json!(["engineering"])),
        ("olga", json!(["ops"])),
        ("dan", json!([])),
    ] {
        c.create_user(&serde_json::from_value(json!({"username": name, "groups": groups})).unwrap())
            .await
            .unwrap();
    }
    for name in ["hr-bot", "fleet", "helper"] {
        c.create_identity(
            Family::Agents,
            &serde_json::from_value(json!({"name": name, "owner": "olga", "ceiling": {"scopes": ["read", "admin"]}}))
                .unwrap(),
        )
        .await
        .unwrap();
    }
    c.create_resource(
        &serde_json::from_value(json!({"uri": "https://deploy.example.com", "name": "deployer", "owner": "olga", "scopes": ["read", "admin"]}))
            .unwrap(),
    )
    .await
    .unwrap();
}

fn employee(manager: &str) -> Value {
    json!({"type": "Employee", "id": "e1", "properties": {"manager": manager}})
}

fn agent_for(user: &str, agent: &str) -> Value {
    json!({"type": "user", "id": user, "properties": {"act": {"type": "agent", "id": agent}}})
}

#[tokio::test]
async fn invalid_policy_sets_are_rejected_and_change_nothing() {
    let Some(s) = TestServer::start().await else { return };
    let h = Http::new(&s);
    let (status, body) = h
        .post(
            "/admin/v1/policies",
            &json!({"policies": "permit (principal, action, resource"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "urn:sigil:problem:invalid-policy");
    assert!(!body["errors"].as_array().unwrap().is_empty());
    let (status, body) = h
        .post(
            "/admin/v1/policies",
            &json!({"policies": "permit (principal is Sigil::Agent, action, resource) when { principal.nope };"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("nope"),
        "{body}"
    );
    let (status, body) = h
        .post(
            "/admin/v1/policies",
            &json!({"policies": "", "schema": "namespace Sigil { entity }"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = h.get("/admin/v1/policies").await;
    let versions: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(versions, [&json!(0)], "nothing stored but the built-in version: {list}");
    let (status, _) = h.post("/admin/v1/policies/7/activate", &json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = h.post("/admin/v1/policies/rollback", &json!({})).await;
    assert_eq!(status, 409);
    let (status, _) = h.post("/admin/v1/policies", &json!({"policies": "", "bogus": 1})).await;
    assert_eq!(status, 400, "unknown fields are rejected");
}

#[tokio::test]
async fn authzen_decides_the_hr_and_devops_examples_and_audits_each_decision() {
    let Some(s) = TestServer::start().await else { return };
    registry(&s).await;
    let h = Http::new(&s);
    // A description follows the rules of every other one: no control characters (they would
    // reach an operator's terminal from `policy list`), at most 1,024 characters.
    for bad in ["red\u{1b}[31m".to_owned(), "x".repeat(1025)] {
        let (status, v) = h
            .post(
                "/admin/v1/policies",
                &json!({"policies": POLICIES, "schema": SCHEMA, "description": bad}),
            )
            .await;
        assert_eq!(status, 400, "{v}");
    }
    let (status, v) = h
        .post(
            "/admin/v1/policies",
            &json!({"policies": POLICIES, "schema": SCHEMA, "description": "hr+devops", "activate": true}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["active"], true);

    let eval = |subject: Value, action: &str, resource: Value| json!({"subject": subject, "action": {"name": action}, "resource": resource});
    // HR: the agent reads everything, but acting for alice only what alice may see.
    let (status, d) = h
        .post(
            "/access/v1/evaluation",
            &eval(agent_for("alice", "hr-bot"), "employee.read", employee("alice")),
        )
        .await;
    assert_eq!((status, &d["decision"]), (200, &json!(true)), "{d}");
    assert!(d.get("context").is_none(), "a permit carries no context: {d}");
    // AuthZEN requests are JSON; a text/plain body (a browser's cross-site simple request) is 415.
    let plain = h
        .http
        .post(format!("{}/access/v1/evaluation", h.url))
        .bearer_auth(&h.token)
        .header("content-type", "text/plain")
        .body(eval(agent_for("alice", "hr-bot"), "employee.read", employee("alice")).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);
    let (_, d) = h
        .post(
            "/access/v1/evaluation",
            &eval(agent_for("alice", "hr-bot"), "employee.read", employee("dan")),
        )
        .await;
    assert_eq!(d["decision"], false);
    assert!(
        d["context"]["reason_admin"]["403"].as_str().unwrap().contains("alice"),
        "the deny is attributed to the user: {d}"
    );
    let (_, d) = h
        .post(
            "/access/v1/evaluation",
            &eval(
                json!({"type": "agent", "id": "hr-bot"}),
                "employee.read",
                employee("dan"),
            ),
        )
        .await;
    assert_eq!(d["decision"], true, "the agent alone may: {d}");
    // A forbidden purpose denies; the same purpose in another type is refused, not left out.
    let mut marketing = eval(
        json!({"type": "agent", "id": "hr-bot"}),
        "employee.read",
        employee("dan"),
    );
    marketing["context"] = json!({"purpose": "marketing"});
    let (_, d) = h.post("/access/v1/evaluation", &marketing).await;
    assert_eq!(d["decision"], false, "{d}");
    for wrong in [json!(["marketing"]), json!(7), json!(null)] {
        marketing["context"] = json!({"purpose": wrong});
        let (status, d) = h.post("/access/v1/evaluation", &marketing).await;
        assert_eq!(status, 400, "{d}");
        assert!(d.to_string().contains("context.purpose"), "{d}");
    }
    // DevOps: olga (ops) through an agent without the right is denied, attributed to the agent.
    let deployer = json!({"type": "resource", "id": "deployer"});
    let (_, d) = h
        .post(
            "/access/v1/evaluation",
            &eval(agent_for("olga", "helper"), "deploy", deployer.clone()),
        )
        .await;
    assert_eq!(d["decision"], false);
    assert!(
        d["context"]["reason_admin"]["403"].as_str().unwrap().contains("helper"),
        "{d}"
    );
    let (_, d) = h
        .post(
            "/access/v1/evaluation",
            &eval(agent_for("olga", "fleet"), "deploy", deployer.clone()),
        )
        .await;
    assert_eq!(d["decision"], true);
    let (_, d) = h
        .post(
            "/access/v1/evaluation",
            &eval(agent_for("dan", "fleet"), "deploy", deployer.clone()),
        )
        .await;
    assert_eq!(d["decision"], false, "the fleet agent cannot lift dan's limit");

    // Batch semantics (§7): defaults, overrides, short-circuits.
    let batch = |semantic: &str| {
        json!({
            "subject": agent_for("alice", "hr-bot"),
            "action": {"name": "employee.read"},
            "options": {"evaluations_semantic": semantic},
            "evaluations": [
                {"resource": employee("alice")},
                {"resource": employee("dan")},
                {"resource": employee("alice")},
            ],
        })
    };
    let decisions = |v: &Value| -> Vec<bool> {
        v["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect()
    };
    let (_, v) = h.post("/access/v1/evaluations", &batch("execute_all")).await;
    assert_eq!(decisions(&v), [true, false, true]);
    let (_, v) = h.post("/access/v1/evaluations", &batch("deny_on_first_deny")).await;
    assert_eq!(decisions(&v), [true, false]);
    let (_, v) = h.post("/access/v1/evaluations", &batch("permit_on_first_permit")).await;
    assert_eq!(decisions(&v), [true]);
    let (status, _) = h.post("/access/v1/evaluations", &batch("sometimes")).await;
    assert_eq!(status, 400);
    // An item that cannot be evaluated is a deny carrying its error; the others still run.
    let (_, v) = h
        .post(
            "/access/v1/evaluations",
            &json!({"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"},
                    "evaluations": [{"resource": employee("x")}, {"resource": {"type": "Spaceship", "id": "1"}},
                                    {"subject": {"type": "agent", "id": "ghost"}, "resource": employee("x")}]}),
        )
        .await;
    assert_eq!(decisions(&v), [true, false, false], "{v}");
    assert_eq!(v["evaluations"][1]["context"]["error"]["status"], 400);
    assert_eq!(v["evaluations"][2]["context"]["error"]["status"], 404);
    // An item missing a member that no default supplies makes the whole request malformed.
    let (status, v) = h
        .post(
            "/access/v1/evaluations",
            &json!({"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"},
                    "evaluations": [{"resource": employee("x")}, {}]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("evaluations[1].resource"), "{v}");
    let too_many: Vec<Value> = (0..101).map(|_| json!({"resource": employee("x")})).collect();
    let (status, _) = h
        .post(
            "/access/v1/evaluations",
            &json!({"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"}, "evaluations": too_many}),
        )
        .await;
    assert_eq!(status, 400, "a batch over the limit");
    // A full batch of large items fits (each ~8 KiB here, past the general 64 KiB body limit);
    // a body past the batch limit is a JSON 413, like the endpoint's other refusals.
    let padding = "p".repeat(8 * 1024);
    let big: Vec<Value> = (0..100)
        .map(|_| json!({"resource": employee("x"), "context": {"note": padding}}))
        .collect();
    let (status, v) = h
        .post(
            "/access/v1/evaluations",
            &json!({"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"}, "evaluations": big}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["evaluations"].as_array().unwrap().len(), 100);
    let (status, v) = h
        .post(
            "/access/v1/evaluations",
            &json!({"padding": "p".repeat(2 * 1024 * 1024)}),
        )
        .await;
    assert_eq!((status, v["status"].as_u64()), (413, Some(413)), "{v}");

    // Requests the model cannot express are 400s, never decisions.
    for bad in [
        eval(json!({"type": "agent", "id": "hr-bot"}), "fly", employee("x")),
        eval(json!({"type": "robot", "id": "r2"}), "employee.read", employee("x")),
        json!({"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"}}),
        eval(
            json!({"type": "agent", "id": "hr-bot"}),
            "employee.read",
            json!({"type": "Employee", "id": "e", "properties": {"manager": 5}}),
        ),
    ] {
        let (status, body) = h.post("/access/v1/evaluation", &bad).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    // A malformed token as subject is a deny with its error, not an allow.
    let (status, d) = h
        .post(
            "/access/v1/evaluation",
            &eval(
                json!({"type": "access_token", "id": "not.a.jwt"}),
                "employee.read",
                employee("x"),
            ),
        )
        .await;
    assert_eq!((status, &d["decision"]), (200, &json!(false)), "{d}");
    // Unauthenticated callers get 401.
    let resp = reqwest::Client::new()
        .post(format!("{}/access/v1/evaluation", s.url))
        .json(&eval(
            json!({"type": "agent", "id": "hr-bot"}),
            "employee.read",
            employee("x"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    // Resource servers (workload clients) may ask; agents' clients may not.
    let c = s.client();
    c.create_identity(
        Family::Workloads,
        &serde_json::from_value(json!({"name": "hr-api", "owner": "olga", "kind": "service"})).unwrap(),
    )
    .await
    .unwrap();
    let ask = eval(json!({"type": "agent", "id": "hr-bot"}), "employee.read", employee("x"));
    let mut callers = Vec::new();
    for (identity, want) in [("hr-api", 200), ("hr-bot", 403)] {
        let cl = c
            .create_client(
                &serde_json::from_value(
                    json!({"identity": identity, "token_endpoint_auth_method": "client_secret_basic"}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        let resp = reqwest::Client::new()
            .post(format!("{}/access/v1/evaluation", s.url))
            .basic_auth(&cl.client_id, cl.client_secret.as_deref())
            .json(&ask)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{identity}");
        callers.push(cl);
    }
    // The records name who asked; the refused agent client's attempt is one too.
    for (cl, outcome) in callers.iter().zip(["success", "denied"]) {
        let (_, found) = h
            .get(&format!(
                "/admin/v1/audit/records?type=access.evaluated&client={}",
                cl.client_id
            ))
            .await;
        assert_eq!(found["items"][0]["record"]["outcome"], outcome, "{found}");
    }
    // The request is what every JSON parser reads the same way: objects (not arrays of their
    // fields), no member twice; and Sigil's own types are the registry's, not the caller's.
    let rs = &callers[0];
    let raw = |body: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/access/v1/evaluation", s.url))
            .basic_auth(&rs.client_id, rs.client_secret.as_deref())
            .header("content-type", "application/json")
            .body(body)
    };
    for body in [
        r#"[["agent","hr-bot"],["employee.read"],["Employee","x"]]"#,
        r#"{"subject": ["agent", "hr-bot"], "action": {"name": "employee.read"}, "resource": {"type": "Employee", "id": "x"}}"#,
        r#"{"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"}, "resource": {"type": "Employee", "id": "x"}, "context": {"purpose": "marketing", "purpose": "research"}}"#,
        r#"{"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"}, "resource": {"type": "Resource", "id": "x", "properties": {"owner": "olga"}}}"#,
        r#"{"subject": {"type": "agent", "id": "hr-bot"}, "action": {"name": "employee.read"}, "resource": {"type": "Agent", "id": "hr-bot"}}"#,
    ] {
        let resp = raw(body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
    }

    // Every decision is in the audit trail with its evidence.
    let (_, records) = h.get("/admin/v1/audit/records?type=access.evaluated&limit=500").await;
    let records = records["items"].as_array().unwrap();
    // Records name people by id, as every other record does; search takes the name too.
    let (_, alice) = h.get("/admin/v1/users/alice").await;
    let (_, hr_bot) = h.get("/admin/v1/agents/hr-bot").await;
    let (_, by_name) = h
        .get("/admin/v1/audit/records?type=access.evaluated&outcome=denied&user=alice")
        .await;
    let denied = &by_name["items"][0]["record"];
    assert_eq!(
        denied["subject"], alice["id"],
        "the denied HR decision is recorded: {by_name}"
    );
    assert_eq!(denied["actors"], json!([hr_bot["id"]]));
    let (_, trace) = h.get("/admin/v1/audit/trace/alice").await;
    let (_, by_id) = h
        .get(&format!("/admin/v1/audit/trace/{}", alice["id"].as_str().unwrap()))
        .await;
    // The records, not their leaf positions: integration may place some between the reads.
    let unplaced = |t: &Value| -> Vec<(Value, Value)> {
        t["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["seq"].clone(), i["record"].clone()))
            .collect()
    };
    assert_eq!(
        unplaced(&trace),
        unplaced(&by_id),
        "a user's trace is the same by name and by id"
    );
    assert!(
        trace["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["event_type"] == "user.created"),
        "a user's trace holds the records about her: {trace}"
    );
    assert!(
        trace["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["subject"] == alice["id"]),
        "a user's trace holds the decisions made for her"
    );
    assert_eq!(denied["action"], "employee.read");
    assert_eq!(denied["policy"]["version"], "1");
    assert!(denied["reason"].as_str().unwrap().contains("alice"));
    let (_, olgas) = h
        .get("/admin/v1/audit/records?type=access.evaluated&outcome=success&user=olga")
        .await;
    let allowed = olgas["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .find(|r| r["action"] == "deploy")
        .expect("the allowed deploy is recorded");
    assert!(
        allowed["policy"]["determining"]
            .as_array()
            .unwrap()
            .contains(&json!("fleet-deploys"))
    );
    // A request refused as malformed is in the trail too, with why.
    assert!(
        records.iter().map(|r| &r["record"]).any(|r| r["outcome"] == "denied"
            && r["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("context.purpose must be a string")),
        "the refused purpose is recorded"
    );

    // Explain names the steps; metadata names the endpoints.
    let (status, x) = h
        .post(
            "/admin/v1/policies/explain",
            &json!({"request": eval(agent_for("dan", "fleet"), "deploy", deployer.clone())}),
        )
        .await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(x["allowed"], false);
    assert_eq!(x["steps"][0]["principal"], "Sigil::User::\"dan\"");
    // As at the AuthZEN endpoints, the parts are JSON objects, not arrays of their fields.
    let (status, x) = h
        .post(
            "/admin/v1/policies/explain",
            &json!({"request": {"subject": ["user", "dan"], "action": {"name": "deploy"}, "resource": deployer}}),
        )
        .await;
    assert_eq!(status, 400, "{x}");
    assert!(x.to_string().contains("subject must be a JSON object"), "{x}");
    let (_, meta) = h.get("/.well-known/authzen-configuration").await;
    assert_eq!(meta["policy_decision_point"], s.url);
    assert_eq!(
        meta["access_evaluation_endpoint"],
        format!("{}/access/v1/evaluation", s.url)
    );
}

#[tokio::test]
async fn the_token_endpoint_asks_the_policy() {
    let Some(s) = TestServer::start().await else { return };
    registry(&s).await;
    let h = Http::new(&s);
    let c = s.client();
    let client = c
        .create_client(
            &serde_json::from_value(json!({"identity": "fleet", "token_endpoint_auth_method": "client_secret_basic"}))
                .unwrap(),
        )
        .await
        .unwrap();
    let secret = client.client_secret.unwrap();
    let token = |scope: &'static str| {
        let (id, secret, url) = (client.client_id.clone(), secret.clone(), s.url.clone());
        async move {
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("resource", "https://deploy.example.com"),
            ];
            if !scope.is_empty() {
                form.push(("scope", scope));
            }
            let resp = reqwest::Client::new()
                .post(format!("{url}/token"))
                .basic_auth(id, Some(secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // Built-in policies alone: the ceiling (read, admin).
    assert_eq!(token("").await.1["scope"], "admin read");
    h.post(
        "/admin/v1/policies",
        &json!({"policies": POLICIES, "schema": SCHEMA, "activate": true}),
    )
    .await;
    // The operator's forbid narrows an open request and refuses an explicit one.
    let (status, t) = token("").await;
    assert_eq!((status, t["scope"].as_str()), (200, Some("read")), "{t}");
    let (status, e) = token("admin").await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_scope")), "{e}");
    assert!(
        e["error_description"].as_str().unwrap().contains("no-admin-tokens"),
        "{e}"
    );
    // The issuance record carries the policy evidence.
    let (_, records) = h.get("/admin/v1/audit/records?type=token.issued&limit=10").await;
    let by_v1 = records["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record"]["policy"]["version"] == "1")
        .count();
    assert_eq!(by_v1, 1, "{records}");
    // The token itself as the AuthZEN subject: the chain is its identity, the context its scopes.
    let (_, t) = token("read").await;
    let access_token = t["access_token"].as_str().unwrap();
    let ask = json!({"subject": {"type": "access_token", "id": access_token}, "action": {"name": "deploy"},
                     "resource": {"type": "resource", "id": "https://deploy.example.com"}});
    let (status, d) = h.post("/access/v1/evaluation", &ask).await;
    assert_eq!((status, &d["decision"]), (200, &json!(true)), "fleet may deploy: {d}");
    let (_, x) = h.post("/admin/v1/policies/explain", &json!({"request": ask})).await;
    assert_eq!(x["steps"][0]["principal"], "Sigil::Agent::\"fleet\"", "{x}");
    let (_, records) = h.get("/admin/v1/audit/records?type=access.evaluated&limit=10").await;
    let rec = &records["items"].as_array().unwrap()[0]["record"];
    assert_eq!(rec["scopes"], json!(["read"]), "the token's scopes are evidence: {rec}");
    // A resource server asking about a token learns no more than introspection would tell it
    // (RFC 7662 §4): a token for an API that names its servers, not this one, is not active to
    // it.
    c.create_identity(
        Family::Workloads,
        &serde_json::from_value(json!({"name": "deploy-gate", "owner": "olga"})).unwrap(),
    )
    .await
    .unwrap();
    let gate = c
        .create_client(
            &serde_json::from_value(
                json!({"identity": "deploy-gate", "token_endpoint_auth_method": "client_secret_basic"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let gate_secret = gate.client_secret.clone().unwrap();
    let as_gate = || {
        reqwest::Client::new()
            .post(format!("{}/access/v1/evaluation", s.url))
            .basic_auth(&gate.client_id, Some(&gate_secret))
            .json(&ask)
            .send()
    };
    let others = serde_json::from_value(json!({"servers": ["fleet"]})).unwrap();
    c.update_resource("deployer", &others).await.unwrap();
    let d: Value = as_gate().await.unwrap().json().await.unwrap();
    assert_eq!(
        (&d["decision"], &d["context"]["error"]["status"]),
        (&json!(false), &json!(401)),
        "{d}"
    );
    let serves = serde_json::from_value(json!({"servers": ["deploy-gate"]})).unwrap();
    c.update_resource("deployer", &serves).await.unwrap();
    let d: Value = as_gate().await.unwrap().json().await.unwrap();
    assert_eq!(d["decision"], true, "the API's own server may ask: {d}");
    // A revoked token is no subject.
    c.revoke_token(access_token).await.unwrap();
    let (_, d) = h.post("/access/v1/evaluation", &ask).await;
    assert_eq!(d["decision"], false);
    assert_eq!(d["context"]["error"]["status"], 401, "{d}");
    // Rolling back past the first activation restores version 0, the built-in policies alone;
    // rolling back again returns to the operator's version.
    let (status, r) = h.post("/admin/v1/policies/rollback", &json!({})).await;
    assert_eq!(
        (status, &r["version"], &r["previous"]),
        (200, &json!(0), &json!(1)),
        "{r}"
    );
    assert_eq!(token("admin").await.0, 200);
    let (status, r) = h.post("/admin/v1/policies/rollback", &json!({})).await;
    assert_eq!(
        (status, &r["version"], &r["previous"]),
        (200, &json!(1), &json!(0)),
        "{r}"
    );
    assert_eq!(token("admin").await.0, 400);
    // Activating the active version again changes nothing, so a rollback still goes back.
    let (status, r) = h.post("/admin/v1/policies/1/activate", &json!({})).await;
    assert_eq!(
        (status, &r["version"], &r["previous"]),
        (200, &json!(1), &json!(1)),
        "{r}"
    );
    let (_, r) = h.post("/admin/v1/policies/rollback", &json!({})).await;
    assert_eq!(r["version"], 0, "{r}");
    let (_, r) = h.post("/admin/v1/policies/1/activate", &json!({})).await;
    assert_eq!(r["version"], 1, "{r}");
    let (status, r) = h.post("/admin/v1/policies/0/activate", &json!({})).await;
    assert_eq!((status, &r["version"]), (200, &json!(0)), "{r}");
    assert_eq!(token("admin").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_and_rollback_reach_the_other_replica_within_a_second() {
    let Some((a, b, token)) = sigil_testkit::replica_pair().await else {
        eprintln!("!!! SKIPPING two-replica policy test: it needs PostgreSQL");
        return;
    };
    let ha = Http::at(&a.url, &token);
    let hb = Http::at(&b.url, &token);
    let c = sigil_testkit::Client::new(&a.url, Some(token.clone())).unwrap();
    c.create_user(&serde_json::from_value(json!({"username": "olga", "groups": ["ops"]})).unwrap())
        .await
        .unwrap();
    c.create_identity(
        Family::Agents,
        &serde_json::from_value(json!({"name": "fleet", "owner": "olga"})).unwrap(),
    )
    .await
    .unwrap();
    c.create_resource(
        &serde_json::from_value(
            json!({"uri": "https://deploy.example.com", "name": "deployer", "owner": "olga", "scopes": ["read"]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let ask = json!({"subject": {"type": "agent", "id": "fleet"}, "action": {"name": "deploy"}, "resource": {"type": "resource", "id": "deployer"}});
    let (status, _) = hb.post("/access/v1/evaluation", &ask).await;
    assert_eq!(status, 400, "no deploy action before any version");

    let (_, v) = ha
        .post(
            "/admin/v1/policies",
            &json!({"policies": POLICIES, "schema": SCHEMA, "activate": true}),
        )
        .await;
    assert_eq!(v["version"], 1);
    let until = |want: bool| {
        let hb = &hb;
        let ask = ask.clone();
        async move {
            let start = Instant::now();
            loop {
                let (status, d) = hb.post("/access/v1/evaluation", &ask).await;
                if status == 200 && d["decision"] == want {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(3),
                    "replica b never switched: {status} {d}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(until(true).await < Duration::from_millis(1500));
    let (_, v2) = ha
        .post(
            "/admin/v1/policies",
            &json!({"policies": "@id(\"freeze\") forbid (principal, action, resource) when { context.depth >= 0 };", "schema": SCHEMA, "activate": true}),
        )
        .await;
    assert_eq!(v2["version"], 2);
    assert!(until(false).await < Duration::from_millis(1500));
    let (_, r) = hb.post("/admin/v1/policies/rollback", &json!({})).await;
    assert_eq!(r["version"], 1);
    assert!(until(true).await < Duration::from_millis(1500));
    let (_, list) = hb.get("/admin/v1/policies").await;
    assert_eq!(list["items"][1]["active"], true, "{list}");
}
