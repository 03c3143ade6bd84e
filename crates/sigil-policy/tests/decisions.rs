//! The hybrid model on the source documents' examples: an agent with broad rights never exceeds
//! the user it acts for, and the user never exceeds the agent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeSet;

use sigil_core::model::{Identity, Meta, Principal, Resource, User};
use sigil_policy::{ChainMember, Decision, Engine, Query, RequestContext, ResourceInput};
use sigil_types::{
    Ceiling, Group, IdentityId, IdentityKind, IdentityStatus, Labels, Name, ResourceId, ResourceUri, ScopeSet,
    Timestamp, UserId, UserStatus, Username,
};

const NOW: Timestamp = Timestamp::from_unix_seconds(1_800_000_000);

const HR_SCHEMA: &str = r#"
namespace Sigil {
  entity Employee { department: String, manager: User };
  action "employee.read" appliesTo { principal: [User, Agent], resource: [Employee], context: Context };
  action "deploy" appliesTo { principal: [User, Agent], resource: [Resource], context: Context };
}
"#;

const HR_POLICIES: &str = r#"
// The HR agent may read every employee record.
@id("hr-agent-reads-all")
permit (principal == Sigil::Agent::"hr-bot", action == Sigil::Action::"employee.read", resource);

// A person may read her own team's records (she manages them), HR staff may read all.
@id("managers-read-reports")
permit (principal is Sigil::User, action == Sigil::Action::"employee.read", resource)
when { resource.manager == principal };
@id("hr-staff-read-all")
permit (principal in Sigil::Group::"hr", action == Sigil::Action::"employee.read", resource);

// DevOps: the fleet agent may deploy anywhere, people deploy only in environments they own.
@id("fleet-agent-deploys")
permit (principal == Sigil::Agent::"fleet", action == Sigil::Action::"deploy", resource);
@id("devs-deploy-to-dev")
permit (principal in Sigil::Group::"developers", action == Sigil::Action::"deploy", resource)
when { resource.hasTag("env") && resource.getTag("env") == "dev" };
@id("no-deploy-in-freeze")
forbid (principal, action == Sigil::Action::"deploy", resource)
when { context has purpose && context.purpose == "freeze-test" };
"#;

fn meta() -> Meta {
    Meta::new(NOW, &Principal::system())
}

/// A record id of its own for each name, as the registry gives: the engine reuses entities by
/// record id and version.
fn record_id(prefix: &str, name: &str) -> String {
    let digits: String = name
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .chain(std::iter::repeat('0'))
        .take(23)
        .collect();
    format!("{prefix}_01J{digits}")
}

fn user(name: &str, groups: &[&str]) -> User {
    User {
        id: UserId::parse(&record_id("usr", name)).unwrap(),
        username: Username::parse(name).unwrap(),
        email: None,
        display_name: None,
        groups: groups.iter().map(|g| Group::parse(g).unwrap()).collect(),
        status: UserStatus::Active,
        tokens_not_before: None,
        meta: meta(),
    }
}

fn agent(name: &str, scopes: &str) -> Identity {
    Identity {
        id: IdentityId::parse(&record_id("idn", name)).unwrap(),
        name: Name::parse(name).unwrap(),
        kind: IdentityKind::Agent,
        description: None,
        owner: UserId::parse("usr_01J00000000000000000000000").unwrap(),
        team: None,
        labels: Labels::default(),
        status: IdentityStatus::Active,
        expires_at: None,
        ceiling: Ceiling {
            scopes: ScopeSet::parse_oauth(scopes).unwrap(),
            resources: None,
        },
        last_used_at: None,
        tokens_not_before: None,
        token_ttl_seconds: None,
        dpop_required: false,
        meta: meta(),
    }
}

fn resource(name: &str) -> Resource {
    Resource {
        id: ResourceId::parse("res_01J00000000000000000000000").unwrap(),
        uri: ResourceUri::parse(&format!("https://{name}.example.com")).unwrap(),
        name: Name::parse(name).unwrap(),
        description: None,
        owner: UserId::parse("usr_01J00000000000000000000000").unwrap(),
        scopes: ScopeSet::parse_oauth("read write").unwrap(),
        servers: Vec::new(),
        meta: meta(),
    }
}

fn ctx() -> RequestContext {
    RequestContext {
        now: NOW,
        scopes: BTreeSet::new(),
        audience: None,
        auth_method: "private_key_jwt".into(),
        environment: None,
        purpose: None,
        scope: None,
    }
}

/// An identity acting alone on a registered resource.
fn alone(e: &Engine, identity: &Identity, action: &str, resource: &Resource, context: RequestContext) -> Decision {
    e.decide(&Query {
        chain: vec![ChainMember::Identity { identity, owner: "o" }],
        action,
        resource: ResourceInput::Registered { resource, owner: "o" },
        context,
    })
    .unwrap()
}

fn engine() -> Engine {
    Engine::compile(7, HR_POLICIES, Some(HR_SCHEMA)).unwrap()
}

fn employee<'a>(id: &'a str, props: &'a serde_json::Map<String, serde_json::Value>) -> ResourceInput<'a> {
    ResourceInput::Custom {
        type_name: "Employee",
        id,
        properties: Some(props),
    }
}

fn props(manager: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::json!({"department": "sales", "manager": {"__entity": {"type": "Sigil::User", "id": manager}}})
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn hr_agent_shows_a_user_only_what_the_user_may_see() {
    let e = engine();
    let bot = agent("hr-bot", "employees.read");
    let alice = user("alice", &["engineering"]);
    let reports_to_alice = props("alice");
    let reports_to_bob = props("bob");
    let chain = vec![
        ChainMember::User(&alice),
        ChainMember::Identity {
            identity: &bot,
            owner: "hr-admin",
        },
    ];

    let own_report = e
        .decide(&Query {
            chain: chain.clone(),
            action: "employee.read",
            resource: employee("e1", &reports_to_alice),
            context: ctx(),
        })
        .unwrap();
    assert!(own_report.allowed, "{own_report:?}");
    assert_eq!(own_report.version, 7);
    assert_eq!(own_report.steps.len(), 2);
    assert_eq!(own_report.steps[0].policies, vec!["managers-read-reports"]);
    assert_eq!(own_report.steps[1].policies, vec!["hr-agent-reads-all"]);

    let someone_else = e
        .decide(&Query {
            chain: chain.clone(),
            action: "employee.read",
            resource: employee("e2", &reports_to_bob),
            context: ctx(),
        })
        .unwrap();
    assert!(
        !someone_else.allowed,
        "the agent's broad right must not lift the user's limit"
    );
    assert_eq!(someone_else.steps.len(), 1, "stops at the user");
    assert_eq!(
        someone_else.deny_reason().unwrap(),
        "no policy permits Sigil::User::\"alice\""
    );

    // The agent acting alone may read it (its own right), and HR staff through the agent too.
    let alone = e
        .decide(&Query {
            chain: vec![chain[1]],
            action: "employee.read",
            resource: employee("e2", &reports_to_bob),
            context: ctx(),
        })
        .unwrap();
    assert!(alone.allowed);
    let hr_carol = user("carol", &["hr"]);
    let via_hr = e
        .decide(&Query {
            chain: vec![ChainMember::User(&hr_carol), chain[1]],
            action: "employee.read",
            resource: employee("e2", &reports_to_bob),
            context: ctx(),
        })
        .unwrap();
    assert!(via_hr.allowed);
}

#[test]
fn devops_user_cannot_exceed_the_agent_nor_the_agent_the_user() {
    let e = engine();
    let fleet = agent("fleet", "deploy");
    let other_bot = agent("helper", "deploy");
    let dev = user("dana", &["developers"]);
    let prod = resource("payments");
    let prod_input = ResourceInput::Registered {
        resource: &prod,
        owner: "ops",
    };
    let fleet_for_dana = vec![
        ChainMember::User(&dev),
        ChainMember::Identity {
            identity: &fleet,
            owner: "ops",
        },
    ];
    // The registered resource has no env tag: the developer's policy (dev only) does not match,
    // so the fleet agent's fleet-wide right does not let her deploy there.
    let d = e
        .decide(&Query {
            chain: fleet_for_dana.clone(),
            action: "deploy",
            resource: prod_input,
            context: ctx(),
        })
        .unwrap();
    assert!(!d.allowed);
    assert!(d.deny_reason().unwrap().contains("dana"));

    // A user with the right, through an agent without it: denied, attributed to the agent.
    let helper_chain = vec![
        ChainMember::User(&dev),
        ChainMember::Identity {
            identity: &other_bot,
            owner: "ops",
        },
    ];
    let d = e
        .decide(&Query {
            chain: helper_chain,
            action: "employee.read",
            resource: employee("e1", &props("dana")),
            context: ctx(),
        })
        .unwrap();
    assert!(!d.allowed, "the user may, the agent may not");
    assert_eq!(d.steps.len(), 2);
    assert!(d.steps[0].allowed);
    assert_eq!(d.deny_reason().unwrap(), "no policy permits Sigil::Agent::\"helper\"");

    // A forbid names itself.
    let mut frozen = ctx();
    frozen.purpose = Some("freeze-test".into());
    let d = e
        .decide(&Query {
            chain: vec![fleet_for_dana[1]],
            action: "deploy",
            resource: prod_input,
            context: frozen,
        })
        .unwrap();
    assert!(!d.allowed);
    assert_eq!(
        d.deny_reason().unwrap(),
        "Sigil::Agent::\"fleet\" is forbidden by no-deploy-in-freeze"
    );
}

#[test]
fn inactive_identities_get_nothing() {
    let e = engine();
    let mut bot = agent("hr-bot", "employees.read");
    bot.status = IdentityStatus::Suspended;
    let p = props("alice");
    let d = e
        .decide(&Query {
            chain: vec![ChainMember::Identity {
                identity: &bot,
                owner: "x",
            }],
            action: "employee.read",
            resource: employee("e1", &p),
            context: ctx(),
        })
        .unwrap();
    assert!(!d.allowed);
    assert_eq!(d.steps[0].policies, vec!["sigil.inactive"]);
}

#[test]
fn token_issue_stays_inside_the_ceiling() {
    let e = Engine::compile(1, "", None).unwrap();
    let bot = agent("reader", "read");
    let api = resource("api");
    let decide = |scope: &str| {
        let mut c = ctx();
        c.scope = Some(scope.into());
        alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, c)
    };
    assert!(decide("read").allowed);
    let d = decide("write");
    assert!(!d.allowed);
    assert!(
        d.determining_policies()
            .contains(&"sigil.token.outside-ceiling.agent".to_owned())
    );
    // Deciding every scope over one entity set gives each scope's own answer, in order.
    let contexts: Vec<RequestContext> = ["write", "read", "write"]
        .into_iter()
        .map(|s| RequestContext {
            scope: Some(s.into()),
            ..ctx()
        })
        .collect();
    let each = e
        .decide_each(
            &Query {
                chain: vec![ChainMember::Identity {
                    identity: &bot,
                    owner: "alice",
                }],
                action: sigil_policy::TOKEN_ISSUE,
                resource: ResourceInput::Registered {
                    resource: &api,
                    owner: "alice",
                },
                context: ctx(),
            },
            &contexts,
        )
        .unwrap();
    let allowed: Vec<bool> = each.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [false, true, false]);
    assert_eq!(each[0].determining_policies(), d.determining_policies());
}

#[test]
fn remembered_decisions_still_follow_the_clock_when_a_policy_reads_it() {
    // Decisions about registry records are remembered; one whose policies read context.time
    // must be decided again as time passes.
    let e = Engine::compile(
        1,
        r#"@id("after-hours") forbid (principal, action == Sigil::Action::"token.issue", resource) when { context.time >= 1800000010 };"#,
        None,
    )
    .unwrap();
    let bot = agent("reader", "read");
    let api = resource("api");
    let at = |seconds: i64| RequestContext {
        now: Timestamp::from_unix_seconds(seconds),
        scope: Some("read".into()),
        ..ctx()
    };
    assert!(alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, at(1_800_000_000)).allowed);
    assert!(alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, at(1_800_000_000)).allowed);
    let later = alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, at(1_800_000_010));
    assert!(!later.allowed);
    assert_eq!(later.determining_policies(), ["after-hours"]);
    // Without such a policy the remembered decision is the same at any time.
    let e = Engine::compile(1, "", None).unwrap();
    for seconds in [1_800_000_000, 1_800_000_010] {
        assert!(alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, at(seconds)).allowed);
    }
}

#[test]
fn a_changed_record_is_never_decided_from_its_old_entity() {
    // Entity sets of registry records are reused between decisions; every change that alters
    // an entity must still show in the very next decision.
    let e = Engine::compile(1, "", None).unwrap();
    let api = resource("api");
    let write = || RequestContext {
        scope: Some("write".into()),
        ..ctx()
    };
    let mut bot = agent("reader", "read");
    assert!(!alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, write()).allowed);
    // A widened ceiling is a new version of the record.
    bot.ceiling.scopes = ScopeSet::parse_oauth("read write").unwrap();
    bot.meta.version += 1;
    assert!(alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, write()).allowed);
    // An expiry passing changes no version, only the effective status.
    bot.expires_at = Some(NOW);
    let d = alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, write());
    assert!(!d.allowed);
    assert!(d.determining_policies().contains(&"sigil.inactive".to_owned()), "{d:?}");
    // A resource that no longer defines the scope.
    bot.expires_at = None;
    let mut narrowed = resource("api");
    narrowed.scopes = ScopeSet::parse_oauth("read").unwrap();
    narrowed.meta.version += 1;
    assert!(alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &api, write()).allowed);
    assert!(!alone(&e, &bot, sigil_policy::TOKEN_ISSUE, &narrowed, write()).allowed);
}

#[test]
fn a_described_resource_or_another_context_is_never_decided_from_an_earlier_one() {
    // A chain keeps the contexts it built and the entity sets of the resources callers
    // described; a request that differs in any fact or property must be decided on its own.
    let e = Engine::compile(
        1,
        r#"@id("audits-in-time") permit (principal, action == Sigil::Action::"employee.read", resource)
           when { context has purpose && context.purpose == "audit" && context.time < 1800000010 && resource.department == "sales" };"#,
        Some(HR_SCHEMA),
    )
    .unwrap();
    let bot = agent("auditor", "employees.read");
    let sales = props("alice");
    let mut elsewhere = props("alice");
    elsewhere.insert("department".into(), "legal".into());
    let decide = |resource: &serde_json::Map<String, serde_json::Value>, purpose: &str, seconds: i64| {
        e.decide(&Query {
            chain: vec![ChainMember::Identity {
                identity: &bot,
                owner: "o",
            }],
            action: "employee.read",
            resource: employee("e1", resource),
            context: RequestContext {
                now: Timestamp::from_unix_seconds(seconds),
                purpose: Some(purpose.into()),
                ..ctx()
            },
        })
        .unwrap()
        .allowed
    };
    assert!(decide(&sales, "audit", 1_800_000_000));
    assert!(!decide(&sales, "curiosity", 1_800_000_000), "another purpose");
    assert!(!decide(&sales, "audit", 1_800_000_010), "a later second");
    assert!(
        !decide(&elsewhere, "audit", 1_800_000_000),
        "the same id, other properties"
    );
    assert!(decide(&sales, "audit", 1_800_000_000));
}

#[test]
fn invalid_policies_are_rejected_with_cedar_diagnostics() {
    let bad_syntax = Engine::compile(1, "permit (principal, action, resource", None).unwrap_err();
    assert!(!bad_syntax.diagnostics.is_empty());
    // A syntax error says where it is.
    let misplaced = Engine::compile(
        1,
        "permit (principal, action, resource);\npermit (principal, action, resource)\n  when { resource.owner == };",
        None,
    )
    .unwrap_err();
    assert!(
        misplaced.diagnostics.iter().any(|d| d.starts_with("line 3, column ")),
        "{misplaced:?}"
    );
    let unknown_attr = Engine::compile(
        1,
        r#"permit (principal is Sigil::Agent, action, resource) when { principal.nonexistent == 1 };"#,
        None,
    )
    .unwrap_err();
    assert!(
        unknown_attr.diagnostics.iter().any(|d| d.contains("nonexistent")),
        "{unknown_attr:?}"
    );
    let unknown_action = Engine::compile(
        1,
        r#"permit (principal, action == Sigil::Action::"fly", resource);"#,
        None,
    )
    .unwrap_err();
    assert!(!unknown_action.diagnostics.is_empty());
    let reserved = Engine::compile(1, r#"@id("sigil.mine") permit (principal, action, resource);"#, None).unwrap_err();
    assert!(reserved.diagnostics[0].contains("reserved"));
    let bad_schema = Engine::compile(1, "", Some("namespace Sigil { entity }")).unwrap_err();
    assert!(bad_schema.diagnostics[0].starts_with("schema:"));
}

#[test]
fn unknown_actions_and_types_are_request_errors_not_denies() {
    let e = engine();
    let bot = agent("hr-bot", "x");
    let chain = vec![ChainMember::Identity {
        identity: &bot,
        owner: "o",
    }];
    let p = props("alice");
    let err = e
        .decide(&Query {
            chain: chain.clone(),
            action: "fly",
            resource: employee("e1", &p),
            context: ctx(),
        })
        .unwrap_err();
    assert!(err.0.contains("unknown action"));
    let err = e
        .decide(&Query {
            chain: chain.clone(),
            action: "employee.read",
            resource: ResourceInput::Custom {
                type_name: "Spaceship",
                id: "1",
                properties: None,
            },
            context: ctx(),
        })
        .unwrap_err();
    assert!(!err.0.is_empty());
    // Properties that do not fit the declared type.
    let wrong = serde_json::json!({"department": 5}).as_object().unwrap().clone();
    assert!(
        e.decide(&Query {
            chain,
            action: "employee.read",
            resource: employee("e1", &wrong),
            context: ctx(),
        })
        .is_err()
    );
}

#[test]
fn plain_and_json_resource_properties_meet_the_same_schema() {
    // Plain JSON values become Cedar values directly; anything else goes through Cedar's JSON
    // reader. Both must accept and refuse exactly what the schema says, over one chain whose
    // entities are reused between the requests.
    let schema = r#"namespace Sigil {
      entity Ticket { priority: Long, open: Bool, team: String, reporter?: User };
      action "ticket.read" appliesTo { principal: [User, Agent], resource: [Ticket], context: Context };
    }"#;
    let policies = r#"@id("open-urgent") permit (principal is Sigil::User, action, resource is Sigil::Ticket)
        when { resource.open && resource.priority <= 3 && resource.team == "ops" };"#;
    let e = Engine::compile(1, policies, Some(schema)).unwrap();
    let alice = user("alice", &[]);
    let decide = |props: serde_json::Value| {
        let props = props.as_object().unwrap().clone();
        e.decide(&Query {
            chain: vec![ChainMember::User(&alice)],
            action: "ticket.read",
            resource: ResourceInput::Custom {
                type_name: "Ticket",
                id: "t1",
                properties: Some(&props),
            },
            context: ctx(),
        })
    };
    let ticket = |priority: serde_json::Value| serde_json::json!({"priority": priority, "open": true, "team": "ops"});
    assert!(decide(ticket(2.into())).unwrap().allowed);
    assert!(!decide(ticket(5.into())).unwrap().allowed);
    let reported = serde_json::json!({"priority": 1, "open": true, "team": "ops",
        "reporter": {"__entity": {"type": "Sigil::User", "id": "bob"}}});
    assert!(decide(reported).unwrap().allowed);
    for unfit in [
        ticket("2".into()),
        ticket(2.5.into()),
        ticket(serde_json::Value::Null),
        serde_json::json!({"open": true, "team": "ops"}),
        serde_json::json!({"priority": 1, "open": true, "team": "ops", "extra": 1}),
        serde_json::json!({"priority": 1, "open": "yes", "team": "ops"}),
        serde_json::json!({"priority": 1, "open": true, "team": "ops", "reporter": "bob"}),
    ] {
        let err = decide(unfit.clone()).unwrap_err();
        assert!(err.0.contains("do not fit the schema"), "{unfit} → {err:?}");
    }
    // The chain's reused entities were not changed by any of the resources above.
    assert!(decide(ticket(3.into())).unwrap().allowed);
}

#[test]
fn slices_hold_only_the_policies_of_their_action() {
    let mut many = String::new();
    for n in 0..1000 {
        many.push_str(&format!(
            "@id(\"p{n}\") permit (principal == Sigil::Agent::\"a{n}\", action == Sigil::Action::\"deploy\", resource);\n"
        ));
    }
    let e = Engine::compile(2, &many, Some(HR_SCHEMA)).unwrap();
    assert_eq!(e.policy_count(), 1000 + 6);
    let bot = agent("a999", "x");
    let api = resource("api");
    let d = alone(&e, &bot, "deploy", &api, ctx());
    assert!(d.allowed);
    assert_eq!(d.steps[0].policies, vec!["p999"]);
}

#[test]
fn a_principal_is_decided_by_every_policy_whose_scope_can_match_it() {
    // Decisions evaluate only the policies whose principal scope can match the principal; each
    // form of scope must still reach exactly the principals Cedar's semantics give it.
    let policies = r#"
        @id("eq-fleet") permit (principal == Sigil::Agent::"fleet", action == Sigil::Action::"deploy", resource);
        @id("in-devs") permit (principal in Sigil::Group::"developers", action, resource);
        @id("user-in-devs") permit (principal is Sigil::User in Sigil::Group::"developers", action == Sigil::Action::"deploy", resource);
        @id("agents") permit (principal is Sigil::Agent, action == Sigil::Action::"deploy", resource) when { principal.name == "fleet" };
        @id("anyone") permit (principal, action == Sigil::Action::"deploy", resource) when { context has purpose };
        @id("no-ops") forbid (principal in Sigil::Group::"ops", action, resource);
        @id("errs-for-bot") permit (principal == Sigil::Agent::"bot", action == Sigil::Action::"deploy", resource) when { context.time * 100000000000 > 0 };
    "#;
    let e = Engine::compile(4, policies, Some(HR_SCHEMA)).unwrap();
    let api = resource("api");
    let as_user = |u: &User, context: RequestContext| {
        e.decide(&Query {
            chain: vec![ChainMember::User(u)],
            action: "deploy",
            resource: ResourceInput::Registered {
                resource: &api,
                owner: "o",
            },
            context,
        })
        .unwrap()
    };
    // Determining policies come sorted by id, so one decision always reads the same.
    let sorted = |d: &Decision| (d.allowed, d.steps[0].policies.clone(), d.steps[0].errors.len());
    let fleet = alone(&e, &agent("fleet", "x"), "deploy", &api, ctx());
    assert_eq!(sorted(&fleet), (true, vec!["agents".into(), "eq-fleet".into()], 0));
    let other = alone(&e, &agent("other", "x"), "deploy", &api, ctx());
    assert_eq!(sorted(&other), (false, vec![], 0));
    let bot = alone(&e, &agent("bot", "x"), "deploy", &api, ctx());
    assert_eq!(sorted(&bot), (false, vec!["errs-for-bot".into()], 1));
    let alice = as_user(&user("alice", &["developers"]), ctx());
    assert_eq!(sorted(&alice), (true, vec!["in-devs".into(), "user-in-devs".into()], 0));
    let bob = as_user(&user("bob", &["developers", "ops"]), ctx());
    assert_eq!(sorted(&bob), (false, vec!["no-ops".into()], 0));
    let with_purpose = RequestContext {
        purpose: Some("release".into()),
        ..ctx()
    };
    let carol = as_user(&user("carol", &[]), with_purpose.clone());
    assert_eq!(sorted(&carol), (true, vec!["anyone".into()], 0));
    // The same principals again (their policy sets are now cached) decide the same way.
    assert!(!as_user(&user("bob", &["developers", "ops"]), with_purpose).allowed);
    assert_eq!(alone(&e, &agent("fleet", "x"), "deploy", &api, ctx()), fleet);
}

#[test]
fn evaluation_errors_deny_and_are_reported() {
    // Overflow is a runtime error Cedar's validator cannot rule out: the policy is skipped.
    let e = Engine::compile(
        3,
        r#"@id("overflows") permit (principal, action == Sigil::Action::"deploy", resource) when { context.time * 100000000000 > 0 };"#,
        Some(HR_SCHEMA),
    )
    .unwrap();
    let bot = agent("fleet", "deploy");
    let api = resource("api");
    let d = alone(&e, &bot, "deploy", &api, ctx());
    assert!(!d.allowed, "an erroring permit never allows");
    assert_eq!(d.steps[0].errors.len(), 1, "{d:?}");
    assert!(d.steps[0].errors[0].contains("overflows"), "{d:?}");
}

#[test]
fn an_erroring_forbid_denies_instead_of_being_skipped() {
    // Cedar alone skips a policy that errors, so this forbid would let the permit through.
    let e = Engine::compile(
        4,
        r#"@id("all-deploys") permit (principal, action == Sigil::Action::"deploy", resource);
@id("overflowing-forbid") forbid (principal, action == Sigil::Action::"deploy", resource) when { context.time * 100000000000 > 0 };"#,
        Some(HR_SCHEMA),
    )
    .unwrap();
    let bot = agent("fleet", "deploy");
    let d = alone(&e, &bot, "deploy", &resource("api"), ctx());
    assert!(!d.allowed, "an error is never an allow: {d:?}");
    assert_eq!(d.steps[0].policies, vec!["overflowing-forbid"]);
    assert!(d.deny_reason().unwrap().contains("overflowing-forbid"), "{d:?}");
}
