//! `cargo bench --bench cdc -- --snapshot [--tables 4] [--rows 1000000] [--target ch18|ch26]
//! [--workers N]`: the first snapshot of several filled tables, next to a plain copy of the same
//! rows into the same server in the same run.
//!
//! 1. `--tables` tables of `--rows` rows each (bigint key, 64-char text, numeric(12,2),
//!    timestamptz), loaded and vacuumed (hint bits set, `reltuples` known) before anything is
//!    timed; one more, empty, table that is written while the snapshot runs.
//! 2. tributary (the release binary) starts on a config of config/cdc.toml's shape with all of
//!    them: time from the process start until its `/status` shows every copy done (slot
//!    creation, connections and the final flushes included). Meanwhile a row is committed into
//!    the empty table every 50 ms and its commit → visible latency measured (the streaming lag
//!    of the other tables during the snapshot). Peak RSS (VmHWM) and CPU of tributary; every
//!    table's `count() FINAL` must equal its rows.
//! 3. The baseline, same server, same rows: `psql -c "COPY (…) TO STDOUT" | curl --data-binary
//!    @- "…INSERT … FORMAT TabSeparated"` into a table of the same structure (`CREATE TABLE … AS`
//!    tributary's), over the same HTTP interface tributary uses; one table after another, then
//!    all tables at once.
//! 4. A report (rows/s, ratios to both baselines, lag, RSS, CPU) and the same as one JSON line.
//!
//! Must never: time the load, or leave its tables, slot, publication or database behind (the
//! caller's cleanup drops them).

use super::{tributary_bin, unique, Args, Cleanup, Pg, Res, Tributary};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tributary::clients::clickhouse::ChClient;
use tributary::config::Config;
use tributary_testkit::repo;

pub(super) fn create_sql(t: &str) -> String {
    format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12,2) NOT NULL, \
         created_at timestamptz NOT NULL)"
    )
}

/// The rows of table `t`, in a form ClickHouse's TabSeparated reads for the types tributary
/// gives them: the timestamp without its zone suffix (DateTime64), or as microseconds since
/// the epoch where the server has no DateTime64 (18.16: Int64).
fn copy_sql(t: &str, micros: bool) -> String {
    let ts = if micros {
        "(extract(epoch FROM created_at) * 1000000)::bigint"
    } else {
        "created_at AT TIME ZONE 'UTC'"
    };
    format!("COPY (SELECT id, payload, amount, {ts} FROM {t}) TO STDOUT")
}

fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The copies of tributary's `/status` at `listen`: (done, all, rows copied).
async fn copies(http: &reqwest::Client, listen: &str) -> Option<(usize, usize, u64)> {
    let v: serde_json::Value = http
        .get(format!("http://{listen}/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let list = v["pipelines"][0]["copies"].as_array()?;
    let done = list.iter().filter(|c| c["state"] == "done").count();
    let rows = list
        .iter()
        .map(|c| c["rows_copied"].as_u64().unwrap_or(0))
        .sum();
    Some((done, list.len(), rows))
}

/// One `COPY | curl` pipe per table, all at once; seconds until every one has ended.
async fn baseline(
    pg: &Pg,
    url: &str,
    db: &str,
    tables: &[String],
    at_once: bool,
    micros: bool,
) -> Res<f64> {
    let started = Instant::now();
    let mut pending = Vec::new();
    for t in tables {
        let query = format!(
            "INSERT INTO `{db}`.`copy_{t}` (id, payload, amount, created_at) FORMAT TabSeparated"
        );
        let enc: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let pipe = format!(
            "set -o pipefail; psql -X -q -v ON_ERROR_STOP=1 -h {} -p {} -U {} -d {} -c \"{}\" | curl -sS --fail-with-body --data-binary @- '{url}/?query={enc}'",
            pg.host,
            pg.port,
            pg.user,
            pg.database,
            copy_sql(t, micros)
        );
        let mut cmd = tokio::process::Command::new("bash");
        cmd.args(["-c", &pipe])
            .env("PGPASSWORD", &pg.password)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let run = async move {
            let out = cmd.output().await.map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "baseline pipe failed: {}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ))
            }
        };
        if at_once {
            pending.push(tokio::spawn(run));
        } else {
            run.await?;
        }
    }
    for p in pending {
        p.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Fills each of `tables` with `rows` rows (see [`create_sql`]), vacuumed and analyzed (hint
/// bits set, `reltuples` known) so that nothing later pays for it.
pub(super) async fn load_tables(
    c: &tokio_postgres::Client,
    tables: &[String],
    rows: u64,
) -> Res<()> {
    for t in tables {
        c.batch_execute(&format!(
            "INSERT INTO {t} SELECT g, md5(g::text) || md5((g + 1)::text), (g % 1000000) / 100.0, \
             timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' \
             FROM generate_series(1, {rows}) g"
        ))
        .await
        .map_err(|e| format!("load {t}: {e:?}"))?;
        // VACUUM runs outside a transaction block: a statement of its own.
        c.batch_execute(&format!("VACUUM ANALYZE {t}"))
            .await
            .map_err(|e| format!("vacuum {t}: {e:?}"))?;
    }
    Ok(())
}

/// tributary set up (not started) on `tables`: its config of config/cdc.toml's shape with a
/// fresh slot, publication and ClickHouse database (registered for cleanup), and the
/// ClickHouse client.
pub(super) struct Setup {
    pub url: String,
    pub db: String,
    pub listen: String,
    pub cfg: Config,
    pub ch: ChClient,
    pub ch_version: String,
    pub workers: usize,
    pub log_path: std::path::PathBuf,
    pub trib: Tributary,
}

pub(super) async fn configure(
    args: &Args,
    clean: &mut Cleanup,
    pg: &Pg,
    vars: &HashMap<String, String>,
    tables: &[String],
    name: &str,
) -> Res<Setup> {
    // tributary on all of them.
    let publication = unique("bench_snap_pub");
    let slot = unique("bench_snap_slot");
    let db = unique("bench_db");
    let url = if args.target == "ch18" {
        vars["TRIBUTARY_TEST_CH18_URL"].clone()
    } else {
        vars["TRIBUTARY_TEST_CH26_URL"].clone()
    };
    let listen = format!("127.0.0.1:{}", free_port()?);
    let list: Vec<String> = tables.iter().map(|t| format!("\"public.{t}\"")).collect();
    let template = std::fs::read_to_string(repo().join("config/cdc.toml"))
        .map_err(|e| format!("config/cdc.toml: {e}"))?;
    let mut replaced = false;
    let text: String = template
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("tables =") {
                replaced = true;
                let mut line = format!("tables = [{}]", list.join(", "));
                if let Some(w) = args.workers {
                    line.push_str(&format!("\nsnapshot_workers = {w}"));
                }
                if let Some(n) = args.chunk_rows {
                    line.push_str(&format!("\nsnapshot_chunk_rows = {n}"));
                }
                line
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !replaced {
        return Err("config/cdc.toml has no `tables = ...` line".into());
    }
    let env: Vec<(String, String)> = [
        ("PGHOST", pg.host.clone()),
        ("PGPORT", pg.port.clone()),
        ("PGUSER", pg.user.clone()),
        ("PGPASSWORD", pg.password.clone()),
        ("PGSSLMODE", "disable".to_string()),
        ("PGDATABASE", pg.database.clone()),
        ("TRIBUTARY_SLOT", slot.clone()),
        ("TRIBUTARY_PUBLICATION", publication.clone()),
        ("CLICKHOUSE_URL", url.clone()),
        ("CLICKHOUSE_DATABASE", db.clone()),
        ("TRIBUTARY_HTTP", listen.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cfg = Config::from_str_named(&text, "bench config", &lookup)
        .map_err(|e| format!("bench config: {e}"))?;
    let workers = cfg.pipelines[0]
        .postgres
        .as_ref()
        .map_or(0, |p| p.snapshot_workers);
    let tmp = repo().join("target/tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let cfg_path = tmp.join(format!("{name}.toml"));
    let log_path = tmp.join(format!("{name}.log"));
    std::fs::write(&cfg_path, &text).map_err(|e| e.to_string())?;
    clean.files.push(cfg_path.clone());
    let ch = ChClient::connect(&cfg.pipelines[0].clickhouse)
        .await
        .map_err(|e| format!("connect to ClickHouse {url}: {e}"))?;
    let ch_version = ch
        .query_text("SELECT version()")
        .await
        .map_err(|e| e.to_string())?
        .trim()
        .to_string();
    clean.ch = Some((ch.clone(), db.clone()));
    clean.publications.push(publication.clone());
    clean.slots.push(slot.clone());
    let trib = Tributary {
        bin: tributary_bin()?,
        cfg: cfg_path,
        env,
        log: log_path.clone(),
        child: None,
        peak_rss_kib: 0,
        cpu_secs: 0.0,
    };
    Ok(Setup {
        url,
        db,
        listen,
        cfg,
        ch,
        ch_version,
        workers,
        log_path,
        trib,
    })
}

pub async fn run(
    args: &Args,
    clean: &mut Cleanup,
    pg: &Pg,
    vars: &HashMap<String, String>,
) -> Res<bool> {
    let c = pg.connect().await?;
    let n_tables = args.tables;
    let rows = args.rows;
    let total = n_tables * rows;
    let tables: Vec<String> = (0..n_tables).map(|_| unique("bench_snap")).collect();
    let live = unique("bench_snap_live");
    for t in tables.iter().chain(std::iter::once(&live)) {
        clean.tables.push(t.clone());
        c.batch_execute(&create_sql(t))
            .await
            .map_err(|e| format!("create {t}: {e}"))?;
    }
    eprintln!("bench: snapshot: loading {n_tables} tables × {rows} rows ...");
    let load = Instant::now();
    load_tables(&c, &tables, rows).await?;
    eprintln!(
        "bench: snapshot: loaded in {:.1} s",
        load.elapsed().as_secs_f64()
    );
    let all: Vec<String> = tables
        .iter()
        .chain(std::iter::once(&live))
        .cloned()
        .collect();
    let Setup {
        url,
        db,
        listen,
        ch,
        ch_version,
        workers,
        log_path,
        mut trib,
        ..
    } = configure(args, clean, pg, vars, &all, &live).await?;
    eprintln!("bench: snapshot: tributary ({workers} workers) ...");
    let started = Instant::now();
    trib.start()?;
    tributary::clients::tls::install_default_provider();
    let http = reqwest::Client::new();
    // Rows committed into the live table while the copies run, and when each became visible.
    let mut committed: Vec<(i64, Instant)> = Vec::new();
    let mut lags: Vec<f64> = Vec::new();
    let mut next_write = Instant::now();
    let mut seen_max = 0i64;
    let secs = loop {
        trib.check_alive("during the snapshot")?;
        if started.elapsed() > Duration::from_secs(1800) {
            return Err("the snapshot did not end within 30 minutes".into());
        }
        if let Some((done, all, _)) = copies(&http, &listen).await {
            if all > 0 && done == all {
                break started.elapsed().as_secs_f64();
            }
            // Once streaming (the copies are registered), a row every 50 ms into the live table.
            if all > 0 && Instant::now() >= next_write {
                let id = committed.len() as i64 + 1;
                c.batch_execute(&format!(
                    "INSERT INTO {live} VALUES ({id}, 'live', 1, now())"
                ))
                .await
                .map_err(|e| format!("write {live}: {e}"))?;
                committed.push((id, Instant::now()));
                next_write = Instant::now() + Duration::from_millis(50);
            }
        }
        if !committed.is_empty() {
            let got = ch
                .query_text(&format!("SELECT max(id) FROM `{db}`.`{live}`"))
                .await
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0);
            if got > seen_max {
                let now = Instant::now();
                for (_, at) in committed
                    .iter()
                    .filter(|(id, _)| *id > seen_max && *id <= got)
                {
                    lags.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                }
                seen_max = got;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rows_per_s = total as f64 / secs;
    let (_, exit_ok) = trib.stop().await;
    let mut exact = true;
    for t in &tables {
        let n: u64 = ch
            .query_text(&format!("SELECT count() FROM `{db}`.`{t}` FINAL"))
            .await
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .unwrap_or(0);
        if n != rows {
            eprintln!("bench: snapshot: {t} has {n} rows in ClickHouse, not {rows}");
            exact = false;
        }
    }

    // The baseline into tables of the same structure.
    for t in &tables {
        ch.execute(&format!("CREATE TABLE `{db}`.`copy_{t}` AS `{db}`.`{t}`"))
            .await
            .map_err(|e| format!("create the baseline's table: {e}"))?;
    }
    eprintln!("bench: snapshot: baseline, one table after another ...");
    let micros = ch
        .query_text(&format!(
            "SELECT type FROM system.columns WHERE database = '{db}' AND table = '{}' AND name = 'created_at'",
            tables[0]
        ))
        .await
        .map_err(|e| e.to_string())?
        .trim()
        == "Int64";
    let serial = baseline(pg, &url, &db, &tables, false, micros).await?;
    for t in &tables {
        ch.execute(&format!("TRUNCATE TABLE `{db}`.`copy_{t}`"))
            .await
            .map_err(|e| e.to_string())?;
    }
    eprintln!("bench: snapshot: baseline, all tables at once ...");
    let parallel = baseline(pg, &url, &db, &tables, true, micros).await?;
    let copied: u64 = ch
        .query_text(&format!(
            "SELECT sum(rows) FROM system.parts WHERE database = '{db}' AND table LIKE 'copy\\_%' AND active"
        ))
        .await
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .unwrap_or(0);
    if copied != total {
        eprintln!("bench: snapshot: the baseline wrote {copied} rows, not {total}");
    }
    let (serial_rps, parallel_rps) = (total as f64 / serial, total as f64 / parallel);
    let (p50, p99) = (quantile(&mut lags, 0.5), quantile(&mut lags, 0.99));
    let mb = trib.peak_rss_kib as f64 / 1024.0;
    println!(
        "snapshot bench: {n_tables} tables × {rows} rows into ClickHouse {ch_version} ({})",
        args.target
    );
    println!("  tributary, {workers} workers:        {rows_per_s:>10.0} rows/s  ({secs:.2} s from process start to every copy done)");
    println!("  COPY | curl, one table at a time: {serial_rps:>10.0} rows/s  ({serial:.2} s)  tributary = {:.2}×", rows_per_s / serial_rps);
    println!("  COPY | curl, all tables at once:  {parallel_rps:>10.0} rows/s  ({parallel:.2} s)  tributary = {:.2}×", rows_per_s / parallel_rps);
    println!(
        "  streaming lag of another table during the snapshot: p50 {p50:.0} ms, p99 {p99:.0} ms ({} rows)",
        lags.len()
    );
    println!(
        "  tributary: peak RSS {mb:.1} MB, {:.2} CPU-s ({:.2} µs per row); exit on SIGTERM {}; every table exact: {exact}",
        trib.cpu_secs,
        trib.cpu_secs * 1e6 / total as f64,
        if exit_ok { "0" } else { "FAILED" }
    );
    println!(
        "{{\"bench\":\"cdc_snapshot\",\"target\":\"{}\",\"clickhouse\":\"{ch_version}\",\"tables\":{n_tables},\"rows\":{rows},\"workers\":{workers},\"rows_per_s\":{rows_per_s:.0},\"secs\":{secs:.3},\"copy_serial_rows_per_s\":{serial_rps:.0},\"copy_parallel_rows_per_s\":{parallel_rps:.0},\"ratio_serial\":{:.3},\"ratio_parallel\":{:.3},\"live_lag_p50_ms\":{p50:.0},\"live_lag_p99_ms\":{p99:.0},\"peak_rss_mb\":{mb:.1},\"cpu_secs\":{:.3},\"exact\":{exact},\"exit_ok\":{exit_ok}}}",
        args.target,
        rows_per_s / serial_rps,
        rows_per_s / parallel_rps,
        trib.cpu_secs
    );
    if std::env::var("TRIBUTARY_BENCH_LOG").is_err() {
        clean.files.push(log_path);
    }
    Ok(exact && exit_ok && copied == total)
}
