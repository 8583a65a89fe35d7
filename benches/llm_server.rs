//! `cargo bench --bench llm_server -- [--posts N (40)] [--concurrency C (4)] [--target ch18|ch26]`
//!
//! The sentiment pipeline against the real LLM server of the test servers (llama.cpp with
//! SmolLM2-135M), next to the server's own throughput measured in the same run by a direct
//! client (the pipeline's `LlmClient`, same prompt and output constraint): direct, one
//! request at a time; direct, C at once (a serial server gains nothing); and the pipeline with
//! C workers and adaptive concurrency, from a replay file into ClickHouse.
//! Reports posts/s of each, the pipeline's share of the best direct figure, the limit the
//! adaptive controller settled on, and peak RSS.

use tributary_testkit::flags::Flags;
use tributary_testkit::procfs::proc_status_kib;
use tributary_testkit::services::{services, Lookup};

/// The servers every bench needs (started or reused through scripts/services.sh).
const BENCH_SERVICES: &[&str] = &[
    "TRIBUTARY_TEST_PG_PORT",
    "TRIBUTARY_TEST_CH18_URL",
    "TRIBUTARY_TEST_CH26_URL",
    "TRIBUTARY_TEST_LLM_URL",
];
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary::clients::clickhouse::ChClient;
use tributary::clients::llm::LlmClient;
use tributary::config::Config;
use tributary::pipelines::PipelineHandles;
use tributary::protocol::mastodon::{Post, Status};
use tributary_testkit::{repo, unique, Res};

struct Args {
    posts: usize,
    concurrency: usize,
    target: String,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        posts: 40,
        concurrency: 4,
        target: "ch26".into(),
    };
    let mut flags = Flags::new();
    while let Some(k) = flags.next_flag() {
        match k.as_str() {
            "--posts" => a.posts = flags.number("--posts")?,
            "--concurrency" => a.concurrency = flags.number("--concurrency")?,
            "--target" => a.target = flags.value("--target")?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn config(
    vars: &std::collections::HashMap<String, String>,
    target: &str,
    db: &str,
    c: usize,
) -> Res<Config> {
    let text =
        std::fs::read_to_string(repo().join("config/sentiment.toml")).map_err(|e| e.to_string())?;
    let ch = vars
        .get(if target == "ch18" {
            "TRIBUTARY_TEST_CH18_URL"
        } else {
            "TRIBUTARY_TEST_CH26_URL"
        })
        .cloned()
        .unwrap_or_default();
    let env = |k: &str| match k {
        "LLM_BACKEND" => Some("openai".to_string()),
        "LLM_URL" => vars.get("TRIBUTARY_TEST_LLM_URL").cloned(),
        "LLM_MODEL" => vars.get("TRIBUTARY_TEST_LLM_MODEL").cloned(),
        "LLM_STRUCTURED" => Some("json_object_with_schema".to_string()),
        "LLM_CONCURRENCY" => Some(c.to_string()),
        "CLICKHOUSE_URL" => Some(ch.clone()),
        "CLICKHOUSE_DATABASE" => Some(db.to_string()),
        _ => None,
    };
    let mut cfg =
        Config::from_str_named(&text, "config/sentiment.toml", &env).map_err(|e| e.to_string())?;
    let l = cfg.pipelines[0].llm.as_mut().ok_or("no llm section")?;
    l.max_tokens = 32;
    cfg.pipelines[0].name = unique("bench_llm");
    Ok(cfg)
}

async fn direct(client: Arc<LlmClient>, texts: &[String], at_once: usize) -> Res<f64> {
    let sem = Arc::new(tokio::sync::Semaphore::new(at_once));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in texts {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (client, t) = (client.clone(), t.clone());
        set.spawn(async move {
            let r = client.complete(&t).await;
            drop(permit);
            r.map(|_| ()).map_err(|e| e.to_string())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(texts.len() as f64 / t0.elapsed().as_secs_f64())
}

async fn bench(a: &Args) -> Res<()> {
    let vars = services(BENCH_SERVICES, Lookup::Script)?;
    let db = unique("bench_llm");
    let cfg = config(&vars, &a.target, &db, a.concurrency)?;
    let llm_cfg = cfg.pipelines[0].llm.clone().ok_or("no llm")?;
    let fixture = std::fs::read_to_string(repo().join("tests/fixtures/eval.jsonl"))
        .map_err(|e| e.to_string())?;
    let lines: Vec<&str> = fixture.lines().take(a.posts).collect();
    let texts: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Status>(l).ok())
        .map(|s| Post::from_status("bench", &s).text)
        .collect();
    let client = Arc::new(LlmClient::new(&llm_cfg).map_err(|e| e.to_string())?);
    client
        .complete("warm-up")
        .await
        .map_err(|e| e.to_string())?;
    let d1 = direct(client.clone(), &texts, 1).await?;
    let dc = direct(client.clone(), &texts, a.concurrency).await?;

    let dir = std::env::temp_dir().join(unique("tributary_bench_llm"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("posts.jsonl");
    std::fs::write(&file, lines.join("\n")).map_err(|e| e.to_string())?;
    let mut cfg = cfg;
    let p = &mut cfg.pipelines[0];
    p.mastodon = None;
    p.replay = Some(tributary::config::ReplayConfig {
        file,
        rate: 0.0,
        instance: "bench".into(),
        filter: Default::default(),
    });
    let ch = ChClient::connect(&p.clickhouse)
        .await
        .map_err(|e| e.to_string())?;
    let registry = tributary::runtime::registry::Registry::new();
    let t0 = Instant::now();
    let (root, handle, handles) = tributary::pipelines::start_root(&cfg, registry)
        .await
        .map_err(|e| e.to_string())?;
    let want = texts.len().to_string();
    loop {
        let n = ch
            .query_text(&format!(
                "SELECT count() FROM `{db}`.mastodon_sentiment FINAL"
            ))
            .await
            .unwrap_or_default();
        if n.trim() == want {
            break;
        }
        if t0.elapsed() > Duration::from_secs(900) {
            return Err(format!(
                "only {} of {want} posts after 15 minutes",
                n.trim()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pipeline = texts.len() as f64 / t0.elapsed().as_secs_f64();
    let limit = match &handles[0] {
        PipelineHandles::Sentiment(h) => h.limiter.limit(),
        _ => 0,
    };
    let _ = root
        .stop_and_wait(None, Some(Duration::from_secs(30)))
        .await;
    let _ = handle.await;
    let _ = ch.execute(&format!("DROP DATABASE IF EXISTS `{db}`")).await;
    let _ = std::fs::remove_dir_all(&dir);
    let best = d1.max(dc);
    let rss = proc_status_kib("self", "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    println!(
        "llm_server: {} posts, model {} at {}",
        texts.len(),
        llm_cfg.model,
        llm_cfg.url
    );
    println!("  direct client, 1 at a time      {d1:>7.2} posts/s");
    println!(
        "  direct client, {} at a time      {dc:>7.2} posts/s",
        a.concurrency
    );
    println!("  pipeline ({} workers, adaptive)  {pipeline:>7.2} posts/s  = {:.2} of the best direct figure; settled limit {limit}", a.concurrency, pipeline / best);
    println!("  peak RSS (bench process)        {rss:>7.1} MB");
    println!(
        "{}",
        serde_json::json!({"bench": "llm_server", "posts": texts.len(), "model": llm_cfg.model, "direct_1": d1, "direct_c": dc,
            "concurrency": a.concurrency, "pipeline": pipeline, "ratio": pipeline / best, "limit": limit, "peak_rss_mb": rss})
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llm_server: {e}");
            return ExitCode::from(2);
        }
    };
    match bench(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llm_server: {e}");
            ExitCode::FAILURE
        }
    }
}
