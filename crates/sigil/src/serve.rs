//! `sigil serve`, `sigil db migrate`, `sigil config …`

use std::sync::Arc;

use sigil_server::config::{self, Config, Flags};
use zeroize::Zeroizing;

use crate::cli::Output;
use crate::cli::{ConfigCommand, ServeArgs, ServerOptions};
use crate::{Failure, output};

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn load(opts: &ServerOptions, flags: Flags) -> Result<Config, Failure> {
    let flags = Flags {
        data_dir: opts.data_dir.clone(),
        database_url: opts.database_url.clone(),
        ..flags
    };
    Config::load(opts.config.as_deref(), &env, &flags).map_err(|e| Failure::invalid(e.to_string()))
}

pub async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let flags = Flags {
        listen: args.listen.clone(),
        issuer: args.issuer.clone(),
        trust_domain: args.trust_domain.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        ..Flags::default()
    };
    let config = load(&args.server, flags)?;
    sigil_server::telemetry::init_logging(&config);
    raise_open_file_limit();
    let master_env = std::env::var("SIGIL_MASTER_KEY").ok().map(Zeroizing::new);
    let running = sigil_server::start(config, Arc::new(sigil_core::SystemClock), master_env)
        .await
        .map_err(|e| Failure::error(format!("cannot start: {e}")))?;
    banner(&running);
    wait_for_signal().await;
    eprintln!("sigil: shutting down (finishing in-flight requests)");
    running.shutdown().await.map_err(|e| Failure::error(e.to_string()))?;
    eprintln!("sigil: stopped");
    Ok(())
}

/// Every connection is a file descriptor, and a common default soft limit (1,024) is reached
/// by a modest crowd of slow clients, after which even health checks cannot connect. The soft
/// limit is raised to the hard one the operator allows, as Go's and nginx's servers do.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open file limit"),
            Err(e) => tracing::warn!(error = %e, soft = ?limit.current, "could not raise the open file limit"),
        }
    }
}

fn banner(r: &sigil_server::Running) {
    let c = &r.app.config;
    let url = r.url();
    println!("sigil {} listening on {url}", env!("CARGO_PKG_VERSION"));
    println!("  issuer:       {}", r.app.issuer);
    println!(
        "  store:        {} ({})",
        r.app.store.backend(),
        c.database_url
            .as_deref()
            .map_or_else(|| c.data_dir.join("sigil.db").display().to_string(), redact_url)
    );
    println!("  trust domain: {}", c.trust_domain);
    if let Some(token) = &r.new_admin_token {
        let path = c.data_dir.join("admin-token");
        println!();
        println!(
            "  admin token (shown once; also saved to {} with mode 0600):",
            path.display()
        );
        println!("    {}", token.as_str());
    }
    println!();
    println!("next, in another shell:");
    if url != "http://127.0.0.1:8080" {
        println!("  export SIGIL_URL={url}");
    }
    // The CLI reads the admin token from ./sigil-data unless told where the data is.
    if c.data_dir != std::path::Path::new(sigil_server::config::DEFAULT_DATA_DIR) {
        let dir = std::fs::canonicalize(&c.data_dir).unwrap_or_else(|_| c.data_dir.clone());
        println!("  export SIGIL_DATA_DIR={}", dir.display());
    }
    println!("  sigil user create --username alice --email alice@example.com");
    println!("  sigil agent create --name hr-assistant --owner alice --ceiling employees:read");
    println!("  sigil agent list");
}

fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) => {
            if p.password().is_some() {
                let _ = p.set_password(Some("***"));
            }
            p.to_string()
        }
        Err(_) => "(database url)".into(),
    }
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn migrate(out: Output, opts: ServerOptions) -> Result<(), Failure> {
    let config = load(&opts, Flags::default())?;
    sigil_server::bootstrap::ensure_data_dir(&config.data_dir).map_err(|e| Failure::error(e.to_string()))?;
    let location =
        sigil_store::Location::from_url_or_file(config.database_url.as_deref(), config.data_dir.join("sigil.db"))
            .map_err(|e| Failure::invalid(e.to_string()))?;
    let report = sigil_store::SqlStore::migrate_only(&location)
        .await
        .map_err(|e| Failure::error(format!("{e}: {e:?}")))?;
    let text = if report.applied.is_empty() {
        format!("database schema is up to date (version {})", report.current)
    } else {
        format!(
            "applied migrations {:?}; schema is at version {}",
            report.applied, report.current
        )
    };
    output::report(
        out,
        serde_json::json!({ "applied": report.applied, "version": report.current }),
        &text,
    );
    Ok(())
}

pub fn config(out: Output, c: ConfigCommand) -> Result<(), Failure> {
    match c {
        ConfigCommand::Example => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        ConfigCommand::Check { file } => {
            let cfg =
                Config::load(Some(&file), &env, &Flags::default()).map_err(|e| Failure::invalid(e.to_string()))?;
            let store = if cfg.database_url.is_some() {
                "postgres"
            } else {
                "sqlite"
            };
            output::report(
                out,
                serde_json::json!({
                    "file": file.display().to_string(),
                    "result": "ok",
                    "listen": cfg.listen.to_string(),
                    "data_dir": cfg.data_dir.display().to_string(),
                    "store": store,
                }),
                &format!(
                    "{}: ok (listen {}, data dir {}, store {store})",
                    file.display(),
                    cfg.listen,
                    cfg.data_dir.display(),
                ),
            );
            Ok(())
        }
    }
}
