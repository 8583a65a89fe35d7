//! `cargo bench --bench cdc -- --members 1,2,3 [--rows 1000000] [--partitions 6]
//! [--target ch18|ch26]`: the Kafka → ClickHouse stage as N members of one consumer group,
//! next to the broker's own consume rate in the same run.
//!
//! 1. A table of `--rows` rows (the CDC bench's shape) goes to a topic of `--partitions`
//!    partitions through tributary itself (Postgres → Kafka, its first snapshot): Debezium
//!    change events as a real pipeline writes them.
//! 2. The broker's rate: one librdkafka consumer (the client library tributary uses) reads
//!    every message of the topic, all partitions assigned.
//! 3. For each member count N: N tributary processes (the release binary) with one config (a
//!    Kafka source, a fresh group, a fresh ClickHouse database) start together; time from the
//!    start until ClickHouse holds every row (`count()` = rows, then `count() FINAL` checked
//!    equal). CPU-seconds of the members and their peak RSS; each stops with SIGTERM.
//! 4. A report: rows/s per member count and as a ratio of the broker's rate, and one JSON line.
//!
//! Must never: time the fill, or leave its table, slot, publication or databases behind.

use super::{tributary_bin, unique, Args, Cleanup, Pg, Res, Tributary};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tributary::clients::clickhouse::ChClient;
use tributary::config::{Config, KafkaConfig};
use tributary_testkit::repo;

struct Run {
    members: u64,
    secs: f64,
    rows_per_s: f64,
    cpu_secs: f64,
    peak_rss_mb: f64,
}

pub(super) fn write(path: &std::path::Path, text: &str) -> Res<()> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The topic filled with `rows` change events by tributary (Postgres → Kafka).
async fn fill(
    args: &Args,
    clean: &mut Cleanup,
    pg: &Pg,
    brokers: &str,
    prefix: &str,
) -> Res<(String, String)> {
    let c = pg.connect().await?;
    let t = unique("bench_members");
    clean.tables.push(t.clone());
    c.batch_execute(&format!(
        "{}; INSERT INTO {t} SELECT g, md5(g::text) || md5((g + 1)::text), (g % 100000) / 100.0, \
         timestamptz '2026-01-01' + g * interval '1 second', NULL FROM generate_series(1, {}) g",
        super::create_table_sql(&t),
        args.rows
    ))
    .await
    .map_err(|e| format!("fill {t}: {e}"))?;
    let (slot, publication) = (unique("bench_members_slot"), unique("bench_members_pub"));
    clean.slots.push(slot.clone());
    clean.publications.push(publication.clone());
    let text = format!(
        r#"[http]
listen = ""
[kafka]
brokers = "{brokers}"
[[pipeline]]
name = "fill"
kind = "cdc"
[pipeline.postgres]
host = "{host}"
port = {port}
user = "{user}"
password = "{password}"
database = "{database}"
sslmode = "disable"
publication = "{publication}"
slot = "{slot}"
tables = ["public.{t}"]
[pipeline.kafka_sink]
topic_prefix = "{prefix}"
partitions = {partitions}
replication_factor = 1
state_topic = "{prefix}_state"
dead_letter_topic = "{prefix}_dlq"
"#,
        host = pg.host,
        port = pg.port,
        user = pg.user,
        password = pg.password,
        database = pg.database,
        partitions = args.partitions,
    );
    Config::from_str_named(&text, "members fill config", &|_| None)
        .map_err(|e| format!("members fill config: {e}"))?;
    let tmp = repo().join("target/tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let cfg = tmp.join(format!("{t}_fill.toml"));
    write(&cfg, &text)?;
    clean.files.push(cfg.clone());
    let topic = format!("{prefix}.public.{t}");
    let mut trib = process(cfg, tmp.join(format!("{t}_fill.log")))?;
    trib.start()?;
    let cluster = kafka(brokers);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        trib.check_alive("while filling the topic")?;
        if messages(&cluster, &topic, args.partitions).unwrap_or(0) >= args.rows {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{topic} did not get {} messages in 900 s",
                args.rows
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    trib.stop().await;
    let _ = std::fs::remove_file(&trib.log);
    Ok((t, topic))
}

/// A tributary (not started) of `cfg`, logging to `log`.
pub(super) fn process(cfg: std::path::PathBuf, log: std::path::PathBuf) -> Res<Tributary> {
    Ok(Tributary {
        bin: tributary_bin()?,
        cfg,
        env: Vec::new(),
        log,
        child: None,
        peak_rss_kib: 0,
        cpu_secs: 0.0,
    })
}

pub(super) fn kafka(brokers: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        client_id: "tributary-bench".into(),
        properties: Default::default(),
        secret_files: Default::default(),
    }
}

/// Messages in the topic's partitions (high minus low watermarks).
pub(super) fn messages(cluster: &KafkaConfig, topic: &str, partitions: u64) -> Res<u64> {
    Ok(per_partition(cluster, topic, partitions)?.iter().sum())
}

/// Messages in each of the topic's partitions.
pub(super) fn per_partition(cluster: &KafkaConfig, topic: &str, partitions: u64) -> Res<Vec<u64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer =
        tributary::clients::kafka::client_config(cluster, &[("group.id", "bench-watermarks")])
            .create()
            .map_err(|e| e.to_string())?;
    let mut n = Vec::new();
    for p in 0..partitions as i32 {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .map_err(|e| format!("{topic}[{p}]: {e}"))?;
        n.push((high - low).max(0) as u64);
    }
    Ok(n)
}

/// One consumer reads every message of the topic: the broker's own rate (messages/s).
pub(super) async fn broker_rate(brokers: &str, topic: &str, partitions: u64, n: u64) -> Res<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let cluster = kafka(brokers);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> Res<f64> {
        let c: BaseConsumer = tributary::clients::kafka::client_config(
            &cluster,
            &[
                ("group.id", &unique("bench_members_broker")),
                ("enable.auto.commit", "false"),
            ],
        )
        .create()
        .map_err(|e| e.to_string())?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        c.assign(&tpl).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut got = 0u64;
        while got < n {
            if started.elapsed() > Duration::from_secs(600) {
                return Err(format!("the broker gave {got} of {n} messages in 600 s"));
            }
            if let Some(m) = c.poll(Duration::from_millis(500)) {
                m.map_err(|e| e.to_string())?;
                got += 1;
            }
        }
        Ok(n as f64 / started.elapsed().as_secs_f64())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `members` processes of one Kafka → ClickHouse config, until ClickHouse has every row.
async fn members_run(
    args: &Args,
    vars: &HashMap<String, String>,
    brokers: &str,
    topic: &str,
    table: &str,
    members: u64,
) -> Res<Run> {
    let url = if args.target == "ch18" {
        &vars["TRIBUTARY_TEST_CH18_URL"]
    } else {
        &vars["TRIBUTARY_TEST_CH26_URL"]
    };
    let (db, group) = (unique("bench_members_db"), unique("bench_members_group"));
    let text = format!(
        r#"[http]
listen = ""
[kafka]
brokers = "{brokers}"
[[pipeline]]
name = "members"
kind = "cdc"
[pipeline.kafka_source]
group = "{group}"
topics = ["{topic}"]
dead_letter_topic = "{group}_dlq"
start = "earliest"
[pipeline.clickhouse]
url = "{url}"
database = "{db}"
"#
    );
    let cfg = Config::from_str_named(&text, "members config", &|_| None)
        .map_err(|e| format!("members config: {e}"))?;
    let ch = ChClient::connect(&cfg.pipelines[0].clickhouse)
        .await
        .map_err(|e| format!("connect to ClickHouse {url}: {e}"))?;
    let tmp = repo().join("target/tmp");
    let path = tmp.join(format!("{group}.toml"));
    write(&path, &text)?;
    let timed = time_members(
        &path,
        members,
        &ch,
        &format!("SELECT count() FROM `{db}`.`{table}`"),
        args.rows,
    )
    .await;
    let finals = count(&ch, &format!("SELECT count() FROM `{db}`.`{table}` FINAL")).await;
    let _ = ch.execute(&format!("DROP DATABASE IF EXISTS `{db}`")).await;
    let t = timed?;
    if finals != args.rows {
        return Err(format!(
            "{members} members: {finals} rows in FINAL, {} written",
            args.rows
        ));
    }
    Ok(Run {
        members,
        secs: t.secs,
        rows_per_s: args.rows as f64 / t.secs,
        cpu_secs: t.cpu_secs,
        peak_rss_mb: t.peak_rss_mb,
    })
}

/// What [`time_members`] measured.
pub(super) struct Timed {
    pub secs: f64,
    /// Items per second from the first one in ClickHouse to the last (without the start).
    pub steady_per_s: f64,
    /// CPU of all members, and the largest peak RSS of one.
    pub cpu_secs: f64,
    pub peak_rss_mb: f64,
}

/// The number `sql` returns (0 when it fails: polled again).
pub(super) async fn count(ch: &ChClient, sql: &str) -> u64 {
    ch.query_text(sql)
        .await
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// Starts `members` tributary processes of the config at `path` together and times them until
/// `count_sql` reaches `target`; stops them (SIGTERM) and removes their logs and the config.
pub(super) async fn time_members(
    path: &std::path::Path,
    members: u64,
    ch: &ChClient,
    count_sql: &str,
    target: u64,
) -> Res<Timed> {
    let log = |i: u64| path.with_extension(format!("{i}.log"));
    let mut procs: Vec<Tributary> = (0..members)
        .map(|i| process(path.to_path_buf(), log(i)))
        .collect::<Res<_>>()?;
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let mut result = Ok((0.0, 0.0));
    for p in &mut procs {
        if let Err(e) = p.start() {
            result = Err(e);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    while result.is_ok() {
        if let Some(p) = procs.iter_mut().find_map(|p| p.check_alive("").err()) {
            result = Err(format!("a member exited: {p}"));
            break;
        }
        let n = count(ch, count_sql).await;
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= target {
            let (at, n0) = first.unwrap_or((started, 0));
            let steady = (target - n0.min(target)) as f64 / at.elapsed().as_secs_f64().max(1e-3);
            result = Ok((started.elapsed().as_secs_f64(), steady));
            break;
        }
        if Instant::now() > deadline {
            result = Err(format!("ClickHouse did not get {target} in 900 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut cpu = 0.0;
    let mut rss = 0u64;
    for p in &mut procs {
        p.stop().await;
        cpu += p.cpu_secs;
        rss = rss.max(p.peak_rss_kib);
        let _ = std::fs::remove_file(&p.log);
    }
    let _ = std::fs::remove_file(path);
    let (secs, steady_per_s) = result?;
    Ok(Timed {
        secs,
        steady_per_s,
        cpu_secs: cpu,
        peak_rss_mb: rss as f64 / 1024.0,
    })
}

pub async fn run(
    args: &Args,
    clean: &mut Cleanup,
    pg: &Pg,
    vars: &HashMap<String, String>,
) -> Res<bool> {
    let brokers = vars
        .get("TRIBUTARY_TEST_KAFKA_BROKERS")
        .cloned()
        .ok_or("TRIBUTARY_TEST_KAFKA_BROKERS is not set: scripts/services.sh start")?;
    let prefix = unique("bm");
    eprintln!(
        "bench: filling a topic of {} partitions with {} change events (Postgres → Kafka) ...",
        args.partitions, args.rows
    );
    let (table, topic) = fill(args, clean, pg, &brokers, &prefix).await?;
    eprintln!("bench: the broker's own consume rate (one consumer, every partition) ...");
    let broker = broker_rate(&brokers, &topic, args.partitions, args.rows).await?;
    eprintln!("bench: broker: {broker:.0} messages/s");
    let mut runs = Vec::new();
    for &m in &args.members {
        eprintln!("bench: {m} member(s) ...");
        let r = members_run(args, vars, &brokers, &topic, &table, m).await?;
        eprintln!(
            "bench: {m} member(s): {:.0} rows/s ({:.2}s), {:.2} of the broker",
            r.rows_per_s,
            r.secs,
            r.rows_per_s / broker
        );
        runs.push(r);
    }
    println!(
        "\nKafka → ClickHouse ({}), {} rows, {} partitions; broker consume rate {broker:.0} msg/s",
        args.target, args.rows, args.partitions
    );
    println!("members  rows/s     of broker  CPU-s (all)  CPU-s/M rows  peak RSS/member");
    for r in &runs {
        println!(
            "{:>7}  {:>9.0}  {:>9.2}  {:>11.1}  {:>12.2}  {:>12.0} MB",
            r.members,
            r.rows_per_s,
            r.rows_per_s / broker,
            r.cpu_secs,
            r.cpu_secs / (args.rows as f64 / 1e6),
            r.peak_rss_mb
        );
    }
    let json: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{{\"members\":{},\"rows_per_s\":{:.0},\"of_broker\":{:.3},\"cpu_secs\":{:.2},\"peak_rss_mb\":{:.0}}}",
                r.members,
                r.rows_per_s,
                r.rows_per_s / broker,
                r.cpu_secs,
                r.peak_rss_mb
            )
        })
        .collect();
    println!(
        "{{\"bench\":\"members\",\"target\":\"{}\",\"rows\":{},\"partitions\":{},\"broker_per_s\":{broker:.0},\"runs\":[{}]}}",
        args.target,
        args.rows,
        args.partitions,
        json.join(",")
    );
    Ok(true)
}
