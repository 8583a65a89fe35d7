#![recursion_limit = "256"]
//! The sentiment benchmark: how close the LLM worker pool comes to its ideal throughput C/L
//! (C requests in flight, each taking L), measured end to end into ClickHouse.
//!
//! `cargo bench --bench sentiment -- [--posts N (1600)] [--latency-ms L (200)] [--concurrency C (16)]
//!  [--target ch18|ch26 (ch26)] [--server-limit] [--fixed-concurrency] [--no-baseline] [--keep]`
//!
//! 1. The fake LLM (tests/common/fake_llm.rs, Ollama API) runs in this process and answers every
//!    request after L ms. It has NO concurrency limit by default, so the pipeline's own pool of C
//!    workers is what is measured; `--server-limit` sets the server's limit to C (as a real
//!    server with C slots would), which must make no difference. The pool's adaptive limit
//!    (llm.adaptive_concurrency, on in config/sentiment.toml) stays as configured unless
//!    `--fixed-concurrency` turns it off; its limit and the requests in flight are sampled.
//! 2. N statuses are written to a replay file in a temp dir: the fixture
//!    tests/fixtures/statuses.jsonl (reblogs left out) as templates, each with a fresh increasing
//!    id, its own time and a varied closing sentence.
//! 3. The pipeline runs in-process (`start_root`) with config/sentiment.toml loaded with this
//!    run's servers, the replay file as source, llm.concurrency = C, llm.queue = max(2C, 64) and
//!    batch.max_age = 50 ms, into a fresh ClickHouse database of the test servers.
//! 4. Measured from the first LLM request to the first poll (every 20 ms) where
//!    `SELECT count() FROM db.mastodon_sentiment FINAL` = N: posts/s, the ideal C/L, the ratio,
//!    the overhead per post ((elapsed − N·L/C)/N) and per request cycle (× C), the mean number of
//!    busy workers, the in-worker LLM latency vs L, peak RSS (VmHWM, reset before each run) and
//!    CPU time of this process (pipeline + fake LLM + polling) per post, LLM requests vs N.
//! 5. Then the same with C = 1, N = 50 (ideal 1000/L posts/s): the pool scales.
//! 6. A report and one JSON line. Exits non-zero if ClickHouse does not hold exactly the N posts,
//!    a label is missing or wrong, or requests ≠ N. The ≥ 0.95 target is reported, not asserted.
//!
//! The ClickHouse database and the temp files are removed at the end (unless `--keep`).
//! TRIBUTARY_BENCH_LOG=<filter> (e.g. tributary=debug) prints the pipeline's logs.

use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tributary::clients::clickhouse::ChClient;
use tributary::config::{Config, PostFilter, ReplayConfig};
use tributary::pipelines::PipelineHandles;
use tributary::runtime::registry::Registry;
use tributary_testkit::fake_llm::{rule_label, FakeLlm, LlmConfig};

use tributary_testkit::flags::Flags;
use tributary_testkit::procfs::{proc_cpu_secs, proc_status_kib};
use tributary_testkit::services::{services, Lookup};

/// The servers every bench needs (started or reused through scripts/services.sh).
const BENCH_SERVICES: &[&str] = &[
    "TRIBUTARY_TEST_PG_PORT",
    "TRIBUTARY_TEST_CH18_URL",
    "TRIBUTARY_TEST_CH26_URL",
    "TRIBUTARY_TEST_LLM_URL",
];
use tributary_testkit::{repo, unique, Res};

#[derive(Debug, Clone)]
struct Args {
    posts: u64,
    latency_ms: u64,
    concurrency: usize,
    target: String,
    server_limit: bool,
    /// llm.adaptive_concurrency = false (config/sentiment.toml has it on).
    fixed: bool,
    baseline: bool,
    keep: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        posts: 1600,
        latency_ms: 200,
        concurrency: 16,
        target: "ch26".into(),
        server_limit: false,
        fixed: false,
        baseline: true,
        keep: false,
    };
    let mut flags = Flags::new();
    while let Some(key) = flags.next_flag() {
        match key.as_str() {
            // cargo bench passes --bench to harness=false benches.
            "--bench" => {}
            "--posts" => a.posts = flags.number("--posts")?,
            "--latency-ms" => a.latency_ms = flags.number("--latency-ms")?,
            "--concurrency" => a.concurrency = flags.number("--concurrency")?,
            "--target" => a.target = flags.value("--target")?,
            "--server-limit" => a.server_limit = true,
            "--no-baseline" => a.baseline = false,
            "--fixed-concurrency" => a.fixed = true,
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!("cargo bench --bench sentiment -- [--posts N (1600)] [--latency-ms L (200)] [--concurrency C (16)] [--target ch18|ch26 (ch26)] [--server-limit] [--fixed-concurrency] [--no-baseline] [--keep]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if a.target != "ch18" && a.target != "ch26" {
        return Err(format!("--target must be ch18 or ch26, not {:?}", a.target));
    }
    if a.posts == 0 || a.latency_ms == 0 || a.concurrency == 0 {
        return Err("--posts, --latency-ms and --concurrency must be positive".into());
    }
    Ok(a)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each run reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// (busy, all) CPU seconds of the whole machine so far, from /proc/stat.
fn machine_cpu_secs() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let all: f64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    ((all - idle) / 100.0, all / 100.0)
}

/// N statuses from the fixture's (non-reblog) statuses, each with a fresh increasing id and
/// time, and a closing sentence that varies (some carry sentiment words of their own).
fn write_replay(path: &std::path::Path, n: u64) -> Res<()> {
    let fixture = std::fs::read_to_string(repo().join("tests/fixtures/statuses.jsonl"))
        .map_err(|e| format!("fixture: {e}"))?;
    let templates: Vec<Value> = fixture
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|s| s["reblog"].is_null())
        .collect();
    if templates.is_empty() {
        return Err("no templates in tests/fixtures/statuses.jsonl".into());
    }
    const CODAS: [&str; 16] = [
        "",
        "Anyway, back to work.",
        "Day {r} of keeping up with the timeline.",
        "What a great community this is.",
        "Still angry about the bus this morning.",
        "#{tag} #fediverse",
        "(edit: typo)",
        "Thoughts?",
        "I love how quiet it is at {h}:00.",
        "Coffee number {r}. Send help.",
        "This weather is awful.",
        "More tomorrow.",
        "🙂",
        "Boosts appreciated.",
        "Happy {day}, everyone!",
        "Honestly not sure what to make of it.",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let base_id: u64 = 114_000_000_000_000_000;
    let base_secs: i64 = 1_732_180_000; // 2024-11-21T09:06:40Z
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    for i in 0..n {
        let t = &templates[(i as usize) % templates.len()];
        let r = i / templates.len() as u64;
        let mut s = t.clone();
        let id = (base_id + i * 65_536).to_string();
        let secs = base_secs + i as i64 * 3;
        let coda = CODAS[((i * 7 + r) as usize) % CODAS.len()]
            .replace("{r}", &(r + 1).to_string())
            .replace("{h}", &((secs / 3600) % 24).to_string())
            .replace("{day}", DAYS[(i as usize / 5) % 7])
            .replace(
                "{tag}",
                ["rust", "postgres", "gardening", "cats", "books"][(i as usize) % 5],
            );
        let content = t["content"].as_str().unwrap_or("").to_string();
        s["content"] = Value::String(if coda.is_empty() {
            content
        } else {
            format!("{content}<p>{coda}</p>")
        });
        let old = t["id"].as_str().unwrap_or("").to_string();
        s["id"] = Value::String(id.clone());
        for k in ["uri", "url"] {
            if let Some(u) = t[k].as_str() {
                s[k] = Value::String(u.replace(&old, &id));
            }
        }
        s["created_at"] = Value::String(iso(secs));
        if !t["edited_at"].is_null() {
            s["edited_at"] = Value::String(iso(secs + 60));
        }
        serde_json::to_writer(&mut out, &s).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// RFC 3339 UTC with milliseconds, as Mastodon writes it.
fn iso(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = tributary::protocol::pgtext::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Debug, Clone)]
struct RunResult {
    posts: u64,
    latency_ms: u64,
    concurrency: usize,
    server_limit: bool,
    secs: f64,
    posts_per_s: f64,
    ideal_per_s: f64,
    ratio: f64,
    overhead_ms_per_post: f64,
    overhead_ms_per_cycle: f64,
    /// First request → the LLM stage has classified all N (the rest is sink + visibility).
    classified_secs: f64,
    /// Mean of busy workers (leases held) over the polls of the steady state (after the first
    /// wave, while the source still has posts to queue).
    mean_busy: f64,
    /// Time-weighted means over the whole measured interval: requests in flight (the
    /// limiter's count) and the limiter's limit; its lowest limit; the share of the time at C.
    mean_in_flight: f64,
    mean_limit: f64,
    min_limit: usize,
    at_max_share: f64,
    adaptive: bool,
    mean_queue_depth: f64,
    min_queue_depth: usize,
    /// Mean in-worker latency of a classification (HTTP round trip included).
    llm_latency_ms: f64,
    peak_rss_kib: u64,
    cpu_secs: f64,
    cpu_ms_per_post: f64,
    /// CPU seconds other processes (ClickHouse, anyone sharing the machine) used meanwhile,
    /// and the machine's CPU seconds available (cores × wall).
    other_cpu_secs: f64,
    machine_secs: f64,
    requests_client: u64,
    requests_server: u64,
    server_max_concurrent: usize,
    errors: u64,
    batches: u64,
    insert_retries: u64,
    rows_final: u64,
    distinct_ids: u64,
    bad_labels: Vec<String>,
    ch_version: String,
}

impl RunResult {
    fn ok(&self) -> bool {
        self.rows_final == self.posts
            && self.distinct_ids == self.posts
            && self.bad_labels.is_empty()
            && self.requests_client == self.posts
            && self.requests_server == self.posts
    }
}

/// What a run created, removed at the end whatever happened.
#[derive(Default)]
struct Cleanup {
    ch: Vec<(ChClient, String)>,
    dirs: Vec<PathBuf>,
}

impl Cleanup {
    async fn run(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (ch, db) in &self.ch {
            if let Err(e) = ch.execute(&format!("DROP DATABASE IF EXISTS `{db}`")).await {
                problems.push(format!("ClickHouse database {db}: {e}"));
            }
        }
        for d in &self.dirs {
            if let Err(e) = std::fs::remove_dir_all(d) {
                problems.push(format!("{}: {e}", d.display()));
            }
        }
        problems
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    vars: &HashMap<String, String>,
    target: &str,
    n: u64,
    latency_ms: u64,
    c: usize,
    server_limit: bool,
    fixed: bool,
    clean: &mut Cleanup,
) -> Res<RunResult> {
    let latency = Duration::from_millis(latency_ms);
    let llm = FakeLlm::start(LlmConfig {
        latency,
        concurrency: if server_limit { c } else { 0 },
        ..Default::default()
    })
    .await;

    let dir = std::env::temp_dir().join(unique("tributary_bench_sentiment"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    clean.dirs.push(dir.clone());
    let file = dir.join("statuses.jsonl");
    write_replay(&file, n)?;

    let db = unique("bench_sentiment");
    let url = if target == "ch18" {
        &vars["TRIBUTARY_TEST_CH18_URL"]
    } else {
        &vars["TRIBUTARY_TEST_CH26_URL"]
    };
    let text = std::fs::read_to_string(repo().join("config/sentiment.toml"))
        .map_err(|e| format!("config/sentiment.toml: {e}"))?;
    let env: HashMap<&str, String> = [
        ("LLM_URL", llm.url()),
        ("LLM_BACKEND", "ollama".into()),
        ("LLM_MODEL", "llama3.2:1b".into()),
        ("LLM_CONCURRENCY", c.to_string()),
        ("CLICKHOUSE_URL", url.clone()),
        ("CLICKHOUSE_DATABASE", db.clone()),
    ]
    .into_iter()
    .collect();
    let mut cfg = Config::from_str_named(&text, "config/sentiment.toml", &|k| env.get(k).cloned())
        .map_err(|e| format!("config/sentiment.toml: {e}"))?;
    cfg.pipelines[0].name = unique("bench_sentiment");
    cfg.shutdown_timeout.0 = Duration::from_secs(20);
    let p = &mut cfg.pipelines[0];
    p.mastodon = None;
    p.replay = Some(ReplayConfig {
        file: file.clone(),
        rate: 0.0,
        instance: "replay.example".into(),
        filter: PostFilter::default(),
    });
    let l = p
        .llm
        .as_mut()
        .ok_or("config/sentiment.toml has no [pipeline.llm]")?;
    l.concurrency = c;
    l.queue = (2 * c).max(64);
    l.circuit_failures = 1000;
    if fixed {
        l.adaptive_concurrency = false;
    }
    p.batch.max_age.0 = Duration::from_millis(50);
    p.batch.edge_capacity = p.batch.edge_capacity.max(2 * c);
    let ch_cfg = p.clickhouse.clone();

    let ch = ChClient::connect(&ch_cfg)
        .await
        .map_err(|e| format!("connect to ClickHouse {url}: {e}"))?;
    let ch_version = ch
        .query_text("SELECT version()")
        .await
        .map_err(|e| e.to_string())?
        .trim()
        .to_string();
    clean.ch.push((ch.clone(), db.clone()));

    eprintln!("bench: run: N={n} L={latency_ms}ms C={c} server limit {} → ClickHouse {target} ({ch_version}), database {db}", if server_limit { c.to_string() } else { "none".into() });
    reset_peak_rss();
    let registry = Registry::new();
    let (root, handle, handles) = tributary::pipelines::start_root(&cfg, registry.clone())
        .await
        .map_err(|e| format!("start the pipeline: {e}"))?;
    let h = match &handles[0] {
        PipelineHandles::Sentiment(h) => h.clone(),
        _ => return Err("not a sentiment pipeline".into()),
    };
    let counters = registry.pipeline(&cfg.pipelines[0].name);
    let result = measure(&ch, &db, &h, &llm, n, latency, c).await;
    let stop = root
        .stop_and_wait(Some("bench done".into()), Some(Duration::from_secs(30)))
        .await;
    let _ = handle.await;
    let m = result?;
    stop.map_err(|e| format!("stop the pipeline: {e}"))?;

    // What landed: exactly N live rows, one per id, each with the label the fake gave.
    let q = format!("SELECT count(), uniqExact(m_id) FROM `{db}`.mastodon_sentiment FINAL WHERE _is_deleted = 0");
    let t = ch
        .query_text(&q)
        .await
        .map_err(|e| format!("final count: {e}"))?;
    let f: Vec<u64> = t
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    let rows = ch
        .query_text(&format!("SELECT m_id, sentiment, mastodon_text FROM `{db}`.mastodon_sentiment FINAL WHERE _is_deleted = 0"))
        .await
        .map_err(|e| format!("read the rows: {e}"))?;
    let mut bad_labels = Vec::new();
    for line in rows.lines() {
        let mut it = line.splitn(3, '\t');
        let u = |s: Option<&str>| tributary::protocol::pgtext::unescape_tsv(s.unwrap_or(""));
        let (id, label, text) = (u(it.next()), u(it.next()), u(it.next()));
        let seen: String = text.chars().take(2000).collect();
        if label != rule_label(&seen) {
            bad_labels.push(format!("{id}: {label:?}, want {}", rule_label(&seen)));
        }
    }

    let secs = m.done_secs;
    let ideal = c as f64 * 1000.0 / latency_ms as f64;
    let ideal_secs = n as f64 * latency_ms as f64 / 1000.0 / c as f64;
    let classified = h.llm.classified.load(Ordering::Relaxed).max(1);
    Ok(RunResult {
        posts: n,
        latency_ms,
        concurrency: c,
        server_limit,
        secs,
        posts_per_s: n as f64 / secs,
        ideal_per_s: ideal,
        ratio: n as f64 / secs / ideal,
        overhead_ms_per_post: (secs - ideal_secs) * 1000.0 / n as f64,
        overhead_ms_per_cycle: (secs - ideal_secs) * 1000.0 * c as f64 / n as f64,
        classified_secs: m.classified_secs,
        mean_busy: m.mean_busy,
        mean_in_flight: m.mean_in_flight,
        mean_limit: m.mean_limit,
        min_limit: m.min_limit,
        at_max_share: m.at_max_share,
        adaptive: !fixed,
        mean_queue_depth: m.mean_queue,
        min_queue_depth: m.min_queue,
        llm_latency_ms: h.llm.latency_ms_total.load(Ordering::Relaxed) as f64 / classified as f64,
        peak_rss_kib: m.peak_rss_kib,
        cpu_secs: m.cpu_secs,
        cpu_ms_per_post: m.cpu_secs * 1000.0 / n as f64,
        other_cpu_secs: m.other_cpu_secs,
        machine_secs: m.machine_secs,
        requests_client: h.llm.requests.load(Ordering::Relaxed),
        requests_server: llm.generations(),
        server_max_concurrent: llm.max_concurrent(),
        errors: h.llm.errors.load(Ordering::Relaxed),
        batches: counters.batches_written.load(Ordering::Relaxed),
        insert_retries: counters.insert_retries.load(Ordering::Relaxed),
        rows_final: f.first().copied().unwrap_or(0),
        distinct_ids: f.get(1).copied().unwrap_or(0),
        bad_labels,
        ch_version,
    })
}

struct Measured {
    done_secs: f64,
    classified_secs: f64,
    mean_busy: f64,
    mean_in_flight: f64,
    mean_limit: f64,
    min_limit: usize,
    at_max_share: f64,
    mean_queue: f64,
    min_queue: usize,
    peak_rss_kib: u64,
    cpu_secs: f64,
    other_cpu_secs: f64,
    machine_secs: f64,
}

async fn measure(
    ch: &ChClient,
    db: &str,
    h: &tributary::sentiment::tree::SentimentHandles,
    llm: &FakeLlm,
    n: u64,
    latency: Duration,
    c: usize,
) -> Res<Measured> {
    // The clock starts when the first post is taken: the first LLM request (polled every ms).
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.llm.requests.load(Ordering::Relaxed) == 0 && llm.generations() == 0 {
        if Instant::now() > deadline {
            return Err("no LLM request within 60 s of the start".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    let cpu0 = proc_cpu_secs("self").unwrap_or(f64::NAN);
    let machine0 = machine_cpu_secs();
    let poll = format!("SELECT count() FROM `{db}`.mastodon_sentiment FINAL");
    let (mut busy_sum, mut queue_sum, mut samples, mut min_queue) =
        (0usize, 0usize, 0usize, usize::MAX);
    let mut classified_at: Option<Instant> = None;
    // Time-weighted: requests in flight, the limiter's limit, time at the maximum.
    let (mut flight_w, mut limit_w, mut at_max, mut weighted, mut min_limit, mut last_tick) =
        (0.0, 0.0, 0.0, 0.0, usize::MAX, t0);
    let (mut last_count, mut last_progress, mut last_report) =
        (u64::MAX, Instant::now(), Instant::now());
    loop {
        let tick = Instant::now();
        let classified = h.llm.classified.load(Ordering::Relaxed);
        if classified < n {
            let dt = tick.duration_since(last_tick).as_secs_f64();
            let limit = h.limiter.limit();
            flight_w += dt * h.limiter.in_flight() as f64;
            limit_w += dt * limit as f64;
            at_max += if limit >= c { dt } else { 0.0 };
            weighted += dt;
            min_limit = min_limit.min(limit);
        }
        last_tick = tick;
        if classified >= n {
            classified_at.get_or_insert(tick);
        } else if tick.duration_since(t0) > latency
            && h.llm.requests.load(Ordering::Relaxed) + (h.queue.depth() as u64) < n
        {
            // The steady state: past the first wave, and the source still has posts to queue.
            let q = h.queue.depth();
            busy_sum += h.leases.busy();
            queue_sum += q;
            min_queue = min_queue.min(q);
            samples += 1;
        }
        let text = ch
            .query_text(&poll)
            .await
            .map_err(|e| format!("poll ClickHouse: {e}"))?;
        let seen_at = Instant::now();
        let count: u64 = text.trim().parse().unwrap_or(0);
        if count != last_count {
            (last_count, last_progress) = (count, seen_at);
        }
        if count == n {
            let classified_at = classified_at.unwrap_or(seen_at);
            let (cpu, machine) = (
                proc_cpu_secs("self").unwrap_or(f64::NAN) - cpu0,
                machine_cpu_secs(),
            );
            return Ok(Measured {
                done_secs: seen_at.duration_since(t0).as_secs_f64(),
                classified_secs: classified_at.duration_since(t0).as_secs_f64(),
                mean_busy: if samples > 0 {
                    busy_sum as f64 / samples as f64
                } else {
                    f64::NAN
                },
                mean_in_flight: flight_w / weighted.max(1e-9),
                mean_limit: limit_w / weighted.max(1e-9),
                min_limit: if min_limit == usize::MAX {
                    c
                } else {
                    min_limit
                },
                at_max_share: at_max / weighted.max(1e-9),
                mean_queue: if samples > 0 {
                    queue_sum as f64 / samples as f64
                } else {
                    f64::NAN
                },
                min_queue: if samples > 0 { min_queue } else { 0 },
                peak_rss_kib: proc_status_kib("self", "VmHWM:").unwrap_or(0),
                cpu_secs: cpu,
                other_cpu_secs: machine.0 - machine0.0 - cpu,
                machine_secs: machine.1 - machine0.1,
            });
        }
        if count > n {
            return Err(format!(
                "ClickHouse has {count} posts, more than the {n} replayed (duplicates)"
            ));
        }
        if seen_at.duration_since(last_progress) > Duration::from_secs(60) {
            return Err(format!("no progress for 60 s: ClickHouse has {count} of {n} posts; {classified} classified, {} LLM errors", h.llm.errors.load(Ordering::Relaxed)));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "bench: {count} posts visible, {classified} classified after {:.1}s",
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        let spent = tick.elapsed();
        if spent < Duration::from_millis(20) {
            tokio::time::sleep(Duration::from_millis(20) - spent).await;
        }
    }
}

fn print_run(title: &str, r: &RunResult) {
    let mb = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{title}: N = {}, L = {} ms, C = {}, server-side limit {}",
        r.posts,
        r.latency_ms,
        r.concurrency,
        if r.server_limit {
            r.concurrency.to_string()
        } else {
            "none".into()
        }
    );
    println!(
        "  throughput                 {:>8.2} posts/s  first request → all N in ClickHouse: {:.2}s",
        r.posts_per_s, r.secs
    );
    println!(
        "  ideal C/L                  {:>8.2} posts/s  ({:.2}s for N)",
        r.ideal_per_s,
        r.posts as f64 / r.ideal_per_s
    );
    println!(
        "  ratio                      {:>8.3}          (target ≥ 0.95){}",
        r.ratio,
        if r.ratio >= 0.95 {
            ""
        } else {
            "  <-- below target"
        }
    );
    println!(
        "  overhead                   {:>8.2} ms/post  ({:.1} ms per request cycle of a worker)",
        r.overhead_ms_per_post, r.overhead_ms_per_cycle
    );
    println!("  LLM stage                  all classified after {:.2}s; sink + visibility tail {:.2}s; {} inserts", r.classified_secs, r.secs - r.classified_secs, r.batches);
    let na = |x: f64, d: usize| {
        if x.is_nan() {
            "n/a".to_string()
        } else {
            format!("{x:.d$}")
        }
    };
    println!("  pool                       workers holding a post {} of {}, queue mean {} / min {} (while the source still had posts); LLM latency in the worker {:.1} ms (L = {}, limiter wait included)", na(r.mean_busy, 2), r.concurrency, na(r.mean_queue_depth, 1), r.min_queue_depth, r.llm_latency_ms, r.latency_ms);
    println!("  limiter ({})       requests in flight {:.2} on average; limit mean {:.2}, min {}, at C {:.0}% of the time", if r.adaptive { "adaptive" } else { "fixed   " }, r.mean_in_flight, r.mean_limit, r.min_limit, r.at_max_share * 100.0);
    println!("  LLM requests               {} by the pool, {} at the server, N = {}; {} errors; server saw ≤ {} at once", r.requests_client, r.requests_server, r.posts, r.errors, r.server_max_concurrent);
    println!(
        "  peak RSS (VmHWM)           {:>8.1} MB      whole process: pipeline + fake LLM + bench",
        mb(r.peak_rss_kib)
    );
    println!("  CPU, measured interval     {:>8.2} s       {:.3} ms per post (same process: pipeline + fake LLM + polling)", r.cpu_secs, r.cpu_ms_per_post);
    println!("  CPU, other processes       {:>8.2} s       of {:.1} CPU-s the machine had meanwhile (ClickHouse, and whoever shares the cores)", r.other_cpu_secs, r.machine_secs);
    println!("  ClickHouse                 {} rows FINAL, {} distinct ids, {} wrong labels; {} insert retries{}", r.rows_final, r.distinct_ids, r.bad_labels.len(), r.insert_retries, if r.ok() { "" } else { "  <-- MISMATCH" });
}

fn json_of(r: &RunResult) -> Value {
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    serde_json::json!({
        "posts": r.posts,
        "latency_ms": r.latency_ms,
        "concurrency": r.concurrency,
        "server_limit": if r.server_limit { Some(r.concurrency) } else { None },
        "posts_per_s": r3(r.posts_per_s),
        "ideal_posts_per_s": r3(r.ideal_per_s),
        "ratio": r3(r.ratio),
        "secs": r3(r.secs),
        "overhead_ms_per_post": r3(r.overhead_ms_per_post),
        "overhead_ms_per_cycle": r3(r.overhead_ms_per_cycle),
        "classified_secs": r3(r.classified_secs),
        "mean_busy_workers": if r.mean_busy.is_nan() { None } else { Some(r3(r.mean_busy)) },
        "adaptive_concurrency": r.adaptive,
        "mean_in_flight": r3(r.mean_in_flight),
        "mean_limit": r3(r.mean_limit),
        "min_limit": r.min_limit,
        "at_max_share": r3(r.at_max_share),
        "llm_latency_ms": r3(r.llm_latency_ms),
        "peak_rss_mb": (r.peak_rss_kib as f64 / 102.4).round() / 10.0,
        "cpu_s": r3(r.cpu_secs),
        "cpu_ms_per_post": r3(r.cpu_ms_per_post),
        "other_processes_cpu_s": r3(r.other_cpu_secs),
        "machine_cpu_s": r3(r.machine_secs),
        "llm_requests": r.requests_client,
        "llm_requests_server": r.requests_server,
        "inserts": r.batches,
        "rows_in_clickhouse": r.rows_final,
        "wrong_labels": r.bad_labels.len(),
        "ok": r.ok(),
    })
}

async fn bench(args: &Args, vars: &HashMap<String, String>, clean: &mut Cleanup) -> Res<bool> {
    let main = run_once(
        vars,
        &args.target,
        args.posts,
        args.latency_ms,
        args.concurrency,
        args.server_limit,
        args.fixed,
        clean,
    )
    .await?;
    let base = if args.baseline {
        Some(
            run_once(
                vars,
                &args.target,
                50,
                args.latency_ms,
                1,
                args.server_limit,
                args.fixed,
                clean,
            )
            .await?,
        )
    } else {
        None
    };
    println!();
    println!(
        "Sentiment benchmark: replay → {} LLM workers → fake Ollama ({} ms) → ClickHouse {} ({})",
        args.concurrency, args.latency_ms, args.target, main.ch_version
    );
    print_run("pool", &main);
    if let Some(b) = &base {
        print_run("single worker", b);
        println!(
            "scaling: {:.2}× the posts/s with {}× the workers",
            main.posts_per_s / b.posts_per_s,
            main.concurrency
        );
    }
    let mut json = serde_json::json!({
        "bench": "sentiment",
        "target": args.target,
        "clickhouse_version": main.ch_version,
        "pool": json_of(&main),
        "single_worker": base.as_ref().map(json_of),
    });
    if let Some(b) = &base {
        json["scaling"] =
            serde_json::json!((main.posts_per_s / b.posts_per_s * 100.0).round() / 100.0);
    }
    println!("{json}");
    let _ = std::io::stdout().flush();
    let mut ok = true;
    for r in std::iter::once(&main).chain(base.as_ref()) {
        if !r.ok() {
            ok = false;
            eprintln!(
                "bench: FAILED (C = {}): {} rows FINAL / {} distinct ids for {} posts; {} LLM requests by the pool, {} at the server; wrong labels: {:?}",
                r.concurrency, r.rows_final, r.distinct_ids, r.posts, r.requests_client, r.requests_server, &r.bad_labels[..r.bad_labels.len().min(5)]
            );
        }
    }
    Ok(ok)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(filter) = std::env::var("TRIBUTARY_BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let vars = match services(BENCH_SERVICES, Lookup::Script) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut clean = Cleanup::default();
    let result = bench(&args, &vars, &mut clean).await;
    if args.keep {
        eprintln!(
            "bench: --keep: left ClickHouse databases {:?}, files {:?}",
            clean.ch.iter().map(|c| &c.1).collect::<Vec<_>>(),
            clean.dirs
        );
    } else {
        for p in clean.run().await {
            eprintln!("bench: cleanup: {p}");
        }
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
