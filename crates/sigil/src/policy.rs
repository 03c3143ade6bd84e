//! `sigil policy …`: policy set versions, policy tests and explained decisions.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sigil_proto::policy::{Evaluation, ExplainRequest, UploadPolicyRequest};

use crate::admin::client;
use crate::cli::{Global, Output, PolicyCommand};
use crate::{Exit, Failure, output};

const VERSION_COLUMNS: &[&str] = &["version", "active", "created_at", "created_by", "description"];

pub async fn policy(g: &Global, c: PolicyCommand) -> Result<(), Failure> {
    let api = client(g)?;
    match c {
        PolicyCommand::Upload {
            file,
            schema,
            description,
            activate,
        } => {
            let req = UploadPolicyRequest {
                policies: read(&file)?,
                schema: schema.as_deref().map(read).transpose()?,
                description,
                activate,
            };
            let v = api.upload_policy(&req).await.map_err(diagnostics)?;
            match g.output {
                Output::Json => output::item(g.output, &v),
                Output::Text => println!(
                    "policy version {}{}",
                    v.version,
                    if v.active { " (active)" } else { "" }
                ),
            }
        }
        PolicyCommand::List => {
            let list = api.list_policies().await?;
            let rows: Vec<Value> = list.items.iter().filter_map(|v| serde_json::to_value(v).ok()).collect();
            output::table(g.output, &rows, VERSION_COLUMNS);
        }
        PolicyCommand::Show { version } => {
            let v = api.get_policy(version).await?;
            match g.output {
                Output::Json => output::item(g.output, &v),
                Output::Text if v.policies.as_deref().unwrap_or_default().is_empty() && v.schema.is_none() => {
                    println!("// version {version}: no operator policies (only the built-in ones)");
                }
                Output::Text => {
                    let text = version_text(&v);
                    print!("{text}");
                    if !text.ends_with('\n') {
                        println!();
                    }
                }
            }
        }
        PolicyCommand::Diff { from, to } => {
            let (a, b) = (api.get_policy(from).await?, api.get_policy(to).await?);
            let lines = diff_lines(&version_text(&a), &version_text(&b));
            match g.output {
                Output::Json => output::item(g.output, &serde_json::json!({ "from": from, "to": to, "lines": lines })),
                Output::Text => {
                    println!("--- version {from}\n+++ version {to}");
                    for line in lines {
                        println!("{line}");
                    }
                }
            }
        }
        PolicyCommand::Activate { version } => output::item(g.output, &api.activate_policy(version).await?),
        PolicyCommand::Rollback => output::item(g.output, &api.rollback_policy().await?),
        PolicyCommand::Explain { file, version } => {
            let request: Evaluation = serde_json::from_str(&read(&file)?)
                .map_err(|e| Failure::invalid(format!("{}: not an AuthZEN request: {e}", file.display())))?;
            let d = api.explain_policy(&ExplainRequest { version, request }).await?;
            match g.output {
                Output::Json => output::item(g.output, &d),
                Output::Text => print_explanation(&d),
            }
        }
        PolicyCommand::Test { file, version } => return run_tests(g, &api, &file, version).await,
    }
    Ok(())
}

/// A version's policies and schema fragment as one text, for `show` and `diff` (nothing for an
/// empty part, so an empty version is an empty text).
fn version_text(v: &sigil_proto::policy::PolicyVersionView) -> String {
    let mut text = v.policies.clone().unwrap_or_default();
    if let Some(s) = v.schema.as_deref().filter(|s| !s.is_empty()) {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("// schema fragment\n");
        text.push_str(s);
    }
    text
}

fn read(path: &Path) -> Result<String, Failure> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).map_err(|e| Failure::invalid(format!("stdin: {e}")));
    }
    std::fs::read_to_string(path).map_err(|e| Failure::invalid(format!("{}: {e}", path.display())))
}

/// An invalid policy set: print each of Cedar's diagnostics, one per line.
fn diagnostics(e: sigil_client::ClientError) -> Failure {
    let lines: Vec<String> = match &e {
        sigil_client::ClientError::Api { problem: Some(p), .. } => {
            p.errors.iter().map(|d| format!("  {}", d.message)).collect()
        }
        _ => Vec::new(),
    };
    let mut f = Failure::from(e);
    if !lines.is_empty() {
        f.message = format!("the policy set is invalid:\n{}", lines.join("\n"));
    }
    f
}

/// `v[key]` without indexing: `Null` when absent.
fn field<'v>(v: &'v Value, key: &str) -> &'v Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn print_explanation(d: &Value) {
    let allowed = field(d, "allowed").as_bool().unwrap_or(false);
    println!(
        "{} (policy version {})",
        if allowed { "ALLOW" } else { "DENY" },
        field(d, "version")
    );
    for step in field(d, "steps").as_array().into_iter().flatten() {
        let mark = if field(step, "allowed").as_bool().unwrap_or(false) {
            "allow"
        } else {
            "deny"
        };
        let policies: Vec<&str> = field(step, "policies")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  {:5} {}  by: {}",
            mark,
            field(step, "principal").as_str().unwrap_or_default(),
            if policies.is_empty() {
                "(no policy permits)".to_owned()
            } else {
                policies.join(", ")
            }
        );
        for e in field(step, "errors").as_array().into_iter().flatten() {
            println!("        error: {}", e.as_str().unwrap_or_default());
        }
    }
    if let Some(r) = field(d, "reason").as_str() {
        println!("  reason: {r}");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    cases: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    request: Evaluation,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

async fn run_tests(g: &Global, api: &sigil_client::Client, file: &Path, version: Option<u64>) -> Result<(), Failure> {
    let tests: TestFile = serde_json::from_str(&read(file)?)
        .map_err(|e| Failure::invalid(format!("{}: not a policy test file: {e}", file.display())))?;
    if tests.cases.is_empty() {
        return Err(Failure::invalid(format!("{}: the file holds no cases", file.display())));
    }
    if let Some(v) = version {
        // Said once, up front, rather than as the first case's failure.
        api.get_policy(v).await?;
    }
    let (mut failed, mut unusable) = (0, 0);
    let mut results = Vec::new();
    for case in tests.cases {
        let explained = api
            .explain_policy(&ExplainRequest {
                version,
                request: case.request,
            })
            .await;
        let d = match explained {
            Ok(d) => d,
            // A case the server cannot evaluate (malformed, or naming a user or agent that does
            // not exist) is the file's error: say so and go on, so one bad case does not hide how
            // the others fare.
            Err(sigil_client::ClientError::Api { status, problem }) if matches!(status.as_u16(), 400 | 404) => {
                let e = sigil_client::ClientError::Api { status, problem };
                unusable += 1;
                if g.output == Output::Text {
                    println!("ERR  {}: {e}", case.name);
                }
                results.push(serde_json::json!({"name": case.name, "passed": false, "error": e.to_string()}));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let got = if field(&d, "allowed").as_bool().unwrap_or(false) {
            Expect::Allow
        } else {
            Expect::Deny
        };
        let ok = got == case.expect;
        if !ok {
            failed += 1;
        }
        if g.output == Output::Text {
            println!(
                "{} {}{}",
                if ok { "ok  " } else { "FAIL" },
                case.name,
                if ok {
                    String::new()
                } else {
                    format!(
                        " (expected {:?}, got {:?}: {})",
                        case.expect,
                        got,
                        field(&d, "reason").as_str().unwrap_or("allowed")
                    )
                }
            );
        }
        results.push(serde_json::json!({"name": case.name, "passed": ok, "decision": d}));
    }
    if g.output == Output::Json {
        output::item(g.output, &results);
    }
    if unusable > 0 {
        return Err(Failure::invalid(format!(
            "{unusable} of {} policy test cases could not be evaluated ({failed} failed)",
            results.len()
        )));
    }
    if failed > 0 {
        return Err(Failure {
            exit: Exit::Denied,
            message: format!("{failed} of {} policy test cases failed", results.len()),
        });
    }
    Ok(())
}

/// A line diff (longest common subsequence): `-` only in `a`, `+` only in `b`, ` ` in both.
fn diff_lines(a: &str, b: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: common subsequence length of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let v = if a.get(i) == b.get(j) {
                lcs.get(i + 1).and_then(|r| r.get(j + 1)).copied().unwrap_or(0) + 1
            } else {
                let down = lcs.get(i + 1).and_then(|r| r.get(j)).copied().unwrap_or(0);
                let right = lcs.get(i).and_then(|r| r.get(j + 1)).copied().unwrap_or(0);
                down.max(right)
            };
            if let Some(cell) = lcs.get_mut(i).and_then(|r| r.get_mut(j)) {
                *cell = v;
            }
        }
    }
    let at = |i: usize, j: usize| lcs.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0);
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                out.push(format!("  {x}"));
                i += 1;
                j += 1;
            }
            (Some(x), Some(_)) if at(i + 1, j) >= at(i, j + 1) => {
                out.push(format!("- {x}"));
                i += 1;
            }
            (_, Some(y)) => {
                out.push(format!("+ {y}"));
                j += 1;
            }
            (Some(x), None) => {
                out.push(format!("- {x}"));
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::diff_lines;

    #[test]
    fn diff_marks_removed_added_and_kept_lines() {
        assert_eq!(diff_lines("a\nb\nc", "a\nc\nd"), vec!["  a", "- b", "  c", "+ d"]);
        assert!(diff_lines("", "").is_empty());
    }
}
