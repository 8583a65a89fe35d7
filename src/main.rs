//! The `tributary` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tributary::config::Config;

/// Keeps ClickHouse in step with PostgreSQL in real time: logical replication (pgoutput) with
/// a consistent initial snapshot, supervised actors, bounded queues and acknowledgements that
/// advance the replication slot only after ClickHouse has the data.
#[derive(Parser)]
#[command(name = "tributary", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every pipeline of the config until SIGINT/SIGTERM (drains, confirms, exits 0) or
    /// until no pipeline is left (exits 1).
    Run {
        /// The TOML config (see config/cdc.toml).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate the config, connect to every server, and print the publication, slot and
    /// ClickHouse tables a run would use. Changes nothing.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Command::Run { config } | Command::Check { config } => config.clone(),
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tributary: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Check { .. } => {
                let report = tributary::check::run(&cfg).await.map_err(anyhow::Error::msg)?;
                print!("{report}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Run { .. } => run(cfg).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tributary: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let telemetry = tributary::telemetry::init(&cfg.telemetry).map_err(anyhow::Error::msg)?;
    let registry = tributary::status::Registry::new();
    let (root, handle, _handles) = tributary::supervisors::pipeline::start_root(&cfg, registry.clone())
        .await
        .context("starting the supervisor tree")?;
    tracing::info!(pipelines = cfg.pipelines.len(), "tributary running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut handle = handle;
    let code = tokio::select! {
        _ = &mut handle => {
            tracing::error!("no pipeline is left running");
            ExitCode::FAILURE
        }
        _ = tokio::signal::ctrl_c() => shutdown(&root, &cfg, "SIGINT").await,
        _ = term.recv() => shutdown(&root, &cfg, "SIGTERM").await,
    };
    telemetry.shutdown();
    Ok(code)
}

async fn shutdown(root: &ractor::ActorRef<tributary::supervisors::supervisor::SupervisorMsg>, cfg: &Config, signal: &str) -> ExitCode {
    tracing::info!(signal, timeout = ?cfg.shutdown_timeout.0, "shutting down: draining in-flight changes");
    match root.stop_and_wait(Some(signal.into()), Some(cfg.shutdown_timeout.0)).await {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "shutdown did not finish within shutdown_timeout");
            ExitCode::FAILURE
        }
    }
}
