//! A replication slot that Postgres invalidated (`wal_status = lost`, #20) stops the pipeline
//! at once, saying what was lost and how to start over, instead of failing to stream in a
//! restart loop; after the remedy (dropping the slot) the next start snapshots anew and
//! ClickHouse equals Postgres again.
//!
//! A binary of its own: it lowers `max_slot_wal_keep_size` for the whole server while it
//! runs, which must not reach another test's slot (test binaries run one after another).

mod common;

use common::*;
use futures_util::FutureExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

async fn slot_status(c: &tokio_postgres::Client, slot: &str) -> Option<String> {
    c.query_opt(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .unwrap()
    .and_then(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_stops_with_the_remedy() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("lost");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 50) g;"
    ))
    .await
    .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    cfg.supervision.max_restarts = 50;
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    // The slot's gauges, sampled from the real server: reserved, and far from the server's
    // limit (scripts/services.sh sets 8GB; i64::MAX when unlimited).
    let gauges = |run: &Running| {
        let k = run.counters();
        (
            k.slot_wal_status.load(Ordering::Relaxed),
            k.slot_safe_wal_bytes.load(Ordering::Relaxed),
        )
    };
    eventually(T, "the slot sampled", || async {
        match gauges(&run) {
            (1, b) if b > 1024 * 1024 * 1024 => Ok(()),
            g => Err(format!("{g:?}")),
        }
    })
    .await;
    run.stop().await;

    let body = async {
        // One statement per call: ALTER SYSTEM refuses a (multi-statement) transaction.
        c.batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
            .await
            .unwrap();
        c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
        // With a limit, the gauge says how far the slot may still fall behind: a few WAL
        // segments now (Postgres counts in whole 16 MB segments), not gigabytes.
        let run = Running::start(&cfg).await;
        eventually(T, "safe_wal_size near the lowered limit", || async {
            match gauges(&run) {
                (1 | 2, b) if b < 64 * 1024 * 1024 => Ok(()),
                g => Err(format!("{g:?}")),
            }
        })
        .await;
        run.stop().await;
        // Changes the stopped pipeline has not confirmed, then WAL past the limit, removed at
        // a checkpoint: the slot is invalidated.
        c.batch_execute(&format!(
            "UPDATE {t} SET v = 'changed while away' WHERE id <= 10"
        ))
        .await
        .unwrap();
        eventually(T, "the slot to be lost", || async {
            c.batch_execute(&format!(
                "INSERT INTO {t} SELECT g, repeat('x', 200) FROM generate_series(1000, 3000) g ON CONFLICT (id) DO UPDATE SET v = excluded.v"
            ))
            .await
            .map_err(|e| e.to_string())?;
            for sql in ["SELECT pg_switch_wal()", "CHECKPOINT"] {
                c.batch_execute(sql).await.map_err(|e| e.to_string())?;
            }
            match slot_status(&c, &w.slot).await.as_deref() {
                Some("lost") => Ok(()),
                other => Err(format!("wal_status {other:?}")),
            }
        })
        .await;
        let err = stops_at_once(&cfg).await;
        assert!(
            err.contains("invalidated") && err.contains("pg_drop_replication_slot"),
            "{err}"
        );
    };
    let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    c.batch_execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        .await
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    if let Err(panic) = outcome {
        w.teardown().await;
        std::panic::resume_unwind(panic);
    }

    // The remedy: drop the slot; the next start takes a new snapshot.
    c.execute("SELECT pg_drop_replication_slot($1)", &[&w.slot])
        .await
        .unwrap();
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    run.stop().await;
    w.teardown().await;
}
