//! `cargo bench --bench cdc -- --members 1,2,3 --llm-stage [--rows N (3000 posts)]
//! [--partitions 6] [--latency-ms 100] [--concurrency 4] [--llm-url URL] [--target ch18|ch26]`:
//! the Kafka → LLM → ClickHouse stage as N members of one consumer group, next to the
//! broker's own consume rate and the LLM's ideal rate in the same run.
//!
//! 1. `--rows` statuses go to a topic of `--partitions` partitions through tributary itself (a
//!    replay file → a publishing sentiment pipeline, key `instance/status id`), as the first
//!    half of a split pipeline writes them.
//! 2. The broker's rate: one librdkafka consumer reads every message, all partitions assigned.
//! 3. The LLM: the fake LLM server of the tests (Ollama API) in this process, answering each
//!    request after `--latency-ms`, with no limit of its own, so that what is measured is the
//!    stage and how it spreads over members: each member keeps `--concurrency` requests in
//!    flight (adaptive concurrency off), the ideal is members × concurrency / latency. (The
//!    real llama.cpp server of the tests serves one request at a time on this machine's two
//!    cores: with `--llm-url` every member asks it instead, and the table shows that the LLM,
//!    not the members, is then the bound.)
//! 4. For each member count N: N tributary processes (the release binary) with one config (a
//!    Kafka source, a fresh group, a fresh ClickHouse database) start together; time from the
//!    start until ClickHouse holds every post (then `count() FINAL` and the labels checked),
//!    and the rate from the first post in ClickHouse on (without the group's first joins).
//!    CPU-seconds of the members and their peak RSS; each stops with SIGTERM.
//! 5. A report: posts/s per member count, as a share of the ideal and of the broker's rate,
//!    and one JSON line.
//!
//! Must never: time the fill, or leave its databases, files or (fake) server behind.

use super::members::{
    broker_rate, count, kafka, messages, per_partition, process, time_members, write,
};
use super::{unique, Args, Res};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tributary::clients::clickhouse::ChClient;
use tributary::config::Config;
use tributary_testkit::fake_llm::{FakeLlm, LlmConfig};
use tributary_testkit::fake_mastodon::make_status;
use tributary_testkit::repo;

/// Posts when `--rows` is not given.
const DEFAULT_POSTS: u64 = 3000;

struct Run {
    members: u64,
    secs: f64,
    posts_per_s: f64,
    /// From the first post in ClickHouse to the last: without the group's joins.
    steady_per_s: f64,
    cpu_secs: f64,
    peak_rss_mb: f64,
}

/// The ClickHouse URL of `--target`.
fn ch_url<'a>(args: &Args, vars: &'a HashMap<String, String>) -> &'a str {
    if args.target == "ch18" {
        &vars["TRIBUTARY_TEST_CH18_URL"]
    } else {
        &vars["TRIBUTARY_TEST_CH26_URL"]
    }
}

/// The statuses topic filled with `posts` posts by a publishing tributary.
async fn fill(
    args: &Args,
    vars: &HashMap<String, String>,
    brokers: &str,
    posts: u64,
) -> Res<String> {
    let name = unique("bench_members_llm");
    let tmp = repo().join("target/tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let replay = tmp.join(format!("{name}.jsonl"));
    let lines: Vec<String> = (0..posts)
        .map(|i| {
            let text = match i % 3 {
                0 => format!("post {i}: I love this, what a great day"),
                1 => format!("post {i}: this is terrible and I hate it"),
                _ => format!("post {i}: the train leaves at nine"),
            };
            make_status(700_000_000_000_000_000 + i, &text).to_string()
        })
        .collect();
    write(&replay, &lines.join("\n"))?;
    let topic = format!("{name}_statuses");
    let db = format!("{name}_fill");
    let text = format!(
        r#"[http]
listen = ""
[kafka]
brokers = "{brokers}"
[[pipeline]]
name = "fill"
kind = "sentiment"
[pipeline.replay]
file = "{replay}"
[pipeline.kafka_sink]
topic = "{topic}"
partitions = {partitions}
replication_factor = 1
[pipeline.clickhouse]
url = "{url}"
database = "{db}"
"#,
        replay = replay.display(),
        partitions = args.partitions,
        url = ch_url(args, vars),
    );
    let cfg = Config::from_str_named(&text, "members fill config", &|_| None)
        .map_err(|e| format!("members fill config: {e}"))?;
    let path = tmp.join(format!("{name}_fill.toml"));
    write(&path, &text)?;
    let mut trib = process(path.clone(), tmp.join(format!("{name}_fill.log")))?;
    trib.start()?;
    let cluster = kafka(brokers);
    let deadline = Instant::now() + Duration::from_secs(600);
    let filled = loop {
        if let Err(e) = trib.check_alive("while filling the topic") {
            break Err(e);
        }
        if messages(&cluster, &topic, args.partitions).unwrap_or(0) >= posts {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!("{topic} did not get {posts} messages in 600 s"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    trib.stop().await;
    if let Ok(ch) = ChClient::connect(&cfg.pipelines[0].clickhouse).await {
        let _ = ch.execute(&format!("DROP DATABASE IF EXISTS `{db}`")).await;
    }
    for f in [&replay, &path, &trib.log] {
        let _ = std::fs::remove_file(f);
    }
    filled.map(|()| topic)
}

/// `members` processes of one Kafka → LLM → ClickHouse config, until ClickHouse has every post.
async fn members_run(
    args: &Args,
    vars: &HashMap<String, String>,
    brokers: &str,
    topic: &str,
    llm: (&str, &str),
    posts: u64,
    members: u64,
) -> Res<Run> {
    let (db, group) = (
        unique("bench_members_llm_db"),
        unique("bench_members_llm_group"),
    );
    let (backend, llm_url) = llm;
    let c = args.concurrency;
    let text = format!(
        r#"[http]
listen = ""
[kafka]
brokers = "{brokers}"
[[pipeline]]
name = "members_llm"
kind = "sentiment"
[pipeline.kafka_source]
group = "{group}"
topics = ["{topic}"]
dead_letter_topic = "{group}_dlq"
start = "earliest"
[pipeline.llm]
backend = "{backend}"
url = "{llm_url}"
model = "bench"
concurrency = {c}
adaptive_concurrency = false{structured}
queue = {queue}
[pipeline.batch]
max_age = "50ms"
[pipeline.clickhouse]
url = "{url}"
database = "{db}"
"#,
        queue = (2 * c).max(64),
        // llama.cpp's OpenAI API takes a JSON schema only in this form (see the README).
        structured = if backend == "openai" {
            "\nstructured = \"json_object_with_schema\""
        } else {
            ""
        },
        url = ch_url(args, vars),
    );
    let cfg = Config::from_str_named(&text, "members config", &|_| None)
        .map_err(|e| format!("members config: {e}"))?;
    let ch = ChClient::connect(&cfg.pipelines[0].clickhouse)
        .await
        .map_err(|e| format!("connect to ClickHouse: {e}"))?;
    let table = &cfg.pipelines[0].clickhouse.sentiment_table;
    let path = repo().join("target/tmp").join(format!("{group}.toml"));
    write(&path, &text)?;
    let timed = time_members(
        &path,
        members,
        &ch,
        &format!("SELECT count() FROM `{db}`.`{table}`"),
        posts,
    )
    .await;
    let finals = count(
        &ch,
        &format!("SELECT count() FROM `{db}`.`{table}` FINAL WHERE sentiment IN ('positive', 'negative', 'neutral')"),
    )
    .await;
    let _ = ch.execute(&format!("DROP DATABASE IF EXISTS `{db}`")).await;
    let t = timed?;
    if finals != posts {
        return Err(format!(
            "{members} members: {finals} labelled posts in FINAL, {posts} published"
        ));
    }
    Ok(Run {
        members,
        secs: t.secs,
        posts_per_s: posts as f64 / t.secs,
        steady_per_s: t.steady_per_s,
        cpu_secs: t.cpu_secs,
        peak_rss_mb: t.peak_rss_mb,
    })
}

pub async fn run(args: &Args, vars: &HashMap<String, String>) -> Res<bool> {
    let brokers = vars
        .get("TRIBUTARY_TEST_KAFKA_BROKERS")
        .cloned()
        .ok_or("TRIBUTARY_TEST_KAFKA_BROKERS is not set: scripts/services.sh start")?;
    if args.concurrency == 0 || args.latency_ms == 0 {
        return Err("--concurrency and --latency-ms must be at least 1".into());
    }
    let posts = if args.rows_given {
        args.rows
    } else {
        DEFAULT_POSTS
    };
    eprintln!(
        "bench: filling a topic of {} partitions with {posts} statuses (replay → Kafka) ...",
        args.partitions
    );
    let topic = fill(args, vars, &brokers, posts).await?;
    eprintln!("bench: the broker's own consume rate (one consumer, every partition) ...");
    let broker = broker_rate(&brokers, &topic, args.partitions, posts).await?;
    // Keys spread posts unevenly: a member of larger partitions finishes last.
    let spread = per_partition(&kafka(&brokers), &topic, args.partitions)?;
    let spread: Vec<String> = spread.iter().map(u64::to_string).collect();
    eprintln!("bench: broker: {broker:.0} messages/s");
    // Kept alive until the end of the runs (dropped: stopped).
    let fake = match &args.llm_url {
        Some(_) => None,
        None => Some(
            FakeLlm::start(LlmConfig {
                latency: Duration::from_millis(args.latency_ms),
                ..Default::default()
            })
            .await,
        ),
    };
    let (backend, llm_url, ideal_per_member) = match &fake {
        Some(f) => (
            "ollama",
            f.url(),
            Some(args.concurrency as f64 * 1000.0 / args.latency_ms as f64),
        ),
        None => ("openai", args.llm_url.clone().unwrap_or_default(), None),
    };
    let mut runs = Vec::new();
    for &m in &args.members {
        eprintln!("bench: {m} member(s) ...");
        let r = members_run(args, vars, &brokers, &topic, (backend, &llm_url), posts, m).await?;
        eprintln!(
            "bench: {m} member(s): {:.1} posts/s ({:.2}s), {:.1} from the first post",
            r.posts_per_s, r.secs, r.steady_per_s
        );
        runs.push(r);
    }
    let llm_line = match ideal_per_member {
        Some(i) => format!(
            "fake LLM {} ms per request, {} in flight per member: ideal {i:.0} posts/s per member",
            args.latency_ms, args.concurrency
        ),
        None => format!(
            "LLM server {llm_url}, {} in flight per member",
            args.concurrency
        ),
    };
    println!(
        "\nKafka → LLM → ClickHouse ({}), {posts} posts, {} partitions (posts in each: {}); broker consume rate {broker:.0} msg/s; {llm_line}",
        args.target, args.partitions, spread.join(", ")
    );
    println!("members  posts/s  from first  of ideal  of broker  CPU-s (all)  CPU-ms/post  peak RSS/member");
    let ideal = |m: u64| ideal_per_member.map(|i| i * m as f64);
    for r in &runs {
        println!(
            "{:>7}  {:>7.1}  {:>10.1}  {:>8}  {:>9.4}  {:>11.1}  {:>11.2}  {:>12.0} MB",
            r.members,
            r.posts_per_s,
            r.steady_per_s,
            ideal(r.members)
                .map(|i| format!("{:.2}", r.posts_per_s / i))
                .unwrap_or_else(|| "-".into()),
            r.posts_per_s / broker,
            r.cpu_secs,
            r.cpu_secs * 1000.0 / posts as f64,
            r.peak_rss_mb
        );
    }
    let json: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{{\"members\":{},\"posts_per_s\":{:.1},\"steady_per_s\":{:.1},\"ideal_per_s\":{},\"of_broker\":{:.4},\"cpu_secs\":{:.2},\"peak_rss_mb\":{:.0}}}",
                r.members,
                r.posts_per_s,
                r.steady_per_s,
                ideal(r.members)
                    .map(|i| format!("{i:.1}"))
                    .unwrap_or_else(|| "null".into()),
                r.posts_per_s / broker,
                r.cpu_secs,
                r.peak_rss_mb
            )
        })
        .collect();
    println!(
        "{{\"bench\":\"members_llm\",\"target\":\"{}\",\"posts\":{posts},\"partitions\":{},\"latency_ms\":{},\"concurrency\":{},\"broker_per_s\":{broker:.0},\"runs\":[{}]}}",
        args.target,
        args.partitions,
        args.latency_ms,
        args.concurrency,
        json.join(",")
    );
    drop(fake);
    Ok(true)
}
