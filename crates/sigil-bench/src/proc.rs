//! A `sigil serve` child process on a free loopback port.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub struct Server {
    pub child: tokio::process::Child,
    pub addr: String,
    pub token: String,
    pub ready_after: Duration,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Server {
    /// Starts the server and measures the time until `/readyz` answers 200.
    pub async fn start(sigil: &Path, data_dir: &Path, database_url: Option<&str>) -> Result<Self, String> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = tokio::process::Command::new(sigil);
        cmd.args(["serve", "--listen", &addr, "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::null())
            .kill_on_drop(true);
        // For looking inside a run: SIGIL_BENCH_SERVER_LOG=FILE keeps the server's log (at the
        // level SIGIL_LOG_LEVEL names, e.g. `warn,sqlx::query=debug`) instead of dropping it.
        match std::env::var_os("SIGIL_BENCH_SERVER_LOG") {
            Some(file) => {
                let log = std::fs::File::create(&file).map_err(|e| format!("cannot create the server log: {e}"))?;
                cmd.stderr(log);
            }
            None => {
                cmd.env("SIGIL_LOG_LEVEL", "warn").stderr(Stdio::null());
            }
        }
        if let Some(u) = database_url {
            cmd.args(["--database-url", u]);
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", sigil.display()))?;
        loop {
            if crate::http::status(&addr, "/readyz").await == Some(200) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("server did not become ready in 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ready_after = started.elapsed();
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .map_err(|e| e.to_string())?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            addr,
            token,
            ready_after,
        })
    }

    /// Resident set size of the server process, from /proc.
    pub fn rss_kb(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// [`profile_window`] for one of a benchmark's phases: the one `SIGIL_BENCH_PERF_PHASE` names,
/// else `default`.
pub fn profile_phase(phase: &str, default: &str, command: &str) {
    if std::env::var("SIGIL_BENCH_PERF_PHASE").as_deref().unwrap_or(default) == phase {
        profile_window(command);
    }
}

/// Opens or closes the window a profiler records: with `SIGIL_BENCH_PERF_CTL` naming the control
/// FIFO of `perf record --control fifo:PATH -D -1`, a benchmark profiles only the phase it is
/// about (`enable` before it, `disable` after).
pub fn profile_window(command: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("SIGIL_BENCH_PERF_CTL") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut fifo| fifo.write_all(format!("{command}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("profile window {command}: {e}");
    }
}
