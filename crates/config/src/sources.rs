//! The sections of a pipeline's source: `[pipeline.postgres]`, `[pipeline.kafka_source]`,
//! `[pipeline.mastodon]` and `[pipeline.replay]`. `[pipeline.postgres]` is read as written
//! (its keys and a libpq `url`, parsed by [`crate::pgconn`]) and resolved into
//! [`PostgresConfig`], the one connection the source makes.
//!
//! Must never: hold a default of its own (they are all in [`crate::defaults`]); fail the
//! parse of `[pipeline.postgres]` over what its keys say (the TOML error would quote the
//! file's line, password and all: a problem is kept for validation, which names the key);
//! put a password in a problem.

use crate::defaults;
use crate::pgconn::{self, ConnParams};
pub use crate::pgconn::{ChannelBinding, SslMode};
use crate::value::{empty_path_is_none, HumanDuration, Secret};
use serde::Deserialize;
use std::path::PathBuf;

/// A consumer group that reads Debezium topics (cdc) or a statuses topic (sentiment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `group.id`; offsets are committed only after ClickHouse has the rows.
    pub group: String,
    /// Topic names; an entry starting with `^` is a regular expression (librdkafka's).
    pub topics: Vec<String>,
    /// Messages that cannot be read go here, with the reason in headers.
    #[serde(default = "defaults::dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Where a group without committed offsets starts: `earliest` or `latest`.
    #[serde(default = "defaults::auto_offset_reset")]
    pub start: String,
    /// Messages taken into one chunk for the sink.
    #[serde(default = "defaults::kafka_chunk")]
    pub chunk_messages: usize,
    /// Static group membership (`group.instance.id`, unique per process in the group): a
    /// restarted process takes its partitions back at once instead of waiting for its old
    /// session to expire. Empty (the default): dynamic membership, which works with every
    /// broker (tansu 0.6 can leave a returning static member without partitions).
    #[serde(default)]
    pub instance_id: String,
    /// How often inserted offsets are committed (Kafka Connect's offset.flush.interval.ms).
    /// A crash replays at most this much (duplicates, collapsed by FINAL).
    #[serde(default = "defaults::commit_interval")]
    pub commit_interval: HumanDuration,
}

/// The Mastodon streaming API (SSE) of one or more instances, with REST backfill.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MastodonConfig {
    #[serde(rename = "instance")]
    pub instances: Vec<MastodonInstance>,
    /// Streams to follow on every instance: `public`, `public:local`, `public:remote`,
    /// `hashtag:<tag>`, `hashtag:local:<tag>`, `list:<id>`.
    #[serde(default = "defaults::streams")]
    pub streams: Vec<String>,
    /// Statuses fetched at most per gap when backfilling through the timeline API.
    #[serde(default = "defaults::backfill_limit")]
    pub backfill_limit: usize,
    #[serde(default = "defaults::reconnect_initial")]
    pub reconnect_initial: HumanDuration,
    #[serde(default = "defaults::reconnect_max")]
    pub reconnect_max: HumanDuration,
    /// A stream silent (not even a heartbeat) for this long is reconnected.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// How long a REST request (the start point, a backfill page) may take, its body
    /// included, and how long opening the stream may take until its response headers arrive
    /// (from then on its body has `idle_timeout`). A request that takes longer fails the
    /// connection, which reconnects with backoff.
    #[serde(default = "defaults::mastodon_request_timeout")]
    pub request_timeout: HumanDuration,
    /// The largest REST response body read (a page of 40 statuses is some hundred KiB): a
    /// larger one fails the connection, and no more of it is read.
    #[serde(default = "defaults::mastodon_max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default)]
    pub filter: PostFilter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MastodonInstance {
    /// e.g. `https://mastodon.social`
    pub url: String,
    /// Access token (optional for public streams on most instances).
    #[serde(default)]
    pub token: Secret,
    /// A file holding the token instead (a Docker or Kubernetes secret): read by
    /// [`crate::Config::load`], one trailing newline dropped.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub token_file: Option<PathBuf>,
}

/// Which posts are classified at all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostFilter {
    /// Only these languages (ISO 639-1); empty = all.
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub skip_bots: bool,
    #[serde(default = "defaults::yes")]
    pub skip_reblogs: bool,
}

/// Without a `filter` table: the same defaults as an empty one (reblogs skipped).
impl Default for PostFilter {
    fn default() -> Self {
        PostFilter {
            languages: Vec::new(),
            skip_bots: false,
            skip_reblogs: defaults::yes(),
        }
    }
}

/// Statuses from a JSON Lines file (one status per line, as the API returns them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    pub file: std::path::PathBuf,
    /// Posts per second; 0 = as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: f64,
    /// The `instance` recorded for replayed posts.
    #[serde(default = "defaults::replay_instance")]
    pub instance: String,
    #[serde(default)]
    pub filter: PostFilter,
}

/// The PostgreSQL source: where to connect (the keys, or a libpq `url`, or both), and what to
/// replicate.
///
/// Precedence: a key overrides what `url` says for the same parameter, and a key left empty
/// (`host = "${PGHOST:-}"`) counts as not given. What neither gives takes its default
/// ([`crate::defaults`]); `user` and `database` have none and are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawPostgresConfig")]
pub struct PostgresConfig {
    /// The host name: connected to, unless `hostaddr` is set, and the name the server's
    /// certificate is checked against (and sent as SNI).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    /// An IP address to connect to instead of resolving `host`, which is still the name
    /// verified (libpq's `hostaddr`). Without a `host`, `host` is this address.
    pub hostaddr: Option<String>,
    /// TLS, with libpq's meanings: `disable` (never), `prefer` (when the server offers it;
    /// the default, as in libpq), `require` (always, certificate not checked), `verify-ca`
    /// (the chain is checked), `verify-full` (the chain and the host name). With `require`, a
    /// given `sslrootcert` makes the chain checked as with `verify-ca`, as libpq does.
    pub sslmode: SslMode,
    /// The roots that sign the server's certificate (PEM). `None`: the system's trusted
    /// roots (the word `system` in the file; as libpq, `system` needs `verify-full`, and is
    /// its default then).
    pub sslrootcert: Option<PathBuf>,
    /// A client certificate and its key (PEM), both or neither.
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    /// SCRAM channel binding (libpq's `channel_binding`): `require` refuses a server that
    /// cannot prove it holds the TLS certificate (needs TLS); `prefer` (the default) uses it
    /// when offered; `disable` never does.
    pub channel_binding: ChannelBinding,
    /// Sends a cleartext or MD5 password over a connection without TLS. Off: such a request
    /// from the server is refused unless the connection is encrypted (SCRAM is always allowed).
    pub allow_insecure_password: bool,
    /// A file holding the password (a Docker or Kubernetes secret), read by
    /// [`crate::Config::load`], one trailing newline dropped. Not with `password`, nor with a
    /// password in `url`.
    pub password_file: Option<PathBuf>,
    /// Publication to read; created (for `tables`) when missing.
    pub publication: String,
    /// Logical replication slot (pgoutput); created when missing.
    pub slot: String,
    /// Tables as `schema.table` (or `table` for `public`). Empty: every table of an existing
    /// publication.
    pub tables: Vec<String>,
    /// How often a standby status update is sent even when nothing changed (keeps
    /// `wal_sender_timeout` from dropping a pipeline held back by backpressure).
    pub status_interval: HumanDuration,
    /// A standby (another process with this config, waiting while the active streams from
    /// the slot) ends the active's sessions and takes over when the active's walsender has
    /// not heard from it for this long (a machine or network gone); the active replies at
    /// least every third of it. `0s`: never; the standby waits for Postgres to end them.
    pub takeover_after: HumanDuration,
    /// How long connecting may take (`connect_timeout` in `url`, in seconds, if this is not
    /// set).
    pub connect_timeout: HumanDuration,
    /// Rows per message from the source to the sink (the unit of the bounded edge).
    pub chunk_rows: usize,
    /// A message is sent once its values reach this many bytes, however few its rows: the
    /// edge holds at most about `edge_capacity` × `chunk_bytes` of wide rows.
    pub chunk_bytes: usize,
    /// Rows per chunk when a table added to a running pipeline is copied: one statement, and
    /// the unit a restart resumes after.
    pub snapshot_chunk_rows: usize,
    /// Tables copied at once, each over a connection of its own.
    pub snapshot_workers: usize,
    /// What makes this section unusable, for validation to report (the first found).
    problem: Option<Problem>,
}

/// A key of `[pipeline.postgres]` and what is wrong with it (never a password).
#[derive(Debug, Clone)]
struct Problem {
    key: &'static str,
    message: String,
}

impl PostgresConfig {
    /// The key and the message of what makes this section unusable, if anything does.
    pub(crate) fn problem(&self) -> Option<(&'static str, &str)> {
        self.problem.as_ref().map(|p| (p.key, p.message.as_str()))
    }
}

/// `[pipeline.postgres]` as written: every connection key optional, since `url` may give it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresConfig {
    /// A libpq connection URI or keyword/value string.
    #[serde(default)]
    url: Option<Secret>,
    host: Option<String>,
    hostaddr: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    #[serde(default)]
    password: Secret,
    #[serde(default, deserialize_with = "empty_path_is_none")]
    password_file: Option<PathBuf>,
    database: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    #[serde(default, deserialize_with = "empty_path_is_none")]
    sslcert: Option<PathBuf>,
    #[serde(default, deserialize_with = "empty_path_is_none")]
    sslkey: Option<PathBuf>,
    channel_binding: Option<String>,
    #[serde(default)]
    allow_insecure_password: bool,
    publication: String,
    slot: String,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default = "defaults::status_interval")]
    status_interval: HumanDuration,
    #[serde(default = "defaults::takeover_after")]
    takeover_after: HumanDuration,
    connect_timeout: Option<HumanDuration>,
    #[serde(default = "defaults::chunk_rows")]
    chunk_rows: usize,
    #[serde(default = "defaults::chunk_bytes")]
    chunk_bytes: usize,
    #[serde(default = "defaults::snapshot_chunk_rows")]
    snapshot_chunk_rows: usize,
    #[serde(default = "defaults::snapshot_workers")]
    snapshot_workers: usize,
}

/// The first problem found while resolving.
#[derive(Default)]
struct Problems(Option<Problem>);

impl Problems {
    fn add(&mut self, key: &'static str, message: impl Into<String>) {
        self.0.get_or_insert(Problem {
            key,
            message: message.into(),
        });
    }
}

/// A key's refused value in its error (a key's value is no secret), unless the error names it.
fn quoting(value: &str, error: String) -> String {
    if error.contains(&format!("`{value}`")) {
        error
    } else {
        format!("`{value}`: {error}")
    }
}

fn given(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl From<RawPostgresConfig> for PostgresConfig {
    fn from(r: RawPostgresConfig) -> Self {
        let mut problems = Problems::default();
        let url = match r.url.as_ref().map(Secret::expose).filter(|u| !u.is_empty()) {
            Some(u) => pgconn::parse(u).unwrap_or_else(|e| {
                problems.add("url", e.to_string());
                ConnParams::default()
            }),
            None => ConnParams::default(),
        };
        let mut checked = |key: &'static str, r: Result<Option<String>, pgconn::ConnError>| {
            r.unwrap_or_else(|e| {
                problems.add(key, e.to_string());
                None
            })
        };
        let key_host = given(r.host).and_then(|h| checked("host", pgconn::check_host(&h)));
        let key_hostaddr =
            given(r.hostaddr).and_then(|a| checked("hostaddr", pgconn::check_hostaddr(&a)));
        let hostaddr = key_hostaddr.or(url.hostaddr);
        let host = key_host
            .or(url.host)
            .or_else(|| hostaddr.clone())
            .unwrap_or_else(defaults::pg_host);

        let user = given(r.user).or(url.user).unwrap_or_else(|| {
            problems.add("user", "missing field: set `user`, or give a user in `url`");
            String::new()
        });
        let database = given(r.database).or(url.dbname).unwrap_or_else(|| {
            problems.add(
                "database",
                "missing field: set `database`, or give a dbname in `url`",
            );
            String::new()
        });
        if r.password_file.is_some() {
            if !r.password.is_empty() {
                problems.add(
                    "password_file",
                    "`password` is set too: give the password in one of the two",
                );
            } else if url.password.is_some() {
                problems.add(
                    "password_file",
                    "`url` has a password too: give the password in one place",
                );
            }
        }
        let password = if r.password.is_empty() {
            url.password.unwrap_or_default()
        } else {
            r.password
        };

        let key_mode = given(r.sslmode).and_then(|m| {
            m.parse::<SslMode>()
                .map_err(|e| problems.add("sslmode", quoting(&m, e)))
                .ok()
        });
        let mode = key_mode.or(url.sslmode);
        let rootcert = given(r.sslrootcert).or(url.sslrootcert);
        let system_roots = rootcert.as_deref() == Some("system");
        let sslmode = match mode {
            Some(m) if system_roots && m != SslMode::VerifyFull => {
                problems.add(
                    "sslrootcert",
                    format!("`system` needs sslmode `verify-full`, not `{m}` (libpq's rule: the system's roots vouch for any public name, so only the host-name check makes them mean something)"),
                );
                m
            }
            Some(m) => m,
            None if system_roots => SslMode::VerifyFull,
            None => defaults::pg_sslmode(),
        };
        let sslrootcert = rootcert.filter(|r| r != "system").map(PathBuf::from);
        let sslcert = r.sslcert.or(url.sslcert.map(PathBuf::from));
        let sslkey = r.sslkey.or(url.sslkey.map(PathBuf::from));
        match (&sslcert, &sslkey) {
            (Some(_), None) => problems.add(
                "sslcert",
                "needs `sslkey` too (the client certificate's private key)",
            ),
            (None, Some(_)) => {
                problems.add("sslkey", "needs `sslcert` too (the client certificate)")
            }
            _ => {}
        }
        if sslmode == SslMode::Disable && (sslrootcert.is_some() || sslcert.is_some()) {
            problems.add(
                "sslmode",
                "is `disable`, but sslrootcert or sslcert is set: they need TLS",
            );
        }

        let channel_binding = given(r.channel_binding)
            .and_then(|c| {
                c.parse::<ChannelBinding>()
                    .map_err(|e| problems.add("channel_binding", quoting(&c, e)))
                    .ok()
            })
            .or(url.channel_binding)
            .unwrap_or_else(defaults::pg_channel_binding);
        if channel_binding == ChannelBinding::Require && sslmode == SslMode::Disable {
            problems.add(
                "channel_binding",
                "`require` binds authentication to TLS, but sslmode is `disable`",
            );
        }

        let t = r.takeover_after.0;
        if !t.is_zero() && t < std::time::Duration::from_secs(1) {
            problems.add(
                "takeover_after",
                "is below 1s: a busy active would be taken over while alive (0s: never)",
            );
        }

        let connect_timeout = r
            .connect_timeout
            .or(url.connect_timeout.map(HumanDuration))
            .unwrap_or_else(defaults::connect_timeout);

        PostgresConfig {
            host,
            port: r.port.or(url.port).unwrap_or_else(defaults::pg_port),
            user,
            password,
            database,
            hostaddr,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            channel_binding,
            allow_insecure_password: r.allow_insecure_password,
            password_file: r.password_file,
            publication: r.publication,
            slot: r.slot,
            tables: r.tables,
            status_interval: r.status_interval,
            takeover_after: r.takeover_after,
            connect_timeout,
            chunk_rows: r.chunk_rows,
            chunk_bytes: r.chunk_bytes,
            snapshot_chunk_rows: r.snapshot_chunk_rows,
            snapshot_workers: r.snapshot_workers,
            problem: problems.0,
        }
    }
}
