//! The checker: a randomized workload while the harness injects faults into a running
//! `tributary` process, then a verdict. The process runs four pipelines: CDC (PostgreSQL →
//! ClickHouse), the same tables through Kafka (PostgreSQL → Kafka and Kafka → ClickHouse, into
//! another database) and sentiment (a fake Mastodon → the real llama.cpp server → ClickHouse);
//! every connection to PostgreSQL, ClickHouse, the broker (a tansu of the checker's own), the
//! LLM and Mastodon goes through a fault proxy. Faults: an actor of any pipeline killed
//! through the admin API every 2 s, every connection to one of the five servers cut,
//! ClickHouse refusing connections, or accepting them and never answering, for a few seconds,
//! PostgreSQL restarted, the broker SIGKILLed and restarted, and the process SIGKILLed three
//! times (and started again); at the first restart a filled table written all along joins
//! the config (copied while the faults go on).
//! Workload: multi-row transactions of inserts, updates of keys and of TOASTed values, deletes,
//! an append-only table, one TRUNCATE and one ADD COLUMN; a Mastodon post every second.
//! Verdict: on both paths each table in ClickHouse FINAL equals Postgres row for row (a
//! checksum per row) and every row of the append-only table is there exactly once; every post
//! is there exactly once with a label. The report adds the faults by kind, the time until
//! ClickHouse caught up after the faults stopped, and peak RSS.
//!
//! `TRIBUTARY_CHECKER_SECS` sets how long faults run (default 120 s, the CI run); the long run:
//! `TRIBUTARY_CHECKER_SECS=1800 scripts/test.sh --release --test checker -- --nocapture`, and
//! `TRIBUTARY_CHECKER_SEED` replays a run's workload and fault schedule.
//! It restarts PostgreSQL, so it lives in its own test binary.

mod common;

use common::fake_mastodon::{make_status, FakeMastodon, MastodonConfig};
use common::kafka::{KafkaNames, OwnBroker};
use common::proxy::Proxy;
use common::spawn::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift): a failing run can be replayed by its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The config: config/cdc.toml for these tables, the sentiment pipeline of
/// config/sentiment.toml, and the two pipelines of config/kafka.toml (the same tables through
/// Kafka, with `kw`'s slot, publication and ClickHouse database); the admin API on, servers
/// through proxies (in the environment).
fn checker_config(tables: &[String], kw: &World) -> std::path::PathBuf {
    let read = |name: &str| std::fs::read_to_string(repo().join(name)).unwrap();
    let cdc = read("config/cdc.toml");
    let sentiment = read("config/sentiment.toml");
    let sentiment = &sentiment[sentiment.find("[[pipeline]]").unwrap()..];
    let kafka = read("config/kafka.toml");
    let kafka = kafka[kafka.find("\n[kafka]").unwrap()..]
        .replace("${TRIBUTARY_SLOT:-tributary_kafka_slot}", &kw.slot)
        .replace("${TRIBUTARY_PUBLICATION:-tributary_pub}", &kw.publication)
        .replace("${CLICKHOUSE_DATABASE:-default}", &kw.database);
    let list: Vec<String> = tables.iter().map(|t| format!("\"public.{t}\"")).collect();
    let text = (cdc + "\n" + sentiment + "\n" + &kafka)
        .replace(
            r#"tables = ["public.demo_table1", "public.demo_table2"]"#,
            &format!("tables = [{}]", list.join(", ")),
        )
        .replace("status_interval = \"10s\"", "status_interval = \"1s\"")
        .replace("insert_attempts = 5", "insert_attempts = 3")
        .replace("max_restarts = 5 ", "max_restarts = 1000 ")
        .replace("backoff_initial = \"500ms\"", "backoff_initial = \"100ms\"")
        .replace("backoff_max = \"30s\"", "backoff_max = \"2s\"")
        .replace("request_timeout = \"60s\"", "request_timeout = \"10s\"")
        .replace(
            "reconnect_initial = \"1s\"",
            "reconnect_initial = \"100ms\"",
        )
        .replace("reconnect_max = \"60s\"", "reconnect_max = \"2s\"")
        .replace("idle_timeout = \"90s\"", "idle_timeout = \"5s\"")
        .replace("circuit_cooldown = \"10s\"", "circuit_cooldown = \"1s\"")
        .replace("timeout = \"60s\"", "timeout = \"20s\"")
        .replace("max_tokens = 512", "max_tokens = 32");
    let dir = repo().join("target/test-configs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", unique("checker")));
    std::fs::write(&path, text).unwrap();
    path
}

/// The actors the checker kills, one every 2 s, at random.
const VICTIMS: &[&str] = &[
    "root/cdc/sink",
    "root/cdc/source",
    "root/sentiment/source",
    "root/sentiment/pool/worker-0",
    "root/sentiment/pool",
    "root/sentiment/sink",
    "root/cdc_to_kafka/source",
    "root/cdc_to_kafka/sink",
    "root/kafka_to_ch/source",
    "root/kafka_to_ch/sink",
];

#[derive(Default)]
struct Report {
    faults: BTreeMap<&'static str, u64>,
    transactions: u64,
}

impl Report {
    fn count(&mut self, fault: &'static str) {
        *self.faults.entry(fault).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_under_faults() {
    let secs: u64 = std::env::var("TRIBUTARY_CHECKER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("TRIBUTARY_CHECKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 7919 + 1);
    let w = World::new(Target::Ch18).await;
    // The same tables through Kafka, into a ClickHouse database of their own.
    let kw = World::new(Target::Ch18).await;
    let c = pg().await;
    let acct = unique("acct");
    let events = unique("events");
    let kv = unique("kv");
    let late = unique("late");
    c.batch_execute(&format!(
        "CREATE TABLE {late} (id int PRIMARY KEY, v text);
         INSERT INTO {late} SELECT g, 'l' || g FROM generate_series(1, 20000) g;"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE {acct} (id int PRIMARY KEY, balance bigint NOT NULL, note text);
         ALTER TABLE {acct} ALTER COLUMN note SET STORAGE EXTERNAL;
         INSERT INTO {acct} SELECT g, 1000, repeat('n' || g, 1500) FROM generate_series(1, 200) g;
         CREATE TABLE {events} (id bigint PRIMARY KEY, body text);
         CREATE TABLE {kv} (k text PRIMARY KEY, v int);
         INSERT INTO {kv} SELECT 'k' || g, g FROM generate_series(1, 100) g;"
    ))
    .await
    .unwrap();
    let masto = FakeMastodon::start_with(MastodonConfig {
        heartbeat: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    // Every connection to a server goes through a fault proxy.
    let pg_proxy = Proxy::start(&format!("127.0.0.1:{}", var("TRIBUTARY_TEST_PG_PORT"))).await;
    let ch_proxy = Proxy::start(Target::Ch18.url().trim_start_matches("http://")).await;
    let llm_proxy = Proxy::start(var("TRIBUTARY_TEST_LLM_URL").trim_start_matches("http://")).await;
    let masto_proxy = Proxy::start(masto.url().trim_start_matches("http://")).await;
    // A broker of the checker's own, advertising its proxy: every connection goes through it.
    let broker_port = free_port();
    let kafka_proxy = Proxy::start(&format!("127.0.0.1:{broker_port}")).await;
    let mut broker = OwnBroker::start(broker_port, kafka_proxy.port).await;
    broker.keep_log_at = Some(repo().join("target/checker-broker.log"));
    let names = KafkaNames::new();
    let cfg = checker_config(&[acct.clone(), events.clone(), kv.clone()], &kw);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut env = real_llm_env(&masto_proxy.url(), &llm_proxy.url());
    env.extend([
        ("TRIBUTARY_HTTP", listen.clone()),
        ("TRIBUTARY_ADMIN", "true".into()),
        ("TRIBUTARY_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("PGPORT", pg_proxy.port.to_string()),
        ("KAFKA_BROKERS", kafka_proxy.addr()),
        ("TRIBUTARY_TOPIC_PREFIX", names.prefix.clone()),
        ("TRIBUTARY_GROUP", names.group.clone()),
        ("TRIBUTARY_DLQ", names.dlq.clone()),
        ("TRIBUTARY_STATE_TOPIC", names.state.clone()),
    ]);
    let env = env_refs(&env);
    let start = |w: &World| spawn_env(w, &cfg, &ch_proxy.url(), &env);
    let mut child = start(&w);
    converge(
        &w,
        &c,
        &acct,
        &acct,
        "id, balance",
        "id",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        masto.wait_streams(1, Duration::from_secs(60)).await,
        "the Mastodon stream connects"
    );

    // The workload: random transactions and a post every second until the faults stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acct, events, kv, late, stop) = (
            acct.clone(),
            events.clone(),
            kv.clone(),
            late.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut c = pg().await;
            let mut next_event = 1i64;
            let mut n = 0u64;
            let mut truncated = false;
            let mut journal = Vec::new();
            let mut altered = false;
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut sql = String::from("BEGIN;");
                for _ in 0..1 + rng.below(5) {
                    match rng.below(6) {
                        0 => {
                            let (a, b) = (1 + rng.below(200), 1 + rng.below(200));
                            sql += &format!("UPDATE {acct} SET balance = balance - 1 WHERE id = {a}; UPDATE {acct} SET balance = balance + 1 WHERE id = {b};");
                        }
                        1 => sql += &format!("UPDATE {acct} SET note = repeat('t{}', 1500) WHERE id = {};", rng.below(1000), 1 + rng.below(200)),
                        2 => {
                            let rows = 1 + rng.below(20) as i64;
                            sql += &format!("INSERT INTO {events} SELECT g, 'e' || g FROM generate_series({next_event}, {}) g;", next_event + rows - 1);
                            next_event += rows;
                        }
                        3 => sql += &format!("UPDATE {kv} SET k = k || 'x' WHERE k = 'k{}';", 1 + rng.below(100)),
                        4 => sql += &format!("DELETE FROM {kv} WHERE v = {};", 1 + rng.below(300)),
                        _ => sql += &format!("INSERT INTO {kv} VALUES ('n{}', {}) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;", rng.below(1000), rng.below(300)),
                    }
                }
                // The table that joins the config at the first restart, written all along.
                if rng.below(3) == 0 {
                    sql += &format!(
                        "UPDATE {late} SET v = 'u{n}' WHERE id = {}; INSERT INTO {late} VALUES ({}, 'n') ON CONFLICT (id) DO NOTHING; DELETE FROM {late} WHERE id = {};",
                        1 + rng.below(20000),
                        20001 + rng.below(100000),
                        1 + rng.below(20000)
                    );
                }
                let half = started.elapsed().as_secs() >= secs / 2;
                let (trunc, alter) = (half && !truncated, half && !altered);
                if trunc {
                    sql += &format!("TRUNCATE {kv}; INSERT INTO {kv} SELECT 'r' || g, g FROM generate_series(1, 50) g;");
                }
                if alter {
                    sql += &format!("ALTER TABLE {acct} ADD COLUMN tier int DEFAULT 1;");
                }
                sql += "COMMIT; SELECT pg_current_wal_lsn()::text;";
                let r = c.simple_query(&sql).await;
                // For a failure's diagnosis: every transaction, when, and the WAL position
                // just after it.
                journal.push(format!(
                    "{:.3} {} {sql}",
                    started.elapsed().as_secs_f64(),
                    match &r {
                        Ok(m) => m
                            .iter()
                            .find_map(|m| match m {
                                tokio_postgres::SimpleQueryMessage::Row(row) => {
                                    row.get(0).map(str::to_string)
                                }
                                _ => None,
                            })
                            .unwrap_or_default(),
                        Err(e) => format!("failed ({e})"),
                    }
                ));
                match r.map(|_| ()) {
                    Ok(()) => {
                        n += 1;
                        truncated |= trunc;
                        altered |= alter;
                    }
                    Err(_) => {
                        // PostgreSQL restarted under us: reconnect. A failed transaction did
                        // not happen in Postgres either; the next one tries again.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if let Ok(Ok(fresh)) =
                            tokio::time::timeout(Duration::from_secs(10), try_pg()).await
                        {
                            c = fresh;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = std::fs::write(
                repo().join("target/checker-transactions.log"),
                journal.join("\n"),
            );
            (n, altered)
        })
    };
    let posts = {
        let (stop, handle) = (stop.clone(), masto.handle());
        tokio::spawn(async move {
            let moods = [
                "I love this, what a great day",
                "This is awful, I hate it",
                "The train leaves at nine",
            ];
            let mut ids = BTreeSet::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = 310_000_000_000_000_000 + i;
                handle.publish(make_status(
                    id,
                    &format!("{} (post {i})", moods[i as usize % 3]),
                ));
                ids.insert(id.to_string());
                i += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            ids
        })
    };

    // The faults.
    tributary::clients::tls::install_default_provider();
    let http = reqwest::Client::new();
    let mut report = Report::default();
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let faults_start = Instant::now();
    let sigkills_at: Vec<u64> = (1..=3).map(|i| secs * i / 4).collect();
    let mut peak_rss_kib = 0;
    let mut round = 0u64;
    // A round every 2 s; the PostgreSQL restart and the SIGKILLs are due at set times, and
    // each happens in the first round at or after its time.
    let mut pg_restarted = false;
    let mut broker_restarted = false;
    let mut sigkills = 0;
    while faults_start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        round += 1;
        let actor = VICTIMS[rng.below(VICTIMS.len() as u64) as usize];
        let killed = http
            .post(format!("http://{listen}/admin/kill?actor={actor}"))
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if killed {
            report.count("actor kill");
        }
        // One server's connections a round, in turn.
        match round % 6 {
            1 => {
                llm_proxy.cut_all();
                report.count("LLM connections cut");
            }
            2 => {
                pg_proxy.cut_all();
                report.count("PostgreSQL connections cut");
            }
            3 => {
                ch_proxy.cut_all();
                report.count("ClickHouse connections cut");
            }
            4 => match rng.below(3) {
                0 => {
                    ch_proxy.set_refuse(true);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    ch_proxy.set_refuse(false);
                    report.count("ClickHouse refused 3 s");
                }
                1 => {
                    // Every connection, open or new, is accepted and never answered for 3 s
                    // (requests run into their timeout), then released.
                    ch_proxy.set_hang(true);
                    ch_proxy.cut_all();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    ch_proxy.set_hang(false);
                    ch_proxy.cut_all();
                    report.count("ClickHouse silent 3 s");
                }
                _ => {}
            },
            5 => {
                kafka_proxy.cut_all();
                report.count("Kafka connections cut");
            }
            0 => {
                masto_proxy.cut_all();
                report.count("Mastodon connections cut");
            }
            _ => {}
        }
        let elapsed = faults_start.elapsed().as_secs();
        if !pg_restarted && elapsed >= secs / 2 {
            pg_restarted = true;
            let out = tokio::process::Command::new(var("TRIBUTARY_SERVICES_SCRIPT"))
                .args(["restart-pg", "fast"])
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            report.count("PostgreSQL restart");
        }
        if !broker_restarted && elapsed >= secs * 5 / 8 {
            broker_restarted = true;
            broker.kill_and_restart().await;
            report.count("Kafka broker SIGKILL and restart");
        }
        if sigkills < sigkills_at.len() && elapsed >= sigkills_at[sigkills] {
            sigkills += 1;
            peak_rss_kib = peak_rss_kib.max(rss_hwm_kib(child.id()).unwrap_or(0));
            child.child.kill().unwrap();
            child.child.wait().unwrap();
            report.count("process SIGKILL");
            // Each killed process's log, for a failure's diagnosis (the last one is printed).
            let _ = std::fs::write(
                repo().join(format!("target/checker-process-{sigkills}.log")),
                &*child.log.lock().unwrap(),
            );
            if sigkills == 1 {
                // A filled table joins the config of both paths: copied under the faults.
                edit_config(
                    &cfg,
                    &[(
                        format!("\"public.{acct}\"").as_str(),
                        format!("\"public.{acct}\", \"public.{late}\"").as_str(),
                    )],
                );
                report.count("table added to the config");
            }
            child = start(&w);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (transactions, altered) = load.await.unwrap();
    let published = posts.await.unwrap();
    report.transactions = transactions;
    let faults_end = Instant::now();

    // The verdict.
    let guard = PrintLogOnPanic(child.log.clone());
    let log_path = repo().join("target/checker-last-process.log");
    let c = pg().await;
    let t = Duration::from_secs(300);
    let tables = Tables {
        acct: &acct,
        events: &events,
        kv: &kv,
        late: &late,
        altered,
    };
    let diagnosis = |pipeline: &'static str| {
        let (listen, log) = (listen.clone(), child.log.clone());
        async move { path_diagnosis(&listen, &log, pipeline).await }
    };
    let direct = match tables.verdict(&w, &c, t).await {
        Ok(v) => v,
        Err(e) => panic!("direct path: {e}\n{}", diagnosis("cdc").await),
    };
    let cdc_recovery = faults_end.elapsed();
    let through_kafka = match tables.verdict(&kw, &c, t).await {
        Ok(v) => v,
        Err(e) => panic!(
            "through Kafka: {e}\n{}{}",
            diagnosis("cdc_to_kafka").await,
            diagnosis("kafka_to_ch").await
        ),
    };
    let kafka_recovery = faults_end.elapsed();
    // Every post once, with a label (the real model may answer any of them; "unknown" would
    // be a reply that did not parse, counted in the metrics). The real LLM may have a backlog
    // to work off after long runs: wait as long as posts keep landing, up to 2 minutes
    // without one.
    let mut last = (0, Instant::now());
    let labelled = loop {
        let rows = sentiment_rows(&w).await.unwrap_or_default();
        let got: BTreeSet<&String> = rows.iter().map(|r| &r.0).collect();
        if published.iter().all(|id| got.contains(id)) {
            break rows;
        }
        if got.len() > last.0 {
            last = (got.len(), Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(120),
            "no post landed for 2 minutes: {} of {} posts in ClickHouse",
            got.len(),
            published.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let sentiment_recovery = faults_end.elapsed();
    let _ = std::fs::write(&log_path, &*child.log.lock().unwrap());
    let post_ids: BTreeSet<&String> = labelled.iter().map(|r| &r.0).collect();
    let posts_duplicated = labelled.len() - post_ids.len();
    let unexpected = post_ids
        .iter()
        .filter(|id| !published.contains(**id))
        .count();
    let posts_lost = published.iter().filter(|id| !post_ids.contains(id)).count();
    let unlabelled: Vec<_> = labelled
        .iter()
        .filter(|(_, label, _)| !["positive", "negative", "neutral"].contains(&label.as_str()))
        .collect();
    let replays = w
        .ch_rows(&format!(
            "SELECT count() FROM `{}`.mastodon_sentiment",
            w.database
        ))
        .await[0]
        .parse::<usize>()
        .unwrap()
        - labelled.len();
    peak_rss_kib = peak_rss_kib.max(rss_hwm_kib(child.id()).unwrap_or(0));
    let mut faults = String::new();
    for (k, v) in &report.faults {
        faults += &format!("{k} {v}, ");
    }
    write_report(
        "checker",
        &format!(
        "checker report (seed {seed}): {:.0} s of faults: {}\n  CDC: {} transactions; direct: {direct}; caught up {:.1} s after the faults stopped\n  CDC through Kafka: {through_kafka}; caught up {:.1} s after the faults stopped\n  sentiment: {} posts published, {} in ClickHouse FINAL with a label, lost {posts_lost}, duplicated {posts_duplicated}, {} without one of the labels, {replays} replayed rows merged away; all in {:.1} s after the faults stopped\n  peak RSS {:.1} MB (the largest of the four processes; the last one's log: {})",
        (faults_end - faults_start).as_secs_f64(),
        faults.trim_end_matches(", "),
        report.transactions,
        cdc_recovery.as_secs_f64(),
        kafka_recovery.as_secs_f64(),
        published.len(),
        post_ids.len(),
        unlabelled.len(),
        sentiment_recovery.as_secs_f64(),
        peak_rss_kib as f64 / 1024.0,
        log_path.display()
        ),
    );
    for (path, v) in [("direct", &direct), ("through Kafka", &through_kafka)] {
        assert_eq!(v.duplicated, 0, "{path}: no duplicates");
        assert_eq!(v.lost, 0, "{path}: no loss");
    }
    assert_eq!(posts_lost, 0, "no post lost");
    assert_eq!(posts_duplicated, 0, "no post twice");
    assert_eq!(unexpected, 0, "no post that was not published");
    assert!(
        unlabelled.is_empty(),
        "every post has a label: {unlabelled:?}"
    );
    assert!(report.faults.get("process SIGKILL").copied().unwrap_or(0) >= 3);
    std::mem::forget(guard);
    stop_clean(child).await;
    w.teardown().await;
    kw.teardown().await;
}

/// The checker's tables in Postgres.
struct Tables<'a> {
    acct: &'a str,
    events: &'a str,
    kv: &'a str,
    /// Joins the config at the first restart.
    late: &'a str,
    /// The ADD COLUMN happened.
    altered: bool,
}

/// One path's verdict: every table equal, the append-only table's rows once each.
struct Verdict {
    rows_checked: u64,
    events: u64,
    final_rows: u64,
    lost: u64,
    duplicated: u64,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} rows checked (ClickHouse FINAL = Postgres, checksum per row); append-only table: {} rows in Postgres, {} in ClickHouse FINAL, lost {}, duplicated {}",
            self.rows_checked, self.events, self.final_rows, self.lost, self.duplicated
        )
    }
}

impl Tables<'_> {
    /// Waits until `w`'s ClickHouse database equals Postgres, then counts; the first table
    /// that does not converge, with its diagnosis.
    async fn verdict(
        &self,
        w: &World,
        c: &tokio_postgres::Client,
        t: Duration,
    ) -> Result<Verdict, String> {
        let Tables {
            acct,
            events,
            kv,
            late,
            ..
        } = *self;
        // A checksum per row: md5 of the TOASTed text in both, the column added mid-run if it
        // was.
        let tier = if self.altered {
            "coalesce(tier, -1)"
        } else {
            "-1"
        };
        try_converge_sql(
            w,
            c,
            &format!("SELECT id, balance, md5(coalesce(note, '')), {tier} FROM {acct} ORDER BY id"),
            &format!("SELECT id, balance, lower(hex(MD5(coalesce(note, '')))), {tier} FROM `{}`.`{acct}` FINAL WHERE _is_deleted = 0 ORDER BY id", w.database),
            t,
        )
        .await?;
        let ch_kv = format!(
            "SELECT k, v FROM `{}`.`{kv}` FINAL WHERE _is_deleted = 0 ORDER BY k",
            w.database
        );
        if let Err(e) = try_converge_sql(
            w,
            c,
            &format!("SELECT k, v FROM {kv} ORDER BY k"),
            &ch_kv,
            t,
        )
        .await
        {
            return Err(format!("{e}\n{}", explain_kv(w, c, kv).await));
        }
        for (table, cols) in [(events, "id, body"), (late, "id, v")] {
            try_converge_sql(
                w,
                c,
                &format!("SELECT {cols} FROM {table} ORDER BY id"),
                &format!(
                    "SELECT {cols} FROM `{}`.`{table}` FINAL WHERE _is_deleted = 0 ORDER BY id",
                    w.database
                ),
                t,
            )
            .await?;
        }
        let count = |sql: String| async move {
            c.query_one(sql.as_str(), &[])
                .await
                .unwrap()
                .get::<_, i64>(0) as u64
        };
        let rows_checked = count(format!("SELECT (SELECT count(*) FROM {acct}) + (SELECT count(*) FROM {kv}) + (SELECT count(*) FROM {events}) + (SELECT count(*) FROM {late})")).await;
        let pg_events = count(format!("SELECT count(*) FROM {events}")).await;
        let ev = w
            .ch_rows(&format!(
                "SELECT count(), uniqExact(id) FROM `{}`.`{events}` FINAL WHERE _is_deleted = 0",
                w.database
            ))
            .await;
        let (final_rows, distinct) = ev[0].split_once('\t').unwrap();
        let (final_rows, distinct): (u64, u64) =
            (final_rows.parse().unwrap(), distinct.parse().unwrap());
        Ok(Verdict {
            rows_checked,
            events: pg_events,
            final_rows,
            lost: pg_events.saturating_sub(distinct),
            duplicated: final_rows - distinct,
        })
    }
}

/// A path's state when it did not converge, first in the failure's message (CI shows the
/// start of a failure's output): the pipeline's metrics now, and its last log lines (without
/// librdkafka's own).
async fn path_diagnosis(
    listen: &str,
    log: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    pipeline: &str,
) -> String {
    let label = format!("pipeline=\"{pipeline}\"");
    let metrics = match reqwest::get(format!("http://{listen}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("(no /metrics: {e})"),
    };
    let mut out = format!("--- {pipeline}: metrics now ---\n");
    for line in metrics
        .lines()
        .filter(|l| l.contains(&label) && !l.starts_with('#') && !l.contains("_bucket"))
        .filter(|l| !l.ends_with(" 0") && !l.ends_with(" 0.0"))
    {
        out += line;
        out.push('\n');
    }
    let log = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    let mine: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(&format!("pipeline={pipeline} ")) || l.contains(&format!("root/{pipeline}/"))
        })
        .filter(|l| !l.contains("librdkafka"))
        .collect();
    out += &format!("--- {pipeline}: its last log lines ---\n");
    for l in &mine[mine.len().saturating_sub(25)..] {
        out += &l.chars().take(400).collect::<String>();
        out.push('\n');
    }
    out
}

/// Why `kv` differs: the keys only one side has or that differ, each with every version
/// ClickHouse holds (`_version` is the change's WAL position), and where the TRUNCATE was.
async fn explain_kv(w: &World, c: &tokio_postgres::Client, kv: &str) -> String {
    let pg: BTreeMap<String, String> = pg_rows(c, &format!("SELECT k, v FROM {kv}"))
        .await
        .into_iter()
        .filter_map(|r| {
            r.split_once('\t')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let table = format!("`{}`.`{kv}`", w.database);
    let ch: BTreeMap<String, String> = w
        .try_ch_rows(&format!(
            "SELECT k, v FROM {table} FINAL WHERE _is_deleted = 0"
        ))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            r.split_once('\t')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let keys: Vec<&String> = pg
        .keys()
        .chain(ch.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| pg.get(*k) != ch.get(*k))
        .collect();
    let mut out = format!(
        "kv diagnosis: {} keys differ (Postgres value / ClickHouse value, then every version ClickHouse holds: v, _version, _is_deleted)\n",
        keys.len()
    );
    for k in keys.iter().take(12) {
        let versions = w
            .try_ch_rows(&format!(
                "SELECT v, _version, _is_deleted FROM {table} WHERE k = '{}' ORDER BY _version",
                k.replace('\\', "\\\\").replace('\'', "\\'")
            ))
            .await
            .unwrap_or_default();
        out += &format!(
            "  {k}: {:?} / {:?}; {}\n",
            pg.get(*k),
            ch.get(*k),
            versions.join(" | ").replace('\t', ",")
        );
    }
    let r = w
        .try_ch_rows(&format!(
            "SELECT min(_version), max(_version), count() FROM {table} WHERE k LIKE 'r%' AND _is_deleted = 0"
        ))
        .await
        .unwrap_or_default();
    out += &format!(
        "  rows of the TRUNCATE's transaction (r*): min version, max version, count: {r:?}\n"
    );
    out
}

/// Peak resident set size (VmHWM) of a process in KiB.
fn rss_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
