//! `sigil audit …` and `sigil trace`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::Value;
use sigil_client::Client;
use sigil_core::audit::verify::{EXPORT_FORMAT, ExportLine, verify};
use sigil_crypto::Jwks;

use crate::admin::{client, list_pages};
use crate::cli::{AuditCommand, Global, Output, ProofCommand};
use crate::{Exit, Failure, output};

const AUDIT_COLUMNS: &[&str] = &["seq", "leaf_index", "time", "event_type", "outcome", "actor", "target"];
const PAGE: u32 = 500;

pub async fn audit(g: &Global, c: AuditCommand) -> Result<(), Failure> {
    match c {
        AuditCommand::Search {
            event_type,
            outcome,
            agent,
            user,
            client: cl,
            request,
            jti,
            since,
            until,
            page,
        } => {
            let api = client(g)?;
            let mut q: Vec<(&'static str, String)> = Vec::new();
            for (k, v) in [
                ("type", event_type),
                ("outcome", outcome),
                ("agent", agent),
                ("user", user),
                ("client", cl),
                ("request", request),
                ("jti", jti),
                ("since", since),
                ("until", until),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let fetch = |q: Vec<(&'static str, String)>| {
                let api = api.clone();
                async move { api.audit_search(&q).await }
            };
            if g.output == Output::Json {
                return list_pages(g, &page, q, AUDIT_COLUMNS, fetch).await;
            }
            // Text: flatten the interesting fields into columns.
            crate::admin::list_rows(g, &page, q, AUDIT_COLUMNS, fetch, |e| {
                let r = &e.record;
                Some(serde_json::json!({
                    "seq": e.seq,
                    "leaf_index": e.leaf_index,
                    "time": r.get("time"),
                    "event_type": r.get("event_type"),
                    "outcome": r.get("outcome"),
                    "actor": r.get("actors").and_then(|a| a.get(0)),
                    "target": r.get("target").and_then(|t| t.get("name").or_else(|| t.get("id"))),
                }))
            })
            .await
        }
        AuditCommand::Checkpoint => {
            let api = client(g)?;
            output::item(g.output, &api.audit_checkpoint().await?);
            Ok(())
        }
        AuditCommand::Export { file } => {
            let api = client(g)?;
            let lines = export(&api).await?;
            write_export(&file, &lines)?;
            let records = lines.iter().filter(|l| matches!(l, ExportLine::Record { .. })).count();
            let checkpoints = lines
                .iter()
                .filter(|l| matches!(l, ExportLine::Checkpoint { .. }))
                .count();
            report(
                g,
                serde_json::json!({"file": file.display().to_string(), "records": records, "checkpoints": checkpoints}),
                &format!(
                    "wrote {records} records and {checkpoints} checkpoints to {}",
                    file.display()
                ),
            );
            Ok(())
        }
        AuditCommand::Verify {
            file,
            public_key,
            issuer,
        } => {
            let (lines, jwks) = match (file, public_key) {
                (Some(f), Some(k)) => (read_export(&f)?, read_jwks(&k)?),
                _ => {
                    let api = client(g)?;
                    let jwks: Jwks = serde_json::from_value(api.jwks().await?)
                        .map_err(|e| Failure::error(format!("server JWKS: {e}")))?;
                    (export(&api).await?, jwks)
                }
            };
            match verify(&lines, &jwks, issuer.as_deref()) {
                Ok(r) => {
                    report(
                        g,
                        serde_json::to_value(&r).unwrap_or_default(),
                        &format!(
                            "ok: {} records, {} checkpoints; the first {} leaves match the signed tree head{}",
                            r.records,
                            r.checkpoints,
                            r.verified_size,
                            if r.skipped_checkpoints > 0 {
                                format!(
                                    "; {} older checkpoints by keys neither published nor logged were not checked",
                                    r.skipped_checkpoints
                                )
                            } else {
                                String::new()
                            }
                        ),
                    );
                    Ok(())
                }
                Err(t) => {
                    if g.output == Output::Json {
                        println!(
                            "{}",
                            serde_json::json!({"result": "tampered", "leaf_index": t.leaf_index, "message": t.message})
                        );
                    }
                    Err(Failure {
                        exit: Exit::Error,
                        message: format!("verification failed: {}", t.message),
                    })
                }
            }
        }
        AuditCommand::Proof(ProofCommand::Inclusion { leaf, tree_size }) => {
            let api = client(g)?;
            output::item(g.output, &api.inclusion_proof(leaf, tree_size).await?);
            Ok(())
        }
        AuditCommand::Proof(ProofCommand::Consistency { first, second }) => {
            let api = client(g)?;
            output::item(g.output, &api.consistency_proof(first, second).await?);
            Ok(())
        }
    }
}

fn report(g: &Global, json: Value, text: &str) {
    output::report(g.output, json, text);
}

/// Checkpoints first, then records: any record integrated meanwhile is an unsigned tail, never a
/// checkpoint without its records.
async fn export(api: &Client) -> Result<Vec<ExportLine>, Failure> {
    // The issuer the checkpoints are signed for, so the export says whose log it is.
    let metadata = api.metadata().await?;
    let issuer = metadata.get("issuer").and_then(Value::as_str).unwrap_or_default();
    let mut lines = vec![ExportLine::Header {
        format: EXPORT_FORMAT.into(),
        issuer: issuer.to_owned(),
        exported_at: sigil_types::Timestamp::from_unix_micros(now_micros()).to_rfc3339(),
    }];
    let after = push_checkpoints(api, &mut lines, 0, u64::MAX).await?;
    let checkpoints_end = lines.len();
    let base = api.audit_base().await?;
    if base.tree_size > 0 {
        let frontier = base
            .frontier
            .into_iter()
            .map(|(level, index, hash)| sigil_core::audit::verify::BaseNode { level, index, hash })
            .collect();
        lines.push(ExportLine::Base {
            tree_size: base.tree_size,
            frontier,
        });
    }
    let mut from = base.tree_size;
    loop {
        let page = api.audit_leaves(from, PAGE).await?;
        for l in page.items {
            from = l.leaf_index + 1;
            lines.push(ExportLine::Record {
                leaf_index: l.leaf_index,
                leaf_hash: l.leaf_hash,
                body: l.body,
                index: l.index.map(Box::new),
            });
        }
        if page.next_cursor.is_none() {
            break;
        }
    }
    // Records integrated while the export ran came with their checkpoint (integration signs
    // one in the same transaction): fetch those too, so a healthy log exports with every record
    // signed, and a record no checkpoint covers means checkpoints were removed.
    let mut late = Vec::new();
    push_checkpoints(api, &mut late, after, from).await?;
    lines.splice(checkpoints_end..checkpoints_end, late);
    Ok(lines)
}

/// Appends the checkpoints after tree size `after` up to `max_size`; returns the last size.
async fn push_checkpoints(
    api: &Client,
    lines: &mut Vec<ExportLine>,
    mut after: u64,
    max_size: u64,
) -> Result<u64, Failure> {
    loop {
        let page = api.audit_checkpoints(after, PAGE).await?;
        for c in page.items.iter().filter(|c| c.tree_size <= max_size) {
            after = c.tree_size;
            lines.push(ExportLine::Checkpoint {
                tree_size: c.tree_size,
                jws: c.jws.clone(),
            });
        }
        if page.next_cursor.is_none() || page.items.iter().any(|c| c.tree_size > max_size) {
            return Ok(after);
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn write_export(path: &Path, lines: &[ExportLine]) -> Result<(), Failure> {
    let err = |e: std::io::Error| Failure::error(format!("cannot write {}: {e}", path.display()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for l in lines {
        let text = serde_json::to_string(l).map_err(|e| Failure::error(e.to_string()))?;
        writeln!(f, "{text}").map_err(err)?;
    }
    f.flush().map_err(err)
}

fn read_export(path: &Path) -> Result<Vec<ExportLine>, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parsed: ExportLine = serde_json::from_str(line).map_err(|e| {
            Failure::error(format!(
                "verification failed: line {} of {} is not a valid export line ({e})",
                n + 1,
                path.display()
            ))
        })?;
        lines.push(parsed);
    }
    match lines.first() {
        Some(ExportLine::Header { format, .. }) if format == EXPORT_FORMAT => Ok(lines),
        _ => Err(Failure::invalid(format!(
            "{} is not a sigil audit export ({EXPORT_FORMAT})",
            path.display()
        ))),
    }
}

fn read_jwks(path: &Path) -> Result<Jwks, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    if let Ok(set) = serde_json::from_str::<Jwks>(&text) {
        return Ok(set);
    }
    serde_json::from_str::<sigil_crypto::Jwk>(&text)
        .map(|k| Jwks { keys: vec![k] })
        .map_err(|e| Failure::invalid(format!("{} is not a JWK or JWK Set: {e}", path.display())))
}

/// `sigil trace ID`: human → agent → sub-agent → action, with outcomes.
pub async fn trace(g: &Global, id: &str) -> Result<(), Failure> {
    if id.trim().is_empty() {
        return Err(Failure::invalid("give a request id, a token id (jti) or an agent name"));
    }
    let api = client(g)?;
    let found = api.audit_trace(id).await?;
    // Nothing found is an error in every format, so a script sees the same exit code.
    if found.items.is_empty() {
        return Err(Failure::error(format!("no audit records for {id:?}")));
    }
    if g.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&found.items).unwrap_or_default());
        return Ok(());
    }
    // subject → actor chain in delegation order (the agent the user delegated to first, the
    // sub-agents it delegated to below it) → actions. Records list actors outermost first.
    let mut tree: BTreeMap<String, BTreeMap<Vec<String>, Vec<String>>> = BTreeMap::new();
    for e in &found.items {
        let r = &e.record;
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let subject = r
            .get("subject")
            .and_then(Value::as_str)
            .map_or_else(|| "(no human principal)".to_owned(), |u| format!("{u} (human)"));
        let actors: Vec<String> = r
            .get("actors")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let target = r
            .get("target")
            .map(|t| {
                let kind = t.get("kind").and_then(Value::as_str).unwrap_or_default();
                let name = t
                    .get("name")
                    .or_else(|| t.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                format!(" {kind} {}", crate::output::printable(name))
            })
            .unwrap_or_default();
        let reason = r
            .get("reason")
            .and_then(Value::as_str)
            .map(|x| format!(" ({})", crate::output::printable(x)))
            .unwrap_or_default();
        let line = format!(
            "{} {}{} → {}{} [seq {}]",
            s("time"),
            s("event_type"),
            target,
            s("outcome"),
            reason,
            e.seq
        );
        tree.entry(subject).or_default().entry(actors).or_default().push(line);
    }
    let n = found.items.len();
    println!("trace for {id}: {n} record{}", if n == 1 { "" } else { "s" });
    for (subject, chains) in &tree {
        println!("{}", crate::output::printable(subject));
        for (chain, actions) in chains {
            let mut depth = 1;
            for actor in chain.iter().rev() {
                println!("{}└─ {}", "   ".repeat(depth - 1), crate::output::printable(actor));
                depth += 1;
            }
            for (n, a) in actions.iter().enumerate() {
                let branch = if n + 1 == actions.len() { "└─" } else { "├─" };
                println!("{}{branch} {a}", "   ".repeat(depth - 1));
            }
        }
    }
    Ok(())
}
