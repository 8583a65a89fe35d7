//! The shared harness of the integration tests: the real servers (started or reused through
//! scripts/services.sh), unique names per test, the example config loaded with the test's
//! servers, pipelines run in-process, and polling with a deadline.
#![allow(dead_code)]

pub mod kafka;
pub mod spawn;

// The kit shared with the benches (crates/testkit); not every test binary uses every part.
#[allow(unused_imports)]
pub use tributary_testkit::{fake_llm, fake_mastodon, procfs::rss_kib, proxy, unique};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tributary::clients::clickhouse::ChClient;
use tributary::config::Config;
use tributary::runtime::registry::Registry;
use tributary::runtime::supervisor::SupervisorMsg;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Addresses of the test servers (TRIBUTARY_TEST_* variables): exported by scripts/test.sh,
/// or the servers are started (or reused) here. A server that cannot start fails the test;
/// nothing is skipped.
pub fn services() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let required = [
            "TRIBUTARY_TEST_PG_PORT",
            "TRIBUTARY_TEST_CH18_URL",
            "TRIBUTARY_TEST_CH26_URL",
        ];
        tributary_testkit::services::services(
            &required,
            tributary_testkit::services::Lookup::Environment,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

pub fn var(k: &str) -> String {
    services()
        .get(k)
        .cloned()
        .unwrap_or_else(|| panic!("{k} missing"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Debian's clickhouse-server 18.16 (legacy types).
    Ch18,
    /// ClickHouse 26.9 (chdb) behind our HTTP front (current types).
    Ch26,
}

impl Target {
    pub fn url(self) -> String {
        match self {
            Target::Ch18 => var("TRIBUTARY_TEST_CH18_URL"),
            Target::Ch26 => var("TRIBUTARY_TEST_CH26_URL"),
        }
    }
}

/// Runs the body once per ClickHouse generation: `name::ch18` and `name::ch26`.
#[macro_export]
macro_rules! matrix {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ch18() {
                super::$body($crate::common::Target::Ch18).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ch26() {
                super::$body($crate::common::Target::Ch26).await
            }
        }
    };
}

/// Waits until a walsender holds `slot`: the slot and its snapshot exist, so a row written
/// from now on is streamed (with its WAL position), not copied by the snapshot.
pub async fn wait_streaming(c: &tokio_postgres::Client, slot: &str) {
    eventually(Duration::from_secs(60), "the slot to be streaming", || async {
        let active: bool = c
            .query_one(
                "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if active {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await
}

pub async fn pg() -> tokio_postgres::Client {
    try_pg().await.expect("connect to the test Postgres")
}

/// A session on the test Postgres, or why not (it may be restarting).
pub async fn try_pg() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let url = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={}",
        var("TRIBUTARY_TEST_PG_PORT"),
        var("TRIBUTARY_TEST_PG_USER"),
        var("TRIBUTARY_TEST_PG_PASSWORD"),
        var("TRIBUTARY_TEST_PG_DATABASE")
    );
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3")
        .await?;
    Ok(c)
}

/// One test's world: its own publication, slot and ClickHouse database.
pub struct World {
    pub target: Target,
    pub slot: String,
    pub publication: String,
    pub database: String,
    pub ch: ChClient,
}

impl World {
    pub async fn new(target: Target) -> World {
        init_logs();
        drop_stale_slots().await;
        let slot = unique("slot");
        let publication = unique("pub");
        let database = unique("db");
        let cfg = test_config(target, &slot, &publication, &database, &[]);
        let ch = ChClient::connect(&cfg.pipelines[0].clickhouse)
            .await
            .expect("connect to ClickHouse");
        World {
            target,
            slot,
            publication,
            database,
            ch,
        }
    }

    /// The example config (config/cdc.toml) pointed at this world, for these tables.
    pub fn config(&self, tables: &[&str]) -> Config {
        test_config(
            self.target,
            &self.slot,
            &self.publication,
            &self.database,
            tables,
        )
    }

    /// Rows of a ClickHouse query as TSV lines (FINAL and deleted-row filtering are the
    /// caller's, so tests say what they compare).
    pub async fn ch_rows(&self, sql: &str) -> Vec<String> {
        self.try_ch_rows(sql)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn try_ch_rows(&self, sql: &str) -> Result<Vec<String>, String> {
        let text = self
            .ch
            .query_text(sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        Ok(text.lines().map(str::to_string).collect())
    }

    /// `SELECT cols FROM table FINAL WHERE _is_deleted = 0 ORDER BY key` as TSV lines.
    pub async fn ch_live(&self, table: &str, cols: &str, order: &str) -> Vec<String> {
        self.try_ch_live(table, cols, order)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn try_ch_live(
        &self,
        table: &str,
        cols: &str,
        order: &str,
    ) -> Result<Vec<String>, String> {
        self.try_ch_rows(&format!(
            "SELECT {cols} FROM `{}`.`{}` FINAL WHERE _is_deleted = 0 ORDER BY {order}",
            self.database,
            table.replace('`', "\\`")
        ))
        .await
    }

    /// Drops the slot and publication (best effort) so no WAL is held after the test.
    pub async fn teardown(&self) {
        let c = pg().await;
        for _ in 0..50 {
            let r = c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", &[&self.slot]).await;
            let left: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.slot],
                )
                .await
                .unwrap()
                .get(0);
            if r.is_ok() && left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = c
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS \"{}\"",
                self.publication
            ))
            .await;
    }
}

pub fn test_config(
    target: Target,
    slot: &str,
    publication: &str,
    database: &str,
    tables: &[&str],
) -> Config {
    let text = std::fs::read_to_string(repo().join("config/cdc.toml")).expect("config/cdc.toml");
    let mut env: HashMap<&str, String> = HashMap::new();
    pg_env(&mut env);
    env.insert("TRIBUTARY_SLOT", slot.into());
    env.insert("TRIBUTARY_PUBLICATION", publication.into());
    env.insert("CLICKHOUSE_URL", target.url());
    env.insert("CLICKHOUSE_DATABASE", database.into());
    let mut cfg = Config::from_str_named(&text, "config/cdc.toml", &|k| env.get(k).cloned())
        .expect("config/cdc.toml loads");
    let p = &mut cfg.pipelines[0];
    p.name = format!("cdc_{slot}");
    let pg = p
        .postgres
        .as_mut()
        .expect("config/cdc.toml has [pipeline.postgres]");
    pg.tables = tables.iter().map(|s| s.to_string()).collect();
    pg.status_interval.0 = Duration::from_secs(1);
    fast_restarts(&mut cfg);
    cfg
}

/// The test Postgres in the variables the example configs read (PGHOST ... PGDATABASE).
pub fn pg_env(env: &mut HashMap<&str, String>) {
    env.insert("PGHOST", "127.0.0.1".into());
    env.insert("PGPORT", var("TRIBUTARY_TEST_PG_PORT"));
    env.insert("PGUSER", var("TRIBUTARY_TEST_PG_USER"));
    env.insert("PGPASSWORD", var("TRIBUTARY_TEST_PG_PASSWORD"));
    env.insert("PGDATABASE", var("TRIBUTARY_TEST_PG_DATABASE"));
}

/// Restarts within 0.1–2 s and a 20 s shutdown: tests do not wait for production backoffs.
pub fn fast_restarts(cfg: &mut Config) {
    cfg.supervision.backoff_initial.0 = Duration::from_millis(100);
    cfg.supervision.backoff_max.0 = Duration::from_secs(2);
    cfg.shutdown_timeout.0 = Duration::from_secs(20);
}

/// A pipeline tree running in this process.
pub struct Running {
    pub root: ractor::ActorRef<SupervisorMsg>,
    pub handle: tokio::task::JoinHandle<()>,
    pub registry: Arc<Registry>,
    pub pipeline: String,
    pub handles: Vec<tributary::pipelines::PipelineHandles>,
}

impl Running {
    pub async fn start(cfg: &Config) -> Running {
        let registry = Registry::new();
        let (root, handle, handles) = tributary::pipelines::start_root(cfg, registry.clone())
            .await
            .expect("start the tree");
        Running {
            root,
            handle,
            registry,
            pipeline: cfg.pipelines[0].name.clone(),
            handles,
        }
    }

    pub fn path(&self, child: &str) -> String {
        format!("root/{}/{child}", self.pipeline)
    }

    /// Kills the actor at `root/<pipeline>/<child>` (as a crash would), once it runs.
    pub async fn kill(&self, child: &str) {
        self.kill_in(&self.pipeline, child).await
    }

    /// Kills the actor at `root/<pipeline>/<child>` of any pipeline of the tree, once it runs.
    pub async fn kill_in(&self, pipeline: &str, child: &str) {
        let path = format!("root/{pipeline}/{child}");
        let root = self.root.clone();
        let cell = eventually(Duration::from_secs(30), &format!("{path} to run"), || {
            let (root, path) = (root.clone(), path.clone());
            async move {
                tributary::runtime::supervisor::find_actor(&root, &path)
                    .await
                    .ok_or("not running".to_string())
            }
        })
        .await;
        cell.kill();
    }

    pub async fn stop(self) {
        self.root
            .stop_and_wait(Some("test".into()), Some(Duration::from_secs(30)))
            .await
            .expect("graceful stop");
        let _ = self.handle.await;
    }

    /// Waits (at most `within`) for the tree to end by itself: the pipeline's last error, and
    /// the restarts of all its actors on the way.
    pub async fn until_stopped(self, within: Duration) -> (String, u64) {
        tokio::time::timeout(within, self.handle)
            .await
            .expect("the pipeline stops by itself")
            .unwrap();
        let actors = self.registry.actors();
        let restarts = actors.values().map(|a| a.restarts).sum();
        let err = actors[&format!("root/{}", self.pipeline)]
            .last_error
            .clone()
            .unwrap_or_default();
        (err, restarts)
    }

    /// The tree must end within 30 s without a restart (a permanent error): its error.
    pub async fn stops_at_once(self) -> String {
        let (err, restarts) = self.until_stopped(Duration::from_secs(30)).await;
        assert_eq!(restarts, 0, "restarted on the way to: {err}");
        err
    }

    /// Waits until every table's copy of this run is done (the first snapshot's, or those
    /// of tables added): a row written after that reaches ClickHouse as a streamed change.
    pub async fn copies_done(&self) {
        use tributary::runtime::registry::CopyState;
        let c = self.counters();
        eventually(Duration::from_secs(60), "the copies to finish", || {
            let c = c.clone();
            async move {
                let copies = c.copies.lock().unwrap();
                let left: Vec<&String> = copies
                    .iter()
                    .filter(|(_, p)| p.state != CopyState::Done)
                    .map(|(t, _)| t)
                    .collect();
                if !copies.is_empty() && left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not copied yet: {left:?}"))
                }
            }
        })
        .await
    }

    pub fn counters(&self) -> Arc<tributary::runtime::registry::PipelineCounters> {
        self.registry.pipeline(&self.pipeline)
    }
}

/// Moves the WAL insert position once (a logical message, which no table sees): on an idle
/// database a read "at the WAL position now" would otherwise sit where it was.
pub async fn move_wal(c: &tokio_postgres::Client) {
    c.batch_execute("SELECT pg_logical_emit_message(false, 'tributary-test', 'the WAL moves on')")
        .await
        .unwrap();
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what` and the last value.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows of a Postgres query rendered as ClickHouse would print them in TSV for String and
/// integer columns (NULL as `\N`, TSV escaping).
pub async fn pg_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| match r.get(i) {
                        None => "\\N".to_string(),
                        Some(v) => tsv(v),
                    })
                    .collect::<Vec<_>>()
                    .join("\t"),
            ),
            _ => None,
        })
        .collect()
}

/// A value as ClickHouse prints it in TabSeparated output (which also escapes `'`).
pub fn tsv(v: &str) -> String {
    let mut o = Vec::new();
    tributary::protocol::pgtext::tsv_escape(&mut o, v.as_bytes());
    String::from_utf8(o).unwrap().replace('\'', "\\'")
}

/// Logs of the code under test, when TRIBUTARY_TEST_LOG is set (e.g. `debug`).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(level) = std::env::var("TRIBUTARY_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(level)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Waits until ClickHouse's live rows equal Postgres's for `table` (`cols` in both, ordered
/// by `order`).
pub async fn converge(
    w: &World,
    pgc: &tokio_postgres::Client,
    pg_table: &str,
    ch_table: &str,
    cols: &str,
    order: &str,
    timeout: Duration,
) {
    let ch_sql = format!(
        "SELECT {} FROM `{}`.`{}` FINAL WHERE _is_deleted = 0 ORDER BY {}",
        cols.replace('"', "`"),
        w.database,
        ch_table.replace('`', "\\`"),
        order.replace('"', "`")
    );
    converge_sql(
        w,
        pgc,
        &format!("SELECT {cols} FROM {pg_table} ORDER BY {order}"),
        &ch_sql,
        timeout,
    )
    .await
}

/// Waits until a Postgres query and a ClickHouse query give the same rows.
pub async fn converge_sql(
    w: &World,
    c: &tokio_postgres::Client,
    pg_sql: &str,
    ch_sql: &str,
    timeout: Duration,
) {
    if let Err(e) = try_converge_sql(w, c, pg_sql, ch_sql, timeout).await {
        panic!("{e}");
    }
}

/// `converge_sql` that returns the failure instead of panicking (for a caller that adds its
/// own diagnosis).
pub async fn try_converge_sql(
    w: &World,
    c: &tokio_postgres::Client,
    pg_sql: &str,
    ch_sql: &str,
    timeout: Duration,
) -> Result<(), String> {
    let what = format!("ClickHouse to equal `{pg_sql}`");
    let deadline = Instant::now() + timeout;
    let check = || async {
        let want = pg_rows(c, pg_sql).await;
        let got = w.try_ch_rows(ch_sql).await?;
        if want == got {
            Ok(())
        } else {
            Err(format!(
                "{} rows in Postgres, {} in ClickHouse; first difference: {:?}",
                want.len(),
                got.len(),
                first_diff(&want, &got)
            ))
        }
    };
    loop {
        let last = match check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn first_diff(a: &[String], b: &[String]) -> Option<(usize, Option<String>, Option<String>)> {
    (0..a.len().max(b.len()))
        .find(|&i| a.get(i) != b.get(i))
        .map(|i| (i, a.get(i).cloned(), b.get(i).cloned()))
}

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tributary"))
}

/// Drops inactive slots left by test processes that are gone (a failed test skips its
/// teardown), so they never hold WAL.
pub async fn drop_stale_slots() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let c = pg().await;
        let rows = c.query("SELECT slot_name::text FROM pg_replication_slots WHERE NOT active AND slot_name LIKE 'slot\\_%'", &[]).await.unwrap();
        for r in rows {
            let name: String = r.get(0);
            let pid: Option<u32> = name.split('_').nth(1).and_then(|p| p.parse().ok());
            if pid.is_some_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = c.execute("SELECT pg_drop_replication_slot($1)", &[&name]).await;
            }
        }
    })
    .await;
}

/// config/sentiment.toml pointed at a fake Mastodon, an LLM server and this world's
/// ClickHouse database, with a unique pipeline name.
pub fn sentiment_config(
    w: &World,
    mastodon_url: &str,
    llm_url: &str,
    backend: &str,
    model: &str,
) -> Config {
    let text = std::fs::read_to_string(repo().join("config/sentiment.toml"))
        .expect("config/sentiment.toml");
    let mut env: HashMap<&str, String> = HashMap::new();
    env.insert("MASTODON_URL", mastodon_url.into());
    env.insert("MASTODON_STREAM", "public".into());
    env.insert("LLM_URL", llm_url.into());
    env.insert("LLM_BACKEND", backend.into());
    env.insert("LLM_MODEL", model.into());
    env.insert("CLICKHOUSE_URL", w.target.url());
    env.insert("CLICKHOUSE_DATABASE", w.database.clone());
    let mut cfg = Config::from_str_named(&text, "config/sentiment.toml", &|k| env.get(k).cloned())
        .expect("config/sentiment.toml loads");
    cfg.pipelines[0].name = unique("sentiment");
    fast_restarts(&mut cfg);
    let p = &mut cfg.pipelines[0];
    if let Some(m) = p.mastodon.as_mut() {
        m.reconnect_initial.0 = Duration::from_millis(100);
        m.reconnect_max.0 = Duration::from_secs(1);
    }
    if let Some(l) = p.llm.as_mut() {
        l.backoff_initial.0 = Duration::from_millis(50);
        l.circuit_cooldown.0 = Duration::from_millis(500);
        l.timeout.0 = Duration::from_secs(5);
    }
    p.batch.max_age.0 = Duration::from_millis(100);
    cfg
}

/// The live rows of the sentiment table: (m_id, sentiment, mastodon_text), by id.
pub async fn sentiment_rows(w: &World) -> Result<Vec<(String, String, String)>, String> {
    let rows = w
        .try_ch_rows(&format!(
            "SELECT m_id, sentiment, mastodon_text FROM `{}`.mastodon_sentiment FINAL WHERE _is_deleted = 0 ORDER BY length(m_id), m_id",
            w.database
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|l| {
            let mut it = l.splitn(3, '\t');
            let f = |s: Option<&str>| tributary::protocol::pgtext::unescape_tsv(s.unwrap_or(""));
            (f(it.next()), f(it.next()), f(it.next()))
        })
        .collect())
}

/// Turns a sentiment config into an offline one reading `file` (a JSON Lines of statuses).
pub fn use_replay(cfg: &mut Config, file: PathBuf) {
    let p = &mut cfg.pipelines[0];
    p.mastodon = None;
    p.replay = Some(tributary::config::ReplayConfig {
        file,
        rate: 0.0,
        instance: "replay.example".into(),
        // Every status, reblogs too (the tests follow the reblogs of posts seen before).
        filter: tributary::config::PostFilter {
            skip_reblogs: false,
            ..Default::default()
        },
    });
}

/// Prints a long test's report and appends it to target/reports/<name>.txt, which
/// scripts/test.sh prints after the suite (cargo test shows a passing test's output only with
/// --nocapture).
pub fn write_report(name: &str, text: &str) {
    use std::io::Write;
    eprintln!("{text}");
    let dir = repo().join("target/reports");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.txt")))
        .and_then(|mut f| writeln!(f, "{text}"));
}

/// Runs `cfg`, which must stop at once: within 30 s and without a restart (a permanent
/// error). Its error.
pub async fn stops_at_once(cfg: &Config) -> String {
    Running::start(cfg).await.stops_at_once().await
}
