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
    /// Measure label quality of the LLM of the config's sentiment pipeline on a labeled JSON
    /// Lines file (a status with a `label` field per line): accuracy, precision and recall
    /// per label, confusion matrix, unparseable share, latency. Several --model and --prompt
    /// values run side by side.
    Eval {
        #[arg(short, long)]
        config: PathBuf,
        /// The labeled set.
        #[arg(short, long, default_value = "tests/fixtures/eval.jsonl")]
        file: PathBuf,
        /// Models to compare (default: the config's).
        #[arg(long)]
        model: Vec<String>,
        /// Prompt template files to compare (default: the config's prompt).
        #[arg(long)]
        prompt: Vec<PathBuf>,
        /// Use only the first N examples.
        #[arg(long)]
        limit: Option<usize>,
        /// Print one JSON object per run instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.command {
        Command::Run { config } | Command::Check { config } | Command::Eval { config, .. } => {
            config.clone()
        }
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tributary: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Check { .. } => {
                let report = tributary::check::run(&cfg)
                    .await
                    .map_err(anyhow::Error::msg)?;
                print!("{report}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Run { .. } => run(cfg).await,
            Command::Eval {
                file,
                model,
                prompt,
                limit,
                json,
                ..
            } => eval(&cfg, &file, model, prompt, limit, json).await,
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
    let (root, handle, _handles) =
        tributary::supervisors::pipeline::start_root(&cfg, registry.clone())
            .await
            .context("starting the supervisor tree")?;
    tracing::info!(pipelines = cfg.pipelines.len(), "tributary running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
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

async fn eval(
    cfg: &Config,
    file: &std::path::Path,
    models: Vec<String>,
    prompts: Vec<PathBuf>,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let base = cfg
        .pipelines
        .iter()
        .find_map(|p| p.llm.clone())
        .context("the config has no sentiment pipeline with an [pipeline.llm] section")?;
    let (mut examples, bad) = tributary::eval::load(file).map_err(anyhow::Error::msg)?;
    if let Some(n) = limit {
        examples.truncate(n);
    }
    if bad > 0 {
        eprintln!(
            "tributary eval: {bad} unreadable lines in {} were skipped",
            file.display()
        );
    }
    let models = if models.is_empty() {
        vec![base.model.clone()]
    } else {
        models
    };
    let mut templates = Vec::new();
    for p in &prompts {
        templates.push(
            std::fs::read_to_string(p).with_context(|| format!("prompt file {}", p.display()))?,
        );
    }
    if templates.is_empty() {
        templates.push(base.prompt.clone());
    }
    let mut summary = Vec::new();
    for m in &models {
        for t in &templates {
            let mut c = base.clone();
            c.model = m.clone();
            c.prompt = t.clone();
            let r = tributary::eval::run(&c, &examples)
                .await
                .map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}", tributary::eval::render(&r));
            }
            summary.push(r);
        }
    }
    if summary.len() > 1 && !json {
        println!("side by side:");
        for r in &summary {
            println!(
                "  {:<28} prompt {}  accuracy {:>5.1}%  unparseable {:>4.1}%  p50 {} ms",
                r.model,
                r.prompt_id,
                r.accuracy * 100.0,
                r.unparseable_share * 100.0,
                r.latency_p50_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown(
    root: &ractor::ActorRef<tributary::supervisors::supervisor::SupervisorMsg>,
    cfg: &Config,
    signal: &str,
) -> ExitCode {
    tracing::info!(signal, timeout = ?cfg.shutdown_timeout.0, "shutting down: draining in-flight changes");
    match root
        .stop_and_wait(Some(signal.into()), Some(cfg.shutdown_timeout.0))
        .await
    {
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
