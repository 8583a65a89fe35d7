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
    /// Make a table's ClickHouse copy equal to Postgres again, while everything streams: the
    /// running tributary of this config copies the table over what ClickHouse has, then
    /// deletes the rows Postgres no longer has (through its admin API: `[admin]` enabled).
    Resync {
        #[arg(short, long)]
        config: PathBuf,
        /// `schema.table` (or a table of `public`).
        #[arg(short, long)]
        table: String,
        /// The pipeline, where several replicate tables of that name.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Compare each replicated table's live rows in ClickHouse with Postgres (hashes of key
    /// ranges computed in both databases, split where they differ) and list the keys that
    /// differ. Runs beside a live pipeline; changes nothing (unless --repair). Exit status: 0 equal, 1
    /// differences, 2 an error.
    Verify {
        #[arg(short, long)]
        config: PathBuf,
        /// Only this table (`schema.table`, or a table of `public`); repeatable.
        #[arg(short, long)]
        table: Vec<String>,
        /// Differences listed per table at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
        /// Have the running tributary (its admin API) copy the keys found different again,
        /// as snapshot rows in its stream's order, then compare again.
        #[arg(long)]
        repair: bool,
    },
    /// Print the status of a running tributary (its `/status`), as a table.
    Status {
        /// The running process's HTTP listener.
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
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
        /// Prompt files to compare (default: the config's prompt): a template with `{text}`
        /// and `{labels}`, or a `.toml` file with `prompt` and `system_prompt`.
        #[arg(long)]
        prompt: Vec<PathBuf>,
        /// Modes to compare, `generate` and/or `score` (default: the config's).
        #[arg(long, value_delimiter = ',')]
        mode: Vec<String>,
        /// For each score-mode run, also fit calibrations (contextual, and on the labeled
        /// set), report them as extra rows and print them as config.
        #[arg(long)]
        calibrate: bool,
        /// Write every post's result of every run as JSON Lines to this file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
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
        Command::Run { config }
        | Command::Check { config }
        | Command::Eval { config, .. }
        | Command::Verify { config, .. }
        | Command::Resync { config, .. } => config.clone(),
        Command::Status { url } => return status(url),
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
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
            Command::Resync {
                table, pipeline, ..
            } => resync(&cfg, &table, pipeline.as_deref()).await,
            Command::Status { .. } => unreachable!("handled above"),
            Command::Verify {
                table,
                limit,
                json,
                repair,
                ..
            } => {
                let o = tributary::cdc::verify::Options {
                    tables: table,
                    limit,
                    repair,
                    pipelines: Vec::new(),
                };
                let reports = match tributary::cdc::verify::run(&cfg, &o).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("tributary verify: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&reports)?);
                } else {
                    print!("{}", tributary::cdc::verify::render(&reports));
                }
                Ok(if reports.iter().all(|r| r.equal || r.ranges == 0) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Command::Eval {
                file,
                model,
                prompt,
                mode,
                calibrate,
                jsonl,
                limit,
                json,
                ..
            } => {
                let opts = EvalOptions {
                    models: model,
                    prompts: prompt,
                    modes: mode,
                    calibrate,
                    jsonl,
                    limit,
                    json,
                };
                eval(&cfg, &file, opts).await
            }
        }
    });
    // Blocking calls still out (a Kafka client's close on an unreachable broker, say) do
    // not hold the exit for ever.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tributary: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let telemetry = tributary::ops::telemetry::init(&cfg.telemetry).map_err(anyhow::Error::msg)?;
    // Bound before any pipeline starts: a taken port fails the start, not a running service.
    let listener = match cfg.http.listen.as_str() {
        "" => None,
        listen => Some(
            tributary::ops::http::bind(listen)
                .await
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let registry = tributary::runtime::registry::Registry::new();
    let (root, handle, handles) = tributary::pipelines::start_root(&cfg, registry.clone())
        .await
        .context("starting the supervisor tree")?;
    let _http = match listener {
        Some(l) => {
            let observed = tributary::ops::metrics::Observed {
                registry: registry.clone(),
                pipelines: cfg
                    .pipelines
                    .iter()
                    .map(|p| p.name.clone())
                    .zip(handles)
                    .collect(),
                started: std::time::Instant::now(),
                admin: cfg.admin.enabled.then(|| tributary::ops::metrics::Admin {
                    root: root.clone(),
                    token: cfg.admin.token.clone(),
                }),
            };
            let (addr, task) =
                tributary::ops::http::serve(l, observed).map_err(anyhow::Error::msg)?;
            tracing::info!(%addr, "status page at /, and /metrics, /status, /health, /ready");
            Some(task)
        }
        None => None,
    };
    let _chaos = cfg.chaos.enabled.then(|| {
        tracing::warn!(interval = ?cfg.chaos.interval.0, kinds = ?cfg.chaos.kinds, "chaos is enabled: actors will be killed on purpose");
        tokio::spawn(tributary::ops::chaos::run(cfg.chaos.clone(), root.clone(), registry.clone()))
    });
    let _verify = (!cfg.verify.interval.0.is_zero()).then(|| {
        tracing::info!(interval = ?cfg.verify.interval.0, "verify is scheduled: ClickHouse is compared with Postgres every interval");
        tokio::spawn(tributary::cdc::verify_schedule::run(cfg.clone(), registry.clone()))
    });
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

/// The tokio runtime from `builder`, or `None` after saying why it could not start.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("tributary: cannot start the runtime: {e}"))
        .ok()
}

/// Asks the running tributary of `cfg` (its HTTP listener and admin token) to resync `table`.
async fn resync(cfg: &Config, table: &str, pipeline: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut query = vec![("table", table)];
    if let Some(p) = pipeline {
        query.push(("pipeline", p));
    }
    match tributary::clients::admin::post(cfg, "/admin/resync", &query, None).await {
        Ok(body) => {
            print!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("tributary resync: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn status(url: &str) -> ExitCode {
    let Some(rt) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let got = rt.block_on(async {
        tributary::clients::tls::install_default_provider();
        let body = reqwest::Client::new()
            .get(format!("{}/status", url.trim_end_matches('/')))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok::<_, reqwest::Error>(body)
    });
    let body = match got {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tributary status: {url}: {}", e.without_url());
            return ExitCode::FAILURE;
        }
    };
    let v: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tributary status: not a status document: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "tributary {}  up {} s  ready: {}",
        v["version"].as_str().unwrap_or("?"),
        v["uptime_s"],
        v["ready"]
    );
    for p in v["pipelines"].as_array().into_iter().flatten() {
        println!(
            "pipeline {} ({}, {}): read {}  written {}  batches {}  retries {}  lag p50/p99 {}/{} ms  lsn {}",
            p["name"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            p["role"].as_str().unwrap_or("?"),
            p["rows_read"],
            p["rows_written"],
            p["batches_written"],
            p["insert_retries"],
            p["lag_p50_ms"],
            p["lag_p99_ms"],
            p["confirmed_lsn"].as_str().unwrap_or("-")
        );
        let copies: Vec<&serde_json::Value> =
            p["copies"].as_array().into_iter().flatten().collect();
        let done = copies.iter().filter(|c| c["state"] == "done").count();
        if !copies.is_empty() {
            println!("  copies: {done} of {} done", copies.len());
        }
        for c in copies.iter().filter(|c| c["state"] != "done") {
            let (rows, est) = (
                c["rows_copied"].as_u64().unwrap_or(0),
                c["rows_estimated"].as_u64().unwrap_or(0),
            );
            println!(
                "  copy {:<40} {:<8} {rows}/~{est} rows{}  {} rows/s  eta {}",
                c["table"].as_str().unwrap_or(""),
                c["state"].as_str().unwrap_or(""),
                (100 * rows)
                    .checked_div(est)
                    .map_or(String::new(), |pct| format!(" ({} %)", pct.min(100))),
                c["rows_per_s"],
                c["eta_s"]
                    .as_u64()
                    .map_or("-".to_string(), |s| format!("{s} s"))
            );
        }
        for t in p["stopped_tables"].as_array().into_iter().flatten() {
            println!(
                "  STOPPED {}: {} ({} changes skipped)",
                t["table"].as_str().unwrap_or(""),
                t["reason"].as_str().unwrap_or(""),
                t["rows_skipped"]
            );
        }
        for q in p["queues"].as_array().into_iter().flatten() {
            println!(
                "  queue {:<14} {}/{}",
                q["name"].as_str().unwrap_or(""),
                q["depth"],
                q["capacity"]
            );
        }
    }
    println!(
        "{:<44} {:<11} {:>8}  last error",
        "actor", "state", "restarts"
    );
    for (a, s) in v["actors"].as_object().into_iter().flatten() {
        println!(
            "{a:<44} {:<11} {:>8}  {}",
            s["state"].as_str().unwrap_or(""),
            s["restarts"],
            s["last_error"].as_str().unwrap_or("")
        );
    }
    ExitCode::SUCCESS
}

struct EvalOptions {
    models: Vec<String>,
    prompts: Vec<PathBuf>,
    modes: Vec<String>,
    calibrate: bool,
    jsonl: Option<PathBuf>,
    limit: Option<usize>,
    json: bool,
}

/// A prompt file of `tributary eval --prompt`: (template, system prompt).
fn prompt_file(p: &std::path::Path) -> anyhow::Result<(String, String)> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("prompt file {}", p.display()))?;
    if p.extension().is_some_and(|e| e == "toml") {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PromptFile {
            #[serde(default)]
            prompt: String,
            #[serde(default)]
            system_prompt: String,
        }
        let f: PromptFile =
            toml::from_str(&text).with_context(|| format!("prompt file {}", p.display()))?;
        return Ok((f.prompt, f.system_prompt));
    }
    Ok((text, String::new()))
}

async fn eval(cfg: &Config, file: &std::path::Path, o: EvalOptions) -> anyhow::Result<ExitCode> {
    use tributary::sentiment::eval as ev;
    let base = cfg
        .pipelines
        .iter()
        .find_map(|p| p.llm.clone())
        .context("the config has no sentiment pipeline with an [pipeline.llm] section")?;
    let (mut examples, bad) = ev::load(file).map_err(anyhow::Error::msg)?;
    if let Some(n) = o.limit {
        examples.truncate(n);
    }
    if bad > 0 {
        eprintln!(
            "tributary eval: {bad} unreadable lines in {} were skipped",
            file.display()
        );
    }
    let models = if o.models.is_empty() {
        vec![base.model.clone()]
    } else {
        o.models
    };
    let mut prompts = Vec::new();
    for p in &o.prompts {
        prompts.push(prompt_file(p)?);
    }
    if prompts.is_empty() {
        prompts.push((base.prompt.clone(), base.system_prompt.clone()));
    }
    let mut modes = Vec::new();
    for m in &o.modes {
        modes.push(match m.as_str() {
            "generate" => tributary::config::LlmMode::Generate,
            "score" => tributary::config::LlmMode::Score,
            other => anyhow::bail!("--mode {other:?}: generate or score"),
        });
    }
    if modes.is_empty() {
        modes.push(base.mode);
    }
    let mut out = match &o.jsonl {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--jsonl {}", p.display()))?,
        )),
        None => None,
    };
    let labels = &base.labels;
    let mut summary = Vec::new();
    let mut calibrations = Vec::new();
    for m in &models {
        for (template, system) in &prompts {
            for mode in &modes {
                let mut c = base.clone();
                c.model = m.clone();
                c.prompt = template.clone();
                c.system_prompt = system.clone();
                c.mode = *mode;
                if *mode == tributary::config::LlmMode::Score
                    && c.backend != tributary::config::LlmBackend::Openai
                {
                    anyhow::bail!("--mode score needs backend = \"openai\" (it reads logprobs from /v1/chat/completions)");
                }
                let (r, outs) = ev::run(&c, &examples).await.map_err(anyhow::Error::msg)?;
                let mut reports = vec![r];
                if o.calibrate && *mode == tributary::config::LlmMode::Score {
                    for labeled in [false, true] {
                        if let Some((off, rc)) =
                            ev::recalibrate(&reports[0], labels, &examples, &outs, labeled)
                        {
                            calibrations.push((
                                rc.mode.clone(),
                                rc.prompt_id.clone(),
                                ev::calibration_line(labels, &off),
                            ));
                            reports.push(rc);
                        }
                    }
                }
                if let Some(w) = out.as_mut() {
                    use std::io::Write;
                    let r = &reports[0];
                    for (ex, oc) in examples.iter().zip(&outs) {
                        let line = serde_json::json!({
                            "model": r.model, "mode": r.mode, "prompt_id": r.prompt_id,
                            "language": ex.language, "gold": ex.gold, "label": oc.label,
                            "confidence": oc.confidence, "scores": oc.scores.as_ref().map(|s| &s.0),
                            "error": oc.error, "latency_ms": oc.latency_ms,
                            "text": ex.text.chars().take(280).collect::<String>(),
                        });
                        writeln!(w, "{line}")?;
                    }
                }
                for r in reports {
                    if o.json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!("{}", ev::render(&r));
                    }
                    summary.push(r);
                }
            }
        }
    }
    if let Some(mut w) = out {
        use std::io::Write;
        w.flush()?;
    }
    if !o.json {
        if summary.len() > 1 {
            println!("side by side:\n{}", ev::SUMMARY_HEADER);
            for r in &summary {
                println!("{}", ev::summary_line(r));
            }
        }
        for (mode, prompt, line) in &calibrations {
            println!(
                "\n# {mode}, prompt {prompt}: in [pipeline.llm] with mode = \"score\"\n{line}"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown(
    root: &ractor::ActorRef<tributary::runtime::supervisor::SupervisorMsg>,
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
