//! The tamper-evident log end to end: records are integrated and checkpointed, proofs verify,
//! and every kind of tampering — in the database (online) or in an export (offline) — is caught
//! and located.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use serde_json::json;
use sigil_core::audit::merkle;
use sigil_testkit::{Family, TestServer};
use sqlx::Connection;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn sigil(s: &TestServer, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .env("SIGIL_URL", &s.url)
        .env("SIGIL_ADMIN_TOKEN", &s.admin_token)
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A hash as the proof endpoints print it (hex).
fn unhex(h: &str) -> merkle::Hash {
    (0..32)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap()
}

/// Every leaf of `leaves` has an inclusion proof that verifies against checkpoint `cp`.
async fn assert_included(
    c: &sigil_client::Client,
    leaves: std::ops::Range<u64>,
    cp: &sigil_proto::admin::CheckpointView,
) {
    for leaf in leaves {
        let p = c.inclusion_proof(leaf, Some(cp.tree_size)).await.unwrap();
        assert_eq!((p.tree_size, &p.root_hash), (cp.tree_size, &cp.root_hash));
        let proof: Vec<_> = p.proof.iter().map(|h| unhex(h)).collect();
        assert!(
            merkle::verify_inclusion(&unhex(&p.leaf_hash), leaf, cp.tree_size, &proof, &unhex(&cp.root_hash)),
            "leaf {leaf}"
        );
    }
}

/// A server with `n` users and an agent, every record integrated and checkpointed.
async fn populated(n: usize) -> Option<TestServer> {
    let s = TestServer::start().await?;
    let c = s.client();
    for i in 0..n {
        c.create_user(&serde_json::from_value(json!({"username": format!("user{i}")})).unwrap())
            .await
            .unwrap();
    }
    c.create_identity(
        Family::Agents,
        &serde_json::from_value(json!({"name": "bot", "owner": "user0"})).unwrap(),
    )
    .await
    .unwrap();
    integrate(&s).await;
    Some(s)
}

/// The same data directory served by a new process; the second value keeps the old one's
/// files alive.
async fn restarted(s: TestServer) -> (TestServer, impl Sized) {
    let data = s.data_dir.clone();
    let keep = s.stop().await;
    let s = TestServer::start_exact(sigil_testkit::Options {
        data_dir: Some(data),
        ..Default::default()
    })
    .await;
    (s, keep)
}

/// Restarts on the same data, records one more change and waits for the integrator to refuse
/// it (the stopped server's lease runs out first: `Ok(0)` until then).
async fn refused_after_restart(s: TestServer) -> (TestServer, impl Sized, sigil_core::audit::AuditError) {
    let (s, keep) = restarted(s).await;
    s.client()
        .create_user(&serde_json::from_value(json!({"username": "later"})).unwrap())
        .await
        .unwrap();
    let app = s.app();
    let refused = loop {
        match app.audit.integrate_once(&app.keys).await {
            Ok(n) => assert_eq!(n, 0, "nothing is integrated"),
            Err(e) => break e,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    (s, keep, refused)
}

async fn integrate(s: &TestServer) {
    let app = s.app();
    while !app.store.pending_audit(1).await.unwrap().is_empty() {
        app.audit.integrate_once(&app.keys).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn db(s: &TestServer) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    let url = match &s.app().config.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", s.data_dir.join("sigil.db").display()),
    };
    sqlx::AnyConnection::connect(&url).await.unwrap()
}

async fn exec(s: &TestServer, sql: &str) {
    let mut c = db(s).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intact_log_verifies_online_and_offline() {
    let Some(s) = populated(5).await else { return };
    let o = sigil(&s, &["audit", "verify"]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("ok:"), "{}", o.stdout);

    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    let keys = dir.path().join("jwks.json");
    assert_eq!(
        sigil(&s, &["audit", "export", "--file", export.to_str().unwrap()])
            .await
            .code,
        0
    );
    let jwks = sigil(&s, &["keys", "jwks"]).await;
    std::fs::write(&keys, jwks.stdout).unwrap();
    s.stop().await;
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "audit",
            "verify",
            "--file",
            export.to_str().unwrap(),
            "--public-key",
            keys.to_str().unwrap(),
            "--output",
            "json",
        ])
        .env("SIGIL_URL", "http://127.0.0.1:9")
        .output()
        .await
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "offline, no server: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["records"].as_u64().unwrap() >= 8, "{report}");
    assert_eq!(report["verified_size"], report["records"]);
}

/// A rotation removes the old token key from the JWKS an hour later; the checkpoints it signed
/// still verify, online and offline, against the public key its `key.created` record keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_by_a_removed_key_still_verify() {
    let opts = sigil_testkit::Options {
        fake_clock_at: Some(sigil_types::Timestamp::from_unix_seconds(1_900_000_000)),
        config_toml: Some("[keys]\npublish_ahead = \"10m\"\nretire_after = \"1h\"\n".into()),
        ..Default::default()
    };
    let Some(s) = TestServer::start_with(opts).await else {
        return;
    };
    let (app, c) = (s.app().clone(), s.client());
    let user = |name: &str| serde_json::from_value(json!({ "username": name })).unwrap();
    c.create_user(&user("before")).await.unwrap();
    integrate(&s).await;
    let old_kid = app.keys.active().unwrap().kid().to_owned();
    c.rotate_key(&Default::default()).await.unwrap();
    s.advance(std::time::Duration::from_secs(11 * 60));
    app.keys.maintain().await.unwrap();
    c.create_user(&user("during")).await.unwrap();
    integrate(&s).await;
    s.advance(std::time::Duration::from_secs(61 * 60));
    app.keys.maintain().await.unwrap();
    c.create_user(&user("after")).await.unwrap();
    integrate(&s).await;
    let jwks = sigil(&s, &["keys", "jwks"]).await;
    assert!(!jwks.stdout.contains(&old_kid), "the old key is no longer published");

    let o = sigil(&s, &["audit", "verify", "--output", "json"]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["skipped_checkpoints"], 0, "{report}");
    assert_eq!(report["verified_size"], report["records"], "{report}");

    // Offline too, and a checkpoint by a key the log never recorded is still refused when no
    // checkpoint by a published key covers it.
    let dir = tempfile::tempdir().unwrap();
    let (export, keys) = (dir.path().join("audit.jsonl"), dir.path().join("jwks.json"));
    assert_eq!(
        sigil(&s, &["audit", "export", "--file", export.to_str().unwrap()])
            .await
            .code,
        0
    );
    std::fs::write(&keys, &jwks.stdout).unwrap();
    let args = [
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--public-key",
        keys.to_str().unwrap(),
    ];
    let verify_offline = || sigil(&s, &args);
    let offline = verify_offline().await;
    assert_eq!(offline.code, 0, "{}", offline.stderr);
    let text = std::fs::read_to_string(&export).unwrap();
    let signed_by_old_key_only: Vec<&str> = text
        .lines()
        .filter(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["type"] != "checkpoint" || checkpoint_kid(&line) == old_kid
        })
        .collect();
    std::fs::write(&export, signed_by_old_key_only.join("\n") + "\n").unwrap();
    let refused = verify_offline().await;
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stderr.contains("unknown key id"), "{}", refused.stderr);
}

/// The `kid` in an export line's checkpoint JWS header.
fn checkpoint_kid(line: &serde_json::Value) -> String {
    let header = line["jws"].as_str().unwrap().split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&sigil_crypto::b64url_decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn online_failure(s: &TestServer) -> String {
    let o = sigil(s, &["audit", "verify"]).await;
    assert_eq!(o.code, 1, "tampering must fail verification: {}", o.stdout);
    o.stderr
}

#[tokio::test]
async fn modified_record_is_named() {
    let Some(s) = populated(5).await else { return };
    // user3's creation record, wherever bootstrap records put it.
    let leaves = s.app().store.list_leaves(0, 100).await.unwrap();
    let n = leaves.iter().position(|l| l.body.contains("user3")).unwrap();
    exec(
        &s,
        &format!("UPDATE audit_events SET body = REPLACE(body, 'user3', 'mallory') WHERE leaf_index = {n}"),
    )
    .await;
    let err = online_failure(&s).await;
    assert!(err.contains(&format!("record {n} was modified")), "{err}");
}

/// A byte edited into invalid UTF-8 (SQLite stores whatever it is given; PostgreSQL refuses it)
/// is a modified record like any other, and the rest of the log can still be read and searched.
#[tokio::test]
async fn a_record_edited_into_invalid_utf8_is_named() {
    let Some(s) = populated(5).await else { return };
    if s.app().config.database_url.is_some() {
        return;
    }
    let leaves = s.app().store.list_leaves(0, 100).await.unwrap();
    let n = leaves.iter().position(|l| l.body.contains("user3")).unwrap();
    exec(
        &s,
        &format!("UPDATE audit_events SET body = CAST(REPLACE(body, 'user3', 'user' || CAST(x'ff' AS TEXT)) AS TEXT) WHERE leaf_index = {n}"),
    )
    .await;
    let err = online_failure(&s).await;
    assert!(err.contains(&format!("record {n} was modified")), "{err}");
    let search = sigil(&s, &["audit", "search", "--type", "user.created"]).await;
    assert_eq!(search.code, 0, "{}", search.stderr);
}

/// Editing only the columns search and trace use leaves the evidence intact, but would hide the
/// record: verification compares them with the record.
#[tokio::test]
async fn edited_index_columns_are_named() {
    let Some(s) = populated(5).await else { return };
    let leaves = s.app().store.list_leaves(0, 100).await.unwrap();
    let n = leaves.iter().position(|l| l.body.contains("user3")).unwrap();
    exec(
        &s,
        &format!(
            "UPDATE audit_events SET event_type = 'token.issued', target_id = 'idn_hidden' WHERE leaf_index = {n}"
        ),
    )
    .await;
    let err = online_failure(&s).await;
    assert!(
        err.contains(&format!(
            "record {n}'s indexed columns were modified (event_type, target_id)"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn removed_record_is_named() {
    let Some(s) = populated(5).await else { return };
    exec(&s, "DELETE FROM audit_events WHERE leaf_index = 4").await;
    let err = online_failure(&s).await;
    assert!(err.contains("record 4 was removed"), "{err}");
}

/// Integration signs every record it adds, so records past the newest checkpoint mean
/// checkpoints were removed (to hide an edit): verification fails instead of calling them a tail.
#[tokio::test]
async fn records_whose_checkpoints_were_removed_do_not_verify() {
    let Some(s) = populated(3).await else { return };
    s.client()
        .create_user(&serde_json::from_value(json!({"username": "late"})).unwrap())
        .await
        .unwrap();
    integrate(&s).await;
    exec(
        &s,
        "DELETE FROM audit_checkpoints WHERE tree_size = (SELECT MAX(tree_size) FROM audit_checkpoints)",
    )
    .await;
    let err = online_failure(&s).await;
    assert!(err.contains("no signed checkpoint covers them"), "{err}");
}

#[tokio::test]
async fn reordered_records_are_named() {
    let Some(s) = populated(5).await else { return };
    exec(&s, "UPDATE audit_events SET leaf_index = -1 WHERE leaf_index = 2").await;
    exec(&s, "UPDATE audit_events SET leaf_index = 2 WHERE leaf_index = 3").await;
    exec(&s, "UPDATE audit_events SET leaf_index = 3 WHERE leaf_index = -1").await;
    let err = online_failure(&s).await;
    assert!(err.contains("record 2 was modified"), "{err}");
}

#[tokio::test]
async fn inserted_record_is_named() {
    let Some(s) = populated(5).await else { return };
    // Shift every leaf from 3 on and slip a well-formed record into position 3, with a correct
    // leaf hash: only the signed checkpoints and the shifted neighbours give it away.
    let forged_body = s.app().store.list_leaves(3, 1).await.unwrap()[0]
        .body
        .replace("\"name\":\"user", "\"name\":\"ghost");
    let h = sigil_core::audit::log::leaf_hash_of(3, &forged_body);
    let hexh: String = h.iter().map(|b| format!("{b:02x}")).collect();
    exec(
        &s,
        "UPDATE audit_events SET leaf_index = leaf_index + 1000000 WHERE leaf_index >= 3",
    )
    .await;
    exec(
        &s,
        "UPDATE audit_events SET leaf_index = leaf_index - 999999 WHERE leaf_index >= 1000000",
    )
    .await;
    let blob = match &s.app().config.database_url {
        Some(_) => format!("decode('{hexh}', 'hex')"),
        None => format!("x'{hexh}'"),
    };
    let body = forged_body.replace('\'', "''");
    exec(&s, &format!("INSERT INTO audit_events (time, event_type, outcome, body, leaf_index, leaf_hash) VALUES (0, 'user.created', 'success', '{body}', 3, {blob})")).await;
    let err = online_failure(&s).await;
    assert!(
        err.contains("inserted at position 4") || err.contains("inserted at position 3"),
        "{err}"
    );
}

#[tokio::test]
async fn tampered_exports_fail_offline_and_say_where() {
    let Some(s) = populated(4).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    let keys = dir.path().join("jwks.json");
    assert_eq!(
        sigil(&s, &["audit", "export", "--file", export.to_str().unwrap()])
            .await
            .code,
        0
    );
    std::fs::write(&keys, sigil(&s, &["keys", "jwks"]).await.stdout).unwrap();
    let original: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let first_record = original.iter().position(|l| l.contains("\"type\":\"record\"")).unwrap();
    let header: serde_json::Value = serde_json::from_str(&original[0]).unwrap();
    assert_eq!(header["issuer"], s.url.as_str(), "the export names whose log it is");

    let check = |lines: Vec<String>, key: std::path::PathBuf, needle: &str| {
        let path = dir.path().join(format!("t{}.jsonl", lines.len() + needle.len()));
        std::fs::write(&path, lines.join("\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args([
                "audit",
                "verify",
                "--file",
                path.to_str().unwrap(),
                "--public-key",
                key.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(0), "{needle}: tampered export verified");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
    };

    let mut modified = original.clone();
    let user1 = original[first_record..]
        .iter()
        .position(|l| l.contains("user1"))
        .unwrap();
    modified[first_record + user1] = modified[first_record + user1].replace("user", "evil");
    check(modified, keys.clone(), &format!("record {user1} was modified"));

    let mut removed = original.clone();
    removed.remove(first_record + 3);
    check(removed, keys.clone(), "record 3 was removed");

    let mut reordered = original.clone();
    reordered.swap(first_record + 1, first_record + 2);
    check(reordered, keys.clone(), "position 1");

    let mut inserted = original.clone();
    inserted.insert(first_record + 2, original[first_record + 1].clone());
    check(inserted, keys.clone(), "position 2");

    let mut truncated = original.clone();
    truncated.pop();
    check(truncated, keys.clone(), "removed");

    let other = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa)
        .unwrap()
        .0;
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, serde_json::to_string(&other.public_jwk()).unwrap()).unwrap();
    check(original.clone(), wrong, "does not verify");

    let mut garbage = original;
    garbage[first_record] = "{not json".into();
    check(garbage, keys, "not a valid export line");
}

#[tokio::test]
async fn proofs_verify_against_checkpoints() {
    // More leaves than the lowest stored level covers, so proofs mix stored subtrees with ones
    // hashed again from the leaves.
    let Some(s) = populated(150).await else { return };
    let c = s.client();
    let cp = c.audit_checkpoint().await.unwrap();
    assert!(cp.tree_size > 2 << merkle::LOWEST_STORED_LEVEL, "{}", cp.tree_size);
    assert_included(&c, 0..cp.tree_size, &cp).await;
    // Every checkpoint of the log is consistent with the latest.
    let all = c.audit_checkpoints(0, 500).await.unwrap().items;
    assert!(all.len() > 1);
    for first in &all {
        let cons = c.consistency_proof(first.tree_size, cp.tree_size).await.unwrap();
        let proof: Vec<_> = cons.proof.iter().map(|h| unhex(h)).collect();
        assert!(merkle::verify_consistency(
            first.tree_size,
            cp.tree_size,
            &unhex(&first.root_hash),
            &unhex(&cp.root_hash),
            &proof
        ));
    }
    // Only the subtrees of the stored levels are kept.
    use sqlx::Row;
    let lowest: i64 = sqlx::query("SELECT MIN(level) FROM audit_tree_nodes")
        .fetch_one(&mut db(&s).await)
        .await
        .unwrap()
        .get(0);
    assert_eq!(lowest, i64::from(merkle::LOWEST_STORED_LEVEL));
    // Nonsense ranges are refused precisely.
    assert_eq!(
        c.inclusion_proof(cp.tree_size + 5, None)
            .await
            .unwrap_err()
            .status()
            .unwrap(),
        400
    );
    assert_eq!(c.consistency_proof(0, 1).await.unwrap_err().status().unwrap(), 400);
    assert_eq!(c.consistency_proof(5, 3).await.unwrap_err().status().unwrap(), 400);
}

/// The stored tree nodes are derived data: lost, they are recomputed from the leaf hashes when
/// the integrator next loads the tree, and integration, proofs and verification go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_tree_nodes_are_rebuilt_from_the_leaves() {
    if std::env::var("SIGIL_TEST_BACKEND").as_deref() == Ok("postgres") {
        return; // a restart on the same data is a SQLite data directory
    }
    let Some(s) = populated(140).await else { return };
    // One frontier node corrupted (a wrong root unless repaired), the rest lost.
    exec(&s, "DELETE FROM audit_tree_nodes WHERE level <> 7").await;
    exec(&s, "UPDATE audit_tree_nodes SET hash = zeroblob(32)").await;
    let (s, _keep) = restarted(s).await;
    s.client()
        .create_user(&serde_json::from_value(json!({"username": "later"})).unwrap())
        .await
        .unwrap();
    integrate(&s).await;
    assert!(
        s.app().store.pending_audit(1).await.unwrap().is_empty(),
        "integration goes on"
    );
    let o = sigil(&s, &["audit", "verify", "--output", "json"]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["verified_size"], report["records"], "{report}");
    let proof = s.client().inclusion_proof(3, None).await.unwrap();
    assert_eq!(proof.root_hash, s.client().audit_checkpoint().await.unwrap().root_hash);
}

/// The integrator's lease is renewed by its steps' fences, not on every tick: a holder with
/// nothing to integrate writes nothing, and takes its lapsed lease back without asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_integrator_writes_nothing() {
    use sqlx::Row;
    let Some(s) = populated(2).await else { return };
    let lease_expiry = || async {
        let mut c = db(&s).await;
        sqlx::query("SELECT expires_at FROM leases WHERE name = 'audit-integrator'")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get::<i64, _>("expires_at")
    };
    let before = lease_expiry().await;
    let app = s.app();
    for _ in 0..3 {
        assert_eq!(app.audit.integrate_once(&app.keys).await.unwrap(), 0);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(app.store.pending_audit(1).await.unwrap().is_empty());
    assert_eq!(lease_expiry().await, before, "an idle integrator renewed its lease");

    s.client()
        .create_user(&serde_json::from_value(json!({"username": "later"})).unwrap())
        .await
        .unwrap();
    integrate(&s).await;
    assert!(lease_expiry().await > before, "a step extends the lease");
}

/// Integrated records whose checkpoints were removed are not signed again: the integrator
/// would otherwise vouch for whatever the records now say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_stripped_of_its_checkpoints_is_not_signed_again() {
    if std::env::var("SIGIL_TEST_BACKEND").as_deref() == Ok("postgres") {
        return; // a restart on the same data is a SQLite data directory
    }
    let Some(s) = populated(9).await else { return };
    exec(&s, "DELETE FROM audit_checkpoints").await;
    exec(&s, "DELETE FROM audit_tree_nodes").await;
    let (s, _keep, refused) = refused_after_restart(s).await;
    let app = s.app();
    assert!(refused.to_string().contains("no signed checkpoint"), "{refused}");
    assert!(
        app.store.latest_checkpoint().await.unwrap().is_none(),
        "nothing was signed"
    );
    assert!(
        !app.store.pending_audit(1).await.unwrap().is_empty(),
        "the new record waits"
    );
}

/// A last checkpoint re-signed by a key the server never had (to make it vouch for an edited
/// tree) is not trusted for its claims: integration stops instead of signing on top of it.
#[tokio::test]
async fn a_checkpoint_by_an_unknown_key_is_not_signed_on_top_of() {
    if std::env::var("SIGIL_TEST_BACKEND").as_deref() == Ok("postgres") {
        return; // a restart on the same data is a SQLite data directory
    }
    let Some(s) = populated(4).await else { return };
    let latest = s.app().store.latest_checkpoint().await.unwrap().unwrap();
    let payload = sigil_crypto::b64url_decode(latest.jws.split('.').nth(1).unwrap()).unwrap();
    let (forger, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let forged = sigil_crypto::sign_compact(&forger, "sigil-audit-checkpoint+jwt", &payload).unwrap();
    exec(
        &s,
        &format!(
            "UPDATE audit_checkpoints SET jws = '{forged}' WHERE tree_size = {}",
            latest.tree_size
        ),
    )
    .await;
    let (_s, _keep, refused) = refused_after_restart(s).await;
    assert!(refused.to_string().contains("does not verify"), "{refused}");
}

/// Following `next_cursor` as `cursor` walks the leaves and checkpoints to their end, each
/// item once, like every other list of the admin API.
#[tokio::test]
async fn leaves_and_checkpoints_page_with_the_cursor_they_return() {
    let Some(s) = populated(9).await else { return };
    let total = s.client().audit_checkpoint().await.unwrap().tree_size;
    let http = reqwest::Client::new();
    for (path, key) in [("leaves", "leaf_index"), ("checkpoints", "tree_size")] {
        let mut seen: Vec<u64> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut url = format!("{}/admin/v1/audit/{path}?limit=4", s.url);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: serde_json::Value = http
                .get(url)
                .bearer_auth(&s.admin_token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            seen.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i[key].as_u64().unwrap()),
            );
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "{path}: the pages never ended");
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(unique, seen, "{path}: an item came twice");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{path}: {seen:?}");
        if path == "leaves" {
            assert!(seen.len() as u64 >= total, "{path}: {seen:?}");
        }
    }
    let both = http
        .get(format!("{}/admin/v1/audit/leaves?from=1&cursor=2", s.url))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(both.status().as_u16(), 400);
}

#[tokio::test]
async fn search_trace_and_bad_filters() {
    let Some(s) = populated(2).await else { return };
    sigil(&s, &["client", "create", "--identity", "bot", "--secret"]).await;
    sigil(&s, &["agent", "suspend", "bot", "--reason", "investigating"]).await;
    let o = sigil(&s, &["audit", "search", "--agent", "bot", "--output", "json"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&o.stdout).unwrap();
    let types: Vec<&str> = rows
        .iter()
        .map(|r| r["record"]["event_type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(types.len(), 3, "created, its client created, suspended: {rows:?}");
    assert!(
        types.contains(&"client.created"),
        "a client made for the agent is in its trail: {types:?}"
    );
    let o = sigil(&s, &["audit", "search", "--type", "identity.status_changed"]).await;
    assert!(o.stdout.contains("identity.status_changed"), "{}", o.stdout);
    let o = sigil(&s, &["trace", "bot"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("admin:bootstrap") && o.stdout.contains("identity.status_changed"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("investigating"), "{}", o.stdout);

    for bad in [
        vec!["audit", "search", "--type", "made.up"],
        vec!["audit", "search", "--outcome", "maybe"],
        vec![
            "audit",
            "search",
            "--since",
            "2026-12-01T00:00:00Z",
            "--until",
            "2026-11-01T00:00:00Z",
        ],
        vec!["audit", "search", "--since", "last tuesday"],
        vec!["audit", "search", "--cursor", "abc"],
    ] {
        let o = sigil(&s, &bad).await;
        assert_eq!(o.code, 3, "{bad:?}: {}", o.stderr);
    }
}

/// A server keeping an hour of audit records, with records two hours old and new ones, all
/// integrated; and the tree size the old ones end at.
async fn old_and_new_records() -> Option<(TestServer, u64)> {
    let opts = sigil_testkit::Options {
        fake_clock_at: Some(sigil_types::Timestamp::from_unix_seconds(1_900_000_000)),
        config_toml: Some("[audit]\nretain = \"1h\"\n".into()),
        ..Default::default()
    };
    let s = TestServer::start_with(opts).await?;
    let c = s.client();
    for i in 0..5 {
        c.create_user(&serde_json::from_value(json!({"username": format!("old{i}")})).unwrap())
            .await
            .unwrap();
    }
    integrate(&s).await;
    let old_size = s.app().store.audit_tree_size().await.unwrap();
    s.advance(std::time::Duration::from_secs(2 * 3600));
    for i in 0..3 {
        c.create_user(&serde_json::from_value(json!({"username": format!("new{i}")})).unwrap())
            .await
            .unwrap();
    }
    integrate(&s).await;
    Some((s, old_size))
}

/// A prune makes the pruned prefix's frontier permanent, so it first checks that the leaf hashes
/// give the root the checkpoint at the prune point signed: an edited leaf hash is refused, and
/// nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_over_edited_leaf_hashes_is_refused() {
    if std::env::var("SIGIL_TEST_BACKEND").as_deref() == Ok("postgres") {
        return; // zeroblob is SQLite's
    }
    let Some((s, _)) = old_and_new_records().await else {
        return;
    };
    exec(
        &s,
        "UPDATE audit_events SET leaf_hash = zeroblob(32) WHERE leaf_index = 1",
    )
    .await;
    let refused = s
        .app()
        .audit
        .prune(std::time::Duration::from_secs(3600), u64::MAX)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("changed outside Sigil"), "{refused}");
    let leaves = s.app().store.list_leaves(0, 1).await.unwrap();
    assert_eq!(leaves[0].leaf_index, 0, "nothing was pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_at_a_checkpoint_and_the_rest_still_verifies() {
    let Some((s, old_size)) = old_and_new_records().await else {
        return;
    };
    let c = s.client();

    let pruned = s
        .app()
        .audit
        .prune(std::time::Duration::from_secs(3600), u64::MAX)
        .await
        .unwrap();
    assert_eq!(
        pruned,
        Some(old_size),
        "cut exactly at the checkpoint before the first record to keep"
    );
    integrate(&s).await; // the prune's own audit record
    let leaves = s.app().store.list_leaves(0, 100).await.unwrap();
    assert_eq!(leaves.first().unwrap().leaf_index, old_size);
    let o = sigil(&s, &["audit", "search", "--output", "json", "--type", "user.created"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(rows.len(), 3, "only the records inside the retention window remain");

    let o = sigil(&s, &["audit", "verify"]).await;
    assert_eq!(o.code, 0, "the remaining log verifies online: {}", o.stderr);
    // Proofs for every size from the prune point on still verify (the pruned prefix's lower
    // frontier was stored with the prune); below it they are refused, precisely.
    assert_ne!(
        old_size % (1 << merkle::LOWEST_STORED_LEVEL),
        0,
        "the prune point is inside a block"
    );
    let cp = c.audit_checkpoint().await.unwrap();
    assert_included(&c, old_size..cp.tree_size, &cp).await;
    let cons = c.consistency_proof(old_size, cp.tree_size).await.unwrap();
    let old_root = s.app().audit.root_at(old_size).await.unwrap();
    let proof: Vec<_> = cons.proof.iter().map(|h| unhex(h)).collect();
    assert!(merkle::verify_consistency(
        old_size,
        cp.tree_size,
        &old_root,
        &unhex(&cp.root_hash),
        &proof
    ));
    let refused = c.consistency_proof(1, cp.tree_size).await.unwrap_err();
    assert_eq!(refused.status().unwrap(), 400, "{refused}");
    assert!(refused.to_string().contains("pruned"), "{refused}");
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    let keys = dir.path().join("jwks.json");
    assert_eq!(
        sigil(&s, &["audit", "export", "--file", export.to_str().unwrap()])
            .await
            .code,
        0
    );
    std::fs::write(&keys, sigil(&s, &["keys", "jwks"]).await.stdout).unwrap();
    let run = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args([
                "audit",
                "verify",
                "--file",
                path.to_str().unwrap(),
                "--public-key",
                keys.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    assert_eq!(run(&export).status.code(), Some(0), "and offline");
    // A forged base (the pruned prefix) is caught by the checkpoint that vouches for it.
    let text = std::fs::read_to_string(&export).unwrap();
    let base_line = text.lines().find(|l| l.contains("\"type\":\"base\"")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(base_line).unwrap();
    v["frontier"][0]["hash"] = json!("00".repeat(32));
    let forged = text.replace(base_line, &v.to_string());
    let path = dir.path().join("forged.jsonl");
    std::fs::write(&path, forged).unwrap();
    let out = run(&path);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pruned prefix"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
