//! In-process decision latency: Sigil's engine (entity construction, context, slicing, one
//! Cedar evaluation per principal of a user → agent chain) beside bare Cedar `is_authorized` on
//! the same policies and request, with the entities prebuilt for it (1,000 of them).

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, EntityUid, PolicySet, PrincipalConstraint, Request,
    RestrictedExpression,
};
use sigil_core::model::{Identity, Meta, Principal, Resource, User};
use sigil_policy::{ChainMember, Engine, Query, RequestContext, ResourceInput};
use sigil_types::{
    Ceiling, Group, IdentityId, IdentityKind, IdentityStatus, Labels, Name, ResourceId, ResourceUri, ScopeSet,
    Timestamp, UserId, UserStatus, Username,
};

const ACTIONS: usize = 50;
const ENTITIES: usize = 1_000;

fn schema() -> String {
    let mut s = String::from("namespace Sigil {\n  entity Document { level: Long };\n");
    for a in 0..ACTIONS {
        s.push_str(&format!(
            "  action \"op{a}\" appliesTo {{ principal: [User, Agent], resource: [Document], context: Context }};\n"
        ));
    }
    s.push('}');
    s
}

/// `n` policies spread over the actions: half for groups of users, half for named agents.
fn policies(n: usize) -> String {
    (0..n)
        .map(|k| {
            // Pairs (2j, 2j+1) share an action: a group permit and an agent permit.
            let a = (k / 2 * 2) % ACTIONS;
            if k % 2 == 0 {
                format!(
                    "@id(\"u{k}\") permit (principal in Sigil::Group::\"g{k}\", action == Sigil::Action::\"op{a}\", resource is Sigil::Document) when {{ resource.level <= {k} }};\n"
                )
            } else {
                format!(
                    "@id(\"a{k}\") permit (principal == Sigil::Agent::\"agent{k}\", action == Sigil::Action::\"op{a}\", resource) when {{ context.depth <= 4 }};\n"
                )
            }
        })
        .collect()
}

fn user(k: usize, now: Timestamp) -> Result<User, String> {
    Ok(User {
        id: UserId::parse("usr_01J00000000000000000000000").map_err(|e| e.to_string())?,
        username: Username::parse(&format!("user{k}")).map_err(|e| e.to_string())?,
        email: None,
        display_name: None,
        groups: [Group::parse(&format!("g{k}")).map_err(|e| e.to_string())?].into(),
        status: UserStatus::Active,
        tokens_not_before: None,
        meta: Meta::new(now, &Principal::system()),
    })
}

fn agent(k: usize, now: Timestamp) -> Result<Identity, String> {
    Ok(Identity {
        id: IdentityId::parse("idn_01J00000000000000000000000").map_err(|e| e.to_string())?,
        name: Name::parse(&format!("agent{k}")).map_err(|e| e.to_string())?,
        kind: IdentityKind::Agent,
        description: None,
        owner: UserId::parse("usr_01J00000000000000000000000").map_err(|e| e.to_string())?,
        team: None,
        labels: Labels::default(),
        status: IdentityStatus::Active,
        expires_at: None,
        ceiling: Ceiling {
            scopes: ScopeSet::parse_oauth("read").map_err(|e| e.to_string())?,
            resources: None,
        },
        last_used_at: None,
        tokens_not_before: None,
        token_ttl_seconds: None,
        dpop_required: false,
        meta: Meta::new(now, &Principal::system()),
    })
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64) * q) as usize;
        v.get(i.min(v.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    (at(0.50), at(0.99))
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn bench(iterations: usize) -> Result<Vec<(String, String)>, String> {
    let now = Timestamp::from_unix_seconds(1_800_000_000);
    let schema_src = schema();
    let mut rows = Vec::new();
    // The user and agent that the request names: a permit for each exists at every size.
    let (uk, ak) = (10, 11);
    let alice = user(uk, now)?;
    let bot = agent(ak, now)?;
    let props = serde_json::json!({ "level": 1 });
    let props = props.as_object().cloned().unwrap_or_default();
    for n in [20, 100, 1000] {
        let engine = Engine::compile(1, &policies(n), Some(&schema_src)).map_err(|e| e.to_string())?;
        let query = Query {
            chain: vec![
                ChainMember::User(&alice),
                ChainMember::Identity {
                    identity: &bot,
                    owner: "owner",
                },
            ],
            action: "op10",
            resource: ResourceInput::Custom {
                type_name: "Document",
                id: "d1",
                properties: Some(&props),
            },
            context: RequestContext {
                now,
                scopes: BTreeSet::new(),
                audience: None,
                auth_method: "private_key_jwt".into(),
                environment: None,
                purpose: None,
                scope: None,
            },
        };
        let sigil = decide_times(&engine, &query, iterations, Changing::Nothing)?;
        let rebuilt = decide_times(&engine, &query, iterations, Changing::Agent(&bot))?;
        let documents = decide_times(&engine, &query, iterations, Changing::Document)?;
        let whole = PolicySet::from_str(&format!("{}\n{}", sigil_policy::BUILTIN_POLICIES, policies(n)))
            .map_err(|e| e.to_string())?;
        let bare = bare_cedar([&whole, &whole], engine.schema(), iterations, uk, ak)?;
        // The policies Sigil evaluates for each principal: those whose action and principal
        // scopes can match it (worked out here independently of Sigil's index).
        let uid = |s: String| EntityUid::from_str(&s).map_err(|e| e.to_string());
        let op10 = uid("Sigil::Action::\"op10\"".into())?;
        let for_user = scoped(
            &whole,
            &op10,
            &uid(format!("Sigil::User::\"user{uk}\""))?,
            Some(&uid(format!("Sigil::Group::\"g{uk}\""))?),
        )?;
        let for_agent = scoped(&whole, &op10, &uid(format!("Sigil::Agent::\"agent{ak}\""))?, None)?;
        let evaluated = for_user.policies().count() + for_agent.policies().count();
        let sliced = bare_cedar([&for_user, &for_agent], engine.schema(), iterations, uk, ak)?;
        let (s50, s99) = percentiles(sigil);
        let (r50, r99) = percentiles(rebuilt);
        let (d50, d99) = percentiles(documents);
        let (b50, b99) = percentiles(bare);
        let (c50, c99) = percentiles(sliced);
        if n == 20 {
            rows.extend(issuance(&engine, &bot, iterations, now)?);
        }
        rows.push((
            format!(
                "{n} policies: Sigil decide (user → agent chain; records and document unchanged: entity set and context reused, Cedar evaluates each time)"
            ),
            format!("p50 {}, p99 {}", micros(s50), micros(s99)),
        ));
        rows.push((
            format!("{n} policies: Sigil decide (the agent's record changed each time: every entity built)"),
            format!("p50 {}, p99 {}", micros(r50), micros(r99)),
        ));
        rows.push((
            format!("{n} policies: Sigil decide (another document each time: its entity built from its JSON)"),
            format!("p50 {}, p99 {}", micros(d50), micros(d99)),
        ));
        rows.push((
            format!("{n} policies: bare Cedar is_authorized ×2, whole set, {ENTITIES} prebuilt entities"),
            format!("p50 {}, p99 {}", micros(b50), micros(b99)),
        ));
        let share = |d: Duration| {
            let overhead = d.saturating_sub(c50);
            format!(
                "{} ({:.0}% of bare Cedar's time)",
                micros(overhead),
                100.0 * overhead.as_secs_f64() / c50.as_secs_f64().max(1e-9)
            )
        };
        rows.push((
            format!(
                "{n} policies: bare Cedar is_authorized ×2 on the policies Sigil evaluates ({evaluated} over both principals), prebuilt entities"
            ),
            format!(
                "p50 {}, p99 {} — Sigil's own overhead at p50: {} with records unchanged, {} with another document each time, {} with every entity built",
                micros(c50),
                micros(c99),
                share(s50),
                share(d50),
                share(r50)
            ),
        ));
    }
    Ok(rows)
}

/// What changes between the decisions a run times.
#[derive(Clone, Copy)]
enum Changing<'a> {
    Nothing,
    /// That agent's record gets a new version before each decision (as an update would), so
    /// no entity of the chain is reused.
    Agent(&'a Identity),
    /// The document has another id each time, so its entity is built from its JSON.
    Document,
}

/// `iterations` decisions of `query`, with `changing` changed before each.
fn decide_times(
    engine: &Engine,
    query: &Query<'_>,
    iterations: usize,
    changing: Changing<'_>,
) -> Result<Vec<Duration>, String> {
    let mut agent = match changing {
        Changing::Agent(a) => Some(a.clone()),
        _ => None,
    };
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let mut q = query.clone();
        if let Some(agent) = agent.as_mut() {
            agent.meta.version = i64::try_from(i).unwrap_or(i64::MAX);
            for m in &mut q.chain {
                if let ChainMember::Identity { owner, .. } = *m {
                    *m = ChainMember::Identity { identity: agent, owner };
                }
            }
        }
        let document = format!("d{i}");
        if let (
            Changing::Document,
            ResourceInput::Custom {
                type_name, properties, ..
            },
        ) = (changing, q.resource)
        {
            q.resource = ResourceInput::Custom {
                type_name,
                id: &document,
                properties,
            };
        }
        let t = Instant::now();
        let d = engine.decide(&q).map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        if !d.allowed {
            return Err(format!("the benchmark request was denied: {d:?}"));
        }
    }
    Ok(times)
}

/// The token endpoint's question (`token.issue` for an agent alone, a registered resource, three
/// candidate scopes decided over one entity set), asked again for the same records — the entity
/// set is reused — and for a record that changed every time, so it is built afresh.
fn issuance(
    engine: &Engine,
    bot: &Identity,
    iterations: usize,
    now: Timestamp,
) -> Result<Vec<(String, String)>, String> {
    let api = Resource {
        id: ResourceId::parse("res_01J00000000000000000000000").map_err(|e| e.to_string())?,
        uri: ResourceUri::parse("https://api.example.com").map_err(|e| e.to_string())?,
        name: Name::parse("api").map_err(|e| e.to_string())?,
        description: None,
        owner: UserId::parse("usr_01J00000000000000000000000").map_err(|e| e.to_string())?,
        scopes: ScopeSet::parse_oauth("read write admin").map_err(|e| e.to_string())?,
        servers: Vec::new(),
        meta: Meta::new(now, &Principal::system()),
    };
    let base = RequestContext {
        now,
        scopes: BTreeSet::new(),
        audience: Some(api.uri.to_string()),
        auth_method: "client_secret_basic".into(),
        environment: None,
        purpose: None,
        scope: None,
    };
    let contexts: Vec<RequestContext> = ["read", "write", "admin"]
        .into_iter()
        .map(|scope| RequestContext {
            scope: Some(scope.into()),
            ..base.clone()
        })
        .collect();
    let mut rows = Vec::new();
    for (label, changing) in [
        ("same records: entity set reused", false),
        ("a record changed each time: entity set built", true),
    ] {
        let mut agent = bot.clone();
        let mut times = Vec::with_capacity(iterations);
        for i in 0..iterations {
            if changing {
                agent.meta.version = i64::try_from(i).unwrap_or(i64::MAX);
            }
            let query = Query {
                chain: vec![ChainMember::Identity {
                    identity: &agent,
                    owner: "owner",
                }],
                action: sigil_policy::TOKEN_ISSUE,
                resource: ResourceInput::Registered {
                    resource: &api,
                    owner: "owner",
                },
                context: base.clone(),
            };
            let t = Instant::now();
            let d = engine.decide_each(&query, &contexts).map_err(|e| e.to_string())?;
            times.push(t.elapsed());
            if d.iter().map(|d| d.allowed).collect::<Vec<_>>() != [true, false, false] {
                return Err(format!("unexpected issuance decisions: {d:?}"));
            }
        }
        let (p50, p99) = percentiles(times);
        rows.push((
            format!("token.issue, agent alone, 3 scopes, registered resource ({label})"),
            format!("p50 {}, p99 {}", micros(p50), micros(p99)),
        ));
    }
    Ok(rows)
}

/// The policies of `all` whose action scope matches `action` and whose principal scope matches
/// `principal` (a member of `group`, if given).
fn scoped(
    all: &PolicySet,
    action: &EntityUid,
    principal: &EntityUid,
    group: Option<&EntityUid>,
) -> Result<PolicySet, String> {
    let within = |e: &EntityUid| e == principal || Some(e) == group;
    let mut out = PolicySet::new();
    for p in all.policies() {
        let action_fits = match p.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == action,
            ActionConstraint::In(list) => list.contains(action),
        };
        let principal_fits = match p.principal_constraint() {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Is(t) => &t == principal.type_name(),
            PrincipalConstraint::Eq(e) => &e == principal,
            PrincipalConstraint::In(e) => within(&e),
            PrincipalConstraint::IsIn(t, e) => &t == principal.type_name() && within(&e),
        };
        if action_fits && principal_fits {
            out.add(p.clone()).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// Bare Cedar: two requests (user against `sets[0]`, then agent against `sets[1]`) against a
/// prebuilt entity store of 1,000 users and agents plus the document.
fn bare_cedar(
    sets: [&PolicySet; 2],
    schema: &cedar_policy::Schema,
    iterations: usize,
    uk: usize,
    ak: usize,
) -> Result<Vec<Duration>, String> {
    let schema = Some(schema);
    let mut json = Vec::with_capacity(ENTITIES + 1);
    for k in 0..ENTITIES / 2 {
        json.push(serde_json::json!({
            "uid": {"type": "Sigil::User", "id": format!("user{k}")},
            "attrs": {"username": format!("user{k}"), "status": "active"},
            "parents": [{"type": "Sigil::Group", "id": format!("g{k}")}],
        }));
        json.push(serde_json::json!({
            "uid": {"type": "Sigil::Agent", "id": format!("agent{k}")},
            "attrs": {"name": format!("agent{k}"), "status": "active",
                      "owner": {"__entity": {"type": "Sigil::User", "id": "owner"}},
                      "ceiling_scopes": ["read"], "ceiling_resources": [], "ceiling_any_resource": true},
            "tags": {},
            "parents": [],
        }));
    }
    json.push(
        serde_json::json!({"uid": {"type": "Sigil::Document", "id": "d1"}, "attrs": {"level": 1}, "parents": []}),
    );
    let entities = Entities::from_json_value(serde_json::Value::Array(json), schema).map_err(|e| e.to_string())?;
    let uid = |s: &str| EntityUid::from_str(s).map_err(|e| e.to_string());
    let action = uid("Sigil::Action::\"op10\"")?;
    let doc = uid("Sigil::Document::\"d1\"")?;
    let user_uid = uid(&format!("Sigil::User::\"user{uk}\""))?;
    let ctx = || {
        Context::from_pairs([
            (
                "user".to_owned(),
                RestrictedExpression::new_entity_uid(user_uid.clone()),
            ),
            (
                "actors".to_owned(),
                RestrictedExpression::new_set([RestrictedExpression::new_string(format!(
                    "Sigil::Agent::\"agent{ak}\""
                ))]),
            ),
            ("depth".to_owned(), RestrictedExpression::new_long(1)),
            ("scopes".to_owned(), RestrictedExpression::new_set([])),
            (
                "auth_method".to_owned(),
                RestrictedExpression::new_string("private_key_jwt".into()),
            ),
            ("time".to_owned(), RestrictedExpression::new_long(1_800_000_000)),
        ])
        .map_err(|e| e.to_string())
    };
    let requests = [
        Request::new(user_uid.clone(), action.clone(), doc.clone(), ctx()?, schema).map_err(|e| e.to_string())?,
        Request::new(
            uid(&format!("Sigil::Agent::\"agent{ak}\""))?,
            action,
            doc,
            ctx()?,
            schema,
        )
        .map_err(|e| e.to_string())?,
    ];
    let authorizer = Authorizer::new();
    let mut out = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let allowed = requests
            .iter()
            .zip(sets)
            .all(|(r, set)| authorizer.is_authorized(r, set, &entities).decision() == cedar_policy::Decision::Allow);
        out.push(t.elapsed());
        if !allowed {
            return Err("bare Cedar denied the benchmark request".into());
        }
    }
    Ok(out)
}

/// AuthZEN evaluations per second over HTTP at `conns` connections: a release `sigil serve`
/// with the 20-policy version active, the same user → agent chain, one audit record each.
pub async fn http_bench(
    sigil: &std::path::Path,
    duration: Duration,
    conns: usize,
) -> Result<Vec<(String, String)>, String> {
    use crate::tokens::{Req, basic, load, seed};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = crate::proc::Server::start(sigil, dir.path(), None).await?;
    seed(&server.addr, &server.token).await?;
    let mut s = crate::http::connect(&server.addr).await?;
    // The load's user is in the group the u10 policy names, the agent is the one a11 names; the
    // caller is a resource server (a workload's client).
    let calls = [
        (
            "/admin/v1/workloads",
            serde_json::json!({"name": "bench-rs", "owner": "bench-owner", "kind": "service"}),
        ),
        (
            "/admin/v1/users",
            serde_json::json!({"username": "user10", "groups": ["g10"]}),
        ),
        (
            "/admin/v1/agents",
            serde_json::json!({"name": "agent11", "owner": "bench-owner"}),
        ),
        (
            "/admin/v1/policies",
            serde_json::json!({"policies": policies(20), "schema": schema(), "activate": true}),
        ),
    ];
    for (path, body) in calls {
        let (st, b) = crate::http::send(
            &mut s,
            hyper::Method::POST,
            &server.addr,
            path,
            Some(&server.token),
            Some(body.to_string()),
        )
        .await?;
        if st != 201 {
            return Err(format!("{path}: {st} {}", String::from_utf8_lossy(&b)));
        }
    }
    let (st, b) = crate::http::send(
        &mut s,
        hyper::Method::POST,
        &server.addr,
        "/admin/v1/clients",
        Some(&server.token),
        Some(
            serde_json::json!({"identity": "bench-rs", "token_endpoint_auth_method": "client_secret_basic"})
                .to_string(),
        ),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| format!("client: {st} {e}"))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (client_id, secret) = (field("client_id"), field("client_secret"));
    let body = serde_json::json!({
        "subject": {"type": "user", "id": "user10", "properties": {"act": {"type": "agent", "id": "agent11"}}},
        "action": {"name": "op10"},
        "resource": {"type": "Document", "id": "d1", "properties": {"level": 1}},
    });
    let req = Req::Json {
        path: "/access/v1/evaluation".into(),
        body: body.to_string(),
        authorization: basic(&client_id, &secret),
    };
    let hello = load(&server.addr, Req::Get("/healthz".into()), conns, duration).await;
    crate::proc::profile_window("enable");
    let run = load(&server.addr, req, conns, duration).await;
    crate::proc::profile_window("disable");
    server.stop().await;
    Ok(vec![
        (
            format!("hello world (GET /healthz), {conns} connections"),
            hello.summary(),
        ),
        (
            format!(
                "AuthZEN evaluations/s over HTTP, {conns} connections, 20 policies, user → agent chain, audit record each"
            ),
            run.summary(),
        ),
    ])
}
