//! The CDC benchmark: the pipeline (PostgreSQL → tributary → ClickHouse) next to what one
//! walsender can do, measured in the same run on the same servers. The ceiling of one slot is
//! its walsender, one core decoding WAL: each phase reports its busy fraction (#21);
//! pg_recvlogical on the same kind of slot is a reference line (another client), not a limit.
//!
//! `cargo bench --bench cdc -- [--rows N] [--target ch18|ch26] [--txn-rows 1000] [--offered R] [--no-drain] [--kafka] [--tls] [--cores split|shared] [--keep]`
//!
//! (`--cores split`, the default: the Postgres server runs on a CPU of its own and the bench,
//! tributary, ClickHouse and the broker on the others, as the source's server is a machine of
//! its own in production; the walsender then waits only on its client, never on a core one of
//! them holds. `--cores shared`: every process on every CPU. See `tributary_testkit::cores`.)
//!
//! (`--offered R`: the live phase's load at R rows/s instead of as fast as it goes, for the
//! latency at a steady load.)
//!
//! (`-- --snapshot [--tables 4] [--rows N] [--workers N]`: the first snapshot of filled tables
//! instead; see `cdc/snapshot.rs`. `-- --members 1,2,3 [--partitions 6]`: the Kafka →
//! ClickHouse stage as N members of one consumer group; see `cdc/members.rs`; with `--llm-stage`
//! the Kafka → LLM → ClickHouse stage, see `cdc/members_llm.rs`. `-- --verify [--rows N]`:
//! `tributary verify` next to reading both sides in full, see `cdc/verify.rs`.)
//!
//! 1. pg_recvlogical, the reference line: a fresh table, publication and pgoutput slot (created
//!    with SQL); N rows are written in transactions of `--txn-rows`, then `pg_recvlogical` (as
//!    it is, proto_version 1, output to /dev/null) drains the slot up to the WAL position after
//!    the load. Rows/s = N / drain time; its walsender's CPU. Another client of the same kind
//!    of slot, with no sink at all: not a limit (tributary drains faster).
//! 2. Pipeline, live: `tributary run` (the release binary) as a subprocess, with a config of
//!    config/cdc.toml's shape pointed at a fresh table, slot, publication and ClickHouse
//!    database. Once its (empty) initial snapshot is done, the same N rows are written while it
//!    runs. Measured: end-to-end rows/s (load start → ClickHouse count() = N), commit → visible
//!    latency per transaction (the load commits synchronously, as production servers do; the
//!    row count from the parts' metadata and max(id) above the last seen, polled every ~20 ms:
//!    no scan of the table, about 2 ms of ClickHouse's CPU a poll), peak RSS (VmHWM) and
//!    CPU time of tributary, and the CPU of the writer's backend, the walsender and ClickHouse
//!    in the same interval. SIGTERM stops it (it drains and exits 0). The live rate can never
//!    exceed the rate of the load itself, which shares the two cores with the pipeline.
//! 3. Pipeline, drain (unless `--no-drain`): N more rows are written while tributary is stopped,
//!    then it is started again and takes the backlog from its slot, as pg_recvlogical did in 1
//!    (process start and connection included): the like-for-like comparison with
//!    pg_recvlogical; the walsender's busy fraction is taken from its start. (Freezing it
//!    with SIGSTOP instead would not do: the kernel keeps accepting up to tcp_rmem's 32 MB of
//!    pgoutput for the frozen socket, so the walsender works ahead.)
//!    With `--tls` (ch18 only), 2 and 3 run again with TLS on both sides (Postgres
//!    `verify-full` as a SCRAM user, so with channel binding; ClickHouse over HTTPS with the
//!    test CA): the report gives the TLS run's rates as ratios of the plain run's (target ≥ 0.9).
//! 4. A report, and the same as one JSON line. Exits non-zero if ClickHouse does not end up with
//!    exactly the rows written (lost or duplicated) or tributary did not exit 0 on SIGTERM. The
//!    targets (#21: walsender busy ≥ 0.95 in the drain, tributary ≤ 2.0 CPU-s per million
//!    rows, p99 ≤ 500 ms at 10,000 rows/s offered; ≤ 150 MB RSS) are reported, not asserted.
//!    `TRIBUTARY_BENCH_BIN` runs another build of tributary (an A/B comparison of two builds).
//!
//! Everything it creates (slots, publications, tables, the ClickHouse database) is dropped at
//! the end, also after a failure (unless `--keep`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use tributary::clients::clickhouse::ChClient;
use tributary::config::Config;

use tributary_testkit::cores;
use tributary_testkit::flags::Flags;
use tributary_testkit::procfs::{proc_age_secs, proc_cpu_secs, proc_schedstat, proc_status_kib};
use tributary_testkit::services::{services, Lookup};

/// The servers every bench needs (started or reused through scripts/services.sh).
const BENCH_SERVICES: &[&str] = &[
    "TRIBUTARY_TEST_PG_PORT",
    "TRIBUTARY_TEST_CH18_URL",
    "TRIBUTARY_TEST_CH26_URL",
    "TRIBUTARY_TEST_LLM_URL",
];
use tributary_testkit::{repo, unique, Res};

#[path = "cdc/snapshot.rs"]
mod snapshot;

#[path = "cdc/members.rs"]
mod members;
#[path = "cdc/members_llm.rs"]
mod members_llm;
#[path = "cdc/verify.rs"]
mod verify;

#[derive(Debug, Clone)]
struct Args {
    rows: u64,
    target: String,
    txn_rows: u64,
    keep: bool,
    no_drain: bool,
    /// Also run the pipeline through Kafka (and the broker's own rate), next to the direct one.
    kafka: bool,
    /// Also run the pipeline with TLS on both sides (Postgres verify-full, ClickHouse HTTPS),
    /// next to the plain one: the ratio of the two is the cost of TLS.
    tls: bool,
    /// Which side the TLS run encrypts: `both` (default), `pg` or `ch` (to see what each costs).
    tls_side: String,
    /// `tributary verify` on a table of `rows` rows next to reading both sides in full
    /// instead (see `cdc/verify.rs`).
    verify: bool,
    /// The first snapshot of `tables` filled tables instead (`postgres.snapshot_workers` =
    /// `workers` when given).
    snapshot: bool,
    tables: u64,
    workers: Option<u64>,
    /// `postgres.snapshot_chunk_rows` for the snapshot run, when given.
    chunk_rows: Option<u64>,
    /// The Kafka → ClickHouse stage as these numbers of group members instead (see
    /// `cdc/members.rs`), over a topic of `partitions` partitions.
    /// The live phase's load at this rate (rows/s) instead of as fast as it goes: latency at
    /// a steady offered load.
    offered: Option<u64>,
    members: Vec<u64>,
    partitions: u64,
    /// With `members`: the Kafka → LLM → ClickHouse stage instead (see `cdc/members_llm.rs`),
    /// `rows` posts (3000 unless given), each member with `concurrency` LLM requests in
    /// flight to a fake LLM of `latency_ms` in this process, or to `llm_url` (OpenAI API).
    llm_stage: bool,
    rows_given: bool,
    latency_ms: u64,
    concurrency: u64,
    llm_url: Option<String>,
    /// `split` (the default): the Postgres server on a CPU of its own, everything else on
    /// the others (see `tributary_testkit::cores`); `shared`: all on every CPU.
    cores: String,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        rows: 1_000_000,
        target: "ch18".into(),
        txn_rows: 1000,
        keep: false,
        no_drain: false,
        tls: false,
        tls_side: "both".into(),
        kafka: false,
        snapshot: false,
        verify: false,
        tables: 4,
        workers: None,
        chunk_rows: None,
        offered: None,
        members: Vec::new(),
        partitions: 6,
        llm_stage: false,
        rows_given: false,
        latency_ms: 100,
        concurrency: 4,
        llm_url: None,
        cores: "split".into(),
    };
    let mut flags = Flags::new();
    while let Some(key) = flags.next_flag() {
        match key.as_str() {
            // cargo bench passes --bench to harness=false benches.
            "--bench" => {}
            "--rows" => {
                a.rows = flags.number("--rows")?;
                a.rows_given = true;
            }
            "--llm-stage" => a.llm_stage = true,
            "--latency-ms" => a.latency_ms = flags.number("--latency-ms")?,
            "--concurrency" => a.concurrency = flags.number("--concurrency")?,
            "--llm-url" => a.llm_url = Some(flags.value("--llm-url")?),
            "--txn-rows" => a.txn_rows = flags.number("--txn-rows")?,
            "--offered" => a.offered = Some(flags.number("--offered")?),
            "--target" => a.target = flags.value("--target")?,
            "--keep" => a.keep = true,
            "--tls" => a.tls = true,
            "--tls-side" => {
                a.tls = true;
                a.tls_side = flags.value("--tls-side")?;
            }
            "--no-drain" => a.no_drain = true,
            "--cores" => a.cores = flags.value("--cores")?,
            "--snapshot" => a.snapshot = true,
            "--verify" => a.verify = true,
            "--tables" => a.tables = flags.number("--tables")?,
            "--workers" => a.workers = Some(flags.number("--workers")?),
            "--chunk-rows" => a.chunk_rows = Some(flags.number("--chunk-rows")?),
            "--members" => {
                let v = flags.value("--members")?;
                a.members = v
                    .split(',')
                    .map(|m| m.trim().parse::<u64>().ok().filter(|m| *m > 0))
                    .collect::<Option<Vec<u64>>>()
                    .ok_or(format!("--members takes counts like 1,2,3, not {v:?}"))?;
            }
            "--partitions" => a.partitions = flags.number("--partitions")?,
            "--kafka" => {
                a.kafka = true;
                a.no_drain = true;
            }
            "-h" | "--help" => {
                println!("cargo bench --bench cdc -- [--rows N (1000000)] [--target ch18|ch26] [--txn-rows 1000] [--offered ROWS_PER_S] [--no-drain] [--kafka] [--tls] [--tls-side both|pg|ch] [--cores split|shared] [--keep]");
                println!("cargo bench --bench cdc -- --snapshot [--tables 4] [--rows N (1000000 per table)] [--target ch18|ch26] [--workers N] [--chunk-rows N] [--keep]");
                println!("cargo bench --bench cdc -- --members 1,2,3 [--rows N (1000000)] [--partitions 6] [--target ch18|ch26]");
                println!("cargo bench --bench cdc -- --verify [--rows N (1000000)] [--target ch18|ch26] [--keep]");
                println!("cargo bench --bench cdc -- --members 1,2,3 --llm-stage [--rows N (3000 posts)] [--partitions 6] [--latency-ms 100] [--concurrency 4] [--llm-url URL] [--target ch18|ch26]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if a.llm_stage && a.members.is_empty() {
        return Err("--llm-stage needs --members (e.g. --members 1,2,3)".into());
    }
    if a.target != "ch18" && a.target != "ch26" {
        return Err(format!("--target must be ch18 or ch26, not {:?}", a.target));
    }
    if a.tls && a.target != "ch18" {
        return Err("--tls needs --target ch18 (the ClickHouse 26.9 front has no HTTPS)".into());
    }
    if !["both", "pg", "ch"].contains(&a.tls_side.as_str()) {
        return Err(format!(
            "--tls-side must be both, pg or ch, not {:?}",
            a.tls_side
        ));
    }
    if a.cores != "split" && a.cores != "shared" {
        return Err(format!(
            "--cores must be split or shared, not {:?}",
            a.cores
        ));
    }
    if a.rows == 0 || a.txn_rows == 0 {
        return Err("--rows and --txn-rows must be positive".into());
    }
    Ok(a)
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
        let url = format!(
            "host={} port={} user={} password={} dbname={}",
            self.host, self.port, self.user, self.password, self.database
        );
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect to Postgres: {e}"))?;
        tokio::spawn(conn);
        Ok(c)
    }
}

/// The benchmark table: bigint key, 64-char text, numeric, timestamptz, a small jsonb.
fn create_table_sql(t: &str) -> String {
    format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12,2) NOT NULL, \
         created_at timestamptz NOT NULL, attrs jsonb) WITH (autovacuum_enabled = off)"
    )
}

/// Before a drain: Postgres writes the load's dirty pages out now (CHECKPOINT) rather than
/// while the walsender drains on the same core (its autovacuum is off for the bench's tables
/// for the same reason). Without the right to (superuser or pg_checkpoint) it says so and
/// goes on.
async fn settle(c: &Client) {
    if let Err(e) = c.batch_execute("CHECKPOINT").await {
        eprintln!("bench: CHECKPOINT before the drain refused ({e}); the checkpointer may share the walsender's core");
    }
}

/// Writes ids first..first+n in transactions of `txn_rows` (one INSERT ... SELECT generate_series per
/// autocommit transaction), as fast as one connection can. Returns, per transaction, its last
/// id and the moment its COMMIT returned, and the whole load's duration.
async fn load(
    c: &Client,
    t: &str,
    first: u64,
    n: u64,
    txn_rows: u64,
    rate: Option<u64>,
) -> Res<(Vec<(i64, Instant)>, Duration)> {
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
    // Commits as a production server makes them: the test server runs with
    // `synchronous_commit = off`, whose commits reach the walsender only when the WAL writer
    // flushes them (every `wal_writer_delay`, 200 ms), which would count in commit → visible.
    c.batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| format!("SET synchronous_commit: {e}"))?;
    let mut commits = Vec::with_capacity((n / txn_rows + 1) as usize);
    let start = Instant::now();
    let mut next = first;
    let end = first + n - 1;
    while next <= end {
        let last = (next + txn_rows - 1).min(end);
        c.execute(&stmt, &[&(next as i64), &(last as i64)])
            .await
            .map_err(|e| format!("load rows {next}..{last}: {e}"))?;
        commits.push((last as i64, Instant::now()));
        next = last + 1;
        // An offered rate: each transaction when its rows are due.
        if let Some(r) = rate.filter(|r| *r > 0) {
            let due = start + Duration::from_secs_f64((next - first) as f64 / r as f64);
            tokio::time::sleep_until(due.into()).await;
        }
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
                                if active == 0
                                    && c.execute("SELECT pg_drop_replication_slot($1)", &[slot])
                                        .await
                                        .is_ok()
                                {
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
                    if let Err(e) = c
                        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {p}"))
                        .await
                    {
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
    /// CPU seconds of the walsender that served pg_recvlogical (last reading before it exited).
    walsender_cpu: f64,
}

/// `tls`: the test CA, to drain as the TLS-only SCRAM user with `sslmode=verify-full`.
async fn source_limit(
    pg: &Pg,
    args: &Args,
    clean: &mut Cleanup,
    tls: Option<&str>,
) -> Res<SourceResult> {
    let c = pg.connect().await?;
    let t = unique("bench_src");
    let publication = unique("bench_src_pub");
    let slot = unique("bench_src_slot");
    clean.tables.push(t.clone());
    c.batch_execute(&create_table_sql(&t))
        .await
        .map_err(|e| format!("create {t}: {e}"))?;
    clean.publications.push(publication.clone());
    c.batch_execute(&format!("CREATE PUBLICATION {publication} FOR TABLE {t}"))
        .await
        .map_err(|e| format!("create publication: {e}"))?;
    clean.slots.push(slot.clone());
    let start_lsn: String = c
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(|e| format!("create slot {slot}: {e}"))?
        .get(0);
    eprintln!(
        "bench: pg_recvlogical: loading {} rows into {t} ...",
        args.rows
    );
    let (_, load_time) = load(&c, &t, 1, args.rows, args.txn_rows, None).await?;
    settle(&c).await;
    let row = c
        .query_one("SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint", &[&start_lsn])
        .await
        .map_err(|e| format!("pg_current_wal_lsn: {e}"))?;
    let (end_lsn, wal_bytes): (String, i64) = (row.get(0), row.get(1));
    eprintln!("bench: pg_recvlogical: loaded in {:.2}s ({} MB of WAL); draining with pg_recvlogical up to {end_lsn} ...", load_time.as_secs_f64(), wal_bytes / 1_000_000);
    let recv = pg.bin.join("pg_recvlogical");
    if !recv.exists() {
        return Err(format!("{} not found", recv.display()));
    }
    let mut cmd = Command::new(&recv);
    let user = if tls.is_some() {
        "tributary_tls"
    } else {
        &pg.user
    };
    cmd.args([
        "-h",
        &pg.host,
        "-p",
        &pg.port,
        "-U",
        user,
        "-d",
        &pg.database,
        "--slot",
        &slot,
        "--start",
        "--no-loop",
    ])
    .args([
        "--endpos",
        &end_lsn,
        "-o",
        "proto_version=1",
        "-o",
        &format!("publication_names={publication}"),
        "-f",
        "/dev/null",
    ])
    .env("PGPASSWORD", &pg.password)
    .env(
        "PGSSLMODE",
        if tls.is_some() {
            "verify-full"
        } else {
            "disable"
        },
    )
    .env("PGSSLROOTCERT", tls.unwrap_or(""))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let recv_name = recv.display().to_string();
    let run = tokio::task::spawn_blocking(move || cmd.output());
    // The walsender's CPU while it streams: read until it is gone (it exits with the client).
    let (mut walsender, mut walsender_cpu) = (None, 0.0f64);
    while !run.is_finished() {
        if walsender.is_none() {
            walsender = c
                .query_opt(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| e.to_string())?
                .and_then(|r| r.get::<_, Option<i32>>(0));
        }
        if let Some(cpu) = walsender.and_then(|p| proc_cpu_secs(&p.to_string())) {
            walsender_cpu = cpu;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = run
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("run {recv_name}: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "pg_recvlogical failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Drop the slot (and with it the retained WAL) before the pipeline runs.
    c.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(|e| format!("drop slot {slot}: {e}"))?;
    clean.slots.retain(|s| s != &slot);
    c.batch_execute(&format!("DROP PUBLICATION {publication}; DROP TABLE {t}"))
        .await
        .map_err(|e| e.to_string())?;
    clean.publications.retain(|p| p != &publication);
    clean.tables.retain(|x| x != &t);
    Ok(SourceResult {
        secs,
        rows_per_s: args.rows as f64 / secs,
        load_rows_per_s: args.rows as f64 / load_time.as_secs_f64(),
        wal_bytes,
        walsender_cpu,
    })
}

fn tributary_bin() -> Res<PathBuf> {
    // Another build of it (an A/B comparison of two builds on the same servers).
    if let Some(p) = std::env::var_os("TRIBUTARY_BENCH_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Cargo builds the binary (bench profile = release) for benches and says where it is.
    if let Some(p) = option_env!("CARGO_BIN_EXE_tributary") {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let p = dir.join("release/tributary");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run `cargo build --release` first",
            p.display()
        ))
    }
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
    /// The largest VmHWM of the tributary processes of the run.
    peak_rss_kib: u64,
    max_sampled_rss_kib: u64,
    /// CPU of the tributary processes, whole run.
    cpu_secs: f64,
    exit_ok: bool,
    stop_secs: f64,
    final_count: u64,
    final_distinct: u64,
    raw_count: u64,
    /// Rows written to the pipeline's table (N, or 2N with the drain phase).
    written: u64,
    /// CPU seconds per process during the live phase.
    cpu_live: Vec<(String, f64)>,
    drain: Option<Drain>,
}

struct Drain {
    secs: f64,
    /// Seconds from the restart until the walsender serving it started (process start,
    /// configuration, connections, the state read: before any row can stream).
    connected_after: Option<f64>,
    rows_per_s: f64,
    cpu: Vec<(String, f64)>,
    walsender: Option<WalsenderTime>,
}

/// Where the drain's walsender spent its time, from its start to the last moment it worked
/// (its scheduler statistics, read every 10 ms): on a core, waiting for one (runnable while
/// other processes held both), or asleep (blocked: on a client that does not read, or on WAL
/// not yet there); and the tail from then until the last rows were visible.
struct WalsenderTime {
    /// Seconds from its start to its last work.
    span: f64,
    on_core: f64,
    waiting_for_core: f64,
    tail: f64,
}

impl WalsenderTime {
    fn text(&self) -> String {
        let share = |v: f64| v / self.span.max(1e-9);
        format!(
            "on a core {:.2}, waiting for a core {:.2}, asleep {:.2} (blocked on its client or on WAL) of the {:.2} s from its start to its last work; the last rows visible {:.2} s later (polled every 50 ms)",
            share(self.on_core),
            share(self.waiting_for_core),
            1.0 - share(self.on_core) - share(self.waiting_for_core),
            self.span,
            self.tail
        )
    }

    fn json(&self) -> serde_json::Value {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        let span = self.span.max(1e-9);
        serde_json::json!({
            "span_s": r(self.span),
            "on_core": r(self.on_core / span),
            "waiting_for_core": r(self.waiting_for_core / span),
            "asleep": r(1.0 - (self.on_core + self.waiting_for_core) / span),
            "tail_s": r(self.tail),
        })
    }
}

/// Reads the walsender's scheduler statistics every 10 ms until stopped (or dropped): its
/// start and each sample, (when, time on a core, time waiting for one).
struct WalsenderWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<Option<Samples>>>,
}

type Samples = (Instant, Vec<(Instant, f64, f64)>);

impl WalsenderWatch {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let pid = pid.to_string();
            // /proc's start time has a 10 ms step: `born` is good to about that.
            let born = Instant::now()
                .checked_sub(Duration::from_secs_f64(proc_age_secs(&pid)?))
                .unwrap_or_else(Instant::now);
            let mut samples = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Some((run, wait)) = proc_schedstat(&pid) else {
                    break;
                };
                samples.push((Instant::now(), run, wait));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some((born, samples))
        });
        WalsenderWatch {
            stop,
            task: Some(task),
        }
    }

    /// The walsender's time up to its last work before `done` (the last rows visible): a
    /// sample interval in which it was on a core for at least half of it (its wake-ups for the
    /// client's status messages after the last change are not work).
    async fn finish(mut self, done: Instant) -> Option<WalsenderTime> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (born, samples) = self.task.take()?.await.ok()??;
        let (last_work, on_core, waiting_for_core) = samples
            .windows(2)
            .filter(|w| w[1].0 <= done)
            .filter(|w| w[1].1 - w[0].1 >= 0.5 * w[1].0.duration_since(w[0].0).as_secs_f64())
            .map(|w| w[1])
            .next_back()?;
        Some(WalsenderTime {
            span: last_work.saturating_duration_since(born).as_secs_f64(),
            on_core,
            waiting_for_core,
            tail: done.saturating_duration_since(last_work).as_secs_f64(),
        })
    }
}

impl Drop for WalsenderWatch {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The `tributary run` subprocess (started again for the drain phase).
struct Tributary {
    bin: PathBuf,
    cfg: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// VmHWM and CPU of processes that already exited (read just before they were stopped).
    peak_rss_kib: u64,
    cpu_secs: f64,
}

impl Tributary {
    fn start(&mut self) -> Res<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--config"])
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG");
        // TRIBUTARY_BENCH_LOG=<filter> (e.g. tributary=debug) sets RUST_LOG for tributary and
        // keeps its log file.
        if let Ok(filter) = std::env::var("TRIBUTARY_BENCH_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn check_alive(&mut self, during: &str) -> Res<()> {
        let child = self.child.as_mut().ok_or("tributary is not running")?;
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => Err(format!("tributary exited {during} ({status})")),
            None => Ok(()),
        }
    }

    fn rss_kib(&self) -> u64 {
        proc_status_kib(&self.pid().to_string(), "VmRSS:").unwrap_or(0)
    }

    /// SIGTERM (it drains and exits 0): seconds to exit, and whether it exited 0.
    async fn stop(&mut self) -> (f64, bool) {
        let Some(mut child) = self.child.take() else {
            return (0.0, false);
        };
        let pid = child.id();
        self.peak_rss_kib = self
            .peak_rss_kib
            .max(proc_status_kib(&pid.to_string(), "VmHWM:").unwrap_or(0));
        self.cpu_secs += proc_cpu_secs(&pid.to_string()).unwrap_or(0.0);
        let start = Instant::now();
        signal(pid, "CONT");
        signal(pid, "TERM");
        let mut status = None;
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        match status {
            Some(s) if s.success() => (secs, true),
            Some(s) => {
                eprintln!(
                    "bench: tributary exited with {s} after SIGTERM; log tail ({}):\n{}",
                    self.log.display(),
                    log_tail(&self.log, 20)
                );
                (secs, false)
            }
            None => {
                eprintln!("bench: tributary did not exit within 60 s of SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
                (secs, false)
            }
        }
    }
}

/// A run dropped midway (an error, Ctrl-C) leaves no tributary behind: SIGTERM, then SIGKILL
/// after 10 s.
impl Drop for Tributary {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "CONT");
        signal(child.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Unique Kafka names of a run through Kafka.
struct ViaKafka {
    brokers: String,
    prefix: String,
}

impl ViaKafka {
    fn topic(&self, t: &str) -> String {
        format!("{}.public.{t}", self.prefix)
    }
}

async fn pipeline(
    pg: &Pg,
    vars: &HashMap<String, String>,
    args: &Args,
    clean: &mut Cleanup,
    ch_version: &mut String,
    via: Option<&ViaKafka>,
    tls: bool,
) -> Res<(PipelineResult, String)> {
    let bin = tributary_bin()?;
    let c = pg.connect().await?;
    let pg_tls = tls && args.tls_side != "ch";
    let ch_tls = tls && args.tls_side != "pg";
    let t = unique("bench_pipe");
    let publication = unique("bench_pipe_pub");
    let slot = unique("bench_pipe_slot");
    let db = unique("bench_db");
    let url = if ch_tls {
        vars.get("TRIBUTARY_TEST_CH18_HTTPS_URL")
            .ok_or("TRIBUTARY_TEST_CH18_HTTPS_URL is not set: scripts/services.sh start")?
    } else if args.target == "ch18" {
        &vars["TRIBUTARY_TEST_CH18_URL"]
    } else {
        &vars["TRIBUTARY_TEST_CH26_URL"]
    };
    let ca = vars
        .get("TRIBUTARY_TEST_TLS_DIR")
        .map(|d| format!("{d}/ca.pem"))
        .unwrap_or_default();

    // The config: config/cdc.toml (or config/kafka.toml: Postgres → Kafka → ClickHouse in one
    // process) with this run's table; the servers through its variables.
    let example = if via.is_some() {
        "config/kafka.toml"
    } else {
        "config/cdc.toml"
    };
    let template =
        std::fs::read_to_string(repo().join(example)).map_err(|e| format!("{example}: {e}"))?;
    let mut replaced = false;
    let text: String = template
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("tables =") {
                replaced = true;
                format!("tables = [\"public.{t}\"]")
            } else if pg_tls && l.trim() == "[pipeline.postgres]" {
                // The test CA (sslmode comes from PGSSLMODE below).
                format!("{l}\nsslrootcert = \"{ca}\"")
            } else if ch_tls && l.trim() == "[pipeline.clickhouse]" {
                format!("{l}\nca_cert = \"{ca}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !replaced {
        return Err(format!(
            "{example} has no `tables = ...` line to point at the bench table"
        ));
    }
    let mut env: Vec<(String, String)> = [
        ("PGHOST", pg.host.clone()),
        ("PGPORT", pg.port.clone()),
        (
            "PGUSER",
            if pg_tls {
                "tributary_tls".to_string()
            } else {
                pg.user.clone()
            },
        ),
        ("PGPASSWORD", pg.password.clone()),
        // The plain run is plain: the test server offers TLS, which `prefer` would take.
        (
            "PGSSLMODE",
            if pg_tls { "verify-full" } else { "disable" }.to_string(),
        ),
        ("PGDATABASE", pg.database.clone()),
        ("TRIBUTARY_SLOT", slot.clone()),
        ("TRIBUTARY_PUBLICATION", publication.clone()),
        ("CLICKHOUSE_URL", url.clone()),
        ("CLICKHOUSE_DATABASE", db.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(k) = via {
        for (name, value) in [
            ("KAFKA_BROKERS", k.brokers.clone()),
            ("TRIBUTARY_TOPIC_PREFIX", k.prefix.clone()),
            ("TRIBUTARY_GROUP", format!("{}_group", k.prefix)),
            ("TRIBUTARY_DLQ", format!("{}_dlq", k.prefix)),
            ("TRIBUTARY_STATE_TOPIC", format!("{}_state", k.prefix)),
        ] {
            env.push((name.to_string(), value));
        }
    }
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cfg = Config::from_str_named(&text, "bench config", &lookup)
        .map_err(|e| format!("bench config: {e}"))?;
    let tmp = repo().join("target/tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let cfg_path = tmp.join(format!("{t}.toml"));
    let log_path = tmp.join(format!("{t}.log"));
    std::fs::write(&cfg_path, &text).map_err(|e| e.to_string())?;
    clean.files.push(cfg_path.clone());

    let sink_cfg = &cfg.pipelines.last().ok_or("no pipeline")?.clickhouse;
    let ch = ChClient::connect(sink_cfg)
        .await
        .map_err(|e| format!("connect to ClickHouse {url}: {e}"))?;
    *ch_version = ch
        .query_text("SELECT version()")
        .await
        .map_err(|e| e.to_string())?
        .trim()
        .to_string();
    clean.ch = Some((ch.clone(), db.clone()));

    clean.tables.push(t.clone());
    c.batch_execute(&create_table_sql(&t))
        .await
        .map_err(|e| format!("create {t}: {e}"))?;
    // tributary creates the publication and the slot; drop them afterwards.
    clean.publications.push(publication.clone());
    clean.slots.push(slot.clone());

    let _ = std::fs::remove_file(&log_path);
    let mut trib = Tributary {
        bin,
        cfg: cfg_path,
        env,
        log: log_path.clone(),
        child: None,
        peak_rss_kib: 0,
        cpu_secs: 0.0,
    };
    let ch_pid = vars
        .get(if args.target == "ch18" {
            "TRIBUTARY_TEST_CH18_PID"
        } else {
            "TRIBUTARY_TEST_CH26_PID"
        })
        .and_then(|p| p.parse().ok());
    let mut procs: Vec<(String, u32)> = ch_pid
        .map(|p| ("ClickHouse".to_string(), p))
        .into_iter()
        .collect();
    if let Some(p) = via.and_then(|_| vars.get("TRIBUTARY_TEST_KAFKA_PID")?.parse().ok()) {
        procs.push(("broker".into(), p));
    }
    let r = drive(
        pg,
        &ch,
        &mut trib,
        &t,
        &db,
        &slot,
        &procs,
        via.is_some(),
        args,
    )
    .await;
    if r.is_err() {
        // Leave nothing running.
        if trib.child.is_some() {
            trib.stop().await;
        }
        eprintln!(
            "bench: tributary log tail ({}):\n{}",
            log_path.display(),
            log_tail(&log_path, 30)
        );
    } else if std::env::var("TRIBUTARY_BENCH_LOG").is_err() {
        clean.files.push(log_path.clone());
    } else {
        eprintln!("bench: tributary log kept: {}", log_path.display());
    }
    r.map(|r| (r, t))
}

/// Polls the row count and max(id) every ~20 ms until the count reaches `want`; records each new
/// max(id) with the time it was seen, and the largest sampled RSS of tributary. `until_also`
/// must also be true before it returns (the live load has finished); its error ends the wait.
/// With `visible` = `None` (the drain: no latencies to take) it polls the count alone, every
/// ~50 ms: the end of a drain of seconds is then known within 1 %, and ClickHouse, which
/// shares the cores with the walsender, answers two fifths of the queries (one took ~2 ms of
/// its CPU: 50 a second were a tenth of a core).
#[allow(clippy::too_many_arguments)] // one call site per bench mode; a struct would only rename them
async fn wait_for_rows(
    ch: &ChClient,
    trib: &mut Tributary,
    db: &str,
    t: &str,
    want: u64,
    mut visible: Option<&mut Vec<(i64, Instant)>>,
    max_rss: &mut u64,
    mut until_also: impl FnMut() -> Res<bool>,
    started: Instant,
) -> Res<Instant> {
    // Cheap for ClickHouse, which shares the two cores with what is measured: the row count
    // from the active parts' metadata (what count() without FINAL gives), and max(id) only
    // above the last one seen, which the sort key's index narrows to the newest granules
    // (`count(), max(id)` over the table scanned it whole 50 times a second: in the drain,
    // a third of the machine's CPU went to this poll).
    let count_sql = format!(
        "SELECT sum(rows) FROM system.parts WHERE database = '{db}' AND table = '{t}' AND active"
    );
    let poll_sql = |above: Option<i64>| match above {
        Some(above) => {
            format!("SELECT ({count_sql}), (SELECT max(id) FROM `{db}`.`{t}` WHERE id > {above})")
        }
        None => count_sql.clone(),
    };
    let period = Duration::from_millis(if visible.is_some() { 20 } else { 50 });
    let (mut last_count, mut last_progress, mut last_report) =
        (u64::MAX, Instant::now(), Instant::now());
    loop {
        let tick = Instant::now();
        trib.check_alive("during the run")?;
        *max_rss = (*max_rss).max(trib.rss_kib());
        let above = visible.as_deref().map(|v| v.last().map_or(0, |&(m, _)| m));
        let text = match ch.query_text(&poll_sql(above)).await {
            Ok(t) => t,
            // Through Kafka the table is created with its first row.
            Err(e)
                if e.to_string().contains("doesn't exist")
                    || e.to_string().contains("UNKNOWN_TABLE") =>
            {
                "0\t0".to_string()
            }
            Err(e) => return Err(format!("poll ClickHouse: {e}")),
        };
        let seen_at = Instant::now();
        let mut f = text.split_whitespace();
        let count: u64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if let Some(visible) = visible.as_deref_mut() {
            let max_id: i64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if visible.last().map_or(max_id > 0, |&(m, _)| max_id > m) {
                visible.push((max_id, seen_at));
            }
        }
        if count != last_count {
            (last_count, last_progress) = (count, seen_at);
        }
        if until_also()? && count >= want {
            return Ok(seen_at);
        }
        if count > want {
            return Err(format!(
                "ClickHouse has {count} rows, more than the {want} written (duplicates)"
            ));
        }
        if seen_at.duration_since(last_progress) > Duration::from_secs(60) {
            return Err(format!(
                "no progress for 60 s: ClickHouse has {count} of {want} rows (lost rows?)"
            ));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "bench: pipeline: {count} rows visible after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        let spent = tick.elapsed();
        if spent < period {
            tokio::time::sleep(period - spent).await;
        }
    }
}

async fn active_pid(ctl: &Client, slot: &str) -> Res<Option<u32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid: Option<i32> = ctl
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| format!("slot {slot}: {e}"))?
            .and_then(|r| r.get(0));
        if pid.is_some() || Instant::now() > deadline {
            return Ok(pid.map(|p| p as u32));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cpu_of(procs: &[(String, u32)]) -> Vec<f64> {
    procs
        .iter()
        .map(|(_, p)| proc_cpu_secs(&p.to_string()).unwrap_or(f64::NAN))
        .collect()
}

fn cpu_diff(procs: &[(String, u32)], before: &[f64]) -> Vec<(String, f64)> {
    procs
        .iter()
        .zip(cpu_of(procs).iter().zip(before))
        .map(|((name, _), (b, a))| (name.clone(), b - a))
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    pg: &Pg,
    ch: &ChClient,
    trib: &mut Tributary,
    t: &str,
    db: &str,
    slot: &str,
    servers: &[(String, u32)],
    via_kafka: bool,
    args: &Args,
) -> Res<PipelineResult> {
    let ch_pid = servers
        .iter()
        .find(|(k, _)| k == "ClickHouse")
        .map(|(_, p)| *p);
    let n = args.rows;
    let ctl = pg.connect().await?;
    eprintln!(
        "bench: pipeline: starting {} (log: {})",
        trib.bin.display(),
        trib.log.display()
    );
    let pid = trib.start()?;
    // The initial snapshot of the empty table is done when its ClickHouse table exists; through
    // Kafka the table comes with its first row, so: when the slot streams, and the consumer
    // has had time to join its group.
    let exists_sql =
        format!("SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{t}'");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        trib.check_alive("before its snapshot was done")?;
        if via_kafka {
            if active_pid(&ctl, slot).await?.is_some() {
                tokio::time::sleep(Duration::from_secs(3)).await;
                break;
            }
        } else if ch
            .query_text(&exists_sql)
            .await
            .map(|s| s.trim() == "1")
            .unwrap_or(false)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "ClickHouse table {db}.{t} did not appear within 120 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("bench: pipeline: snapshot done; loading {n} rows while it runs ...");

    // The load runs on its own connection while this task polls ClickHouse.
    let writer = pg.connect().await?;
    let writer_pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    // Who spends the two cores: the writer's backend, the walsender, tributary, ClickHouse.
    let mut procs: Vec<(String, u32)> = vec![("writer backend".into(), writer_pid as u32)];
    if let Some(w) = active_pid(&ctl, slot).await? {
        procs.push(("walsender".into(), w));
    }
    procs.push(("tributary".into(), pid));
    procs.extend(servers.iter().cloned());
    let cpu_before = cpu_of(&procs);
    let table = t.to_string();
    let txn_rows = args.txn_rows;
    let offered = args.offered;
    let load_start = Instant::now();
    // The task hands the connection back so that its backend is still there for the CPU count.
    type Loaded = (Res<(Vec<(i64, Instant)>, Duration)>, Client);
    let result: Arc<Mutex<Option<Loaded>>> = Arc::new(Mutex::new(None));
    let out = result.clone();
    tokio::spawn(async move {
        let r = load(&writer, &table, 1, n, txn_rows, offered).await;
        *out.lock().unwrap() = Some((r, writer));
    });
    let mut visible: Vec<(i64, Instant)> = Vec::new(); // (max id seen, when), increasing
    let mut max_rss = 0u64;
    let load_done = || match &*result.lock().unwrap() {
        None => Ok(false),
        Some((Ok(_), _)) => Ok(true),
        Some((Err(e), _)) => Err(e.clone()),
    };
    let done_at = wait_for_rows(
        ch,
        trib,
        db,
        t,
        n,
        Some(&mut visible),
        &mut max_rss,
        load_done,
        load_start,
    )
    .await?;
    let cpu_live = cpu_diff(&procs, &cpu_before);
    let (loaded, _writer) = result
        .lock()
        .unwrap()
        .take()
        .expect("wait_for_rows returns only after the load");
    let (commits, load_time) = loaded?;
    eprintln!(
        "bench: pipeline: the load took {:.2}s; all rows visible {:.2}s after it",
        load_time.as_secs_f64(),
        (done_at - load_start - load_time).as_secs_f64()
    );
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

    // SIGTERM: drains, confirms and exits 0.
    let (stop_secs, mut exit_ok) = trib.stop().await;

    // Drain: with tributary stopped, N more rows are written; then it starts again and takes
    // the backlog from its slot, as pg_recvlogical did (process start and connection included).
    let mut drain = None;
    if !args.no_drain && exit_ok {
        eprintln!("bench: pipeline: tributary stopped; loading {n} more rows for the drain ...");
        let w2 = pg.connect().await?;
        load(&w2, t, n + 1, n, args.txn_rows, None).await?;
        settle(&w2).await;
        drop(w2);
        let started = Instant::now();
        let pid2 = trib.start()?;
        let ch_cpu = ch_pid.and_then(|p| proc_cpu_secs(&p.to_string()));
        let walsender = active_pid(&ctl, slot).await?;
        let connected_after = walsender
            .and_then(|w| proc_age_secs(&w.to_string()))
            .map(|age| (started.elapsed().as_secs_f64() - age).max(0.0));
        let watch = walsender.map(WalsenderWatch::start);
        let mut procs2: Vec<(String, u32)> = Vec::new();
        if let Some(w) = walsender {
            procs2.push(("walsender".into(), w));
        }
        procs2.push(("tributary".into(), pid2));
        if let Some(c) = ch_pid {
            procs2.push(("ClickHouse".into(), c));
        }
        // Both processes are new: they count from zero (ClickHouse from the start).
        let before: Vec<f64> = procs2
            .iter()
            .map(|(k, _)| {
                if k == "ClickHouse" {
                    ch_cpu.unwrap_or(f64::NAN)
                } else {
                    0.0
                }
            })
            .collect();
        let done = wait_for_rows(
            ch,
            trib,
            db,
            t,
            2 * n,
            None,
            &mut max_rss,
            || Ok(true),
            started,
        )
        .await?;
        let cpu = cpu_diff(&procs2, &before);
        let walsender_time = match watch {
            Some(w) => w.finish(done).await,
            None => None,
        };
        let secs = done.duration_since(started).as_secs_f64();
        eprintln!("bench: pipeline: drained {n} rows in {secs:.2}s");
        drain = Some(Drain {
            secs,
            connected_after,
            rows_per_s: n as f64 / secs,
            cpu,
            walsender: walsender_time,
        });
        let (_, ok) = trib.stop().await;
        exit_ok &= ok;
    }

    let text = ch
        .query_text(&format!("SELECT (SELECT count() FROM `{db}`.`{t}`), count(), uniqExact(id) FROM `{db}`.`{t}` FINAL"))
        .await
        .map_err(|e| format!("final count: {e}"))?;
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    let (raw_count, final_count, final_distinct) = (
        f.first().copied().unwrap_or(0),
        f.get(1).copied().unwrap_or(0),
        f.get(2).copied().unwrap_or(0),
    );

    Ok(PipelineResult {
        secs,
        rows_per_s: n as f64 / secs,
        load_rows_per_s: n as f64 / load_time.as_secs_f64(),
        catch_up_secs: done_at.saturating_duration_since(load_end).as_secs_f64(),
        p50_ms,
        p99_ms,
        max_ms,
        peak_rss_kib: trib.peak_rss_kib,
        max_sampled_rss_kib: max_rss,
        cpu_secs: trib.cpu_secs,
        exit_ok,
        stop_secs,
        final_count,
        final_distinct,
        raw_count,
        written: if drain.is_some() { 2 * n } else { n },
        cpu_live,
        drain,
    })
}

async fn bench(
    args: &Args,
    clean: &mut Cleanup,
    pg: &Pg,
    vars: &HashMap<String, String>,
) -> Res<bool> {
    // The layout first: a walsender that is not busy then waits on its client, not on a core
    // another process of the run holds (as the source's server would be a machine of its own).
    let split = if args.cores == "split" {
        let pid = |k: &str| vars.get(k).and_then(|p| p.parse::<u32>().ok());
        let postmaster = pid("TRIBUTARY_TEST_PG_PID")
            .ok_or("TRIBUTARY_TEST_PG_PID is not set: scripts/services.sh start")?;
        let mut clients = vec![std::process::id()];
        clients.extend(
            [
                "TRIBUTARY_TEST_CH18_PID",
                "TRIBUTARY_TEST_CH26_PID",
                "TRIBUTARY_TEST_KAFKA_PID",
            ]
            .into_iter()
            .filter_map(pid),
        );
        let s = cores::Split::apply(postmaster, &clients)?;
        if s.is_none() {
            eprintln!("bench: one CPU: nothing to split, every process shares it");
        }
        s
    } else {
        None
    };
    let layout = split.as_ref().map_or_else(
        || "shared: every process on every CPU".to_string(),
        cores::Split::text,
    );
    eprintln!("bench: {layout}");
    let src = source_limit(pg, args, clean, None).await?;
    eprintln!(
        "bench: pg_recvlogical: {:.0} rows/s ({:.2}s)",
        src.rows_per_s, src.secs
    );
    let mut ch_version = String::new();
    let (p, _) = pipeline(pg, vars, args, clean, &mut ch_version, None, false).await?;
    let with_tls = if args.tls {
        let ca = vars
            .get("TRIBUTARY_TEST_TLS_DIR")
            .map(|d| format!("{d}/ca.pem"))
            .ok_or("TRIBUTARY_TEST_TLS_DIR is not set: scripts/services.sh start")?;
        eprintln!("bench: pg_recvlogical with TLS (verify-full) ...");
        let src_tls = source_limit(pg, args, clean, Some(&ca)).await?;
        eprintln!(
            "bench: the same with TLS on both sides (Postgres verify-full, ClickHouse HTTPS) ..."
        );
        let p = pipeline(pg, vars, args, clean, &mut ch_version, None, true)
            .await?
            .0;
        Some((p, src_tls))
    } else {
        None
    };
    let kafka = if args.kafka {
        let via = ViaKafka {
            brokers: vars
                .get("TRIBUTARY_TEST_KAFKA_BROKERS")
                .cloned()
                .ok_or("TRIBUTARY_TEST_KAFKA_BROKERS is not set: scripts/services.sh start")?,
            prefix: unique("bench_kafka"),
        };
        eprintln!("bench: through Kafka (Postgres → Kafka → ClickHouse, one process) ...");
        let (pk, t) = pipeline(pg, vars, args, clean, &mut ch_version, Some(&via), false).await?;
        eprintln!("bench: the broker's own rate with the same client library ...");
        let b = broker_limit(&via, &via.topic(&t), args.rows).await?;
        Some((pk, b))
    } else {
        None
    };
    let ratio = p.rows_per_s / src.rows_per_s;
    let drain_ratio = p.drain.as_ref().map(|d| d.rows_per_s / src.rows_per_s);
    let mb = |kib: u64| kib as f64 / 1024.0;
    let lost = p.final_count != p.written || p.final_distinct != p.written;
    let cpu_text = |cpu: &[(String, f64)], wall: f64| {
        let parts: Vec<String> = cpu.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        format!("{} (CPU s in {wall:.2}s wall, 2 cores)", parts.join(", "))
    };
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let live_fig = Figures::of(&p.cpu_live, p.secs, args.rows);
    let drain_fig = p
        .drain
        .as_ref()
        .map(|d| Figures::of(&d.cpu, d.secs, args.rows).streaming(d));

    println!();
    println!(
        "CDC benchmark: PostgreSQL 15 → tributary → ClickHouse {} ({ch_version})",
        args.target
    );
    println!(
        "  rows                       {} in transactions of {}",
        args.rows, args.txn_rows
    );
    println!("  CPUs                       {layout}");
    println!("  pg_recvlogical (reference) {:>8.0} rows/s  another client: it drained {:.0} MB of WAL in {:.2}s (the load before it ran at {:.0} rows/s)", src.rows_per_s, src.wal_bytes as f64 / 1e6, src.secs, src.load_rows_per_s);
    println!(
        "  CPU, pg_recvlogical phase  walsender {:.2} (CPU s in {:.2}s wall)",
        src.walsender_cpu, src.secs
    );
    println!("  pipeline, live             {:>8.0} rows/s  {:.2}s from load start to count() = N (the load ran at {:.0} rows/s; caught up {:.2}s after it)", p.rows_per_s, p.secs, p.load_rows_per_s, p.catch_up_secs);
    println!("  live / pg_recvlogical      {:>8.2}", ratio);
    if let (Some(d), Some(dr)) = (&p.drain, drain_ratio) {
        println!("  pipeline, drain            {:>8.0} rows/s  a backlog of N rows (written while tributary was stopped) taken in {:.2}s from its restart", d.rows_per_s, d.secs);
        println!("  drain / pg_recvlogical     {:>8.2}         (like for like: both take a backlog from a slot)", dr);
    }
    println!("  commit → visible (live)    p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms  (max(id) polled every 20 ms{})", p.p50_ms, p.p99_ms, p.max_ms, args.offered.map_or(String::new(), |r| format!("; {r} rows/s offered, target p99 ≤ 500 ms at 10,000")));
    println!("  tributary peak RSS         {:>8.1} MB      VmHWM; max sampled VmRSS {:.1} MB (target ≤ 150 MB)", mb(p.peak_rss_kib), mb(p.max_sampled_rss_kib));
    println!(
        "  tributary CPU, whole run   {:>8.2} s       {:.2} µs per row",
        p.cpu_secs,
        p.cpu_secs * 1e6 / p.written as f64
    );
    println!(
        "  CPU, live phase            {}",
        cpu_text(&p.cpu_live, p.secs)
    );
    println!("  live phase                 {}", live_fig.text());
    if let Some(d) = &p.drain {
        println!("  CPU, drain phase           {}", cpu_text(&d.cpu, d.secs));
    }
    if let Some(f) = &drain_fig {
        println!("  drain phase                {}", f.text());
    }
    if let Some(w) = p.drain.as_ref().and_then(|d| d.walsender.as_ref()) {
        println!("  walsender in the drain     {}", w.text());
    }
    println!(
        "  SIGTERM → exit (live run)  {:>8.2} s       {}",
        p.stop_secs,
        if p.exit_ok {
            "exit 0"
        } else {
            "NOT a clean exit"
        }
    );
    println!("  ClickHouse                 {} rows FINAL ({} without FINAL), {} distinct ids; {} written{}", p.final_count, p.raw_count, p.final_distinct, p.written, if lost { "  <-- MISMATCH" } else { "" });
    let mut kafka_lost = false;
    let mut kafka_json = serde_json::Value::Null;
    if let Some((k, b)) = &kafka {
        kafka_lost = k.final_count != k.written || k.final_distinct != k.written;
        let ceiling = src.rows_per_s.min(b.produce_per_s).min(b.consume_per_s);
        println!("  through Kafka (one process: Postgres → Debezium topic → ClickHouse)");
        println!("    broker produce           {:>8.0} msg/s  {} messages of {:.0} bytes (the pipeline's own), idempotent, acks=all", b.produce_per_s, b.messages, b.avg_bytes);
        println!("    broker consume           {:>8.0} msg/s  the same messages read back by one consumer", b.consume_per_s);
        println!("    pipeline via Kafka, live {:>8.0} rows/s  {:.2} of the direct path ({:.0} rows/s), {:.2} of min(source, broker) = {:.0}", k.rows_per_s, k.rows_per_s / p.rows_per_s, p.rows_per_s, k.rows_per_s / ceiling, ceiling);
        println!("    commit → visible         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms  (direct: p50 {:.0}, p99 {:.0} ms)", k.p50_ms, k.p99_ms, k.max_ms, p.p50_ms, p.p99_ms);
        println!(
            "    tributary peak RSS       {:>8.1} MB      CPU {:.2} s ({:.2} µs per row)",
            mb(k.peak_rss_kib),
            k.cpu_secs,
            k.cpu_secs * 1e6 / k.written as f64
        );
        println!(
            "    CPU, live phase          {}",
            cpu_text(&k.cpu_live, k.secs)
        );
        println!("    ClickHouse               {} rows FINAL ({} without FINAL), {} distinct; {} written{}", k.final_count, k.raw_count, k.final_distinct, k.written, if kafka_lost { "  <-- MISMATCH" } else { "" });
        kafka_json = serde_json::json!({
            "broker_produce_per_s": b.produce_per_s.round(),
            "broker_consume_per_s": b.consume_per_s.round(),
            "message_bytes": b.avg_bytes.round(),
            "rows_per_s": k.rows_per_s.round(),
            "ratio_to_direct": r2(k.rows_per_s / p.rows_per_s),
            "ratio_to_ceiling": r2(k.rows_per_s / ceiling),
            "latency_p50_ms": k.p50_ms.round(),
            "latency_p99_ms": k.p99_ms.round(),
            "peak_rss_mb": (mb(k.peak_rss_kib) * 10.0).round() / 10.0,
            "tributary_cpu_s": r2(k.cpu_secs),
            "rows_in_clickhouse": k.final_count,
            "clean_exit": k.exit_ok,
        });
    }
    let mut tls_lost = false;
    let mut tls_json = serde_json::Value::Null;
    if let Some((t, src_tls)) = &with_tls {
        tls_lost = t.final_count != t.written || t.final_distinct != t.written;
        let live = t.rows_per_s / p.rows_per_s;
        let drain = t
            .drain
            .as_ref()
            .zip(p.drain.as_ref())
            .map(|(a, b)| a.rows_per_s / b.rows_per_s);
        let per_row = |r: &PipelineResult| r.cpu_secs * 1e6 / r.written as f64;
        println!("  with TLS on both sides (Postgres verify-full + SCRAM-SHA-256-PLUS, ClickHouse HTTPS)");
        println!("    pg_recvlogical with TLS  {:>8.0} rows/s  {:.2} of plain pg_recvlogical (verify-full: what TLS costs the walsender; walsender {:.2} CPU s, plain {:.2})", src_tls.rows_per_s, src_tls.rows_per_s / src.rows_per_s, src_tls.walsender_cpu, src.walsender_cpu);
        println!("    pipeline, live           {:>8.0} rows/s  {:.2} of the plain run ({:.0} rows/s)  (target ≥ 0.90)", t.rows_per_s, live, p.rows_per_s);
        if let (Some(d), Some(r)) = (&t.drain, drain) {
            println!("    pipeline, drain          {:>8.0} rows/s  {:.2} of the plain run  (target ≥ 0.90); {:.2} of pg_recvlogical with TLS", d.rows_per_s, r, d.rows_per_s / src_tls.rows_per_s);
            println!("    CPU, drain phase         {}", cpu_text(&d.cpu, d.secs));
        }
        println!("    commit → visible         p50 {:.0} ms, p99 {:.0} ms  (plain: p50 {:.0}, p99 {:.0} ms)", t.p50_ms, t.p99_ms, p.p50_ms, p.p99_ms);
        println!(
            "    tributary CPU            {:.2} µs per row (plain {:.2}); peak RSS {:.1} MB",
            per_row(t),
            per_row(&p),
            mb(t.peak_rss_kib)
        );
        println!(
            "    ClickHouse               {} rows FINAL, {} distinct; {} written{}",
            t.final_count,
            t.final_distinct,
            t.written,
            if tls_lost { "  <-- MISMATCH" } else { "" }
        );
        tls_json = serde_json::json!({
            "source_rows_per_s": src_tls.rows_per_s.round(),
            "source_ratio": r2(src_tls.rows_per_s / src.rows_per_s),
            "rows_per_s": t.rows_per_s.round(),
            "ratio_live": r2(live),
            "drain_rows_per_s": t.drain.as_ref().map(|d| d.rows_per_s.round()),
            "ratio_drain": drain.map(r2),
            "cpu_us_per_row": r2(per_row(t)),
            "cpu_us_per_row_plain": r2(per_row(&p)),
            "latency_p50_ms": t.p50_ms.round(),
            "peak_rss_mb": (mb(t.peak_rss_kib) * 10.0).round() / 10.0,
            "rows_in_clickhouse": t.final_count,
            "clean_exit": t.exit_ok,
        });
    }
    let json = serde_json::json!({
        "tls": tls_json,
        "kafka": kafka_json,
        "bench": "cdc",
        "rows": args.rows,
        "txn_rows": args.txn_rows,
        "cores": if split.is_some() { "split" } else { "shared" },
        "target": args.target,
        "clickhouse_version": ch_version,
        "source_rows_per_s": src.rows_per_s.round(),
        "pipeline_rows_per_s": p.rows_per_s.round(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "drain_rows_per_s": p.drain.as_ref().map(|d| d.rows_per_s.round()),
        "drain_ratio": drain_ratio.map(|r| (r * 1000.0).round() / 1000.0),
        "latency_p50_ms": p.p50_ms.round(),
        "latency_p99_ms": p.p99_ms.round(),
        "latency_max_ms": p.max_ms.round(),
        "offered_rows_per_s": args.offered,
        "peak_rss_mb": (mb(p.peak_rss_kib) * 10.0).round() / 10.0,
        "tributary_cpu_s": r2(p.cpu_secs),
        "load_rows_per_s_live": p.load_rows_per_s.round(),
        "load_rows_per_s_source": src.load_rows_per_s.round(),
        "cpu_source_walsender_s": r2(src.walsender_cpu),
        "live": live_fig.json(),
        "drain": drain_fig.as_ref().map(Figures::json),
        "drain_walsender": p.drain.as_ref().and_then(|d| d.walsender.as_ref()).map(WalsenderTime::json),
        "cpu_live_s": p.cpu_live.iter().map(|(k, v)| (k.clone(), serde_json::json!(r2(*v)))).collect::<serde_json::Map<_, _>>(),
        "cpu_drain_s": p.drain.as_ref().map(|d| d.cpu.iter().map(|(k, v)| (k.clone(), serde_json::json!(r2(*v)))).collect::<serde_json::Map<_, _>>()),
        "clean_exit": p.exit_ok,
        "rows_written": p.written,
        "rows_in_clickhouse": p.final_count,
        "rows_in_clickhouse_without_final": p.raw_count,
    });
    println!("{json}");
    if lost {
        eprintln!(
            "bench: FAILED: ClickHouse has {} rows ({} distinct ids), {} were written",
            p.final_count, p.final_distinct, p.written
        );
    }
    if !p.exit_ok {
        eprintln!("bench: FAILED: tributary did not exit 0 after SIGTERM");
    }
    if kafka_lost {
        eprintln!(
            "bench: FAILED: through Kafka, ClickHouse does not hold exactly the rows written"
        );
    }
    let _ = std::io::stdout().flush();
    if tls_lost {
        eprintln!("bench: FAILED: with TLS, ClickHouse does not hold exactly the rows written");
    }
    let kafka_ok = kafka.as_ref().is_none_or(|(k, _)| !kafka_lost && k.exit_ok);
    let tls_ok = with_tls
        .as_ref()
        .is_none_or(|(t, _)| !tls_lost && t.exit_ok);
    Ok(!lost && p.exit_ok && kafka_ok && tls_ok)
}

struct BrokerLimit {
    messages: u64,
    avg_bytes: f64,
    produce_per_s: f64,
    consume_per_s: f64,
}

/// The broker's own rate with the client library tributary uses (librdkafka, the same
/// producer settings): the pipeline's messages (read back from its topic) are produced again
/// `n` times into a fresh topic, then read back by one consumer.
async fn broker_limit(via: &ViaKafka, sample_topic: &str, n: u64) -> Res<BrokerLimit> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let cluster = tributary::config::KafkaConfig {
        brokers: via.brokers.clone(),
        client_id: "tributary-bench".into(),
        properties: Default::default(),
        secret_files: Default::default(),
    };
    let reader = |group: String| -> Res<BaseConsumer> {
        tributary::clients::kafka::client_config(
            &cluster,
            &[("group.id", &group), ("enable.auto.commit", "false")],
        )
        .create()
        .map_err(|e| e.to_string())
    };
    // Samples: the first 1,000 messages of the pipeline's topic.
    let samples: Vec<(Vec<u8>, Vec<u8>)> = {
        let c = reader(unique("bench_sample"))?;
        let (low, _) = c
            .fetch_watermarks(sample_topic, 0, Duration::from_secs(10))
            .map_err(|e| format!("{sample_topic}: {e}"))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(sample_topic, 0, rdkafka::Offset::Offset(low))
            .map_err(|e| e.to_string())?;
        c.assign(&tpl).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < 1000 && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                if let (Some(k), Some(v)) = (m.key(), m.payload()) {
                    out.push((k.to_vec(), v.to_vec()));
                }
            }
        }
        out
    };
    if samples.is_empty() {
        return Err(format!("no messages in {sample_topic} to sample"));
    }
    let avg_bytes = samples
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as f64)
        .sum::<f64>()
        / samples.len() as f64;
    let topic = format!("{}_ceiling", via.prefix);
    tributary::clients::kafka::ensure_topics(&cluster, std::slice::from_ref(&topic), 1, 1)
        .await
        .map_err(|e| e.to_string())?;
    let producer = tributary::clients::kafka::producer(&cluster, Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n as usize {
        let (k, v) = &samples[i % samples.len()];
        loop {
            let r: rdkafka::producer::FutureRecord<'_, [u8], [u8]> =
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(k.as_slice())
                    .payload(v.as_slice());
            match producer.send_result(r) {
                Ok(f) => break pending.push_back(f),
                Err(_) => {
                    // Queue full: wait for the oldest delivery.
                    if let Some(f) = pending.pop_front() {
                        f.await
                            .map_err(|_| "producer gone".to_string())?
                            .map_err(|(e, _)| e.to_string())?;
                    }
                }
            }
        }
    }
    for f in pending {
        f.await
            .map_err(|_| "producer gone".to_string())?
            .map_err(|(e, _)| e.to_string())?;
    }
    let produce_secs = started.elapsed().as_secs_f64();
    let self_cpu = || proc_cpu_secs("self").unwrap_or(0.0);
    eprintln!(
        "bench: broker: produced {n} in {produce_secs:.2}s; this process used {:.2} CPU-s so far",
        self_cpu()
    );
    let c = reader(unique("bench_ceiling"))?;
    let consume_secs = tokio::task::spawn_blocking(move || -> Res<f64> {
        let (low, _) = c
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .map_err(|e| format!("{topic}: {e}"))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(low))
            .map_err(|e| e.to_string())?;
        c.assign(&tpl).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut got = 0u64;
        while got < n {
            if started.elapsed() > Duration::from_secs(600) {
                return Err(format!("read {got} of {n} messages back in 600 s"));
            }
            if let Some(m) = c.poll(Duration::from_millis(500)) {
                m.map_err(|e| e.to_string())?;
                got += 1;
            }
        }
        Ok(started.elapsed().as_secs_f64())
    })
    .await
    .map_err(|e| e.to_string())??;
    eprintln!(
        "bench: broker: consumed {n} in {consume_secs:.2}s; this process used {:.2} CPU-s so far",
        self_cpu()
    );
    Ok(BrokerLimit {
        messages: n,
        avg_bytes,
        produce_per_s: n as f64 / produce_secs,
        consume_per_s: n as f64 / consume_secs,
    })
}

/// What a phase says about where the time goes (#21): the walsender's busy fraction (its CPU
/// over the wall time: 1.0 is one core, the most one slot can use), tributary's CPU-seconds per
/// million rows, and ClickHouse's share of the two cores.
struct Figures {
    walsender_busy: Option<f64>,
    /// In the drain: seconds from the restart until the walsender started.
    walsender_connected_after: Option<f64>,
    tributary_cpu_per_mrows: Option<f64>,
    clickhouse_share: Option<f64>,
}

impl Figures {
    fn of(cpu: &[(String, f64)], wall: f64, rows: u64) -> Figures {
        let get = |name: &str| {
            cpu.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite())
        };
        let wall = wall.max(1e-9);
        Figures {
            walsender_busy: get("walsender").map(|c| c / wall),
            walsender_connected_after: None,
            tributary_cpu_per_mrows: get("tributary")
                .filter(|_| rows > 0)
                .map(|c| c * 1e6 / rows as f64),
            clickhouse_share: get("ClickHouse").map(|c| c / wall / 2.0),
        }
    }

    /// The drain's walsender busy over the time it existed (from its start, once tributary
    /// had connected, to the last row visible): the walsender cannot work before that.
    fn streaming(mut self, d: &Drain) -> Figures {
        if let (Some(busy), Some(after)) = (self.walsender_busy, d.connected_after) {
            self.walsender_connected_after = Some(after);
            self.walsender_busy = Some(busy * d.secs / (d.secs - after).max(1e-9));
        }
        self
    }

    fn text(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.2}"));
        let life = self.walsender_connected_after.map_or(String::new(), |a| {
            format!(" from its start, {a:.2} s after the restart,")
        });
        format!(
            "walsender busy {}{life} of a core (target ≥ 0.95 in the drain), tributary {} CPU-s per million rows (target ≤ 2.0), ClickHouse {} of the two cores",
            f(self.walsender_busy),
            f(self.tributary_cpu_per_mrows),
            f(self.clickhouse_share)
        )
    }

    fn json(&self) -> serde_json::Value {
        let r = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
        serde_json::json!({
            "walsender_busy": r(self.walsender_busy),
            "walsender_connected_after_s": r(self.walsender_connected_after),
            "tributary_cpu_s_per_million_rows": r(self.tributary_cpu_per_mrows),
            "clickhouse_share_of_two_cores": r(self.clickhouse_share),
        })
    }
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
    let vars = match services(BENCH_SERVICES, Lookup::Script) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pg = Pg::from(&vars);
    let mut clean = Cleanup::default();
    let work = async {
        if args.verify {
            verify::run(&args, &mut clean, &pg, &vars).await
        } else if args.snapshot {
            snapshot::run(&args, &mut clean, &pg, &vars).await
        } else if !args.members.is_empty() && args.llm_stage {
            members_llm::run(&args, &vars).await
        } else if !args.members.is_empty() {
            members::run(&args, &mut clean, &pg, &vars).await
        } else {
            bench(&args, &mut clean, &pg, &vars).await
        }
    };
    // Ctrl-C drops the run (its CPU layout is put back, its tributary stopped) and cleans up.
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    if args.keep {
        eprintln!(
            "bench: --keep: left slots {:?}, publications {:?}, tables {:?}",
            clean.slots, clean.publications, clean.tables
        );
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
