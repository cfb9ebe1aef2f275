//! The `latchkey` binary: read settings, set up logging, build, run until a
//! stop signal.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use latchkey::{Application, Settings, store::Store, telemetry};

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(settings.log_format)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let mut app = Application::build(settings).await?;
            if let Some(secret) = app.take_bootstrap_secret() {
                // Straight to stderr, never through the logger: log pipelines
                // keep and ship what they see.
                eprintln!(
                    "\nlatchkey: bootstrap admin token (shown once; use it as `authorization: Bearer <token>`):\n\n    {}\n",
                    secret.expose()
                );
            }
            app.run_until_stopped(stop_signal()).await
        }
        Command::Migrate => {
            let store = Store::connect(&settings.database_url, settings.database_max_connections)
                .await
                .context("connecting to the database")?;
            store.migrate().await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
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
