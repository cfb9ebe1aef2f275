//! The `latchkey` binary: read settings, set up logging, build, run until a
//! stop signal.

use std::path::PathBuf;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use latchkey::cli::{ClientArgs, ClientCommand};
use latchkey::{Application, Settings, telemetry};

mod allocator;

/// The request path allocates small, short-lived buffers on every call;
/// mimalloc serves them from thread-local free lists, and the Verify
/// cache's long-lived memory from heaps of its own.
#[global_allocator]
static ALLOCATOR: allocator::Segregated = allocator::Segregated;

#[derive(Parser)]
#[command(
    version,
    about = "API-token service: issue, verify, renew and revoke tokens over gRPC"
)]
struct Cli {
    /// TOML configuration file; LATCHKEY_* variables override it.
    #[arg(long, global = true, env = latchkey::config::CONFIG_ENV)]
    config: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Admin credentials, made against the configured database; no server
    /// needs to run.
    #[command(subcommand)]
    AdminToken(AdminToken),
    #[command(flatten)]
    Client(ClientCommand),
    /// Print a shell completion script (bash: `source <(latchkey completion bash)`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum AdminToken {
    /// Issue a token with scope latchkey:admin (owner `latchkey`) and print
    /// its secret, and nothing else, to stdout.
    Issue {
        /// The token's name, shown when tokens are listed.
        #[arg(long, default_value = "admin")]
        name: String,
        /// Lifetime, such as 30d or 12h; none: no expiry (unless
        /// policy.max_ttl asks for one).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::Client(command) => return Ok(latchkey::cli::run(cli.client, command).await),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "latchkey",
                &mut std::io::stdout(),
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(settings.log_format)?;
    server(command, settings).await?;
    Ok(ExitCode::SUCCESS)
}

/// The server's own commands, with its settings.
async fn server(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(stop_signal()).await
        }
        Command::AdminToken(AdminToken::Issue { name, ttl }) => {
            let secret = latchkey::setup::issue_admin_token(&settings, &name, ttl).await?;
            // The secret alone, on stdout, for `$(latchkey admin-token issue)`;
            // logs go to stderr.
            println!("{}", secret.expose());
            Ok(())
        }
        Command::Migrate => {
            let store = latchkey::setup::connect_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Client(_) | Command::Completion { .. } => {
            unreachable!("answered without settings")
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let sigterm = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = sigterm => {}
    }
}
