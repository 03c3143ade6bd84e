//! `sigil`: the one binary. `sigil serve` runs the server; every other command talks to a
//! server's API through the client.
//!
//! Exit codes: 0 ok, 1 error, 2 denied (authentication/authorization), 3 invalid input.

/// The CLI's `println!` and `print!`: as std's, except that a closed pipe (`sigil client list |
/// head`) ends the program quietly instead of panicking (see [`output::write_stdout`]). Defined
/// before the modules so that every one of them prints through it.
macro_rules! println {
    () => {
        $crate::output::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*), true)
    };
}

macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*), false)
    };
}

mod admin;
mod audit;
mod cli;
mod node;
mod oauth;
mod output;
mod policy;
mod serve;

use std::process::ExitCode;

use clap::Parser;

/// How a command ended, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Error = 1,
    Denied = 2,
    Invalid = 3,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Invalid,
            message: message.into(),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Error,
            message: message.into(),
        }
    }
}

impl From<sigil_types::ParseError> for Failure {
    fn from(e: sigil_types::ParseError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<sigil_client::ClientError> for Failure {
    fn from(e: sigil_client::ClientError) -> Self {
        let exit = match e.status().map(|s| s.as_u16()) {
            Some(401 | 403) => Exit::Denied,
            Some(400 | 413 | 415 | 422) => Exit::Invalid,
            _ => Exit::Error,
        };
        Self {
            exit,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(Exit::Invalid as u8),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Error as u8);
        }
    };
    let json = cli.global.output == cli::Output::Json;
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // On stderr in both formats (stdout holds only results); with --output json, as one
            // JSON object a script can parse.
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({ "error": f.message, "exit_code": f.exit as u8 })
                );
            } else {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.exit as u8)
        }
    }
}

async fn run(cli: cli::Cli) -> Result<(), Failure> {
    use cli::Command;
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Db(cli::DbCommand::Migrate(opts)) => serve::migrate(cli.global.output, opts).await,
        Command::Config(c) => serve::config(cli.global.output, c),
        Command::User(c) => admin::user(&cli.global, c).await,
        Command::Agent(c) => admin::identity(&cli.global, sigil_client::Family::Agents, c).await,
        Command::Workload(c) => admin::identity(&cli.global, sigil_client::Family::Workloads, c).await,
        Command::Resource(c) => admin::resource(&cli.global, c).await,
        Command::Keys(c) => admin::keys(&cli.global, c).await,
        Command::Audit(c) => audit::audit(&cli.global, c).await,
        Command::Trace { id } => audit::trace(&cli.global, &id).await,
        Command::Client(c) => oauth::client(&cli.global, c).await,
        Command::Token(c) => oauth::token(&cli.global, c).await,
        Command::RegistrationToken(c) => oauth::registration_token(&cli.global, c).await,
        Command::Issuer(c) => oauth::issuer(&cli.global, c).await,
        Command::Entry(c) => oauth::entry(&cli.global, c).await,
        Command::Node(args) => node::node(&cli.global, args).await,
        Command::Ca(c) => node::ca(&cli.global, c).await,
        Command::Federation(c) => node::federation(&cli.global, c).await,
        Command::Policy(c) => policy::policy(&cli.global, c).await,
    }
}
