//! Command line: `run`, `check`, `demo`, and `revoke` / `unrevoke` (clients of the revocation
//! API). `check` and `run` share one loading function, so a
//! config that passes `check` is exactly one that starts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::ops::telemetry::LogFormat;

pub const DEFAULT_CONFIG: &str = "config/authgate.toml";

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Reverse-proxy authentication gateway"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve with the given config until SIGTERM/SIGINT.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print every error and exit 1.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Start an echo upstream and the gateway in front of it, with an embedded demo config.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the demo's admin endpoints (/healthz, /readyz, /metrics) listen.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Revoke a token, a user's tokens or a signing key through the revocation API, or list
    /// the entries (the admin token comes from AUTHGATE_REVOCATION_TOKEN).
    Revoke {
        #[command(subcommand)]
        target: crate::ops::revoke_client::Target,
    },
    /// Remove a revocation made through the revocation API.
    Unrevoke {
        #[command(subcommand)]
        target: crate::ops::revoke_client::Target,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::ops::telemetry::init(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            let config = match crate::config::load(&config) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            block_on(crate::app::run(config))
        }
        Command::Demo { listen, admin } => block_on(crate::demo::run(listen, admin)),
        Command::Revoke { target } => crate::ops::revoke_client::main(&target, false),
        Command::Unrevoke { target } => crate::ops::revoke_client::main(&target, true),
    }
}

fn check(path: &Path) -> ExitCode {
    match crate::config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} listener(s), {} route(s))",
                path.display(),
                config.listeners.len(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn block_on(future: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("authgate: {message}");
            ExitCode::FAILURE
        }
    }
}
