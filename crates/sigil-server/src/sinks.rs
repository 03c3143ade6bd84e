//! Exporting the audit trail to SIEMs: a JSON Lines file (rotated by size) and an HTTP webhook
//! (batched, retried with backoff).
//!
//! Delivery is at least once and in order: a sink reads integrated records by leaf index from its
//! stored position, delivers a batch, and only then advances the position in the database. Each
//! event carries its `sequence` (the leaf index: contiguous, no gaps) so receivers can drop
//! duplicates. A sink that is down never blocks requests — it runs beside them — and never loses
//! events: after a restart it resumes from the stored position. One replica at a time delivers
//! each sink (a lease per sink).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sigil_core::audit::LeaseClaim;
use sigil_core::store::{Change, ChangeSet, StoreError, StoredLeaf};
use tokio::sync::watch;

use crate::app::App;
use crate::config::SinkConfig;

const LEASE_TTL: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One event as delivered: the record's stored JSON, embedded as is, and its sequence number.
fn event(leaf: &StoredLeaf) -> String {
    format!("{{\"sequence\":{},\"record\":{}}}", leaf.leaf_index, leaf.body)
}

/// Runs one sink until `stop`.
pub async fn run(app: Arc<App>, sink: SinkConfig, mut stop: watch::Receiver<bool>) {
    let holder = format!("{}-{}", app.audit.holder(), sink.name());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok();
    let mut backoff = Duration::from_millis(100);
    loop {
        let pause = match step(&app, &sink, &holder, http.as_ref()).await {
            Ok(true) => {
                backoff = Duration::from_millis(100);
                Duration::ZERO
            }
            Ok(false) => IDLE,
            Err(e) => {
                tracing::warn!(sink = sink.name(), error = %e, retry_in_ms = backoff.as_millis() as u64, "audit sink delivery failed");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Delivers one batch. `Ok(true)`: delivered something; `Ok(false)`: nothing to do (or another
/// replica holds this sink).
async fn step(app: &App, sink: &SinkConfig, holder: &str, http: Option<&reqwest::Client>) -> Result<bool, String> {
    let now = app.clock.now();
    let claim = LeaseClaim {
        name: format!("sink:{}", sink.name()),
        holder: holder.to_owned(),
        now,
        until: now.plus(LEASE_TTL),
    };
    match app
        .store
        .commit(ChangeSet::new().change(Change::AcquireLease(claim)))
        .await
    {
        Ok(()) => {}
        Err(StoreError::Stale { .. }) => return Ok(false),
        Err(e) => return Err(e.to_string()),
    }
    let from = app
        .store
        .sink_position(sink.name())
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let batch = match sink {
        SinkConfig::File { .. } => 1000,
        SinkConfig::Webhook { batch, .. } => *batch,
    };
    let leaves = app.store.list_leaves(from, batch).await.map_err(|e| e.to_string())?;
    let Some(last) = leaves.last() else { return Ok(false) };
    let next = last.leaf_index + 1;
    match sink {
        SinkConfig::File {
            path, max_bytes, keep, ..
        } => {
            let lines: Vec<String> = leaves.iter().map(event).collect();
            let path = path.clone();
            let (max, keep) = (*max_bytes, *keep);
            tokio::task::spawn_blocking(move || append(&path, &lines, max, keep))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        SinkConfig::Webhook { url, bearer_token, .. } => {
            let http = http.ok_or("no HTTP client")?;
            let body = format!("[{}]", leaves.iter().map(event).collect::<Vec<_>>().join(","));
            let mut req = http
                .post(url.clone())
                .header("content-type", "application/json")
                .body(body);
            if let Some(t) = bearer_token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| format!("webhook unreachable: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("webhook answered {}", resp.status()));
            }
        }
    }
    app.store
        .commit(ChangeSet::new().change(Change::SetSinkPosition {
            name: sink.name().to_owned(),
            delivered: next,
        }))
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Appends lines durably, rotating first if they would push the file past `max_bytes`.
fn append(path: &Path, lines: &[String], max_bytes: u64, keep: u32) -> std::io::Result<()> {
    let incoming: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let current = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if current > 0 && current + incoming > max_bytes {
        rotate(path, keep)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut buf = String::with_capacity(incoming as usize);
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes())?;
    f.sync_data()
}

/// `path` → `path.1` → … → `path.keep` (the oldest is dropped).
fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        std::path::PathBuf::from(p)
    };
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_at_most_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        for i in 0..10 {
            append(&p, &[format!("{{\"sequence\":{i}}}")], 30, 3).unwrap();
        }
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 4, "current file and 3 rotated ones");
        let last = std::fs::read_to_string(&p).unwrap();
        assert!(last.contains("\"sequence\":9"));
    }
}
