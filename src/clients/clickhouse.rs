//! The ClickHouse HTTP client of every sink: the `clickhouse` crate, used for DDL, raw
//! TabSeparated inserts and small TSV reads, plus the server-version probe.
//!
//! Must never: put credentials in a URL, a log line or an error (they travel as headers),
//! or report an insert as done before the server answered success.

use crate::clients::tls;
use crate::config::{ClickHouseConfig, Compression};
use crate::protocol::chcluster;
use crate::protocol::chtypes::{ch_ident, ch_literal, parse_code, ServerCaps};
use crate::protocol::pgtext::unescape_tsv;
use crate::runtime::fault::ErrorClass;
use crate::runtime::registry::PipelineCounters;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ChError {
    #[error("ClickHouse at {addr}: {message}")]
    Server {
        addr: String,
        code: Option<u32>,
        message: String,
    },
    #[error("ClickHouse at {addr}: cannot reach the server: {message}")]
    Unreachable { addr: String, message: String },
    #[error("ClickHouse at {addr}: no answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    /// The server answers a ping, but this request did not finish in time: not an outage
    /// (waiting would send it again for ever), a request too big or a server too busy.
    #[error("ClickHouse at {addr}: the server answers, but this request did not finish within {after:?} (clickhouse.request_timeout): raise it, or lower batch.max_rows / batch.max_bytes")]
    TooSlow { addr: String, after: Duration },
    /// TLS could not be set up (a certificate file) or was refused (the server's
    /// certificate, or ours): the same would happen again.
    #[error("ClickHouse at {addr}: {message}")]
    Tls { addr: String, message: String },
    /// A DDL that cannot be placed on `clickhouse.cluster` (a bug: it would run on one
    /// replica only).
    #[error("ClickHouse cluster: {0}")]
    Cluster(String),
}

impl ChError {
    /// ClickHouse's error code, when the server sent one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ChError::Server { code, .. } => *code,
            _ => None,
        }
    }

    /// The server could not be reached or did not answer (not an answer it gave).
    pub fn is_outage(&self) -> bool {
        matches!(self, ChError::Unreachable { .. } | ChError::Timeout { .. })
    }

    /// Outage when the server is away; permanent when it refused our credentials
    /// (AUTHENTICATION_FAILED 516; UNKNOWN_USER 192, WRONG_PASSWORD 193 and
    /// REQUIRED_PASSWORD 194 on older servers); transient otherwise.
    pub fn class(&self) -> ErrorClass {
        match self.code() {
            _ if self.is_outage() => ErrorClass::Outage,
            _ if matches!(self, ChError::Tls { .. } | ChError::Cluster(_)) => ErrorClass::Permanent,
            Some(192..=194 | 516) => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// The class of an error of an actor that talks to ClickHouse: a [`ChError`] by its
/// [`ChError::class`], anything else by [`crate::runtime::fault::classify`].
pub fn classify(err: &(dyn std::error::Error + 'static)) -> ErrorClass {
    match err.downcast_ref::<ChError>() {
        Some(e) => e.class(),
        None => crate::runtime::fault::classify(err),
    }
}

/// The HTTP connector under the `clickhouse` crate, with its own defaults: TCP keepalive
/// 60 s, no delay.
fn http_connector() -> hyper_util::client::legacy::connect::HttpConnector {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_nodelay(true);
    http
}

/// An HTTP client as the `clickhouse` crate builds it (idle connections kept 2 s, under the
/// server's 3 s keep-alive), over a connector. (A macro: the crate's body type has no name
/// outside it, so only inference at the call can give it.)
macro_rules! http_client {
    ($connector:expr) => {
        clickhouse::Client::with_http_client(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(2))
                .build($connector),
        )
    };
}

/// The `clickhouse` client of `url`: plain HTTP, or HTTPS by our rustls configuration
/// (custom CA, client certificate).
fn base_client(tls: Option<&Arc<rustls::ClientConfig>>) -> clickhouse::Client {
    match tls {
        None => http_client!(http_connector()),
        Some(c) => {
            // hyper-rustls sets ALPN itself (http/1.1 with enable_http1).
            let config = (**c).clone();
            let mut http = http_connector();
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only()
                .enable_http1()
                .wrap_connector(http);
            http_client!(https)
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut m = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !m.contains(&t) {
            m.push_str(": ");
            m.push_str(&t);
        }
        src = s.source();
    }
    m
}

/// How long an `ON CLUSTER` DDL waits for every replica before it counts as done by those
/// that answered (the rest run it from the queue when they are back).
const DDL_WAIT: Duration = Duration::from_secs(5);

/// One server of `url` and `replicas`.
struct Server {
    inner: clickhouse::Client,
    addr: String,
}

#[derive(Clone)]
pub struct ChClient {
    /// `url`'s server, then each of `replicas`: requests go to `current`, and move on to the
    /// next when it cannot be reached (clones share `current`).
    servers: Arc<Vec<Server>>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    /// `clickhouse.cluster` and `replication_path`: DDL runs `ON CLUSTER` (see
    /// [`crate::protocol::chcluster`]).
    cluster: Option<(String, String)>,
    /// `clickhouse.distributed`: a Distributed table beside each live view.
    distributed: bool,
    /// `url`'s address and host (TLS checks).
    addr: String,
    host: String,
    port: u16,
    /// The TLS client configuration of an https:// URL.
    tls: Option<Arc<rustls::ClientConfig>>,
    pub database: String,
    pub caps: ServerCaps,
    timeout: Duration,
    outages: Option<Arc<PipelineCounters>>,
}

/// An insert under way (see [`ChClient::open_insert`]). Every piece sent is kept until the
/// end: an insert that fails (ClickHouse away, an error, a timeout) gives back the whole body
/// for the ordinary insert with its retries and outage waits. Dropped unended, it is aborted
/// (ClickHouse commits nothing of it).
pub struct OpenInsert {
    /// `None` once a piece failed to go out: the rest is only kept.
    insert: Option<clickhouse::insert_formatted::InsertFormatted>,
    pieces: Vec<Bytes>,
    timeout: Duration,
}

impl OpenInsert {
    /// Sends `piece` (whole rows) on.
    pub async fn send(&mut self, piece: Bytes) {
        if let Some(insert) = self.insert.as_mut() {
            let sent = tokio::time::timeout(self.timeout, insert.send(piece.clone())).await;
            if !matches!(sent, Ok(Ok(()))) {
                self.insert = None;
            }
        }
        self.pieces.push(piece);
    }

    /// Bytes sent (or kept) so far.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Sends `rest` and ends the insert: `Ok` once ClickHouse has committed it, else the
    /// whole body (every piece and `rest`) to insert again.
    pub async fn end(mut self, rest: Bytes) -> Result<(), Bytes> {
        if !rest.is_empty() {
            self.send(rest).await;
        }
        if let Some(insert) = self.insert.take() {
            if matches!(
                tokio::time::timeout(self.timeout, insert.end()).await,
                Ok(Ok(()))
            ) {
                return Ok(());
            }
        }
        let mut whole = bytes::BytesMut::with_capacity(self.len());
        for p in &self.pieces {
            whole.extend_from_slice(p);
        }
        Err(whole.freeze())
    }
}

impl ChClient {
    /// Connects for `tributary check`: the client and the lines that describe the server
    /// (`clickhouse <addr>: version <v> (<generation> types)`, and its TLS), errors as text.
    pub async fn connect_described(cfg: &ClickHouseConfig) -> Result<(ChClient, String), String> {
        let ch = ChClient::connect(cfg).await.map_err(|e| e.to_string())?;
        let mut line = format!(
            "  clickhouse {}: version {} ({} types)",
            ch.addr(),
            ch.caps.version,
            ch.caps.generation()
        );
        if let Some(tls) = &ch.tls {
            let info = tls::probe(&ch.host, ch.port, tls.clone(), tls::Verify::Full)
                .await
                .map_err(|e| format!("ClickHouse at {}: {e}", ch.addr()))?;
            line.push_str(&format!("\n    tls: {}", info.describe()));
        }
        Ok((ch, line))
    }

    /// Connects and probes `SELECT version()`. The database is created when missing.
    pub async fn connect(cfg: &ClickHouseConfig) -> Result<ChClient, ChError> {
        let addr = cfg.url.split('?').next().unwrap_or(&cfg.url).to_string();
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| ChError::Tls {
            addr: addr.clone(),
            message: format!("not a URL: {e}"),
        })?;
        let host = url.host_str().unwrap_or("").to_string();
        let port = url.port_or_known_default().unwrap_or(8123);
        let tls = match url.scheme() {
            "https" => Some(Arc::new(
                tls::client_config(&tls::TlsSettings {
                    verify: tls::Verify::Full,
                    roots: cfg.ca_cert.clone(),
                    client_cert: cfg.client_cert.clone().zip(cfg.client_key.clone()),
                })
                .map_err(|e| ChError::Tls {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?,
            )),
            _ => None,
        };
        let server = |u: &str| {
            let mut inner = base_client(tls.as_ref())
                .with_url(u)
                .with_user(&cfg.user)
                .with_password(cfg.password.expose())
                // 18.16 has no RowBinaryWithNamesAndTypes; we send and read TabSeparated only.
                .with_validation(false)
                .with_compression(match cfg.compression.for_host(&host) {
                    Compression::None => clickhouse::Compression::None,
                    Compression::Lz4 | Compression::Auto => clickhouse::Compression::Lz4,
                });
            if !cfg.cluster.is_empty() {
                // Replicated tables drop an insert whose block they saw before; a replay or a
                // copy taken again after a TRUNCATE must land (versions merge duplicates).
                inner = inner.with_setting("insert_deduplicate", "0");
            }
            Server {
                inner,
                addr: u.split('?').next().unwrap_or(u).to_string(),
            }
        };
        let servers: Vec<Server> = std::iter::once(cfg.url.as_str())
            .chain(cfg.replicas.iter().map(String::as_str))
            .map(server)
            .collect();
        let mut client = ChClient {
            servers: Arc::new(servers),
            current: Arc::default(),
            cluster: (!cfg.cluster.is_empty())
                .then(|| (cfg.cluster.clone(), cfg.replication_path.clone())),
            distributed: cfg.distributed && !cfg.cluster.is_empty(),
            addr,
            host,
            port,
            tls,
            database: cfg.database.clone(),
            caps: ServerCaps::from_version("0.0"),
            timeout: cfg.request_timeout.0,
            outages: None,
        };
        let version = match client.query_text("SELECT version()").await {
            Ok(v) => v,
            Err(e) => {
                // A refused client certificate can reach the HTTP client as a connection that
                // closed before the request (an outage, by its look): TLS alone tells.
                if let (Some(tls), false) = (&client.tls, e.class() == ErrorClass::Permanent) {
                    if let Some(why) = tls::refused(&client.host, client.port, tls.clone()).await {
                        return Err(ChError::Tls {
                            addr: client.addr.clone(),
                            message: why,
                        });
                    }
                }
                return Err(e);
            }
        };
        client.caps = ServerCaps::from_version(version.trim());
        if client.caps.version.is_empty() || client.caps.version == "0.0" {
            return Err(ChError::Server {
                addr: client.addr.clone(),
                code: None,
                message: format!("unexpected version reply {version:?}"),
            });
        }
        client
            .execute(&format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                ch_ident(&cfg.database)
            ))
            .await?;
        Ok(client)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn map_err(&self, addr: &str, e: clickhouse::error::Error) -> ChError {
        match e {
            clickhouse::error::Error::BadResponse(text) => {
                let code = parse_code(&text);
                ChError::Server {
                    addr: addr.to_string(),
                    code,
                    message: text.trim().to_string(),
                }
            }
            clickhouse::error::Error::TimedOut => ChError::Timeout {
                addr: addr.to_string(),
                after: self.timeout,
            },
            clickhouse::error::Error::Network(e) => match tls::rustls_cause(&*e) {
                Some(r) if tls::is_refusal(r) => ChError::Tls {
                    addr: addr.to_string(),
                    message: tls::explain(&self.host, r),
                },
                _ => ChError::Unreachable {
                    addr: addr.to_string(),
                    message: error_chain(&*e),
                },
            },
            other => ChError::Server {
                addr: addr.to_string(),
                code: None,
                message: other.to_string(),
            },
        }
    }

    /// From now on a request that cannot reach ClickHouse, or gets no answer within the
    /// request timeout, is sent again, however long ClickHouse is away: the actor that owns
    /// this client holds still meanwhile (a sink acknowledges nothing, so its edge fills and
    /// its source stops reading; a replayed insert is merged away by the table's version).
    /// `counters.clickhouse_unreachable` counts the requests waiting, for the gauge and
    /// `/ready`. `connect` itself never waits: a server missing at start is an error.
    pub fn wait_out_outages(mut self, counters: Arc<PipelineCounters>) -> ChClient {
        self.outages = Some(counters);
        self
    }

    /// The server requests go to now.
    fn server(&self) -> (usize, &Server) {
        let i = self.current.load(Ordering::Relaxed) % self.servers.len();
        (i, &self.servers[i])
    }

    /// Moves requests from server `from` on to the next (unless another request did).
    fn next_server(&self, from: usize) -> &Server {
        let next = (from + 1) % self.servers.len();
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
        self.server().1
    }

    async fn timed<T, F, Fut>(&self, f: F) -> Result<T, ChError>
    where
        F: Fn(clickhouse::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let mut delay = Duration::from_millis(200);
        // Counted in `clickhouse_unreachable` while waiting; the guard uncounts it however
        // the wait ends, also when the actor is killed in the middle of it.
        let mut waiting: Option<(Instant, WaitGuard)> = None;
        // Servers found unreachable in a row since the last wait.
        let mut missed = 0;
        loop {
            let (i, server) = self.server();
            let r = match tokio::time::timeout(self.timeout, f(server.inner.clone())).await {
                Ok(r) => r.map_err(|e| self.map_err(&server.addr, e)),
                Err(_) => Err(ChError::Timeout {
                    addr: server.addr.clone(),
                    after: self.timeout,
                }),
            };
            // A timeout while the server answers a ping is this request's, not an outage.
            if matches!(r, Err(ChError::Timeout { .. })) && self.outages.is_some() {
                let ping = tokio::time::timeout(
                    self.timeout.min(Duration::from_secs(5)),
                    server.inner.query("SELECT 1").execute(),
                )
                .await;
                if matches!(ping, Ok(Ok(()))) {
                    return Err(ChError::TooSlow {
                        addr: server.addr.clone(),
                        after: self.timeout,
                    });
                }
            }
            let away = matches!(
                r,
                Err(ChError::Unreachable { .. } | ChError::Timeout { .. })
            );
            // Another replica first: a server away is no outage while one of them answers.
            if away && missed + 1 < self.servers.len() {
                missed += 1;
                let next = self.next_server(i);
                if let Err(e) = &r {
                    tracing::warn!(error = %e, next = %next.addr, "ClickHouse replica unreachable: going on with the next");
                }
                continue;
            }
            missed = 0;
            let counters = match (&r, &self.outages) {
                (Err(_), Some(c)) if away => c,
                _ => {
                    if let Some((since, _guard)) = waiting {
                        tracing::info!(server = %server.addr, waited_s = since.elapsed().as_secs(), "ClickHouse is back");
                    }
                    return r;
                }
            };
            let (since, _) =
                waiting.get_or_insert_with(|| (Instant::now(), WaitGuard::new(counters.clone())));
            if let Err(e) = &r {
                tracing::warn!(waited_s = since.elapsed().as_secs(), error = %e, retry_in = ?delay,
                    "ClickHouse unreachable; waiting for it (nothing is acknowledged meanwhile)");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
            self.next_server(i);
        }
    }

    /// Runs a statement that returns nothing (DDL).
    /// On a cluster, a DDL runs `ON CLUSTER` there, its tables replicated.
    pub async fn execute(&self, sql: &str) -> Result<(), ChError> {
        match &self.cluster {
            Some((cluster, path)) if chcluster::is_ddl(sql) => {
                let placed = chcluster::on_cluster(sql, cluster, path).map_err(ChError::Cluster)?;
                let sql = placed.as_str();
                let wait = DDL_WAIT.as_secs().to_string();
                let r = self
                    .timed(|c| {
                        let wait = wait.clone();
                        async move {
                            c.query(sql)
                                .with_setting("distributed_ddl_task_timeout", wait)
                                .execute()
                                .await
                        }
                    })
                    .await;
                match r {
                    // Queued for every replica, done by those that answer: a replica away
                    // runs it when it is back (ClickHouse's distributed DDL queue).
                    Err(ChError::Server {
                        code: Some(159),
                        message,
                        ..
                    }) if message.contains("in background") => {
                        tracing::warn!(cluster = %cluster, waited = ?DDL_WAIT, "a schema change is done on the replicas that answer; the others run it from the cluster's DDL queue when they are back");
                        Ok(())
                    }
                    r => r,
                }
            }
            _ => {
                self.timed(|c| async move { c.query(sql).execute().await })
                    .await
            }
        }
    }

    /// Runs a query and returns its TabSeparated output.
    pub async fn query_text(&self, sql: &str) -> Result<String, ChError> {
        let bytes = self
            .timed(|c| async move {
                let mut cursor = c.query(sql).fetch_bytes("TabSeparated")?;
                cursor.collect().await
            })
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Sends an `INSERT ... FORMAT TabSeparated` with `body` and waits for success.
    pub async fn insert_tsv(&self, sql: &str, body: Bytes) -> Result<(), ChError> {
        self.timed(|c| {
            let body = body.clone();
            async move {
                let mut insert = c.insert_formatted_with(sql.to_string());
                insert.send(body).await?;
                insert.end().await
            }
        })
        .await
    }

    /// An `INSERT ... FORMAT TabSeparated` whose body is sent in pieces while more rows are
    /// encoded (ClickHouse parses them meanwhile), ended by [`OpenInsert::end`].
    pub fn open_insert(&self, sql: &str) -> OpenInsert {
        OpenInsert {
            insert: Some(self.server().1.inner.insert_formatted_with(sql.to_string())),
            pieces: Vec::new(),
            timeout: self.timeout,
        }
    }

    /// `insert_tsv`, and an error that ClickHouse answered is retried until `attempts` of
    /// them (each counted in `insert_retries`; the delay doubles from 200 ms to 10 s), then
    /// returned. (Outages are waited out below, with `wait_out_outages`.)
    pub async fn insert_tsv_retrying(
        &self,
        sql: &str,
        body: Bytes,
        attempts: u32,
        counters: &PipelineCounters,
        table: &str,
    ) -> Result<(), ChError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.insert_tsv(sql, body.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < attempts => {
                    PipelineCounters::add(&counters.insert_retries, 1);
                    tracing::warn!(table, attempt, error = %e, ?delay, "insert failed; retrying");
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Columns of `table` (name, type) in order, or `None` when the table does not exist.
    pub async fn table_columns(
        &self,
        table: &str,
    ) -> Result<Option<Vec<(String, String)>>, ChError> {
        let sql = format!(
            "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
            ch_literal(&self.database),
            ch_literal(table)
        );
        let text = self.query_text(&sql).await?;
        let cols: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, t)| (unescape_tsv(n), unescape_tsv(t)))
            .collect();
        Ok((!cols.is_empty()).then_some(cols))
    }
}

impl ChClient {
    /// The engine of `table` in this client's database (`View`, `ReplacingMergeTree`, ...),
    /// `None` when there is no such table.
    pub async fn table_engine(&self, table: &str) -> Result<Option<String>, ChError> {
        let sql = format!(
            "SELECT engine FROM system.tables WHERE database = {} AND name = {}",
            ch_literal(&self.database),
            ch_literal(table)
        );
        let text = self.query_text(&sql).await?;
        Ok(text.lines().next().map(unescape_tsv))
    }

    /// With `clickhouse.distributed`, (re)makes `<table>_all`, the Distributed table over
    /// every shard's `<table>_live` (after the view was made, with its columns). A table of
    /// that name that is not Distributed is someone's data: an error, left alone.
    pub async fn distribute_view(&self, table: &str) -> Result<(), ChError> {
        let Some((cluster, _)) = self.cluster.as_ref().filter(|_| self.distributed) else {
            return Ok(());
        };
        let name = format!("{table}{}", chcluster::DISTRIBUTED_SUFFIX);
        if let Some(engine) = self.table_engine(&name).await? {
            if engine != "Distributed" {
                return Err(ChError::Cluster(format!(
                    "`{}`.`{name}` exists as a {engine} table: it is left alone, and no Distributed table is made over `{table}` (rename it, or set clickhouse.distributed = false)",
                    self.database
                )));
            }
        }
        let view = format!("{table}{}", crate::protocol::chtypes::LIVE_VIEW_SUFFIX);
        let (drop, create) = chcluster::distributed_sql(&self.database, table, &view, cluster);
        self.execute(&drop).await?;
        self.execute(&create).await
    }

    /// [`Self::distribute_view`] when `<table>_all` is missing (`clickhouse.distributed`
    /// turned on for tables made before).
    pub async fn ensure_distributed(&self, table: &str) -> Result<(), ChError> {
        if !self.distributed {
            return Ok(());
        }
        let name = format!("{table}{}", chcluster::DISTRIBUTED_SUFFIX);
        if self.table_engine(&name).await?.is_none() {
            self.distribute_view(table).await?;
        }
        Ok(())
    }

    /// The sorting key and partition key of `table` as `system.tables` prints them, `None`
    /// when there is no such table.
    pub async fn table_keys(&self, table: &str) -> Result<Option<(String, String)>, ChError> {
        let sql = format!(
            "SELECT sorting_key, partition_key FROM system.tables WHERE database = {} AND name = {}",
            ch_literal(&self.database),
            ch_literal(table)
        );
        let text = self.query_text(&sql).await?;
        Ok(text.lines().next().map(|l| {
            let (s, p) = l.split_once('\t').unwrap_or((l, ""));
            (unescape_tsv(s), unescape_tsv(p))
        }))
    }
}

/// The table where pipelines keep their durable positions (snapshot markers, resume points).
pub const STATE_TABLE: &str = "_tributary_state";

impl ChClient {
    pub async fn ensure_state_table(&self) -> Result<(), ChError> {
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (`pipeline` String, `key` String, `value` String, `updated_ms` UInt64) \
             ENGINE = ReplacingMergeTree(`updated_ms`) ORDER BY (`pipeline`, `key`)",
            ch_ident(&self.database),
            ch_ident(STATE_TABLE)
        ))
        .await
    }

    /// The last value written for (`pipeline`, `key`).
    pub async fn read_state(&self, pipeline: &str, key: &str) -> Result<Option<String>, ChError> {
        let sql = format!(
            "SELECT value FROM {}.{} FINAL WHERE `pipeline` = {} AND `key` = {} ORDER BY `updated_ms` DESC LIMIT 1",
            ch_ident(&self.database),
            ch_ident(STATE_TABLE),
            ch_literal(pipeline),
            ch_literal(key)
        );
        Ok(self
            .query_text(&sql)
            .await?
            .lines()
            .next()
            .map(unescape_tsv))
    }

    /// The last values written for (`pipeline`, each of `keys`), in order (one query).
    pub async fn read_states(
        &self,
        pipeline: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, ChError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = keys.iter().map(|k| ch_literal(k)).collect();
        let sql = format!(
            "SELECT `key`, argMax(`value`, `updated_ms`) FROM {}.{} FINAL WHERE `pipeline` = {} AND `key` IN ({}) GROUP BY `key`",
            ch_ident(&self.database),
            ch_ident(STATE_TABLE),
            ch_literal(pipeline),
            list.join(", ")
        );
        let text = self.query_text(&sql).await?;
        let found: std::collections::HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (unescape_tsv(k), unescape_tsv(v)))
            .collect();
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// Records values for (`pipeline`, key) durably (one insert for all).
    pub async fn write_state(
        &self,
        pipeline: &str,
        entries: &[(String, String)],
    ) -> Result<(), ChError> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut body = Vec::new();
        for (k, v) in entries {
            for (i, f) in [pipeline, k.as_str(), v.as_str()].iter().enumerate() {
                if i > 0 {
                    body.push(b'\t');
                }
                crate::protocol::pgtext::tsv_escape(&mut body, f.as_bytes());
            }
            body.extend_from_slice(format!("\t{now}\n").as_bytes());
        }
        let sql = format!(
            "INSERT INTO {}.{} (`pipeline`, `key`, `value`, `updated_ms`) FORMAT TabSeparated",
            ch_ident(&self.database),
            ch_ident(STATE_TABLE)
        );
        self.insert_tsv(&sql, Bytes::from(body)).await
    }
}

/// One request waiting for ClickHouse, counted in `clickhouse_unreachable` while it lives.
struct WaitGuard(Arc<PipelineCounters>);

impl WaitGuard {
    fn new(c: Arc<PipelineCounters>) -> WaitGuard {
        c.clickhouse_unreachable.fetch_add(1, Ordering::Relaxed);
        WaitGuard(c)
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0
            .clickhouse_unreachable
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> Box<dyn std::error::Error> {
        Box::new(e)
    }

    #[test]
    fn outages_are_told_from_answers() {
        let addr = || "127.0.0.1:1".to_string();
        let server = |code| ChError::Server {
            addr: addr(),
            code,
            message: "x".into(),
        };
        let timeout = ChError::Timeout {
            addr: addr(),
            after: Duration::from_secs(1),
        };
        let refused = ChError::Unreachable {
            addr: addr(),
            message: "refused".into(),
        };
        assert_eq!(classify(boxed(timeout).as_ref()), ErrorClass::Outage);
        assert_eq!(classify(boxed(refused).as_ref()), ErrorClass::Outage);
        assert_eq!(
            classify(boxed(server(None)).as_ref()),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(boxed(server(Some(241))).as_ref()),
            ErrorClass::Transient
        );
        for code in [192, 193, 194, 516] {
            assert_eq!(server(Some(code)).class(), ErrorClass::Permanent, "{code}");
        }
        let wrapped = crate::runtime::fault::classified("x".into(), ErrorClass::Outage);
        assert_eq!(classify(wrapped.as_ref()), ErrorClass::Outage);
    }
}
