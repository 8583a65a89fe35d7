//! Faults on the Kafka path, against the real broker: the consumer actor and the producing
//! sink are killed mid-stream, and the broker itself is killed (SIGKILL) and restarted on
//! its durable storage. Nothing is lost; duplicates (replays) collapse in FINAL.
//! (The broker restart would disturb other Kafka tests, so these live in their own binary.)

#![recursion_limit = "256"]
mod common;

use common::kafka::*;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_a_broker_restart_lose_nothing() {
    let w = World::new(Target::Ch18).await;
    let n = KafkaNames::new();
    let c = pg().await;
    let t = unique("events");
    let u = unique("updated");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, v text);
         CREATE TABLE {u} (id int PRIMARY KEY, n bigint);
         INSERT INTO {t} SELECT g, 'snap ' || g FROM generate_series(1, 2000) g;
         INSERT INTO {u} SELECT g, 0 FROM generate_series(1, 50) g;"
    ))
    .await
    .unwrap();
    let cfg = kafka_config(&w, &n, &[&format!("public.{t}"), &format!("public.{u}")]);
    let (pg_pipe, ch_pipe) = (cfg.pipelines[0].name.clone(), cfg.pipelines[1].name.clone());
    let run = Running::start(&cfg).await;
    // An append-only stream (every id must appear exactly once) and a hot table whose rows
    // are updated again and again (the last value must win).
    let load = {
        let (t, u) = (t.clone(), u.clone());
        tokio::spawn(async move {
            let c = pg().await;
            for i in 0..150i64 {
                let a = 10_000 + i * 40;
                c.batch_execute(&format!(
                    "BEGIN; INSERT INTO {t} SELECT g, 'live ' || g FROM generate_series({a}, {b}) g;
                     UPDATE {u} SET n = n + 1 WHERE id % 5 = {m}; COMMIT;",
                    b = a + 39,
                    m = i % 5
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    let script = var("TRIBUTARY_SERVICES_SCRIPT");
    for step in 0..5 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        match step {
            0 | 2 => run.kill_in(&ch_pipe, "source").await,
            1 => run.kill_in(&pg_pipe, "sink").await,
            3 => {
                let out = tokio::process::Command::new(&script)
                    .args(["restart-kafka", "kill"])
                    .output()
                    .await
                    .unwrap();
                assert!(
                    out.status.success(),
                    "restart-kafka: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => run.kill_in(&ch_pipe, "sink").await,
        }
    }
    load.await.unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    converge(&w, &c, &u, &u, "id, n", "id", T).await;
    let exact = w
        .ch_rows(&format!(
            "SELECT count(), uniqExact(id) FROM `{}`.`{t}` FINAL WHERE _is_deleted = 0",
            w.database
        ))
        .await;
    assert_eq!(
        exact,
        vec![format!("{}\t{}", 2000 + 150 * 40, 2000 + 150 * 40)]
    );
    let restarts: u64 = run.registry.actors().values().map(|a| a.restarts).sum();
    assert!(
        restarts >= 4,
        "the killed actors were restarted ({restarts})"
    );
    let counters = run.registry.pipeline(&ch_pipe);
    assert!(counters.kafka_commits.load(Ordering::Relaxed) > 0);
    run.stop().await;
    w.teardown().await;
}
