//! The CLI against a live server: the README tour, `--output json`, and exit codes
//! (0 ok, 1 error, 2 denied, 3 invalid input).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use serde_json::Value;
use sigil_testkit::TestServer;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn sigil(s: &TestServer, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(args).env("SIGIL_URL", &s.url).env_remove("SIGIL_DATA_DIR");
    match token {
        Some(t) => cmd.env("SIGIL_ADMIN_TOKEN", t),
        None => cmd.env("SIGIL_ADMIN_TOKEN", &s.admin_token),
    };
    let out = cmd.output().await.expect("run sigil");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", o.stdout, o.stderr))
}

#[tokio::test]
async fn readme_tour_works() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    let o = sigil(
        &s,
        None,
        &[
            "user",
            "create",
            "--username",
            "alice",
            "--email",
            "alice@example.com",
            "--group",
            "hr",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("alice@example.com"));
    let o = sigil(
        &s,
        None,
        &[
            "agent",
            "create",
            "--name",
            "hr-assistant",
            "--owner",
            "alice",
            "--label",
            "env=prod",
            "--ceiling",
            "employees:read",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let agent = json(&o);
    assert_eq!(agent["name"], "hr-assistant");
    assert_eq!(agent["ceiling"]["scopes"][0], "employees:read");
    // Each ceiling flag of an update replaces its own half; the other half stays.
    let update = |flag: &'static str, value: &'static str| {
        let s = &s;
        async move {
            let o = sigil(
                s,
                None,
                &["agent", "update", "hr-assistant", flag, value, "--output", "json"],
            )
            .await;
            assert_eq!(o.code, 0, "{}", o.stderr);
            json(&o)["ceiling"].clone()
        }
    };
    let c = update("--ceiling-resource", "https://hr.example.com/api").await;
    assert_eq!(c["scopes"], serde_json::json!(["employees:read"]), "{c}");
    let c = update("--ceiling", "employees:write").await;
    assert_eq!(c["resources"], serde_json::json!(["https://hr.example.com/api"]), "{c}");
    assert_eq!(c["scopes"], serde_json::json!(["employees:write"]), "{c}");

    let o = sigil(&s, None, &["agent", "list"]).await;
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("hr-assistant") && o.stdout.contains("NAME"),
        "{}",
        o.stdout
    );
    let o = sigil(&s, None, &["agent", "list", "--owner", "alice", "--output", "json"]).await;
    assert_eq!(json(&o).as_array().unwrap().len(), 1);

    let o = sigil(&s, None, &["agent", "suspend", "hr-assistant", "--reason", "leaving"]).await;
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("suspended"));
    let o = sigil(
        &s,
        None,
        &["agent", "show", agent["id"].as_str().unwrap(), "--output", "json"],
    )
    .await;
    assert_eq!(json(&o)["status"], "suspended");

    let o = sigil(
        &s,
        None,
        &[
            "workload", "create", "--name", "etl", "--owner", "alice", "--kind", "job",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = sigil(
        &s,
        None,
        &[
            "resource",
            "create",
            "--uri",
            "https://hr.example.com/api",
            "--name",
            "hr-api",
            "--owner",
            "alice",
            "--scope",
            "employees:read",
            "--server",
            "etl",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let etl = sigil(&s, None, &["workload", "show", "etl", "--output", "json"]).await;
    assert_eq!(json(&o)["servers"], serde_json::json!([json(&etl)["id"]]));
    let o = sigil(
        &s,
        None,
        &["resource", "update", "hr-api", "--no-servers", "--output", "json"],
    )
    .await;
    assert!(json(&o).get("servers").is_none(), "{}", o.stdout);
    let o = sigil(&s, None, &["keys", "list", "--output", "json"]).await;
    let mut algs: Vec<String> = json(&o)
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap().to_owned())
        .collect();
    algs.sort();
    assert_eq!(algs, ["EdDSA", "RS256"], "the token key and the ID token key");
    let o = sigil(
        &s,
        None,
        &["user", "update", "alice", "--no-groups", "--output", "json"],
    )
    .await;
    assert_eq!(json(&o)["groups"].as_array().unwrap().len(), 0);
}

/// A rotation to another token algorithm says so: verifiers that pin the old one would reject
/// the new tokens. A rotation that keeps the algorithm (or rotates the ID token key) says nothing.
#[tokio::test]
async fn a_rotation_to_another_token_algorithm_warns() {
    for (alg, warns) in [("EdDSA", false), ("RS256", false), ("ES256", true)] {
        // One pending rotation at a time: a server each.
        let Some(s) = TestServer::start().await else {
            return;
        };
        let o = sigil(&s, None, &["keys", "rotate", "--alg", alg, "--output", "json"]).await;
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(json(&o)["alg"], alg);
        assert_eq!(o.stderr.contains("instead of EdDSA"), warns, "{alg}: {}", o.stderr);
    }
}

#[tokio::test]
async fn pagination_with_all() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    for n in 0..5 {
        assert_eq!(
            sigil(&s, None, &["user", "create", "--username", &format!("u{n}")])
                .await
                .code,
            0
        );
    }
    let o = sigil(&s, None, &["user", "list", "--limit", "2", "--all", "--output", "json"]).await;
    assert_eq!(json(&o).as_array().unwrap().len(), 5);
    let o = sigil(&s, None, &["user", "list", "--limit", "2"]).await;
    assert!(o.stderr.contains("--cursor"), "{}", o.stderr);
    // A partial JSON list says so on stderr, leaving stdout a plain array.
    let o = sigil(&s, None, &["user", "list", "--limit", "2", "--output", "json"]).await;
    assert_eq!(json(&o).as_array().unwrap().len(), 2);
    assert!(o.stderr.contains("--cursor"), "{}", o.stderr);
    // The audit search table follows --all too (five user.created records at least).
    let o = sigil(
        &s,
        None,
        &["audit", "search", "--type", "user.created", "--limit", "2", "--all"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout.lines().filter(|l| l.contains("user.created")).count(),
        5,
        "{}",
        o.stdout
    );
    assert!(!o.stderr.contains("--cursor"), "{}", o.stderr);
}

/// Commands that return no object still answer `--output json` with one JSON document.
#[tokio::test]
async fn every_command_answers_json() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem").to_string_lossy().into_owned();
    let jwks = dir.path().join("k.jwks").to_string_lossy().into_owned();
    for args in [
        &["user", "create", "--username", "alice"][..],
        &["agent", "create", "--name", "bot", "--owner", "alice"][..],
    ] {
        assert_eq!(sigil(&s, None, args).await.code, 0);
    }
    let o = json(
        &sigil(
            &s,
            None,
            &[
                "--output",
                "json",
                "client",
                "keygen",
                "--private-key",
                &key,
                "--jwks",
                &jwks,
            ],
        )
        .await,
    );
    assert_eq!(o["private_key"], key.as_str());
    // A second keygen must not replace the key a client may be registered with.
    let o = sigil(&s, None, &["client", "keygen", "--private-key", &key, "--jwks", &jwks]).await;
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let client = json(
        &sigil(
            &s,
            None,
            &[
                "--output",
                "json",
                "client",
                "create",
                "--identity",
                "bot",
                "--jwks-file",
                &jwks,
            ],
        )
        .await,
    );
    let id = client["client_id"].as_str().unwrap();
    let o = json(&sigil(&s, None, &["--output", "json", "client", "delete", id]).await);
    assert_eq!((o["result"].as_str(), o["name"].as_str()), (Some("deleted"), Some(id)));
    let o = json(&sigil(&s, None, &["--output", "json", "token", "revoke", "not-a-token"]).await);
    assert_eq!(o["result"], "revoked");
    // `token get` sends no DPoP proof: a client that must use DPoP is told so, as invalid input.
    let dpop = json(
        &sigil(
            &s,
            None,
            &[
                "--output",
                "json",
                "client",
                "create",
                "--identity",
                "bot",
                "--secret",
                "--dpop-required",
            ],
        )
        .await,
    );
    let o = sigil(
        &s,
        None,
        &[
            "token",
            "get",
            "--client-id",
            dpop["client_id"].as_str().unwrap(),
            "--secret",
            dpop["client_secret"].as_str().unwrap(),
            "--resource",
            "https://nowhere.example.com",
        ],
    )
    .await;
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stderr.contains("invalid_dpop_proof") && o.stderr.contains("DPoP-capable"),
        "{}",
        o.stderr
    );
    let config = dir.path().join("sigil.toml");
    std::fs::write(&config, "").unwrap();
    let o = json(
        &sigil(
            &s,
            None,
            &["--output", "json", "config", "check", &config.to_string_lossy()],
        )
        .await,
    );
    assert_eq!(
        (o["result"].as_str(), o["store"].as_str()),
        (Some("ok"), Some("sqlite"))
    );
}

/// Revoked and decommissioned are final: nothing new is made for such an identity.
#[tokio::test]
async fn final_identities_get_no_new_credentials() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    for args in [
        &["user", "create", "--username", "alice"][..],
        &["agent", "create", "--name", "old", "--owner", "alice"][..],
        &["agent", "decommission", "old"][..],
    ] {
        assert_eq!(sigil(&s, None, args).await.code, 0, "{args:?}");
    }
    for args in [
        &["client", "create", "--identity", "old", "--secret"][..],
        &["registration-token", "create", "--owner", "alice", "--identity", "old"][..],
        &["agent", "update", "old", "--ceiling", "employees:write"][..],
    ] {
        let o = sigil(&s, None, args).await;
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("final"), "{args:?}: {}", o.stderr);
    }
    // Its description may still be kept up to date.
    let o = sigil(&s, None, &["agent", "update", "old", "--description", "retired 2026"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[tokio::test]
async fn exit_codes() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    sigil(&s, None, &["user", "create", "--username", "alice"]).await;
    // 2: denied.
    let o = sigil(&s, Some("sigil_admin_nope"), &["user", "list"]).await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("invalid admin credential"));
    // 3: invalid input, caught locally or by the server.
    assert_eq!(
        sigil(&s, None, &["user", "create", "--username", "bad name"])
            .await
            .code,
        3
    );
    assert_eq!(
        sigil(&s, None, &["agent", "create", "--name", "x", "--owner", "ghost"])
            .await
            .code,
        3
    );
    assert_eq!(
        sigil(&s, None, &["agent", "create", "--name", "x"]).await.code,
        3,
        "missing --owner is a usage error"
    );
    assert_eq!(sigil(&s, None, &["agent", "frobnicate"]).await.code, 3);
    // 1: errors (not found, conflicts, unreachable server).
    assert_eq!(sigil(&s, None, &["agent", "show", "ghost"]).await.code, 1);
    sigil(&s, None, &["agent", "create", "--name", "bot", "--owner", "alice"]).await;
    sigil(&s, None, &["agent", "revoke", "bot"]).await;
    let o = sigil(&s, None, &["agent", "resume", "bot"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("revoked"), "{}", o.stderr);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"));
    let out = cmd
        .args(["user", "list"])
        .env("SIGIL_URL", "http://127.0.0.1:9")
        .env("SIGIL_ADMIN_TOKEN", "x")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A server address that is not a URL is invalid input, not an unreachable server.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["user", "list"])
        .env("SIGIL_URL", "notaurl")
        .env("SIGIL_ADMIN_TOKEN", "x")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    // An admin token read from a variable with its newline still works; control characters
    // inside one are invalid input, not an unreachable server.
    let with_newline = format!("{}\n", s.admin_token);
    assert_eq!(sigil(&s, Some(&with_newline), &["user", "list"]).await.code, 0);
    assert_eq!(sigil(&s, Some("bad\u{1}token"), &["user", "list"]).await.code, 3);
    // With --output json an error is one JSON object on stderr.
    let o = sigil(&s, None, &["agent", "show", "ghost", "--output", "json"]).await;
    let e: Value = serde_json::from_str(o.stderr.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.stderr));
    assert_eq!((e["exit_code"].as_u64(), o.code), (Some(1), 1));
    assert!(e["error"].as_str().unwrap().contains("ghost"), "{e}");
    // Nothing to trace is the same error in both formats.
    assert_eq!(sigil(&s, None, &["trace", "nosuch"]).await.code, 1);
    assert_eq!(sigil(&s, None, &["trace", "nosuch", "--output", "json"]).await.code, 1);
    assert_eq!(sigil(&s, None, &["trace", ""]).await.code, 3);
    // 0: help.
    assert_eq!(sigil(&s, None, &["--help"]).await.code, 0);
}

#[tokio::test]
async fn policy_commands() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().into_owned()
    };
    for args in [
        &["user", "create", "--username", "alice"][..],
        &["agent", "create", "--name", "hr-bot", "--owner", "alice"][..],
    ] {
        assert_eq!(sigil(&s, None, args).await.code, 0);
    }
    let schema = path(
        "schema.cedarschema",
        r#"namespace Sigil { entity Employee { manager: String }; action "employee.read" appliesTo { principal: [User, Agent], resource: [Employee], context: Context }; }"#,
    );
    let bad = path(
        "bad.cedar",
        "permit (principal, action == Sigil::Action::\"fly\", resource);",
    );
    let o = sigil(&s, None, &["policy", "upload", &bad, "--schema", &schema]).await;
    assert_eq!(o.code, 3, "invalid input: {}", o.stderr);
    assert!(o.stderr.contains("fly"), "Cedar's diagnostic is printed: {}", o.stderr);

    let v1 = path(
        "v1.cedar",
        "@id(\"bot\")\npermit (principal == Sigil::Agent::\"hr-bot\", action, resource);\n@id(\"managers\")\npermit (principal is Sigil::User, action, resource is Sigil::Employee) when { resource.manager == principal.username };\n",
    );
    let o = sigil(&s, None, &["policy", "upload", &v1, "--schema", &schema, "--activate"]).await;
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "policy version 1 (active)"),
        "{}",
        o.stderr
    );
    let v2 = path(
        "v2.cedar",
        "@id(\"bot\")\npermit (principal == Sigil::Agent::\"hr-bot\", action, resource);\n",
    );
    assert_eq!(
        sigil(&s, None, &["policy", "upload", &v2, "--schema", &schema])
            .await
            .code,
        0
    );
    let list = json(&sigil(&s, None, &["--output", "json", "policy", "list"]).await);
    assert_eq!(list[0]["version"], 2);
    assert_eq!(list[1]["active"], true);
    let o = sigil(&s, None, &["policy", "diff", "1", "2"]).await;
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("- @id(\"managers\")"), "{}", o.stdout);
    assert!(
        sigil(&s, None, &["policy", "show", "2"])
            .await
            .stdout
            .contains("hr-bot")
    );

    let request = |user: &str, manager: &str| {
        serde_json::json!({
            "subject": {"type": "user", "id": user, "properties": {"act": {"type": "agent", "id": "hr-bot"}}},
            "action": {"name": "employee.read"},
            "resource": {"type": "Employee", "id": "e1", "properties": {"manager": manager}},
        })
    };
    let explain = path("ask.json", &request("alice", "bob").to_string());
    let o = sigil(&s, None, &["policy", "explain", &explain]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("DENY"), "{}", o.stdout);
    assert!(o.stdout.contains("Sigil::User::\"alice\""), "{}", o.stdout);

    let cases = |expect_own: &str| {
        serde_json::json!({"cases": [
            {"name": "her own report", "request": request("alice", "alice"), "expect": expect_own},
            {"name": "someone else's", "request": request("alice", "bob"), "expect": "deny"},
        ]})
        .to_string()
    };
    let passing = path("pass.json", &cases("allow"));
    let o = sigil(&s, None, &["policy", "test", &passing]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let failing = path("fail.json", &cases("deny"));
    let o = sigil(&s, None, &["policy", "test", &failing]).await;
    assert_eq!(o.code, 2, "a failing case: {}", o.stdout);
    assert!(o.stdout.contains("FAIL her own report"));
    // Against version 2 (no manager rule) the user's step denies her own report.
    assert_eq!(
        sigil(&s, None, &["policy", "test", &failing, "--version", "2"])
            .await
            .code,
        0
    );
    let broken = path("broken.json", "{\"cases\": [{\"name\": 1}]}");
    assert_eq!(sigil(&s, None, &["policy", "test", &broken]).await.code, 3);
    let empty = path("empty.json", "{\"cases\": []}");
    assert_eq!(sigil(&s, None, &["policy", "test", &empty]).await.code, 3);
    let o = sigil(&s, None, &["policy", "test", &passing, "--version", "99"]).await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        !o.stderr.contains("her own report"),
        "the version is named, not a case: {}",
        o.stderr
    );
    // A case the server cannot evaluate is reported, and the cases after it still run.
    let mut with_bad_case: Value = serde_json::from_str(&cases("deny")).unwrap();
    with_bad_case["cases"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"name": "no such action", "request": {"subject": {"type": "user", "id": "alice"}, "action": {"name": "fly"}, "resource": {"type": "Employee", "id": "e1"}}, "expect": "deny"}),
    );
    with_bad_case["cases"].as_array_mut().unwrap().insert(
        1,
        serde_json::json!({"name": "no such user", "request": request("nobody", "alice"), "expect": "deny"}),
    );
    let mixed = path("mixed.json", &with_bad_case.to_string());
    let o = sigil(&s, None, &["policy", "test", &mixed]).await;
    assert_eq!(o.code, 3, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("ERR  no such action"), "{}", o.stdout);
    assert!(o.stdout.contains("ERR  no such user"), "{}", o.stdout);
    assert!(o.stdout.contains("FAIL her own report"), "{}", o.stdout);
    let o = json(&sigil(&s, None, &["--output", "json", "policy", "diff", "1", "2"]).await);
    assert!(
        o["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "- @id(\"managers\")"),
        "{o}"
    );
    let o = sigil(&s, None, &["policy", "show", "0"]).await;
    assert!(o.stdout.contains("built-in"), "{}", o.stdout);

    let o = sigil(&s, None, &["policy", "activate", "2"]).await;
    assert_eq!(o.code, 0);
    let o = json(&sigil(&s, None, &["--output", "json", "policy", "rollback"]).await);
    assert_eq!((o["version"].as_u64(), o["previous"].as_u64()), (Some(1), Some(2)));
}

/// The example policy set in `examples/policies/hr` uploads and passes its own tests.
#[tokio::test]
async fn example_policies_pass_their_tests() {
    let Some(s) = TestServer::start().await else {
        return;
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies/hr");
    for args in [
        &["user", "create", "--username", "alice", "--group", "hr"][..],
        &["user", "create", "--username", "bob"][..],
        &["agent", "create", "--name", "hr-assistant", "--owner", "alice"][..],
    ] {
        assert_eq!(sigil(&s, None, args).await.code, 0);
    }
    let o = sigil(
        &s,
        None,
        &[
            "policy",
            "upload",
            &format!("{dir}/policies.cedar"),
            "--schema",
            &format!("{dir}/schema.cedarschema"),
            "--activate",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = sigil(&s, None, &["policy", "test", &format!("{dir}/tests.json")]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.lines().filter(|l| l.starts_with("ok")).count(), 4);
}

/// `sigil … | head` closes the pipe early: the CLI ends quietly with success, as command-line
/// tools do, instead of panicking with a backtrace.
#[test]
fn a_closed_stdout_pipe_ends_the_cli_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["config", "example"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
