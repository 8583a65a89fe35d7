//! Outages hold memory flat and lose nothing. A `tributary run` process works against real
//! servers while one of them is unreachable for minutes (a fault proxy refuses and cuts every
//! connection), as the load goes on:
//! - ClickHouse down while Postgres keeps writing: the sink waits for it, the bounded edge
//!   fills, the source stops reading (the walsender's sent LSN stalls), Postgres keeps the WAL
//!   (the slot's confirmed LSN stays put), the slot-lag metric grows with the WAL, `/ready`
//!   says no, RSS stays flat; once ClickHouse is back every row lands exactly once.
//! - The LLM server (llama.cpp) down while posts keep coming: the circuit opens, the queue
//!   fills, the Mastodon source stops reading, RSS stays flat; once it is back every post is
//!   in ClickHouse exactly once with a label.
//!
//! `TRIBUTARY_OUTAGE_SECS` sets the outage (default 300 s; the two tests run side by side).

mod common;

use common::fake_mastodon::{make_status, FakeMastodon, MastodonConfig};
use common::proxy::Proxy;
use common::spawn::*;
use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("TRIBUTARY_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    )
}

/// When the bounded queues are surely full and memory should stop moving: after this share
/// of the outage (the walsender first fills the socket buffers, some MB).
fn settled(outage: Duration) -> Duration {
    outage * 2 / 5
}

/// A metric of the running process that must be there: a renamed or missing one would make
/// a check vacuous.
async fn must_metric(listen: &str, name: &str, labels: &str) -> f64 {
    metric(listen, name, labels)
        .await
        .unwrap_or_else(|| panic!("no {name} {{{labels}}} at http://{listen}/metrics"))
}

/// One sample taken during an outage.
#[derive(Debug, Default, Clone)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    /// Postgres: current WAL position, the walsender's sent LSN, the slot's confirmed LSN.
    wal: f64,
    sent: f64,
    confirmed: f64,
    wal_status: String,
    /// tributary's metrics.
    slot_lag: f64,
    ready: f64,
    progress: f64,
    queue_depth: f64,
}

/// Peak RSS after the outage settled, minus RSS when it did (KiB).
fn rss_growth(samples: &[Sample], from: Duration) -> (u64, u64) {
    let base = samples
        .iter()
        .find(|s| s.at >= from)
        .map_or(0, |s| s.rss_kib);
    let peak = samples
        .iter()
        .filter(|s| s.at >= from)
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(0);
    (base, peak.saturating_sub(base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_holds_memory_flat_and_loses_nothing() {
    let outage = outage();
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("outage");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, body text NOT NULL)"
    ))
    .await
    .unwrap();
    let ch = Proxy::start(Target::Ch18.url().trim_start_matches("http://")).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = write_config_from("config/cdc.toml", &[&format!("public.{t}")], "");
    edit_config(
        &cfg,
        &[
            ("chunk_rows = 2000", "chunk_rows = 500"),
            ("status_interval = \"10s\"", "status_interval = \"2s\""),
        ],
    );
    let child = spawn_env(&w, &cfg, &ch.url(), &[("TRIBUTARY_HTTP", &listen)]);
    let guard = PrintLogOnPanic(child.log.clone());

    // The load: 200 rows every 200 ms, each with 200 bytes of text, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let c = pg().await;
            let mut next = 1i64;
            while !stop.load(Ordering::Relaxed) {
                c.batch_execute(&format!(
                    "INSERT INTO {t} SELECT g, repeat(md5(g::text), 6) || g FROM generate_series({next}, {}) g",
                    next + 199
                ))
                .await
                .unwrap();
                next += 200;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            next - 1
        })
    };
    // Streaming, past the snapshot: an LSN was confirmed (the snapshot phase confirms none,
    // and samples no slot lag).
    eventually(Duration::from_secs(60), "rows streaming", || async {
        let n = w
            .try_ch_rows(&format!("SELECT count() FROM `{}`.`{t}`", w.database))
            .await?;
        let lsn = metric(&listen, "tributary_confirmed_lsn", "")
            .await
            .unwrap_or(0.0);
        if n[0] != "0" && lsn > 0.0 {
            Ok(())
        } else {
            Err(format!("{} rows, confirmed LSN {lsn}", n[0]))
        }
    })
    .await;

    // ClickHouse goes away.
    ch.set_refuse(true);
    ch.cut_all();
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    while started.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let row = c
            .query_one(
                "SELECT (pg_current_wal_lsn() - '0/0')::float8, (r.sent_lsn - '0/0')::float8,
                        (s.confirmed_flush_lsn - '0/0')::float8, coalesce(s.wal_status, '')
                 FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
                 WHERE s.slot_name = $1",
                &[&w.slot],
            )
            .await
            .unwrap();
        let m = |name: &'static str| must_metric(&listen, name, "");
        samples.push(Sample {
            at: started.elapsed(),
            rss_kib: rss_kib(child.id()).expect("tributary runs"),
            wal: row.get(0),
            sent: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
            confirmed: row.get::<_, Option<f64>>(2).unwrap_or(0.0),
            wal_status: row.get(3),
            slot_lag: m("tributary_slot_lag_bytes").await,
            ready: m("tributary_ready").await,
            progress: m("tributary_rows_read_total").await,
            queue_depth: m("tributary_queue_depth").await,
        });
    }
    let from = settled(outage);
    let settled_at = samples.iter().find(|s| s.at >= from).unwrap().clone();
    let end = samples.last().unwrap().clone();
    let first = samples[0].clone();
    let (rss_base, rss_up) = rss_growth(&samples, from);
    let mib = |b: f64| b / (1 << 20) as f64;
    write_report(
        "outage-clickhouse",
        &format!(
        "ClickHouse outage of {:?}: WAL written {:.1} MiB; after {from:?}: walsender sent {:.2} MiB of {:.1} MiB new WAL, slot lag metric {:.1} → {:.1} MiB, confirmed LSN moved {:.0} bytes, RSS {:.1} MiB (+{:.1} MiB at peak), queue depth {}, ready {}",
        outage,
        mib(end.wal - first.wal),
        mib(end.sent - settled_at.sent),
        mib(end.wal - settled_at.wal),
        mib(settled_at.slot_lag),
        mib(end.slot_lag),
        end.confirmed - first.confirmed,
        rss_base as f64 / 1024.0,
        rss_up as f64 / 1024.0,
        end.queue_depth,
        end.ready,
        ),
    );
    let new_wal = end.wal - settled_at.wal;
    assert!(new_wal > 5e6, "the load kept writing WAL: {new_wal} bytes");
    assert!(
        end.sent - settled_at.sent < 0.05 * new_wal,
        "the source stopped reading: the walsender sent {} of {new_wal} bytes",
        end.sent - settled_at.sent
    );
    assert_eq!(
        end.confirmed, first.confirmed,
        "nothing was acknowledged to Postgres during the outage"
    );
    assert!(
        ["reserved", "extended"].contains(&end.wal_status.as_str()),
        "Postgres keeps the WAL: {}",
        end.wal_status
    );
    assert!(
        end.slot_lag - settled_at.slot_lag > 0.5 * new_wal,
        "the slot-lag metric grows with the WAL: {} → {}",
        settled_at.slot_lag,
        end.slot_lag
    );
    assert_eq!(end.ready, 0.0, "/ready says no while ClickHouse is away");
    assert_eq!(
        end.progress, settled_at.progress,
        "the sink took no rows in while it waited"
    );
    assert!(
        rss_up < 16 * 1024,
        "RSS stays flat: +{} KiB after the queues filled",
        rss_up
    );

    // ClickHouse is back: everything lands, exactly once.
    ch.set_refuse(false);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let last = load.await.unwrap();
    let rows = eventually(
        Duration::from_secs(300),
        "every row in ClickHouse",
        || async {
            let r = w
                .try_ch_rows(&format!(
                    "SELECT count(), uniqExact(id), min(id), max(id) FROM `{}`.`{t}` FINAL",
                    w.database
                ))
                .await?;
            if r[0] == format!("{last}\t{last}\t1\t{last}") {
                Ok(r)
            } else {
                Err(format!("{} (want {last} rows, ids 1..={last})", r[0]))
            }
        },
    )
    .await;
    write_report(
        "outage-clickhouse",
        &format!(
        "  back: all {last} rows in ClickHouse FINAL {:.1} s after it returned ({rows:?}); /ready {}",
        back.elapsed().as_secs_f64(),
        metric(&listen, "tributary_ready", "").await.unwrap_or(-1.0)
        ),
    );
    let raw = w
        .ch_rows(&format!("SELECT count() FROM `{}`.`{t}`", w.database))
        .await;
    assert_eq!(
        raw[0],
        last.to_string(),
        "no row was written twice (raw count)"
    );
    std::mem::forget(guard);
    stop_clean(child).await;
    w.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_outage_holds_memory_flat_and_loses_nothing() {
    let outage = outage();
    let w = World::new(Target::Ch26).await;
    let masto = FakeMastodon::start_with(MastodonConfig {
        heartbeat: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let llm = Proxy::start(var("TRIBUTARY_TEST_LLM_URL").trim_start_matches("http://")).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = write_config_from("config/sentiment.toml", &[], "");
    edit_config(
        &cfg,
        &[
            ("queue = 64", "queue = 16"),
            (
                "reconnect_initial = \"1s\"",
                "reconnect_initial = \"100ms\"",
            ),
            ("reconnect_max = \"60s\"", "reconnect_max = \"2s\""),
            ("circuit_cooldown = \"10s\"", "circuit_cooldown = \"2s\""),
            ("max_tokens = 512", "max_tokens = 32"),
        ],
    );
    let mut env = real_llm_env(&masto.url(), &llm.url());
    env.push(("TRIBUTARY_HTTP", listen.clone()));
    let child = spawn_env(&w, &cfg, &w.target.url(), &env_refs(&env));
    let guard = PrintLogOnPanic(child.log.clone());
    assert!(
        masto.wait_streams(1, Duration::from_secs(60)).await,
        "the stream connects"
    );

    // The load: a post every 2 s for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, handle) = (stop.clone(), masto.handle());
        tokio::spawn(async move {
            let mut ids = BTreeSet::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = 300_000_000_000_000_000 + i;
                handle.publish(make_status(id, &format!("post {i}: what a day, I love it")));
                ids.insert(id.to_string());
                i += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            ids
        })
    };
    eventually(Duration::from_secs(120), "posts labelled", || async {
        let n = sentiment_rows(&w).await?.len();
        if n > 0 {
            Ok(())
        } else {
            Err("none yet".into())
        }
    })
    .await;

    // The LLM server goes away.
    llm.set_refuse(true);
    llm.cut_all();
    let started = Instant::now();
    let capacity = must_metric(&listen, "tributary_queue_capacity", "queue=\"source->llm\"").await;
    let mut samples: Vec<Sample> = Vec::new();
    // Settled: the first sample with a full queue (and the rows written by then).
    let mut settled: Option<(Duration, usize)> = None;
    while started.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let m = |name: &'static str| must_metric(&listen, name, "");
        let s = Sample {
            at: started.elapsed(),
            rss_kib: rss_kib(child.id()).expect("tributary runs"),
            progress: m("tributary_mastodon_events_total").await,
            queue_depth: must_metric(&listen, "tributary_queue_depth", "queue=\"source->llm\"")
                .await,
            ..Default::default()
        };
        if s.queue_depth == capacity && settled.is_none() {
            settled = Some((s.at, sentiment_rows(&w).await.unwrap_or_default().len()));
        }
        samples.push(s);
    }
    let (from, rows_at_settle) = settled.expect("the queue filled during the outage");
    assert!(
        from <= outage / 2,
        "the queue filled in the first half of the outage (at {from:?})"
    );
    let settled_at = samples.iter().find(|s| s.at >= from).unwrap().clone();
    let end = samples.last().unwrap().clone();
    let (rss_base, rss_up) = rss_growth(&samples, from);
    let rows_end = sentiment_rows(&w).await.unwrap_or_default().len();
    write_report(
        "outage-llm",
        &format!(
        "LLM outage of {outage:?}: after {from:?}: Mastodon events read {} → {}, queue {}/{capacity}, rows {} → {rows_end}, RSS {:.1} MiB (+{:.1} MiB at peak)",
        settled_at.progress,
        end.progress,
        end.queue_depth,
        rows_at_settle,
        rss_base as f64 / 1024.0,
        rss_up as f64 / 1024.0
        ),
    );
    assert_eq!(end.queue_depth, capacity, "the queue is full");
    assert_eq!(
        rows_end, rows_at_settle,
        "nothing was written while the LLM was away"
    );
    assert!(
        end.progress - settled_at.progress <= 2.0,
        "the source stopped reading the stream: {} → {} events",
        settled_at.progress,
        end.progress
    );
    assert!(
        rss_up < 16 * 1024,
        "RSS stays flat: +{rss_up} KiB after the queue filled"
    );

    // The LLM is back: every post lands once, with a label.
    llm.set_refuse(false);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let ids = publisher.await.unwrap();
    let rows = eventually(Duration::from_secs(600), "every post labelled", || async {
        let rows = sentiment_rows(&w).await?;
        let got: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
        if got == ids && rows.len() == ids.len() {
            Ok(rows)
        } else {
            Err(format!("{} of {} posts", got.len(), ids.len()))
        }
    })
    .await;
    for (id, label, _) in &rows {
        assert!(
            ["positive", "negative", "neutral", "unknown"].contains(&label.as_str()),
            "post {id} has label {label}"
        );
    }
    write_report(
        "outage-llm",
        &format!(
            "  back: all {} posts labelled {:.1} s after the LLM returned",
            ids.len(),
            back.elapsed().as_secs_f64()
        ),
    );
    std::mem::forget(guard);
    stop_clean(child).await;
    w.teardown().await;
}
