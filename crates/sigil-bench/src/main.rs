//! `sigil-load`: the benchmark harness. It starts real `sigil serve` processes, drives them over
//! HTTP with keep-alive connections, and prints a Markdown table for docs/benchmarks.md.

mod audit;
mod exchange;
mod http;
mod node_api;
mod policy;
mod proc;
mod svid;
mod tokens;
mod workload_api;

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
    /// The token endpoint under load beside a hello-world endpoint, the raw Ed25519 rates and
    /// npm's oidc-provider (single process and cluster) for the same grant and token format.
    Tokens {
        #[arg(long, default_value = "target/release/sigil")]
        sigil: PathBuf,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Skip the oidc-provider comparison (needs node and npm).
        #[arg(long)]
        no_oidc_provider: bool,
    },
    /// SVID signing in process (X509-SVIDs from CSRs and keys, JWT-SVIDs) beside the raw
    /// signature rate of the same key type.
    Svid {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        duration: u64,
    },
    /// The node API: X509-SVIDs from CSRs in batches, a renewal storm with the server's memory
    /// sampled, and an overload the server must shed with 503 + Retry-After.
    NodeApi {
        #[arg(long, default_value = "target/release/sigil")]
        sigil: PathBuf,
        /// Seconds of batch signing.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Nodes in the renewal storm.
        #[arg(long, default_value_t = 10_000)]
        storm: usize,
        /// Seconds of overload (0 skips it).
        #[arg(long, default_value_t = 5)]
        overload: u64,
    },
    /// The SPIFFE Workload API of an in-process `sigil node` against a `sigil serve`.
    WorkloadApi {
        #[arg(long, default_value = "target/release/sigil")]
        sigil: PathBuf,
        #[arg(long, default_value_t = 5)]
        duration: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Token exchange (RFC 8693): a sub-agent exchanges a user's delegated token, back to back.
    Exchange {
        #[arg(long, default_value = "target/release/sigil")]
        sigil: PathBuf,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Policy decision latency in process (p50/p99) with 20, 100 and 1,000 policies, beside bare
    /// Cedar `is_authorized` on the same policies and request.
    Policy {
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
        #[arg(long, default_value = "target/release/sigil")]
        sigil: PathBuf,
        /// Seconds of HTTP load.
        #[arg(long, default_value_t = 8)]
        duration: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Only the in-process measurements.
        #[arg(long)]
        no_http: bool,
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
        Cmd::Tokens {
            sigil,
            duration,
            concurrency,
            no_oidc_provider,
        } => {
            let rows = token_bench(&sigil, Duration::from_secs(duration), concurrency, no_oidc_provider).await?;
            print_table(rows);
            Ok(())
        }
        Cmd::Svid { duration } => {
            print_table(svid::bench(Duration::from_secs(duration))?);
            Ok(())
        }
        Cmd::NodeApi {
            sigil,
            duration,
            storm,
            overload,
        } => {
            let (duration, overload) = (Duration::from_secs(duration), Duration::from_secs(overload));
            print_table(node_api::bench(&sigil, duration, storm, overload).await?);
            Ok(())
        }
        Cmd::WorkloadApi {
            sigil,
            duration,
            concurrency,
        } => {
            print_table(workload_api::bench(&sigil, Duration::from_secs(duration), concurrency).await?);
            Ok(())
        }
        Cmd::Exchange {
            sigil,
            duration,
            concurrency,
        } => {
            print_table(exchange::bench(&sigil, Duration::from_secs(duration), concurrency).await?);
            Ok(())
        }
        Cmd::Policy {
            iterations,
            sigil,
            duration,
            concurrency,
            no_http,
        } => {
            let mut rows = policy::bench(iterations)?;
            if !no_http {
                rows.extend(policy::http_bench(&sigil, Duration::from_secs(duration), concurrency).await?);
            }
            print_table(rows);
            Ok(())
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

async fn token_bench(
    sigil: &std::path::Path,
    d: Duration,
    conns: usize,
    no_oidc: bool,
) -> Result<Vec<(String, String)>, String> {
    use tokens::{API, Req, basic, load};
    let mut rows = Vec::new();
    let (sign, verify) = tokens::raw_ed25519(Duration::from_secs(1));
    rows.push(("raw Ed25519 sign, one core (aws-lc-rs)".into(), format!("{sign:.0}/s")));
    rows.push(("raw Ed25519 verify, one core".into(), format!("{verify:.0}/s")));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = proc::Server::start(sigil, dir.path(), None).await?;
    let tokens::Seeded {
        secret_id,
        secret,
        key_id,
        key,
        server_id,
        server_secret,
    } = tokens::seed(&server.addr, &server.token).await?;
    let hello = load(&server.addr, Req::Get("/healthz".into()), conns, d).await;
    let hello_rate = hello.ok as f64 / hello.elapsed.as_secs_f64();
    rows.push((
        format!("hello world (GET /healthz), {conns} connections"),
        hello.summary(),
    ));
    let token_body = format!(
        "grant_type=client_credentials&resource={}&scope=read",
        API.replace(':', "%3A").replace('/', "%2F")
    );
    let frac = |r: &Run| {
        let rate = r.ok as f64 / r.elapsed.as_secs_f64();
        format!(
            "{:.0}% of hello world, {:.0}% of raw signing",
            100.0 * rate / hello_rate,
            100.0 * rate / sign
        )
    };
    // `SIGIL_BENCH_PERF_PHASE`: client_secret_basic (the default), private_key_jwt or introspection.
    const PROFILED: &str = "client_secret_basic";
    proc::profile_phase("client_secret_basic", PROFILED, "enable");
    let run = load(
        &server.addr,
        Req::Form {
            path: "/token".into(),
            body: token_body.clone(),
            basic: Some(basic(&secret_id, &secret)),
        },
        conns,
        d,
    )
    .await;
    proc::profile_phase("client_secret_basic", PROFILED, "disable");
    let note = frac(&run);
    rows.push((
        "Sigil tokens/s, client_secret_basic (EdDSA JWT, audit record each)".into(),
        format!("{} — {note}", run.summary()),
    ));
    proc::profile_phase("private_key_jwt", PROFILED, "enable");
    let run = load(
        &server.addr,
        Req::Assertion {
            path: "/token".into(),
            client_id: key_id,
            key,
            aud: format!("http://{}/token", server.addr),
        },
        conns,
        d,
    )
    .await;
    proc::profile_phase("private_key_jwt", PROFILED, "disable");
    let note = frac(&run);
    rows.push((
        "Sigil tokens/s, private_key_jwt (Ed25519 assertion, replay check, audit)".into(),
        format!("{} — {note}", run.summary()),
    ));
    // One token to introspect.
    let mut s = http::connect(&server.addr).await?;
    let (_, b) = http::send_raw(
        &mut s,
        hyper::Method::POST,
        &server.addr,
        "/token",
        Some(&basic(&secret_id, &secret)),
        Some(("application/x-www-form-urlencoded", token_body.clone())),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
    let tok = v
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    proc::profile_phase("introspection", PROFILED, "enable");
    let run = load(
        &server.addr,
        Req::Form {
            path: "/introspect".into(),
            body: format!("token={tok}"),
            basic: Some(basic(&server_id, &server_secret)),
        },
        conns,
        d,
    )
    .await;
    proc::profile_phase("introspection", PROFILED, "disable");
    rows.push((
        "Sigil introspections/s (the API's own client_secret_basic client)".into(),
        run.summary(),
    ));
    rows.push(("Sigil RSS after the runs".into(), fmt_mb(server.rss_kb())));
    server.stop().await;
    if !no_oidc {
        for cluster in [false, true] {
            let label = if cluster {
                "oidc-provider 9.13.3, node cluster (2 workers)"
            } else {
                "oidc-provider 9.13.3, one node process"
            };
            match tokens::OidcProvider::start(cluster).await {
                Ok(p) => {
                    let run = load(
                        &p.addr,
                        Req::Form {
                            path: "/token".into(),
                            body: token_body.clone(),
                            basic: Some(basic("bench", "bench-secret")),
                        },
                        conns,
                        d,
                    )
                    .await;
                    rows.push((format!("{label}, tokens/s, client_secret_basic"), run.summary()));
                    p.stop().await;
                }
                Err(e) => rows.push((label.into(), format!("not run: {e}"))),
            }
        }
    }
    Ok(rows)
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

/// Waits for the load tasks and merges their runs (a task that panicked counts nothing).
pub async fn join_runs(tasks: Vec<tokio::task::JoinHandle<Run>>, started: std::time::Instant) -> Run {
    let mut total = Run::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.ok += r.ok;
            total.failed += r.failed;
            total.latencies.extend(r.latencies);
        }
    }
    total.elapsed = started.elapsed();
    total
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
