//! `sigil node`: run the node agent, or manage join tokens and nodes through the admin API.

use serde_json::Value;

use crate::cli::{Global, NodeArgs, NodeCommand, NodeTokenCommand, Output};
use crate::output;
use crate::{Failure, admin::client as api_client};

pub async fn node(g: &Global, args: NodeArgs) -> Result<(), Failure> {
    let api = match args.command {
        None => return run_agent(args.agent).await,
        Some(_) => api_client(g)?,
    };
    match args.command {
        Some(NodeCommand::Token(NodeTokenCommand::Create { spiffe_id, ttl })) => {
            let ttl_seconds = ttl
                .map(|d| {
                    sigil_server::config::parse_duration("ttl", &d)
                        .map(|d| d.as_secs())
                        .map_err(|e| Failure::invalid(e.to_string()))
                })
                .transpose()?;
            let view = api
                .create_join_token(&sigil_proto::node::JoinTokenRequest { spiffe_id, ttl_seconds })
                .await?;
            match g.output {
                Output::Json => output::item(g.output, &view),
                Output::Text => println!("{}  {}", view.token, view.spiffe_id),
            }
        }
        Some(NodeCommand::List) => {
            let list = api.list_nodes().await?;
            let rows: Vec<Value> = list.items.iter().filter_map(|i| serde_json::to_value(i).ok()).collect();
            output::table(
                g.output,
                &rows,
                &["spiffe_id", "method", "svid_serial", "svid_expires_at", "banned"],
            );
        }
        Some(NodeCommand::Ban { spiffe_id }) => {
            api.ban_node(&spiffe_id).await?;
            output::done(g.output, "banned", &spiffe_id);
        }
        None => {}
    }
    Ok(())
}

pub async fn federation(g: &Global, c: crate::cli::FederationCommand) -> Result<(), Failure> {
    use crate::cli::FederationCommand;
    let api = api_client(g)?;
    match c {
        FederationCommand::Add {
            trust_domain,
            bundle_endpoint,
        } => {
            let view = api
                .add_federation(&sigil_proto::node::FederationRequest {
                    trust_domain,
                    bundle_endpoint,
                })
                .await?;
            output::item(g.output, &view);
        }
        FederationCommand::List => {
            let list = api.list_federations().await?;
            let rows: Vec<Value> = list.items.iter().filter_map(|i| serde_json::to_value(i).ok()).collect();
            output::table(
                g.output,
                &rows,
                &[
                    "trust_domain",
                    "bundle_endpoint",
                    "has_bundle",
                    "refreshed_at",
                    "last_error",
                ],
            );
        }
        FederationCommand::Delete { trust_domain } => {
            api.delete_federation(&trust_domain).await?;
            output::done(g.output, "deleted", &trust_domain);
        }
    }
    Ok(())
}

pub async fn ca(g: &Global, c: crate::cli::CaCommand) -> Result<(), Failure> {
    use crate::cli::CaCommand;
    let api = api_client(g)?;
    let list = match c {
        CaCommand::List => api.list_authorities().await?,
        CaCommand::Prepare => api.rotate_authorities("prepare").await?,
        CaCommand::Activate => api.rotate_authorities("activate").await?,
    };
    let rows: Vec<Value> = list.items.iter().filter_map(|i| serde_json::to_value(i).ok()).collect();
    output::table(g.output, &rows, &["kind", "id", "status", "not_after"]);
    Ok(())
}

async fn run_agent(a: crate::cli::NodeAgentArgs) -> Result<(), Failure> {
    let server = a
        .server
        .ok_or_else(|| Failure::invalid("give --server URL (the Sigil server's issuer URL)"))?;
    let sync_interval = sigil_server::config::parse_duration("sync-interval", &a.sync_interval)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG_LEVEL")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let config = sigil_node::NodeConfig {
        server,
        join_token: a.join_token,
        socket: a.socket,
        data_dir: a.data_dir,
        sync_interval,
        allow_unauthenticated_verifiers: a.allow_unauthenticated_verifiers,
    };
    sigil_node::run(config, crate::serve::wait_for_signal())
        .await
        .map_err(|e| match e {
            sigil_node::NodeError::Attestation(_) | sigil_node::NodeError::NoIdentity(_) => Failure {
                exit: crate::Exit::Denied,
                message: e.to_string(),
            },
            other => Failure::error(other.to_string()),
        })
}
