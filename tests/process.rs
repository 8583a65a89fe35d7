//! The `tributary` binary as users run it: SIGKILL mid-stream and restart (ClickHouse FINAL
//! equals Postgres), SIGTERM drains and exits 0, bad configs and unreachable servers give
//! errors that name the key or the server and never show a password.

mod common;

use common::spawn::*;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// config/cdc.toml with its tables line replaced, written next to the test's target dir.
fn write_config(tables: &[&str], extra: &str) -> std::path::PathBuf {
    write_config_from("config/cdc.toml", tables, extra)
}

fn spawn(w: &World, config: &std::path::Path, ch_url: &str) -> Spawned {
    spawn_env(w, config, ch_url, &[])
}

/// `txns` transactions on `t (id, v)`, one every `pause`: each inserts `rows` new rows, updates
/// every 50th row and deletes one.
async fn churn(t: String, txns: i64, rows: i64, pause: Duration) {
    let c = pg().await;
    for i in 0..txns {
        let a = 10_000 + i * rows;
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO {t} SELECT g, 'v' || g FROM generate_series({a}, {b}) g; UPDATE {t} SET v = v || '+' WHERE id % 50 = {m}; DELETE FROM {t} WHERE id = {d}; COMMIT;",
            b = a + rows - 1,
            m = i % 50,
            d = i * 7 + 1
        ))
        .await
        .unwrap();
        tokio::time::sleep(pause).await;
    }
}

async fn sigkill_and_restart(target: Target) {
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("crash");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 's' || g FROM generate_series(1, 5000) g"))
        .await
        .unwrap();
    let cfg = write_config(&[&format!("public.{t}")], "");
    let load = tokio::spawn(churn(t.clone(), 80, 300, Duration::from_millis(40)));
    for _ in 0..3 {
        let mut child = spawn(&w, &cfg, &target.url());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        child.child.kill().unwrap(); // SIGKILL: no drain, no final confirmation
        child.child.wait().unwrap();
    }
    load.await.unwrap();
    let child = spawn(&w, &cfg, &target.url());
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let err = stop_clean(child).await;
    assert!(err.contains("confirmed on stop"), "{err}");
    // The slot was confirmed up to the end of the stream: nothing is left to replay.
    let (confirmed, current): (String, String) = {
        let r = c
            .query_one("SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = $1", &[&w.slot])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let lsn = |s: &str| tributary::protocol::pgoutput::parse_lsn(s).unwrap();
    assert!(lsn(&confirmed) > 0 && lsn(&confirmed) <= lsn(&current));
    w.teardown().await;
}
matrix!(sigkill_mid_stream_then_restart, sigkill_and_restart);

/// Through Kafka (config/kafka.toml, both halves in one process), SIGKILL three times while
/// changes flow, with offsets committed only every 5 s: every kill lands between ClickHouse
/// inserts and the commit of their offsets, so messages are read and inserted again. Nothing
/// is lost and the duplicates collapse in FINAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_through_kafka_between_insert_and_commit() {
    let w = World::new(Target::Ch18).await;
    let n = common::kafka::KafkaNames::new();
    let c = pg().await;
    let t = unique("crash_kafka");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 's' || g FROM generate_series(1, 3000) g"))
        .await
        .unwrap();
    let cfg = write_config_from("config/kafka.toml", &[&format!("public.{t}")], "");
    let brokers = common::kafka::brokers();
    let env = [
        ("KAFKA_BROKERS", brokers.as_str()),
        ("TRIBUTARY_TOPIC_PREFIX", n.prefix.as_str()),
        ("TRIBUTARY_GROUP", n.group.as_str()),
        ("TRIBUTARY_DLQ", n.dlq.as_str()),
        ("TRIBUTARY_STATE_TOPIC", n.state.as_str()),
        ("TRIBUTARY_COMMIT_INTERVAL", "5s"),
    ];
    let load = tokio::spawn(churn(t.clone(), 60, 200, Duration::from_millis(60)));
    for _ in 0..3 {
        let mut child = spawn_env(&w, &cfg, &Target::Ch18.url(), &env);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        child.child.kill().unwrap(); // SIGKILL: no drain, no final commit
        child.child.wait().unwrap();
    }
    load.await.unwrap();
    let child = spawn_env(&w, &cfg, &Target::Ch18.url(), &env);
    let log = child.log.clone();
    let guard = PrintLogOnPanic(log);
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    std::mem::forget(guard);
    let err = stop_clean(child).await;
    let counts = w
        .ch_rows(&format!(
            "SELECT (SELECT count() FROM `{db}`.`{t}`), (SELECT count() FROM `{db}`.`{t}` FINAL)",
            db = w.database
        ))
        .await;
    let (raw, fin) = counts[0].split_once('\t').unwrap();
    let (raw, fin): (u64, u64) = (raw.parse().unwrap(), fin.parse().unwrap());
    assert!(
        raw > fin,
        "the kills replayed inserted messages ({raw} rows stored, {fin} in FINAL)\n{err}"
    );
    w.teardown().await;
}

#[tokio::test]
async fn bad_configs_name_the_key() {
    for (needle, extra) in [
        ("unknown field `colour`", "colour = \"red\"\n"),
        ("pipeline[0].batch.max_age", "max_age = \"0s\""),
        ("max_age", "max_age = \"soon\""),
    ] {
        let cfg = if extra.starts_with("max_age") {
            let p = write_config(&["public.x"], "");
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("max_age = \"200ms\"", extra);
            std::fs::write(&p, text).unwrap();
            p
        } else {
            write_config(&["public.x"], extra)
        };
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&cfg)
            .env("PGPASSWORD", "x")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(needle) && err.contains(cfg.to_str().unwrap()),
            "expected `{needle}` and the file in: {err}"
        );
    }
}

#[tokio::test]
async fn unreachable_servers_are_named_and_secrets_stay_hidden() {
    let w = World::new(Target::Ch18).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // freed at once
    let cfg = write_config(&["public.nothing"], "");
    let run = |pg_port: String, ch: String, pg_password: String| {
        Command::new(bin())
            .args(["check", "--config"])
            .arg(&cfg)
            .env("PGPORT", pg_port)
            .env("PGUSER", var("TRIBUTARY_TEST_PG_USER"))
            .env("PGPASSWORD", pg_password)
            .env("PGDATABASE", var("TRIBUTARY_TEST_PG_DATABASE"))
            .env("CLICKHOUSE_URL", ch)
            .env("CLICKHOUSE_PASSWORD", "ch-sekrit-456")
            .env("TRIBUTARY_SLOT", &w.slot)
            .output()
            .unwrap()
    };
    let out = run(
        closed.to_string(),
        Target::Ch18.url(),
        "sekrit-pw-123".into(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{closed}")),
        "names the Postgres server: {err}"
    );
    assert!(!err.contains("sekrit"), "{err}");
    // Postgres reachable with a wrong password: the error says so without the password.
    let out = run(
        var("TRIBUTARY_TEST_PG_PORT"),
        Target::Ch18.url(),
        "sekrit-pw-123".into(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.contains("sekrit"), "{err}");
    // ClickHouse unreachable: named, with its address.
    let out = run(
        var("TRIBUTARY_TEST_PG_PORT"),
        format!("http://127.0.0.1:{closed}"),
        var("TRIBUTARY_TEST_PG_PASSWORD"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("ClickHouse at http://127.0.0.1:{closed}")),
        "{err}"
    );
    assert!(!err.contains("sekrit"), "{err}");
}

/// No pipeline left: the process exits 1 and says why.
#[tokio::test]
async fn exits_nonzero_when_the_last_pipeline_escalates() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("gone");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let cfg = write_config(&[&format!("public.{t}")], "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_restarts = 5", "max_restarts = 1")
        .replace("backoff_initial = \"500ms\"", "backoff_initial = \"50ms\"");
    std::fs::write(&cfg, text).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = spawn(&w, &cfg, &format!("http://127.0.0.1:{closed}"));
    let (status, err) = wait_exit(child, Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("giving up")
            && err.contains(&format!("127.0.0.1:{closed}"))
            && err.contains("no pipeline is left"),
        "{err}"
    );
    // Logs to a pipe carry no terminal colour codes (#17).
    assert!(
        !err.contains('\u{1b}'),
        "escape sequences in a non-terminal log: {err:?}"
    );
    w.teardown().await;
}

/// Tables without a primary key are refused before anything is created, all named at once.
#[tokio::test]
async fn keyless_tables_are_refused_with_their_names() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let (a, b, k) = (unique("nokey_a"), unique("nokey_b"), unique("haskey"));
    c.batch_execute(&format!("CREATE TABLE {a} (x int); CREATE TABLE {b} (y text); CREATE TABLE {k} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let cfg = write_config(
        &[
            &format!("public.{a}"),
            &format!("public.{b}"),
            &format!("public.{k}"),
        ],
        "",
    );
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .env("PGPORT", var("TRIBUTARY_TEST_PG_PORT"))
        .env("PGUSER", var("TRIBUTARY_TEST_PG_USER"))
        .env("PGPASSWORD", var("TRIBUTARY_TEST_PG_PASSWORD"))
        .env("PGDATABASE", var("TRIBUTARY_TEST_PG_DATABASE"))
        .env("CLICKHOUSE_URL", Target::Ch18.url())
        .env("CLICKHOUSE_DATABASE", &w.database)
        .env("TRIBUTARY_SLOT", &w.slot)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("without a primary key")
            && err.contains(&format!("public.{a}"))
            && err.contains(&format!("public.{b}")),
        "{err}"
    );
    assert!(!err.contains(&format!("public.{k}")), "{err}");
}

/// The HTTP endpoints of a running process: health, readiness, the status document, the
/// metrics (with the rows this test wrote) and the status page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_status_and_metrics_are_served() {
    let w = World::new(Target::Ch26).await;
    let c = pg().await;
    let t = unique("observed");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' FROM generate_series(1, 300) g"))
        .await
        .unwrap();
    let (child, port) = spawn_with_http(&w, &t, Target::Ch26);
    let base = format!("http://127.0.0.1:{port}");
    tributary::clients::tls::install_default_provider();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.get(url).send().await.map_err(|e| e.to_string())?;
            let code = r.status().as_u16();
            Ok::<_, String>((code, r.text().await.map_err(|e| e.to_string())?))
        }
    };
    eventually(T, "/ready", || async {
        match get("/ready").await? {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(get("/health").await.unwrap(), (200, "ok\n".to_string()));
    // Idle clients (#17): more than the cap are closed at once, the rest when the header
    // timeout ends; the endpoints answer throughout.
    let mut idle = Vec::new();
    for _ in 0..(tributary::ops::http::MAX_CONNECTIONS + 36) {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // Every connection's fate at once: closed by the server within 2 s, or still open.
    let closed_at_once = futures_util::future::join_all(idle.iter_mut().map(|s| async move {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }))
    .await
    .into_iter()
    .filter(|closed| *closed)
    .count();
    assert!(
        closed_at_once >= 36,
        "{closed_at_once} of the connections over the cap closed"
    );
    let started = std::time::Instant::now();
    for s in &mut idle {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(15), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection stays open: {r:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(14));
    drop(idle);
    assert_eq!(get("/health").await.unwrap(), (200, "ok\n".to_string()));
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    c.batch_execute(&format!("UPDATE {t} SET v = 'w' WHERE id <= 10"))
        .await
        .unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let status: serde_json::Value = eventually(T, "the update in /status", || async {
        let (_, body) = get("/status").await?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if v["pipelines"][0]["rows_written"].as_u64().unwrap_or(0) >= 310 {
            Ok(v)
        } else {
            Err(body)
        }
    })
    .await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["pipelines"][0]["snapshot_rows"], 300);
    assert!(
        status["actors"]["root/cdc/source"]["state"] == "running",
        "{status}"
    );
    assert!(
        status["pipelines"][0]["confirmed_lsn"]
            .as_str()
            .is_some_and(|l| l.contains('/')),
        "{status}"
    );
    let (code, metrics) = get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"))
    };
    assert!(value("tributary_rows_written_total{pipeline=\"cdc\"}") >= 310.0);
    assert!(value("tributary_commit_lag_seconds_count{pipeline=\"cdc\"}") >= 1.0);
    assert_eq!(value("tributary_actor_up{actor=\"root/cdc/sink\"}"), 1.0);
    assert_eq!(
        value("tributary_queue_capacity{pipeline=\"cdc\",queue=\"source->sink\"}"),
        32.0
    );
    assert!(value("tributary_insert_duration_seconds_count{pipeline=\"cdc\"}") >= 1.0);
    assert!(
        metrics.contains("tributary_slot_lag_bytes{pipeline=\"cdc\"}"),
        "{metrics}"
    );
    let table = |m: &str| format!("{m}{{pipeline=\"cdc\",table=\"public.{t}\"}}");
    assert!(value(&table("tributary_table_rows_written_total")) >= 310.0);
    assert!(value(&table("tributary_table_rows_read_total")) >= 310.0);
    assert!(
        metrics.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    // Every metric the dashboard and the alert rules use is one this binary exports.
    let names = std::fs::read_to_string(repo().join("docker/grafana/metric_names.txt")).unwrap();
    for n in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .fold(n, |b, s| b.strip_suffix(s).unwrap_or(b));
        assert!(
            metrics.contains(&format!("# TYPE {base} ")),
            "the dashboard uses {n}, which /metrics does not export"
        );
    }
    let (code, page) = get("/").await.unwrap();
    assert!(
        code == 200
            && page.contains("<title>tributary</title>")
            && page.contains("fetch(\"/status\")")
    );
    stop_clean(child).await;
    w.teardown().await;
}

/// A real Prometheus (Debian's 2.42) scrapes a running tributary during a CDC run; its query
/// API returns our series with the values the run produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_running_pipeline() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("scraped");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' FROM generate_series(1, 500) g"))
        .await
        .unwrap();
    let (child, port) = spawn_with_http(&w, &t, Target::Ch18);
    let prom_port = free_port();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    // The slot's position from the start, before any streamed commit is acknowledged (was 0
    // until the first status update, 10 s in: a scrape then saw none).
    let slot_at: i64 = c
        .query_one(
            "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
            &[&w.slot],
        )
        .await
        .unwrap()
        .get(0);
    let confirmed = metric(&format!("127.0.0.1:{port}"), "tributary_confirmed_lsn", "")
        .await
        .unwrap_or(0.0);
    assert!(
        confirmed > 0.0 && slot_at > 0,
        "confirmed LSN {confirmed} from the start (the slot's is {slot_at})"
    );
    let dir = repo()
        .join("target/test-configs")
        .join(unique("prometheus"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tributary\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus (scripts/install-deps.sh installs it)");
    tributary::clients::tls::install_default_provider();
    let http = reqwest::Client::new();
    let query = |q: &str| {
        let (http, url) = (
            http.clone(),
            format!("http://127.0.0.1:{prom_port}/api/v1/query"),
        );
        let q = q.to_string();
        async move {
            let v: serde_json::Value = http
                .get(format!("{url}?query={}", percent(&q)))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| v.to_string())
        }
    };
    let written = eventually(T, "Prometheus to have scraped the rows written", || async {
        let v = query("tributary_rows_written_total").await?;
        if v >= 500.0 {
            Ok(v)
        } else {
            Err(format!("{v}"))
        }
    })
    .await;
    assert!(written >= 500.0);
    assert_eq!(query("up{job=\"tributary\"}").await.unwrap(), 1.0);
    assert_eq!(query("tributary_ready").await.unwrap(), 1.0);
    assert!(query("tributary_confirmed_lsn").await.unwrap() > 0.0);
    c.batch_execute(&format!("UPDATE {t} SET v = 'w' WHERE id = 1"))
        .await
        .unwrap();
    eventually(T, "a streamed commit's lag in Prometheus", || async {
        let n = query("tributary_commit_lag_seconds_count").await?;
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    let _ = prom.kill();
    let _ = prom.wait();
    stop_clean(child).await;
    w.teardown().await;
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The status page, rendered by headless Chromium (its script fetches /status): it shows the
/// process ready, the rows written, the scheduled verify's result (`[verify] interval`) and
/// every actor of the tree running; an actor killed
/// through the admin API shows its restart on the page and in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_in_headless_chromium() {
    let w = World::new(Target::Ch26).await;
    let c = pg().await;
    let t = unique("paged");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' FROM generate_series(1, 42) g"))
        .await
        .unwrap();
    let (child, port) = spawn_with_http_and(
        &w,
        &t,
        Target::Ch26,
        &[],
        &[("TRIBUTARY_VERIFY_INTERVAL", "1s")],
    );
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let profile = repo().join("target/test-configs").join(unique("chromium"));
    let dom = eventually(T, "the page to show the rows", || async {
        let dom = render_page(port, &profile).await?;
        if dom.contains("class=\"written\">42<") {
            Ok(dom)
        } else {
            Err(dom.chars().take(400).collect())
        }
    })
    .await;
    assert!(dom.contains("id=\"ready\" class=\"yes\""), "ready is shown");
    // The first snapshot's copy, done: counted under the copies' table.
    let dom = eventually(T, "the copy shown done", || async {
        let dom = render_page(port, &profile).await?;
        if dom.contains("1 of 1 copied") {
            Ok(dom)
        } else {
            Err(dom.chars().take(400).collect())
        }
    })
    .await;
    // The scheduled verify's last result.
    let equal = format!(
        "<td>public.{t}</td><td>cdc</td><td>42</td><td>42</td><td class=\"running\">equal</td>"
    );
    eventually(T, "the verify shown equal", || async {
        let dom = render_page(port, &profile).await?;
        if dom.contains("id=\"verify\"") && dom.contains(&equal) {
            Ok(())
        } else {
            Err(dom
                .split("id=\"verify\"")
                .nth(1)
                .unwrap_or("no verify section")
                .chars()
                .take(600)
                .collect::<String>())
        }
    })
    .await;
    for actor in ["root", "root/cdc", "root/cdc/sink", "root/cdc/source"] {
        let row = dom
            .split(&format!("data-actor=\"{actor}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("{actor} missing"));
        assert!(
            row[..row.find("</tr>").unwrap_or(row.len())].contains("class=\"running\""),
            "{actor} is running on the page"
        );
    }
    // Kill the sink through the admin API: the page and /metrics count the restart.
    tributary::clients::tls::install_default_provider();
    let http = reqwest::Client::new();
    let kill = format!("http://127.0.0.1:{port}/admin/kill?actor=root/cdc/sink");
    assert_eq!(
        http.post(&kill).send().await.unwrap().status().as_u16(),
        401,
        "no token, no kill"
    );
    let r = http
        .post(&kill)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    eventually(T, "the restart on the page", || async {
        let dom = render_page(port, &profile).await?;
        let row = dom
            .split("data-actor=\"root/cdc/sink\"")
            .nth(1)
            .unwrap_or("")
            .to_string();
        let row = &row[..row.find("</tr>").unwrap_or(row.len())];
        if row.contains("class=\"restarts\">1<") && row.contains("class=\"running\"") {
            Ok(())
        } else {
            Err(row.to_string())
        }
    })
    .await;
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tributary_actor_restarts_total{actor=\"root/cdc/sink\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tributary_faults_injected_total{kind=\"kill\"} 1")
            && metrics.contains("tributary_actor_restart_reasons_total{actor=\"root/cdc/sink\",reason=\"killed\"} 1")
            && metrics.contains("tributary_actor_restart_reasons_total{actor=\"root/cdc/source\",reason=\"sibling\"} 1"),
        "{metrics}"
    );
    // The pipeline goes on after the restart.
    c.batch_execute(&format!("INSERT INTO {t} VALUES (43, 'after the kill')"))
        .await
        .unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    stop_clean(child).await;
    w.teardown().await;
}

/// The status page's DOM after headless Chromium ran its script.
async fn render_page(port: u16, profile: &std::path::Path) -> Result<String, String> {
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .await
        .map_err(|e| format!("chromium (scripts/install-deps.sh installs it): {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The binary replicating `public.<table>` with its HTTP listener on a free port.
fn spawn_with_http(w: &World, table: &str, target: Target) -> (Spawned, u16) {
    spawn_with_http_and(w, table, target, &[], &[])
}

/// As [`spawn_with_http`], with `(from, to)` replacements in the config text and extra
/// environment variables.
fn spawn_with_http_and(
    w: &World,
    table: &str,
    target: Target,
    edits: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (Spawned, u16) {
    let port = free_port();
    let cfg = write_config(&[&format!("public.{table}")], "");
    let listen = format!("127.0.0.1:{port}");
    let mut text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("${TRIBUTARY_HTTP:-127.0.0.1:9464}", &listen);
    for (from, to) in edits {
        text = text.replace(from, to);
    }
    std::fs::write(&cfg, text).unwrap();
    let mut vars = vec![
        ("TRIBUTARY_ADMIN", "true"),
        ("TRIBUTARY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    vars.extend_from_slice(env);
    (spawn_env(w, &cfg, &target.url(), &vars), port)
}

/// JSON logs: one object per line, and a line logged inside a change's trace carries its
/// trace and span ids (with span export configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_trace_ids() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("jsonlog");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let cfg = write_config(&[&format!("public.{t}")], "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("log_format = \"text\"", "log_format = \"json\"");
    std::fs::write(&cfg, text).unwrap();
    // Spans need an exporter to get ids; this one goes nowhere (export errors are harmless).
    let sink_port = free_port().to_string();
    let otlp = format!("http://127.0.0.1:{sink_port}");
    let child = spawn_env(
        &w,
        &cfg,
        &Target::Ch18.url(),
        &[
            ("TRIBUTARY_OTLP_ENDPOINT", &otlp),
            ("RUST_LOG", "tributary=debug"),
        ],
    );
    converge(&w, &c, &t, &t, "id", "id", T).await;
    c.batch_execute(&format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap();
    converge(&w, &c, &t, &t, "id", "id", T).await;
    let err = stop_clean(child).await;
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{err}");
    let inserted = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "inserted"
                && l["trace_id"].as_str().is_some_and(|id| id.len() == 32)
        })
        .unwrap_or_else(|| panic!("no `inserted` line with a trace id in:\n{err}"));
    assert_eq!(inserted["span_id"].as_str().map(str::len), Some(16));
    w.teardown().await;
}

/// `[chaos]` kills random sinks and sources while rows flow: every kill is counted, and
/// ClickHouse still ends equal to Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_actors_and_nothing_is_lost() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("chaos");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text)"))
        .await
        .unwrap();
    let (child, port) = spawn_with_http_and(
        &w,
        &t,
        Target::Ch18,
        &[
            ("max_restarts = 5", "max_restarts = 1000"),
            ("backoff_max = \"30s\"", "backoff_max = \"1s\""),
        ],
        &[
            ("TRIBUTARY_CHAOS", "true"),
            ("TRIBUTARY_CHAOS_INTERVAL", "1500ms"),
        ],
    );
    for i in 0..20i64 {
        let a = i * 200;
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO {t} SELECT g, 'v' || g FROM generate_series({a}, {b}) g; UPDATE {t} SET v = 'u' WHERE id = {a}; COMMIT;",
            b = a + 199
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    converge_or_log(&w, &c, &t, &child).await;
    tributary::clients::tls::install_default_provider();
    // At least three kills (a loaded machine may have seen fewer during the load: chaos
    // waits its interval, and skips an actor that is not running), then one more change,
    // which must land after them.
    eventually(Duration::from_secs(60), "three chaos kills", || async {
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let kills: f64 = metrics
            .lines()
            .find(|l| l.starts_with("tributary_faults_injected_total{kind=\"chaos_kill\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (kills >= 3.0)
            .then_some(())
            .ok_or(format!("chaos killed {kills} actors"))
    })
    .await;
    c.batch_execute(&format!(
        "UPDATE {t} SET v = 'after the kills' WHERE id = 1"
    ))
    .await
    .unwrap();
    converge_or_log(&w, &c, &t, &child).await;
    let err = stop_clean(child).await;
    assert!(err.contains("chaos: killing"), "kills are logged");
    w.teardown().await;
}

/// The chaos test's table converges within 120 s, or the test fails with the process's log
/// (which actor was killed last, and what the pipeline was waiting for).
async fn converge_or_log(w: &World, c: &tokio_postgres::Client, t: &str, child: &Spawned) {
    let pg_sql = format!("SELECT id, v FROM {t} ORDER BY id");
    let ch_sql = format!(
        "SELECT id, v FROM `{}`.`{t}` FINAL WHERE _is_deleted = 0 ORDER BY id",
        w.database
    );
    if let Err(e) = try_converge_sql(w, c, &pg_sql, &ch_sql, Duration::from_secs(120)).await {
        let log = String::from_utf8_lossy(&child.log.lock().unwrap()).to_string();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{e}\nthe process's last log lines:\n{}", tail.join("\n"));
    }
}

/// `tributary resync` (#15) as a user runs it beside the running service of the same config:
/// it asks the service through its admin API, which copies the table over the damaged
/// ClickHouse table and deletes the row Postgres never had; an unknown table is refused with
/// the reason and exit status 1. `tributary verify` (#18) before it names the extra row (exit
/// 1), after it says equal (exit 0), and refuses an unknown table (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_and_verify_from_the_command_line() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("cliresync");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 500) g"
    ))
    .await
    .unwrap();
    let port = free_port();
    let cfg = write_config(&[&format!("public.{t}")], "");
    let listen = format!("127.0.0.1:{port}");
    edit_config(
        &cfg,
        &[("${TRIBUTARY_HTTP:-127.0.0.1:9464}", listen.as_str())],
    );
    let admin = [
        ("TRIBUTARY_ADMIN", "true"),
        ("TRIBUTARY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let child = spawn_env(&w, &cfg, &Target::Ch18.url(), &admin);
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    w.ch.execute(&format!(
        "INSERT INTO `{}`.`{t}` (id, v, _version, _is_deleted) VALUES (9000, 'ghost', 5, 0)",
        w.database
    ))
    .await
    .unwrap();
    // `tributary <command> --config cfg --table <table>` beside the running process.
    let cli = |command: &'static str, table: String, extra: &'static [&'static str]| {
        let mut cmd = Command::new(bin());
        cmd.args([command, "--config"])
            .arg(&cfg)
            .args(["--table", &table])
            .args(extra)
            .envs(world_env(&w, &Target::Ch18.url()))
            .envs(admin);
        async move {
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    };
    let resync = |table: String| cli("resync", table, &[]);
    // `tributary verify` names the ghost (exit 1), and an unknown table (exit 2).
    let verify = |table: String| cli("verify", table, &[]);
    let out = verify(format!("public.{t}")).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("500 rows in Postgres, 501 in ClickHouse: 1 difference(s)")
            && said.contains("extra    9000"),
        "{said}"
    );
    let out = verify("public.nothing_here".into()).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing_here is not in the publication"),
        "{err}"
    );
    // The source answers once it streams.
    let out = eventually(T, "the resync to be queued", || {
        let run = resync(format!("public.{t}"));
        async move {
            let out = run.await;
            if out.status.success() {
                Ok(out)
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        }
    })
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("resync of public.{t} queued")),
        "{said}"
    );
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let out = verify(t.clone()).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains(": equal (1 range(s) compared)"), "{said}");
    // Another ghost, and a row lost: `verify --repair` has the process fix both, and says
    // the table is equal after it (exit 0).
    w.ch.execute(&format!(
        "INSERT INTO `{}`.`{t}` (id, v, _version, _is_deleted) VALUES (9001, 'ghost', 5, 0)",
        w.database
    ))
    .await
    .unwrap();
    w.ch.execute(&format!(
        "INSERT INTO `{0}`.`{t}` (id, v, _version, _is_deleted) SELECT 7, '', max(_version) + 1, 1 FROM `{0}`.`{t}`",
        w.database
    ))
    .await
    .unwrap();
    // The damage's versions are above every row's; a repair reads at the WAL position now,
    // which must be beyond them (as it is beyond any change the stream could have lost):
    // on an idle database the WAL has to move once.
    move_wal(&c).await;
    let out = cli("verify", t.clone(), &["--repair"]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("500 rows in Postgres, 500 in ClickHouse: equal")
            && said.contains("repaired 2 key(s) (")
            && said.contains("1 row(s) copied from Postgres, 1 deleted from ClickHouse")
            && said.contains("was extra    9001"),
        "{said}"
    );
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    let out = resync("public.nothing_here".into()).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a table this pipeline replicates"),
        "{err}"
    );
    stop_clean(child).await;
    w.teardown().await;
}

/// SIGKILL of the binary during the first snapshot of three tables, three times, while writes
/// go on (#15): each start resumes every table (every key range) after its last recorded
/// chunk (the rows copied over all runs stay near the tables' size: nothing is copied again
/// from zero), and ClickHouse FINAL equals Postgres for every table. A kill costs at most what
/// was read past the last record: `RECORDS_AHEAD` + 1 chunks per copy running (two workers,
/// set here: the default is one per core and one more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_multi_table_snapshot() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let tables: Vec<String> = (0..3).map(|i| unique(&format!("snapkill{i}"))).collect();
    for t in &tables {
        c.batch_execute(&format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, v text);
             INSERT INTO {t} SELECT g, repeat(md5(g::text), 8) FROM generate_series(1000001, 1100000) g;"
        ))
        .await
        .unwrap();
    }
    let names: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = write_config(&refs, "");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    edit_config(
        &cfg,
        &[
            ("${TRIBUTARY_HTTP:-127.0.0.1:9464}", listen.as_str()),
            (
                "\nchunk_rows = 2000",
                "\nchunk_rows = 2000\nsnapshot_chunk_rows = 2000\nsnapshot_workers = 2",
            ),
        ],
    );
    let load = tokio::spawn(churn(tables[1].clone(), 60, 50, Duration::from_millis(50)));
    let mut copied = 0.0;
    for _ in 0..3 {
        let mut child = spawn(&w, &cfg, &Target::Ch18.url());
        let n = eventually(T, "the copy to be under way", || async {
            match metric(&listen, "tributary_snapshot_rows_total", "").await {
                Some(n) if n >= 60_000.0 => Ok(n),
                n => Err(format!("{n:?} rows copied")),
            }
        })
        .await;
        child.child.kill().unwrap(); // SIGKILL: no drain, nothing recorded on the way out
        child.child.wait().unwrap();
        copied += n;
    }
    load.await.unwrap();
    let child = spawn(&w, &cfg, &Target::Ch18.url());
    for t in &tables {
        converge(&w, &c, t, t, "id, v", "id", T).await;
    }
    copied += metric(&listen, "tributary_snapshot_rows_total", "")
        .await
        .unwrap_or(0.0);
    eprintln!("rows copied over four starts: {copied}");
    // 300k rows; from zero at each start it would be 480k or more; resumed, 300k and at most
    // 3 kills × 2 copies × 5 chunks of 2000 (60k) read again.
    assert!(
        copied < 400_000.0,
        "{copied} rows copied over four starts: a start copied from zero"
    );
    stop_clean(child).await;
    w.teardown().await;
}

/// Creating the slot waits for every transaction with an id that runs when it begins (#17):
/// one left open in another session holds the pipeline's start, and the log says so (after
/// 10 s, naming where to look) instead of staying silent; once it ends, the pipeline starts and
/// copies the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_waiting_for_an_open_transaction_says_so() {
    let w = World::new(Target::Ch18).await;
    let c = pg().await;
    let t = unique("slotwait");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} VALUES (1, 'a')"
    ))
    .await
    .unwrap();
    // A transaction with an id, left open.
    let idle = pg().await;
    idle.batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();
    let cfg = write_config(&[&format!("public.{t}")], "");
    let child = spawn(&w, &cfg, &Target::Ch18.url());
    eventually(Duration::from_secs(40), "the wait to be logged", || async {
        let log = String::from_utf8_lossy(&child.log.lock().unwrap()).into_owned();
        if log.contains("creating the replication slot waits") && log.contains("pg_stat_activity") {
            Ok(())
        } else {
            Err(log.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
        }
    })
    .await;
    idle.batch_execute("COMMIT").await.unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    stop_clean(child).await;
    w.teardown().await;
}

/// This process's role in its first pipeline, from its /status (`?` while it does not answer).
async fn role(port: u16) -> String {
    role_of(port, "").await
}

/// Waits until `pipeline` (empty: the first) of the process at `port` has the role `want`.
async fn await_role(port: u16, pipeline: &str, want: &str, within: Duration) {
    let what = format!(
        "{} on :{port} to be {want}",
        if pipeline.is_empty() {
            "the pipeline"
        } else {
            pipeline
        }
    );
    eventually(within, &what, || async {
        match role_of(port, pipeline).await {
            r if r == want => Ok(()),
            r => Err(r),
        }
    })
    .await
}

/// How long after `t0` the row `id` of `t` is live in ClickHouse (within `timeout`).
async fn visible_after(w: &World, t: &str, id: i64, t0: std::time::Instant) -> Duration {
    eventually(T, &format!("row {id} in ClickHouse"), || async {
        let rows = w
            .try_ch_rows(&format!(
                "SELECT count() FROM `{}`.`{t}` FINAL WHERE id = {id} AND _is_deleted = 0",
                w.database
            ))
            .await?;
        match rows.first().map(String::as_str) {
            Some("1") => Ok(t0.elapsed()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Active and standby (#22): two processes run one config. The second waits as the standby
/// (/status, /metrics and /ready say so), also while the active streams one large
/// transaction (its walsender reads no reply meanwhile). During a load, the active's machine is cut off (a
/// partition: nothing passes, not even a close; the standby ends its sessions after
/// `takeover_after`), and later the next active is killed with SIGKILL: each time the other
/// process streams again within 5 s, and ClickHouse FINAL equals Postgres.
///
/// A new active's walsender first decodes again, sending nothing, the WAL between the slot's
/// restart point and its confirmed position (`tributary_slot_restart_bytes`): a transaction
/// held open keeps the large one's WAL there (the gauge shows it), and once it ends a
/// checkpoint lets the restart point move on, so the takeovers measure tributary's own time
/// (measured: 104 MB still to decode again added about 1.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_5s_of_a_partition_or_a_sigkill() {
    let target = Target::Ch18;
    let w = World::new(target).await;
    let c = pg().await;
    let t = unique("standby");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 's' || g FROM generate_series(1, 5000) g"))
        .await
        .unwrap();
    let proxy = proxy::Proxy::start(&format!("127.0.0.1:{}", var("TRIBUTARY_TEST_PG_PORT"))).await;
    let through_proxy = proxy.port.to_string();
    // The slot sampled every second (the gauges below).
    let every_second = [("status_interval = \"10s\"", "status_interval = \"1s\"")];
    let (a, a_port) =
        spawn_with_http_and(&w, &t, target, &every_second, &[("PGPORT", &through_proxy)]);
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    assert_eq!(role(a_port).await, "active");
    let (b, b_port) = spawn_with_http_and(&w, &t, target, &every_second, &[]);
    await_role(b_port, "", "standby", T).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{b_port}/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready (standby)\n");
    let standby = |port: u16| async move {
        metric(&format!("127.0.0.1:{port}"), "tributary_standby", "").await
    };
    assert_eq!(standby(b_port).await, Some(1.0));
    assert_eq!(standby(a_port).await, Some(0.0));

    // A transaction with a change, held open: the slot's restart point cannot pass its start.
    let held = pg().await;
    held.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (-3, 'held open')"))
        .await
        .unwrap();
    // One large transaction: its walsender streams it for seconds without reading a reply
    // (it reads them only between waits): the standby must not take that for silence.
    c.batch_execute(&format!(
        "INSERT INTO {t} SELECT g, repeat('L', 40) FROM generate_series(100000, 700000) g"
    ))
    .await
    .unwrap();
    let roles_held = async {
        loop {
            let (ra, rb) = (role(a_port).await, role(b_port).await);
            if (ra.as_str(), rb.as_str()) != ("active", "standby") {
                return format!("{ra}/{rb}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = converge(&w, &c, &t, &t, "id, v", "id", T) => {}
        r = roles_held => panic!("the roles changed while the active streamed a large transaction: {r}"),
    }
    let restart_bytes = |port: u16| async move {
        metric(
            &format!("127.0.0.1:{port}"),
            "tributary_slot_restart_bytes",
            "",
        )
        .await
    };
    // Its WAL is what a restart would decode again: the active's gauge says so.
    eventually(
        T,
        "the restart gauge to hold the large transaction",
        || async {
            match restart_bytes(a_port).await {
                Some(b) if b >= 32.0 * 1024.0 * 1024.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    held.batch_execute("COMMIT").await.unwrap();
    // Small again for the rest (a TRUNCATE is one change to stream).
    c.batch_execute(&format!("TRUNCATE {t}")).await.unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    // A checkpoint logs the running transactions (as the background writer does every 15 s):
    // the restart point moves past the large transaction once the active confirms past it.
    // Again on every look (about as often as the gauge is sampled): another test's
    // transaction open at one checkpoint holds the point back until the next.
    let restart_before = eventually(T, "the restart point to move on", || async {
        c.batch_execute("CHECKPOINT")
            .await
            .map_err(|e| e.to_string())?;
        match restart_bytes(a_port).await {
            Some(b) if b < 8.0 * 1024.0 * 1024.0 => Ok(b),
            other => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(format!("{other:?}"))
            }
        }
    })
    .await;

    let load = tokio::spawn(churn(t.clone(), 120, 200, Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The active's network is gone.
    let t0 = std::time::Instant::now();
    proxy.set_partitioned(true);
    c.batch_execute(&format!(
        "INSERT INTO {t} VALUES (-1, 'after the partition')"
    ))
    .await
    .unwrap();
    await_role(b_port, "", "active", Duration::from_secs(15)).await;
    let partition_role = t0.elapsed();
    let partition_row = visible_after(&w, &t, -1, t0).await;
    proxy.set_partitioned(false);
    // The old active finds its sessions ended, and waits as the standby now.
    await_role(a_port, "", "standby", T).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut b = b;
    let t1 = std::time::Instant::now();
    b.child.kill().unwrap(); // SIGKILL: no drain, no final confirmation
    b.child.wait().unwrap();
    c.batch_execute(&format!("INSERT INTO {t} VALUES (-2, 'after the kill')"))
        .await
        .unwrap();
    await_role(a_port, "", "active", Duration::from_secs(15)).await;
    let kill_role = t1.elapsed();
    let kill_row = visible_after(&w, &t, -2, t1).await;
    eprintln!(
        "takeover: after a partition {partition_role:?} (a change made then visible after {partition_row:?}); after SIGKILL {kill_role:?} (visible after {kill_row:?}); WAL to decode again before the partition {restart_before} bytes"
    );
    load.await.unwrap();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    for (what, took) in [("partition", partition_row), ("SIGKILL", kill_row)] {
        assert!(
            took <= Duration::from_secs(5),
            "after a {what}, a change made then was visible only after {took:?}"
        );
    }
    let err = stop_clean(a).await;
    assert!(err.contains("taking over"), "{err}");
    w.teardown().await;
}

/// The role of `pipeline` (empty: the first) in a process's /status (`?` while it does not
/// answer).
async fn role_of(port: u16, pipeline: &str) -> String {
    tributary::clients::tls::install_default_provider();
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/status")).await else {
        return "?".into();
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["pipelines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| pipeline.is_empty() || p["name"] == pipeline)
        .and_then(|p| p["role"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// The Kafka path as a standby pair (#22): two processes of config/kafka.toml (Postgres →
/// Kafka, Kafka → ClickHouse). The second is the standby of the slot, and a member of the
/// consumer group with no partition (a standby too); SIGKILL of the first during a load: the
/// second streams from the slot and, once the group hands it the partition, writes to
/// ClickHouse; FINAL equals Postgres. The time is measured and printed: with tansu 0.6 it is
/// 3 s, or about 20 s when the broker's rebalance waits for the dead member (it was the
/// group's leader) and ends with an empty assignment, which the watchdog then restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_pair_takes_over_through_the_slot_and_the_group() {
    let target = Target::Ch18;
    let w = World::new(target).await;
    let n = common::kafka::KafkaNames::new();
    let c = pg().await;
    let t = unique("kpair");
    c.batch_execute(&format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 's' || g FROM generate_series(1, 2000) g"))
        .await
        .unwrap();
    let brokers = common::kafka::brokers();
    let spawn_one = || {
        let port = free_port();
        let cfg = write_config_from("config/kafka.toml", &[&format!("public.{t}")], "");
        edit_config(
            &cfg,
            &[
                ("${TRIBUTARY_HTTP:-127.0.0.1:9464}", &format!("127.0.0.1:{port}")),
                (
                    "\"socket.keepalive.enable\" = \"true\"",
                    "\"socket.keepalive.enable\" = \"true\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"",
                ),
            ],
        );
        let env = [
            ("KAFKA_BROKERS", brokers.as_str()),
            ("TRIBUTARY_TOPIC_PREFIX", n.prefix.as_str()),
            ("TRIBUTARY_GROUP", n.group.as_str()),
            ("TRIBUTARY_DLQ", n.dlq.as_str()),
            ("TRIBUTARY_STATE_TOPIC", n.state.as_str()),
        ];
        (spawn_env(&w, &cfg, &target.url(), &env), port)
    };
    let (a, a_port) = spawn_one();
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    await_role(a_port, "cdc_to_kafka", "active", T).await;
    await_role(a_port, "kafka_to_ch", "active", T).await;
    let (b, b_port) = spawn_one();
    await_role(b_port, "cdc_to_kafka", "standby", T).await;
    // One partition: the group gives it to one member.
    await_role(b_port, "kafka_to_ch", "standby", T).await;

    let load = tokio::spawn(churn(t.clone(), 60, 100, Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut a = a;
    let t0 = std::time::Instant::now();
    a.child.kill().unwrap(); // SIGKILL: no drain, no LeaveGroup
    a.child.wait().unwrap();
    c.batch_execute(&format!("INSERT INTO {t} VALUES (-1, 'after the kill')"))
        .await
        .unwrap();
    let visible = visible_after(&w, &t, -1, t0).await;
    eprintln!("kafka pair: a change made at the SIGKILL was in ClickHouse after {visible:?}");
    load.await.unwrap();
    let guard = PrintLogOnPanic(b.log.clone());
    converge(&w, &c, &t, &t, "id, v", "id", T).await;
    std::mem::forget(guard);
    assert_eq!(role_of(b_port, "cdc_to_kafka").await, "active");
    let err = stop_clean(b).await;
    assert!(err.contains("taking over"), "{err}");
    w.teardown().await;
}
