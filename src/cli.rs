//! Command line: `run`, `check`, `demo`, `explain`, and `revoke` / `unrevoke` (clients of the
//! revocation API). `check`, `run` and `explain` share one loading function, so a config that
//! passes `check` is exactly one that starts, and `explain` decides with the code the gateway
//! runs.

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
    /// Explain, step by step, why a request would be allowed or refused. Exit 0 when allowed,
    /// 1 when refused, 2 on a usage or config error. Never prints a token's signature.
    Explain(ExplainArgs),
    /// Start an echo upstream and the gateway in front of it, with an embedded demo config.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the demo's admin endpoints (/healthz, /readyz, /metrics) listen.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Revoke a token, an IdP session's tokens (sid), a user's tokens or a signing key through
    /// the revocation API, or list the entries (the admin token comes from
    /// AUTHGATE_REVOCATION_TOKEN).
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
    // Held to the end of main: dropping it flushes the log lines still buffered.
    let _log_writer = crate::ops::telemetry::init(cli.log_format);
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
        Command::Explain(args) => explain(args),
    }
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The Bearer token to send (visible in `ps`; prefer --token-file).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the Bearer token (`-` reads standard input).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request URL, e.g. https://api.example.com/orders?id=7
    #[arg(long)]
    url: String,
    /// An extra request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Verify with the keys in this JWKS file instead of fetching the providers' JWKS.
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Print the trace as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit status 2: the question could not be asked (usage or config).
fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("authgate explain: {message}");
    ExitCode::from(2)
}

fn explain(args: ExplainArgs) -> ExitCode {
    use crate::decide::explain::{self, Question};
    let config = match crate::config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => return usage(format!("config refused:\n{errors}")),
    };
    let Ok(method) = http::Method::from_bytes(args.method.as_bytes()) else {
        return usage(format!("--method {:?} is not an HTTP method", args.method));
    };
    let url: http::Uri = match args.url.parse() {
        Ok(url) => url,
        // Not echoed: a URL may carry a password or an access token in its query.
        Err(e) => return usage(format!("--url is not a URL: {e}")),
    };
    let mut headers = Vec::new();
    for raw in &args.headers {
        let parsed = raw.split_once(':').and_then(|(name, value)| {
            let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            let value = http::HeaderValue::from_str(value.trim()).ok()?;
            Some((name, value))
        });
        match parsed {
            Some(header) => headers.push(header),
            // Only what stands before the first space or colon: a mistyped header can hold a
            // credential (`-H 'Authorization Bearer eyJ…'`).
            None => {
                let shown: String = raw
                    .chars()
                    .take_while(|c| *c != ':' && !c.is_whitespace())
                    .take(64)
                    .collect();
                return usage(format!("-H {shown:?}…: not `Name: value`"));
            }
        }
    }
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(path)) => {
            let read = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            };
            match read {
                Ok(text) => Some(text.trim().to_string()),
                Err(e) => return usage(format!("--token-file {}: {e}", path.display())),
            }
        }
        (None, None) => None,
    };
    let jwks = match &args.jwks {
        None => None,
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| crate::auth::keys::KeySet::parse(&bytes))
        {
            Ok(set) => Some(set),
            Err(e) => return usage(format!("--jwks {}: {e}", path.display())),
        },
    };
    let question = Question {
        method,
        url,
        headers,
        token,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(explain::explain(config, question, jwks)) {
        Ok(answer) => {
            if args.json {
                println!("{}", answer.to_json());
            } else {
                print!("{}", answer.to_text());
            }
            if answer.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(message) => usage(message),
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

/// One worker per CPU this process may actually use: `available_parallelism` reads the CPU
/// affinity mask and the cgroup CPU quota, so a sidecar limited to half a core on a 64-core node
/// gets one worker, not 64. With one, a current-thread runtime: waking an upstream
/// connection's task on another worker thread costs context switches and buys nothing.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    tracing::info!(workers, "starting the runtime");
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

fn block_on(future: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match runtime() {
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
