//! Supervision and backpressure against real servers: actors killed mid-stream are restarted
//! and nothing is lost; a sink that always fails escalates; a slow sink holds the source back
//! with flat memory.

use crate::common::*;
use crate::matrix;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// Writes `txns` transactions of `rows` rows (ids from `from`), pausing `pause` between them.
fn writer(
    table: String,
    from: i64,
    txns: i64,
    rows: i64,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = pg().await;
        for i in 0..txns {
            let a = from + i * rows;
            c.batch_execute(&format!(
                "BEGIN; INSERT INTO {table} SELECT g, 'v' || g FROM generate_series({a}, {b}) g; UPDATE {table} SET v = 'u' || id WHERE id = {a}; DELETE FROM {table} WHERE id = {d}; COMMIT;",
                b = a + rows - 1,
                d = a + 1
            ))
            .await
            .unwrap();
            tokio::time::sleep(pause).await;
        }
    })
}

async fn kill_sink_and_source(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("killed");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text)"))
        .await
        .unwrap();
    let cfg = w.config(&[&format!("public.{t}")]);
    let run = Running::start(&cfg).await;
    let load = writer(t.clone(), 1, 60, 200, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(800)).await;
    run.kill("sink").await;
    eventually(T, "sink restart", || async {
        if run.registry.restarts(&run.path("sink")) >= 1 {
            Ok(())
        } else {
            Err("no restart yet".into())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let active_pid = || async {
        c.query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&w.slot],
        )
        .await
        .map_err(|e| e.to_string())
        .map(|r| r.get::<_, Option<i32>>(0))
    };
    let before = eventually(T, "the slot to be active", || async {
        active_pid().await?.ok_or_else(|| "inactive".to_string())
    })
    .await;
    run.kill("source").await;
    // The killed source's stream is gone: the restarted one holds the slot with a new walsender.
    eventually(T, "a new walsender on the slot", || async {
        match active_pid().await? {
            Some(p) if p != before => Ok(()),
            other => Err(format!("active_pid {other:?} (was {before})")),
        }
    })
    .await;
    eventually(T, "source restart", || async {
        // rest_for_one: the sink's restart restarted the source too; the kill adds one more.
        if run.registry.restarts(&run.path("source")) >= 2 {
            Ok(())
        } else {
            Err(format!("{:?}", run.registry.actors()))
        }
    })
    .await;
    load.await.unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 60 * 199);
    run.stop().await;
    w.teardown().await;
}
matrix!(killed_actors_restart_and_lose_nothing, kill_sink_and_source);

/// A sink whose server refuses every connection: restarts with backoff, then the pipeline
/// escalates with an error that names the server, and the root ends (no pipeline left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_escalates_after_max_restarts() {
    let w = World::new(Target::Ch18).await;
    let proxy = proxy::Proxy::start(Target::Ch18.url().trim_start_matches("http://")).await;
    proxy.set_refuse(true);
    let c = pg().await;
    let t = unique("esc");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    cfg.supervision.max_restarts = 2;
    cfg.supervision.backoff_initial.0 = Duration::from_millis(50);
    cfg.pipelines[0].clickhouse.url = proxy.url();
    cfg.pipelines[0].clickhouse.request_timeout.0 = Duration::from_secs(2);
    let run = Running::start(&cfg).await;
    tokio::time::timeout(Duration::from_secs(60), run.handle)
        .await
        .expect("the root ends when its only pipeline escalates")
        .unwrap();
    let actors = run.registry.actors();
    let pipeline = &actors[&format!("root/{}", run.pipeline)];
    let err = pipeline.last_error.clone().unwrap_or_default();
    assert!(err.contains("3 restarts within"), "{err}");
    assert!(
        err.contains(&proxy.url()),
        "the error names the server: {err}"
    );
    assert!(
        proxy.accepted() >= 3,
        "it retried: {} connections",
        proxy.accepted()
    );
    w.teardown().await;
}

/// Postgres away for longer than the restart intensity allows (here 2 restarts within a
/// minute, with restarts every 0.1–1 s): once the pipeline ran healthily, the outage is waited
/// out (restarts counted as `outage`, not against the intensity), and everything written
/// during and after it lands. (A server missing from the start still escalates: above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_waited_out() {
    let w = World::new(Target::Ch18).await;
    let pg_proxy =
        proxy::Proxy::start(&format!("127.0.0.1:{}", var("TRIBUTARY_TEST_PG_PORT"))).await;
    let c = pg().await;
    let t = unique("pgaway");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 100) g;"
    ))
    .await
    .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    cfg.supervision.max_restarts = 2;
    cfg.supervision.within.0 = Duration::from_secs(60);
    cfg.supervision.backoff_initial.0 = Duration::from_millis(100);
    cfg.supervision.backoff_max.0 = Duration::from_secs(1);
    let pgc = cfg.pipelines[0].postgres.as_mut().unwrap();
    pgc.host = "127.0.0.1".into();
    pgc.port = pg_proxy.port;
    pgc.connect_timeout.0 = Duration::from_secs(2);
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    // Healthy for a while, then Postgres is away: every connection cut, new ones refused.
    tokio::time::sleep(tributary::runtime::supervisor::HEALTHY_AFTER).await;
    pg_proxy.set_refuse(true);
    pg_proxy.cut_all();
    c.batch_execute(&format!(
        "INSERT INTO {t} SELECT g, 'during' || g FROM generate_series(101, 200) g"
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let during = pg_proxy.accepted();
    pg_proxy.set_refuse(false);
    c.batch_execute(&format!(
        "UPDATE {t} SET v = 'after' WHERE id <= 10; INSERT INTO {t} SELECT g, 'after' || g FROM generate_series(201, 300) g"
    ))
    .await
    .unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let outage_restarts: u64 = run
        .registry
        .restart_reasons()
        .iter()
        .filter(|(a, r, _)| a.ends_with("/source") && *r == "outage")
        .map(|(_, _, n)| n)
        .sum();
    assert!(
        outage_restarts > 2,
        "the source restarted more often than the intensity allows: {outage_restarts} ({during} connections tried)"
    );
    let actors = run.registry.actors();
    let pipeline = &actors[&format!("root/{}", run.pipeline)];
    assert_eq!(
        pipeline.state,
        tributary::runtime::registry::ActorState::Running,
        "the pipeline did not escalate: {:?}",
        pipeline.last_error
    );
    run.stop().await;
    w.teardown().await;
}

/// ClickHouse answers slowly: the source stops reading the replication stream (it runs at
/// most an edge and a batch ahead of the sink, far behind what Postgres committed), memory
/// stays flat, and everything lands once the sink is fast again.
async fn slow_sink(target: Target) {
    // The two generations' runs measure this process's memory: one at a time (the other's
    // catch-up drain would be counted as this one's growth).
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _measuring = ONE_AT_A_TIME.lock().await;
    let w = World::new(target).await;
    let proxy = proxy::Proxy::start(target.url().trim_start_matches("http://")).await;
    let c = pg().await;
    let t = unique("slow");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text)"))
        .await
        .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    let p = &mut cfg.pipelines[0];
    p.clickhouse.url = proxy.url();
    p.postgres.as_mut().unwrap().chunk_rows = 500;
    p.batch.edge_capacity = 4;
    p.batch.max_rows = 2000;
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v", "id", T).await; // snapshot done, tables exist
    let rss_before = rss_kib(std::process::id()).unwrap();
    proxy.set_delay(Duration::from_millis(300));
    let load = {
        let t = t.clone();
        tokio::spawn(async move {
            let c = pg().await;
            for i in 0..200 {
                c.batch_execute(&format!("INSERT INTO {t} SELECT g, repeat('x', 200) || g FROM generate_series({} + 1, {} + 1000) g", i * 1000, i * 1000))
                    .await
                    .unwrap();
            }
        })
    };
    let edge = run.handles[0].cdc_edge().expect("a cdc pipeline").clone();
    let counters = run.counters();
    // Everything is committed in Postgres while ClickHouse is slow.
    load.await.unwrap();
    // What the source may hold beyond what the sink wrote: the edge, the sink's batch, the
    // chunk being built.
    let bound = (edge.capacity() + 2) as u64 * 500 + 2000;
    let mut max_rss = rss_before;
    let mut max_held = 0;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(edge.depth() <= edge.capacity());
        let read = counters.rows_read.load(Ordering::Relaxed);
        let written = counters.rows_written.load(Ordering::Relaxed);
        max_held = max_held.max(read.saturating_sub(written));
        max_rss = max_rss.max(rss_kib(std::process::id()).unwrap());
    }
    let read = counters.rows_read.load(Ordering::Relaxed);
    assert!(
        max_held <= bound,
        "the source ran {max_held} rows ahead of the sink (bound {bound})"
    );
    assert!(read < 150_000, "the source stopped reading the stream while the sink was slow: it read {read} of 200000 rows");
    assert!(
        max_rss - rss_before < 100 * 1024,
        "RSS grew from {rss_before} KiB to {max_rss} KiB"
    );
    proxy.set_delay(Duration::ZERO);
    converge(&w, &c, &t, &t, "id, v", "id", Duration::from_secs(120)).await;
    assert!(run.counters().rows_written.load(Ordering::Relaxed) >= 200_000);
    run.stop().await;
    w.teardown().await;
}
matrix!(slow_sink_holds_back_the_source, slow_sink);

/// The slot is lost after a completed snapshot, rows are written meanwhile, and the new
/// snapshot is cut short by a crash of the source (#20): the earlier marker must not make the
/// restarted source take the half-done snapshot for complete. Every row lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_resnapshot_is_not_taken_for_complete() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("resnap");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text);
         INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 100) g;"
    ))
    .await
    .unwrap();
    let cfg = w.config(&[&format!("public.{t}")]);
    let run = Running::start(&cfg).await;
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    run.stop().await;
    // The slot is gone (dropped, or invalidated); rows are written that no slot holds.
    // (Its walsender may take a moment to end after the stop.)
    eventually(T, "the slot to be dropped", || async {
        c.execute("SELECT pg_drop_replication_slot($1)", &[&w.slot])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    c.batch_execute(&format!(
        "INSERT INTO {t} SELECT g, 'gap' || g FROM generate_series(101, 20000) g"
    ))
    .await
    .unwrap();
    // A slow ClickHouse and small chunks keep the new snapshot under way for seconds, with
    // little memory (this process runs other tests that measure theirs).
    let proxy = proxy::Proxy::start(Target::Ch18.url().trim_start_matches("http://")).await;
    proxy.set_delay(Duration::from_millis(100));
    let mut cfg = cfg;
    let p = &mut cfg.pipelines[0];
    p.clickhouse.url = proxy.url();
    p.postgres.as_mut().unwrap().chunk_rows = 500;
    p.batch.edge_capacity = 2;
    p.batch.max_rows = 1000;
    let run = Running::start(&cfg).await;
    let counters = run.counters();
    let before = counters.snapshot_rows.load(Ordering::Relaxed);
    eventually(T, "the new snapshot to be under way", || async {
        if counters.snapshot_rows.load(Ordering::Relaxed) > before {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    run.kill("source").await;
    proxy.set_delay(Duration::ZERO);
    converge(&w, &c, &t, &t, "id, v", "id", Duration::from_secs(120)).await;
    run.stop().await;
    w.teardown().await;
}

/// The Postgres sockets keep alive (#17): a half-open connection is found by the kernel
/// within about a minute. `ss` shows the keepalive timer on this process's connection to
/// the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sockets_keep_alive() {
    let w = World::new(Target::Ch18).await;
    let p = tributary::clients::postgres::PgParams::from_config(
        w.config(&[]).pipelines[0].postgres.as_ref().unwrap(),
    );
    let conn = tributary::clients::postgres::replication::ReplicationConn::connect(&p)
        .await
        .expect("connect");
    let out = std::process::Command::new("ss")
        .args(["-tnpoH", "dst", &format!("127.0.0.1:{}", p.port)])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("pid={},", std::process::id())))
        .collect();
    assert!(
        !mine.is_empty(),
        "no connection of this process in:\n{text}"
    );
    // Ours probes after 30 s (tokio-postgres's own connections, also in this process, after
    // two hours: "119min").
    let ours = mine.iter().any(|l| {
        l.split("timer:(keepalive,")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .is_some_and(|t| t.ends_with("sec") && !t.contains("min"))
    });
    assert!(ours, "no connection with a 30 s keepalive: {mine:?}");
    conn.close().await;
}

/// An insert that always takes longer than `request_timeout` while ClickHouse answers pings
/// (#17): not an outage to wait out for ever (re-sending it), but a failure that names the
/// cause; the pipeline escalates with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_too_slow_for_the_timeout_is_not_an_outage() {
    let w = World::new(Target::Ch18).await;
    let proxy = proxy::Proxy::start(Target::Ch18.url().trim_start_matches("http://")).await;
    let c = pg().await;
    let t = unique("tooslow");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text);
         INSERT INTO {t} SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g;"
    ))
    .await
    .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    cfg.supervision.max_restarts = 1;
    let p = &mut cfg.pipelines[0];
    p.clickhouse.url = proxy.url();
    p.clickhouse.request_timeout.0 = Duration::from_secs(2);
    p.clickhouse.insert_attempts = 1;
    p.clickhouse.compression = tributary::config::Compression::None;
    // 1 MB of rows at 50 kB/s: 20 s an insert; a ping is a few hundred bytes.
    proxy.set_rate(50_000);
    // It gives up instead of waiting for ever.
    let (err, _) = Running::start(&cfg)
        .await
        .until_stopped(Duration::from_secs(120))
        .await;
    assert!(err.contains("did not finish within"), "{err}");
    w.teardown().await;
}

/// A large transaction's rows go to ClickHouse in pieces of an insert left open while more
/// are encoded; the connection is cut while the pieces flow (the insert fails half sent):
/// the whole body is inserted again, nothing is lost or doubled, and the retry is counted.
async fn cut_during_a_streamed_insert(target: Target) {
    let w = World::new(target).await;
    let proxy = proxy::Proxy::start(target.url().trim_start_matches("http://")).await;
    let c = pg().await;
    let t = unique("pieces");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} VALUES (0, 'first')"
    ))
    .await
    .unwrap();
    let mut cfg = w.config(&[&format!("public.{t}")]);
    let p = &mut cfg.pipelines[0];
    p.clickhouse.url = proxy.url();
    // One batch for the whole transaction: its pieces are sent long before the flush.
    p.batch.max_age = tributary::config::HumanDuration(Duration::from_secs(30));
    let run = Running::start(&cfg).await;
    // The copy is over (its one row is in): what follows streams.
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    // About 12 MB of rows at 2 MB/s: the pieces are under way for seconds.
    proxy.set_rate(2 << 20);
    c.batch_execute(&format!(
        "INSERT INTO {t} SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 50000) g"
    ))
    .await
    .unwrap();
    let counters = run.counters();
    eventually(T, "the rows to be read", || async {
        let n = counters.rows_read.load(Ordering::Relaxed);
        if n >= 10_000 {
            Ok(())
        } else {
            Err(format!("{n} rows read"))
        }
    })
    .await;
    // The insert stays open until the flush (30 s, or 32 MB): the cut falls inside it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.cut_all();
    proxy.set_rate(0);
    c.batch_execute(&format!("UPDATE {t} SET v = 'after' WHERE id % 1000 = 0"))
        .await
        .unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let counts = w
        .ch_rows(&format!(
            "SELECT count(), uniqExact(id) FROM `{}`.`{t}` FINAL WHERE _is_deleted = 0",
            w.database
        ))
        .await;
    assert_eq!(counts, vec!["50001\t50001".to_string()]);
    assert!(
        counters.insert_retries.load(Ordering::Relaxed) >= 1,
        "the cut insert was retried"
    );
    run.stop().await;
    w.teardown().await;
}
matrix!(
    an_insert_cut_while_its_pieces_flow_is_sent_again_whole,
    cut_during_a_streamed_insert
);
