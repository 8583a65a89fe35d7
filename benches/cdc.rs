//! The CDC benchmark: how close the pipeline (PostgreSQL → tributary → ClickHouse) comes to
//! the source limit, measured in the same run on the same servers.
//!
//! `cargo bench --bench cdc -- [--rows N] [--target ch18|ch26] [--txn-rows 1000] [--keep]`
//!
//! 1. Source limit: a fresh table, publication and pgoutput slot (created with SQL); N rows are
//!    written in transactions of `--txn-rows`, then `pg_recvlogical` (as it is, proto_version 1,
//!    output to /dev/null) drains the slot up to the WAL position after the load. Rows/s =
//!    N / drain time. This is what one walsender can stream here, with no sink at all.
//! 2. Pipeline: `tributary run` (the release binary) as a subprocess, with a config of
//!    config/cdc.toml's shape pointed at a fresh table, slot, publication and ClickHouse
//!    database. Once its (empty) initial snapshot is done, the same N rows are written while it
//!    runs. Measured: end-to-end rows/s (load start → ClickHouse count() = N), commit → visible
//!    latency per transaction (ClickHouse max(id) polled every ~20 ms), peak RSS (VmHWM) and
//!    CPU time of the tributary process. SIGTERM stops it (it drains and exits 0).
//! 3. A report, and the same as one JSON line. Exits non-zero if ClickHouse does not end up with
//!    exactly the N rows (lost or duplicated rows) or tributary did not exit cleanly. The
//!    targets (≥ 0.8 of the source limit, ≤ 150 MB RSS) are reported, not asserted.
//!
//! Everything it creates (slots, publications, tables, the ClickHouse database) is dropped at
//! the end, also after a failure (unless `--keep`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use tributary::clickhouse::ChClient;
use tributary::config::Config;

type Res<T> = Result<T, String>;

#[derive(Debug, Clone)]
struct Args {
    rows: u64,
    target: String,
    txn_rows: u64,
    keep: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args { rows: 1_000_000, target: "ch18".into(), txn_rows: 1000, keep: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{name} needs a value"));
        match key.as_str() {
            // cargo bench passes --bench to harness=false benches.
            "--bench" => {}
            "--rows" => a.rows = value("--rows")?.replace('_', "").parse().map_err(|e| format!("--rows: {e}"))?,
            "--txn-rows" => a.txn_rows = value("--txn-rows")?.replace('_', "").parse().map_err(|e| format!("--txn-rows: {e}"))?,
            "--target" => a.target = value("--target")?,
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!("cargo bench --bench cdc -- [--rows N (1000000)] [--target ch18|ch26] [--txn-rows 1000] [--keep]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if a.target != "ch18" && a.target != "ch26" {
        return Err(format!("--target must be ch18 or ch26, not {:?}", a.target));
    }
    if a.rows == 0 || a.txn_rows == 0 {
        return Err("--rows and --txn-rows must be positive".into());
    }
    Ok(a)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test servers' addresses: target/services/env, after `scripts/services.sh start` when
/// the file is missing or a server does not answer.
fn services() -> Res<HashMap<String, String>> {
    let script = repo().join("scripts/services.sh");
    let dir = std::env::var("TRIBUTARY_SERVICES_DIR").map(PathBuf::from).unwrap_or_else(|_| repo().join("target/services"));
    let env_file = dir.join("env");
    let healthy = env_file.exists()
        && Command::new(&script).arg("status").stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if !healthy {
        eprintln!("bench: starting the test servers (scripts/services.sh start) ...");
        let out = Command::new(&script).arg("start").output().map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("scripts/services.sh start failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let text = std::fs::read_to_string(&env_file).map_err(|e| format!("{}: {e}", env_file.display()))?;
    let vars: HashMap<String, String> =
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for k in ["TRIBUTARY_TEST_PG_PORT", "TRIBUTARY_TEST_PG_USER", "TRIBUTARY_TEST_PG_DATABASE", "TRIBUTARY_TEST_CH18_URL", "TRIBUTARY_TEST_CH26_URL"] {
        if !vars.contains_key(k) {
            return Err(format!("{k} missing from {}", env_file.display()));
        }
    }
    Ok(vars)
}

struct Pg {
    host: String,
    port: String,
    user: String,
    password: String,
    database: String,
    bin: PathBuf,
}

impl Pg {
    fn from(vars: &HashMap<String, String>) -> Pg {
        let g = |k: &str, d: &str| vars.get(k).cloned().unwrap_or_else(|| d.to_string());
        Pg {
            host: g("TRIBUTARY_TEST_PG_HOST", "127.0.0.1"),
            port: g("TRIBUTARY_TEST_PG_PORT", "5432"),
            user: g("TRIBUTARY_TEST_PG_USER", "postgres"),
            password: g("TRIBUTARY_TEST_PG_PASSWORD", ""),
            database: g("TRIBUTARY_TEST_PG_DATABASE", "postgres"),
            bin: PathBuf::from(g("TRIBUTARY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")),
        }
    }

    async fn connect(&self) -> Res<Client> {
        let url = format!("host={} port={} user={} password={} dbname={}", self.host, self.port, self.user, self.password, self.database);
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| format!("connect to Postgres: {e}"))?;
        tokio::spawn(conn);
        Ok(c)
    }
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    format!("{prefix}_{}_{t}", std::process::id())
}

/// The benchmark table: bigint key, 64-char text, numeric, timestamptz, a small jsonb.
fn create_table_sql(t: &str) -> String {
    format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12,2) NOT NULL, \
         created_at timestamptz NOT NULL, attrs jsonb)"
    )
}

/// Writes ids 1..=n in transactions of `txn_rows` (one INSERT ... SELECT generate_series per
/// autocommit transaction), as fast as one connection can. Returns, per transaction, its last
/// id and the moment its COMMIT returned, and the whole load's duration.
async fn load(c: &Client, t: &str, n: u64, txn_rows: u64) -> Res<(Vec<(i64, Instant)>, Duration)> {
    let stmt = c
        .prepare(&format!(
            "INSERT INTO {t} (id, payload, amount, created_at, attrs) \
             SELECT g, md5(g::text) || md5((g + 1)::text), (g % 1000000) / 100.0, \
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', \
                    jsonb_build_object('k', g % 10, 'tag', 'bench') \
             FROM generate_series($1::bigint, $2::bigint) g"
        ))
        .await
        .map_err(|e| format!("prepare the load: {e}"))?;
    let mut commits = Vec::with_capacity((n / txn_rows + 1) as usize);
    let start = Instant::now();
    let mut next = 1u64;
    while next <= n {
        let last = (next + txn_rows - 1).min(n);
        c.execute(&stmt, &[&(next as i64), &(last as i64)]).await.map_err(|e| format!("load rows {next}..{last}: {e}"))?;
        commits.push((last as i64, Instant::now()));
        next = last + 1;
    }
    Ok((commits, start.elapsed()))
}

/// What the run created, dropped at the end whatever happened.
#[derive(Default)]
struct Cleanup {
    slots: Vec<String>,
    publications: Vec<String>,
    tables: Vec<String>,
    ch: Option<(ChClient, String)>,
    files: Vec<PathBuf>,
}

impl Cleanup {
    async fn run(&self, pg: &Pg) -> Vec<String> {
        let mut problems = Vec::new();
        match pg.connect().await {
            Ok(c) => {
                for slot in &self.slots {
                    // A slot still held by a walsender that is shutting down: wait for it.
                    let mut done = false;
                    for _ in 0..100 {
                        let r = c
                            .query_one(
                                "SELECT count(*) FILTER (WHERE active), count(*) FROM pg_replication_slots WHERE slot_name = $1",
                                &[slot],
                            )
                            .await;
                        match r {
                            Ok(row) => {
                                let (active, all): (i64, i64) = (row.get(0), row.get(1));
                                if all == 0 {
                                    done = true;
                                    break;
                                }
                                if active == 0 && c.execute("SELECT pg_drop_replication_slot($1)", &[slot]).await.is_ok() {
                                    done = true;
                                    break;
                                }
                            }
                            Err(e) => {
                                problems.push(format!("slot {slot}: {e}"));
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if !done {
                        problems.push(format!("slot {slot} could not be dropped (still active)"));
                    }
                }
                for p in &self.publications {
                    if let Err(e) = c.batch_execute(&format!("DROP PUBLICATION IF EXISTS {p}")).await {
                        problems.push(format!("publication {p}: {e}"));
                    }
                }
                for t in &self.tables {
                    if let Err(e) = c.batch_execute(&format!("DROP TABLE IF EXISTS {t}")).await {
                        problems.push(format!("table {t}: {e}"));
                    }
                }
            }
            Err(e) => problems.push(e),
        }
        if let Some((ch, db)) = &self.ch {
            if let Err(e) = ch.execute(&format!("DROP DATABASE IF EXISTS `{db}`")).await {
                problems.push(format!("ClickHouse database {db}: {e}"));
            }
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        problems
    }
}

/// Source limit: pg_recvlogical drains N freshly written rows.
struct SourceResult {
    secs: f64,
    rows_per_s: f64,
    load_rows_per_s: f64,
    wal_bytes: i64,
}

async fn source_limit(pg: &Pg, args: &Args, clean: &mut Cleanup) -> Res<SourceResult> {
    let c = pg.connect().await?;
    let t = unique("bench_src");
    let publication = unique("bench_src_pub");
    let slot = unique("bench_src_slot");
    clean.tables.push(t.clone());
    c.batch_execute(&create_table_sql(&t)).await.map_err(|e| format!("create {t}: {e}"))?;
    clean.publications.push(publication.clone());
    c.batch_execute(&format!("CREATE PUBLICATION {publication} FOR TABLE {t}")).await.map_err(|e| format!("create publication: {e}"))?;
    clean.slots.push(slot.clone());
    let start_lsn: String = c
        .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .map_err(|e| format!("create slot {slot}: {e}"))?
        .get(0);
    eprintln!("bench: source limit: loading {} rows into {t} ...", args.rows);
    let (_, load_time) = load(&c, &t, args.rows, args.txn_rows).await?;
    let row = c
        .query_one("SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint", &[&start_lsn])
        .await
        .map_err(|e| format!("pg_current_wal_lsn: {e}"))?;
    let (end_lsn, wal_bytes): (String, i64) = (row.get(0), row.get(1));
    eprintln!("bench: source limit: loaded in {:.2}s ({} MB of WAL); draining with pg_recvlogical up to {end_lsn} ...", load_time.as_secs_f64(), wal_bytes / 1_000_000);
    let recv = pg.bin.join("pg_recvlogical");
    if !recv.exists() {
        return Err(format!("{} not found", recv.display()));
    }
    let mut cmd = Command::new(&recv);
    cmd.args(["-h", &pg.host, "-p", &pg.port, "-U", &pg.user, "-d", &pg.database, "--slot", &slot, "--start", "--no-loop"])
        .args(["--endpos", &end_lsn, "-o", "proto_version=1", "-o", &format!("publication_names={publication}"), "-f", "/dev/null"])
        .env("PGPASSWORD", &pg.password)
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.map_err(|e| e.to_string())?.map_err(|e| format!("run {}: {e}", recv.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("pg_recvlogical failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    // It must really have reached the end position (not stopped early).
    let confirmed: Option<String> = c
        .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let reached: bool = c
        .query_one("SELECT coalesce($1::text::pg_lsn >= $2::text::pg_lsn, false)", &[&confirmed, &end_lsn])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !reached {
        eprintln!("bench: note: slot confirmed {confirmed:?} < end {end_lsn} after pg_recvlogical (it may confirm lazily)");
    }
    // Drop the slot (and with it the retained WAL) before the pipeline runs.
    c.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.map_err(|e| format!("drop slot {slot}: {e}"))?;
    clean.slots.retain(|s| s != &slot);
    c.batch_execute(&format!("DROP PUBLICATION {publication}; DROP TABLE {t}")).await.map_err(|e| e.to_string())?;
    clean.publications.retain(|p| p != &publication);
    clean.tables.retain(|x| x != &t);
    Ok(SourceResult {
        secs,
        rows_per_s: args.rows as f64 / secs,
        load_rows_per_s: args.rows as f64 / load_time.as_secs_f64(),
        wal_bytes,
    })
}

fn tributary_bin() -> Res<PathBuf> {
    // Cargo builds the binary (bench profile = release) for benches and says where it is.
    if let Some(p) = option_env!("CARGO_BIN_EXE_tributary") {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    let dir = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo().join("target"));
    let p = dir.join("release/tributary");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} is missing: run `cargo build --release` first", p.display()))
    }
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process in seconds.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct PipelineResult {
    secs: f64,
    rows_per_s: f64,
    load_rows_per_s: f64,
    catch_up_secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    peak_rss_kib: u64,
    max_sampled_rss_kib: u64,
    cpu_secs: f64,
    exit_ok: bool,
    stop_secs: f64,
    final_count: u64,
    final_distinct: u64,
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

async fn pipeline(pg: &Pg, vars: &HashMap<String, String>, args: &Args, clean: &mut Cleanup, ch_version: &mut String) -> Res<PipelineResult> {
    let bin = tributary_bin()?;
    let c = pg.connect().await?;
    let t = unique("bench_pipe");
    let publication = unique("bench_pipe_pub");
    let slot = unique("bench_pipe_slot");
    let db = unique("bench_db");
    let url = if args.target == "ch18" { &vars["TRIBUTARY_TEST_CH18_URL"] } else { &vars["TRIBUTARY_TEST_CH26_URL"] };

    // The config: config/cdc.toml with this run's table; the servers through its variables.
    let template = std::fs::read_to_string(repo().join("config/cdc.toml")).map_err(|e| format!("config/cdc.toml: {e}"))?;
    let mut replaced = false;
    let text: String = template
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("tables =") {
                replaced = true;
                format!("tables = [\"public.{t}\"]")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !replaced {
        return Err("config/cdc.toml has no `tables = ...` line to point at the bench table".into());
    }
    let mut env: HashMap<&str, String> = HashMap::new();
    env.insert("PGHOST", pg.host.clone());
    env.insert("PGPORT", pg.port.clone());
    env.insert("PGUSER", pg.user.clone());
    env.insert("PGPASSWORD", pg.password.clone());
    env.insert("PGDATABASE", pg.database.clone());
    env.insert("TRIBUTARY_SLOT", slot.clone());
    env.insert("TRIBUTARY_PUBLICATION", publication.clone());
    env.insert("CLICKHOUSE_URL", url.clone());
    env.insert("CLICKHOUSE_DATABASE", db.clone());
    let cfg = Config::from_str_named(&text, "bench config", &|k| env.get(k).cloned()).map_err(|e| format!("bench config: {e}"))?;
    let tmp = repo().join("target/tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let cfg_path = tmp.join(format!("{t}.toml"));
    let log_path = tmp.join(format!("{t}.log"));
    std::fs::write(&cfg_path, &text).map_err(|e| e.to_string())?;
    clean.files.push(cfg_path.clone());

    let ch = ChClient::connect(&cfg.pipelines[0].clickhouse).await.map_err(|e| format!("connect to ClickHouse {url}: {e}"))?;
    *ch_version = ch.query_text("SELECT version()").await.map_err(|e| e.to_string())?.trim().to_string();
    clean.ch = Some((ch.clone(), db.clone()));

    clean.tables.push(t.clone());
    c.batch_execute(&create_table_sql(&t)).await.map_err(|e| format!("create {t}: {e}"))?;
    // tributary creates the publication and the slot; drop them afterwards.
    clean.publications.push(publication.clone());
    clean.slots.push(slot.clone());

    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "--config"]).arg(&cfg_path).stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    cmd.env_remove("RUST_LOG");
    eprintln!("bench: pipeline: starting {} (log: {})", bin.display(), log_path.display());
    let mut child = cmd.spawn().map_err(|e| format!("start {}: {e}", bin.display()))?;
    let pid = child.id();
    let r = drive(pg, &ch, &mut child, pid, &t, &db, args, &log_path).await;
    if r.is_err() {
        // Leave nothing running.
        if child.try_wait().ok().flatten().is_none() {
            sigterm(pid);
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        eprintln!("bench: tributary log tail ({}):\n{}", log_path.display(), log_tail(&log_path, 30));
    } else {
        clean.files.push(log_path.clone());
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn drive(pg: &Pg, ch: &ChClient, child: &mut Child, pid: u32, t: &str, db: &str, args: &Args, log_path: &Path) -> Res<PipelineResult> {
    let n = args.rows;
    // The initial snapshot of the empty table is done when its ClickHouse table exists.
    let exists_sql = format!("SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{t}'");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("tributary exited early ({status})"));
        }
        if ch.query_text(&exists_sql).await.map(|s| s.trim() == "1").unwrap_or(false) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("ClickHouse table {db}.{t} did not appear within 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("bench: pipeline: snapshot done; loading {n} rows while it runs ...");

    // The load runs on its own connection while this task polls ClickHouse.
    let writer = pg.connect().await?;
    let table = t.to_string();
    let txn_rows = args.txn_rows;
    let load_start = Instant::now();
    let loader = tokio::spawn(async move { load(&writer, &table, n, txn_rows).await });

    let poll_sql = format!("SELECT count(), max(id) FROM `{db}`.`{t}`");
    let mut visible: Vec<(i64, Instant)> = Vec::new(); // (max id seen, when), increasing
    let mut max_rss = 0u64;
    let mut last_progress = Instant::now();
    let mut last_count = 0u64;
    let mut last_report = Instant::now();
    let mut loaded: Option<(Vec<(i64, Instant)>, Duration)> = None;
    let mut loader = Some(loader);
    let done_at;
    loop {
        let tick = Instant::now();
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("tributary exited during the run ({status})"));
        }
        max_rss = max_rss.max(proc_status_kib(pid, "VmRSS:").unwrap_or(0));
        let text = ch.query_text(&poll_sql).await.map_err(|e| format!("poll ClickHouse: {e}"))?;
        let seen_at = Instant::now();
        let mut f = text.split_whitespace();
        let count: u64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let max_id: i64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if visible.last().map_or(max_id > 0, |&(m, _)| max_id > m) {
            visible.push((max_id, seen_at));
        }
        if count != last_count {
            last_count = count;
            last_progress = seen_at;
        }
        if loader.as_ref().is_some_and(|h| h.is_finished()) {
            let r = loader.take().unwrap().await.map_err(|e| e.to_string())??;
            eprintln!("bench: pipeline: load finished in {:.2}s; {count} rows visible", r.1.as_secs_f64());
            loaded = Some(r);
        }
        if count >= n && loaded.is_some() {
            done_at = seen_at;
            break;
        }
        if count > n {
            return Err(format!("ClickHouse has {count} rows, more than the {n} written (duplicates)"));
        }
        if seen_at.duration_since(last_progress) > Duration::from_secs(60) {
            return Err(format!("no progress for 60 s: ClickHouse has {count} of {n} rows (lost rows?)"));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("bench: pipeline: {count} rows visible after {:.1}s", load_start.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        let spent = tick.elapsed();
        if spent < Duration::from_millis(20) {
            tokio::time::sleep(Duration::from_millis(20) - spent).await;
        }
    }
    let (commits, load_time) = loaded.expect("loop ends only after the load");
    let secs = done_at.duration_since(load_start).as_secs_f64();
    let load_end = load_start + load_time;

    // Commit → visible: the first poll whose max(id) covers the transaction's last id.
    let mut lat: Vec<f64> = Vec::with_capacity(commits.len());
    let mut j = 0;
    for (last_id, committed) in &commits {
        while j < visible.len() && visible[j].0 < *last_id {
            j += 1;
        }
        let seen = visible.get(j).map(|v| v.1).unwrap_or(done_at);
        lat.push(seen.saturating_duration_since(*committed).as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[(((lat.len() as f64) * p).ceil() as usize).clamp(1, lat.len()) - 1];
    let (p50_ms, p99_ms, max_ms) = (pct(0.50), pct(0.99), *lat.last().unwrap());

    let peak_rss_kib = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    max_rss = max_rss.max(proc_status_kib(pid, "VmRSS:").unwrap_or(0));
    let cpu_secs = proc_cpu_secs(pid).unwrap_or(f64::NAN);

    // SIGTERM: drains and exits 0.
    let stop = Instant::now();
    sigterm(pid);
    let mut status = None;
    while stop.elapsed() < Duration::from_secs(60) {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop_secs = stop.elapsed().as_secs_f64();
    let exit_ok = match status {
        Some(s) if s.success() => true,
        Some(s) => {
            eprintln!("bench: tributary exited with {s} after SIGTERM; log tail ({}):\n{}", log_path.display(), log_tail(log_path, 20));
            false
        }
        None => {
            eprintln!("bench: tributary did not exit within 60 s of SIGTERM; killing it");
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    };

    let text = ch
        .query_text(&format!("SELECT count(), uniqExact(id) FROM `{db}`.`{t}` FINAL"))
        .await
        .map_err(|e| format!("final count: {e}"))?;
    let mut f = text.split_whitespace();
    let final_count: u64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let final_distinct: u64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);

    Ok(PipelineResult {
        secs,
        rows_per_s: n as f64 / secs,
        load_rows_per_s: n as f64 / load_time.as_secs_f64(),
        catch_up_secs: done_at.saturating_duration_since(load_end).as_secs_f64(),
        p50_ms,
        p99_ms,
        max_ms,
        peak_rss_kib,
        max_sampled_rss_kib: max_rss,
        cpu_secs,
        exit_ok,
        stop_secs,
        final_count,
        final_distinct,
    })
}

async fn bench(args: &Args, clean: &mut Cleanup, pg: &Pg, vars: &HashMap<String, String>) -> Res<bool> {
    let src = source_limit(pg, args, clean).await?;
    eprintln!("bench: source limit: {:.0} rows/s ({:.2}s)", src.rows_per_s, src.secs);
    let mut ch_version = String::new();
    let p = pipeline(pg, vars, args, clean, &mut ch_version).await?;
    let ratio = p.rows_per_s / src.rows_per_s;
    let mb = |kib: u64| kib as f64 / 1024.0;
    let lost = p.final_count != args.rows || p.final_distinct != args.rows;

    println!();
    println!("CDC benchmark: PostgreSQL 15 → tributary → ClickHouse {} ({ch_version})", args.target);
    println!("  rows                      {} in transactions of {}", args.rows, args.txn_rows);
    println!("  source limit (pg_recvlogical) {:>10.0} rows/s   (drain {:.2}s, {:.0} MB WAL; load ran at {:.0} rows/s)", src.rows_per_s, src.secs, src.wal_bytes as f64 / 1e6, src.load_rows_per_s);
    println!("  pipeline end-to-end       {:>10.0} rows/s   ({:.2}s from load start to count() = N; load ran at {:.0} rows/s, caught up {:.2}s after it)", p.rows_per_s, p.secs, p.load_rows_per_s, p.catch_up_secs);
    println!("  ratio pipeline / source   {:>10.2}        (target ≥ 0.80)", ratio);
    println!("  commit → visible          p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", p.p50_ms, p.p99_ms, p.max_ms);
    println!("  tributary peak RSS        {:>10.1} MB     (VmHWM; max sampled VmRSS {:.1} MB; target ≤ 150 MB)", mb(p.peak_rss_kib), mb(p.max_sampled_rss_kib));
    println!("  tributary CPU             {:>10.2} s      ({:.1} µs/row)", p.cpu_secs, p.cpu_secs * 1e6 / args.rows as f64);
    println!("  SIGTERM → exit            {:>10.2} s      ({})", p.stop_secs, if p.exit_ok { "exit 0" } else { "NOT a clean exit" });
    println!("  ClickHouse FINAL          {} rows, {} distinct ids{}", p.final_count, p.final_distinct, if lost { "  <-- MISMATCH" } else { "" });
    let json = serde_json::json!({
        "bench": "cdc",
        "rows": args.rows,
        "txn_rows": args.txn_rows,
        "target": args.target,
        "clickhouse_version": ch_version,
        "source_rows_per_s": src.rows_per_s.round(),
        "source_drain_s": (src.secs * 1000.0).round() / 1000.0,
        "pipeline_rows_per_s": p.rows_per_s.round(),
        "pipeline_s": (p.secs * 1000.0).round() / 1000.0,
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "latency_p50_ms": p.p50_ms.round(),
        "latency_p99_ms": p.p99_ms.round(),
        "latency_max_ms": p.max_ms.round(),
        "peak_rss_mb": (mb(p.peak_rss_kib) * 10.0).round() / 10.0,
        "cpu_s": (p.cpu_secs * 100.0).round() / 100.0,
        "load_rows_per_s": p.load_rows_per_s.round(),
        "clean_exit": p.exit_ok,
        "rows_in_clickhouse": p.final_count,
    });
    println!("{json}");
    if lost {
        eprintln!("bench: FAILED: ClickHouse has {} rows ({} distinct ids), {} were written", p.final_count, p.final_distinct, args.rows);
    }
    if !p.exit_ok {
        eprintln!("bench: FAILED: tributary did not exit 0 after SIGTERM");
    }
    let _ = std::io::stdout().flush();
    Ok(!lost && p.exit_ok)
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
    let vars = match services() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pg = Pg::from(&vars);
    let mut clean = Cleanup::default();
    let result = bench(&args, &mut clean, &pg, &vars).await;
    if args.keep {
        eprintln!("bench: --keep: left slots {:?}, publications {:?}, tables {:?}", clean.slots, clean.publications, clean.tables);
    } else {
        for p in clean.run(&pg).await {
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
