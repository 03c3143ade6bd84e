//! `sigil-load`: the benchmark harness. It starts real `sigil serve` processes, drives them over
//! HTTP with keep-alive connections, and prints a Markdown table for docs/benchmarks.md.

mod audit;
mod http;
mod proc;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Sigil load harness")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Foundation numbers: start-up time, idle memory, memory with many identities, registry
    /// writes per second on SQLite and PostgreSQL.
    Foundation {
        /// The sigil binary to measure (build it with `cargo build --release -p sigil`).
        #[arg(long, default_value = "target/release/sigil")]
        sigil: PathBuf,
        /// Seconds of load per write measurement.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Identities to register before measuring memory.
        #[arg(long, default_value_t = 10_000)]
        identities: usize,
        /// Skip the PostgreSQL measurement.
        #[arg(long)]
        no_postgres: bool,
    },
    /// The audit write path, in process: durable records/s with group commit and against a
    /// one-fsync-per-record baseline, on SQLite and PostgreSQL; commit latency with and without
    /// an audit record.
    Audit {
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Concurrent producers (each commits one record at a time, like a request).
        #[arg(long, default_value_t = 256)]
        producers: usize,
        #[arg(long)]
        no_postgres: bool,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    match Args::parse().cmd {
        Cmd::Foundation {
            sigil,
            duration,
            concurrency,
            identities,
            no_postgres,
        } => {
            foundation(
                &sigil,
                Duration::from_secs(duration),
                concurrency,
                identities,
                no_postgres,
            )
            .await
        }
        Cmd::Audit {
            duration,
            producers,
            no_postgres,
        } => {
            let rows = audit::bench(Duration::from_secs(duration), producers, no_postgres).await?;
            print_table(rows);
            Ok(())
        }
    }
}

async fn foundation(
    sigil: &std::path::Path,
    duration: Duration,
    concurrency: usize,
    identities: usize,
    no_postgres: bool,
) -> Result<(), String> {
    let mut rows: Vec<(String, String)> = Vec::new();

    // Start-up: a first start (creates the database, master key, signing key, admin credential)
    // and a restart on existing state, five times each; the median is reported.
    let mut first = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = proc::Server::start(sigil, dir.path(), None).await?;
        first.push(p.ready_after);
        p.stop().await;
        let p = proc::Server::start(sigil, dir.path(), None).await?;
        warm.push(p.ready_after);
        p.stop().await;
    }
    rows.push((
        "start to ready, first start (median of 5)".into(),
        fmt_ms(median(&mut first)),
    ));
    rows.push((
        "start to ready, restart on existing data (median of 5)".into(),
        fmt_ms(median(&mut warm)),
    ));

    // SQLite: idle memory, write rate, memory with many identities.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = proc::Server::start(sigil, dir.path(), None).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rows.push(("resident memory, idle (SQLite)".into(), fmt_mb(server.rss_kb())));
    let w = http::registry_writes(&server, concurrency, duration, "sq").await?;
    let have = w.ok;
    rows.push((
        format!("registry writes/s, SQLite ({concurrency} connections, agent create)"),
        w.summary(),
    ));
    if have < identities {
        http::fill_identities(&server, identities - have, concurrency).await?;
    }
    http::list_all_agents(&server).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rows.push((
        format!("resident memory with {identities}+ identities (SQLite, after listing all)"),
        fmt_mb(server.rss_kb()),
    ));
    server.stop().await;

    if !no_postgres {
        match sigil_store::testing::fresh_postgres_database().await {
            Some(url) => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let server = proc::Server::start(sigil, dir.path(), Some(&url)).await?;
                let w = http::registry_writes(&server, concurrency, duration, "pg").await?;
                rows.push((
                    format!("registry writes/s, PostgreSQL ({concurrency} connections, agent create)"),
                    w.summary(),
                ));
                rows.push((
                    "resident memory after the PostgreSQL run".into(),
                    fmt_mb(server.rss_kb()),
                ));
                server.stop().await;
            }
            None => rows.push((
                "registry writes/s, PostgreSQL".into(),
                "skipped: no server answers".into(),
            )),
        }
    }

    print_table(rows);
    Ok(())
}

fn print_table(rows: Vec<(String, String)>) {
    println!("| measurement | result |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn fmt_mb(kb: Option<u64>) -> String {
    kb.map_or_else(|| "n/a".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0))
}

/// Latency samples and counts of one load run.
#[derive(Debug, Default)]
pub struct Run {
    pub ok: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Run {
    fn pct(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(idx).copied().unwrap_or_default()
    }

    pub fn summary(mut self) -> String {
        let rate = self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let (p50, p99) = (self.pct(0.50), self.pct(0.99));
        format!(
            "{rate:.0}/s (p50 {}, p99 {}, {} failed)",
            fmt_ms(p50),
            fmt_ms(p99),
            self.failed
        )
    }
}
