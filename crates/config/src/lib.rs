//! The configuration file: one TOML document, parsed with unknown keys rejected, `${ENV}`
//! interpolation inside strings, defaults in one place (the `Default` impls below) and a
//! validation pass that runs before anything connects.
//!
//! Must never: print a secret (passwords are [`Secret`], whose `Debug` is redacted), or accept
//! a config that would only fail later at run time when a check here could catch it.

use serde::Deserialize;
use std::{collections::HashSet, fmt, path::Path, time::Duration};
pub use tributary_protocol::chtypes::JsonAs;

/// Why a config could not be used. Every variant names the file; parse and validation
/// errors name the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: line {line}: environment variable `{var}` is not set (write `${{{var}:-default}}` for a default)")]
    MissingEnv {
        file: String,
        line: usize,
        var: String,
    },
    #[error("{file}: line {line}: unterminated `${{` in an interpolation")]
    BadInterpolation { file: String, line: usize },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// A string that must never reach a log or an error message.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

/// A duration written as `250ms`, `10s`, `5m` or `1h`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (write e.g. 200ms, 10s, 5m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unit must be ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub supervision: SupervisionConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub chaos: ChaosConfig,
    /// How long SIGINT/SIGTERM may take to drain what is in flight before the process exits.
    #[serde(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
    /// The Kafka cluster of the pipelines that have a `kafka_sink` or `kafka_source`.
    pub kafka: Option<KafkaConfig>,
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
}

/// A Kafka cluster (any Kafka-protocol broker). Every librdkafka property can be set in
/// `properties` (SASL, TLS, timeouts); their values are secrets: never logged, and removed
/// from client errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    #[serde(default = "defaults::kafka_client_id")]
    pub client_id: String,
    /// librdkafka properties, passed through as they are (they override ours).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, Secret>,
}

/// CDC into Kafka: one Debezium-compatible topic per table, `<topic_prefix>.<schema>.<table>`;
/// in a `sentiment` pipeline: the statuses go to `topic` instead of an LLM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Debezium's `topic.prefix` (also `source.name` in every event).
    #[serde(default = "defaults::topic_prefix")]
    pub topic_prefix: String,
    /// Kafka Connect JsonConverter `schemas.enable`: each key and value carries its schema.
    #[serde(default = "defaults::yes")]
    pub schemas: bool,
    /// A null-value message with the same key after each delete (log compaction).
    #[serde(default = "defaults::yes")]
    pub tombstones: bool,
    /// Debezium's `decimal.handling.mode`: `precise` (bytes), `string` or `double`.
    #[serde(default = "defaults::decimal_handling")]
    pub decimal_handling: tributary_protocol::debezium::DecimalMode,
    /// Partitions and replication factor of the topics tributary creates (existing topics
    /// are used as they are). One partition keeps a TRUNCATE in order with every row.
    #[serde(default = "defaults::one")]
    pub partitions: i32,
    #[serde(default = "defaults::one")]
    pub replication_factor: i32,
    /// Where the CDC pipeline records that its initial snapshot is complete.
    #[serde(default = "defaults::kafka_state_topic")]
    pub state_topic: String,
    /// A `sentiment` pipeline's statuses topic (key: `instance/status id`).
    #[serde(default = "defaults::statuses_topic")]
    pub topic: String,
    /// How long a message may wait for the broker's acknowledgement before the sink fails
    /// (and the stream is replayed from the last confirmed position).
    #[serde(default = "defaults::delivery_timeout")]
    pub delivery_timeout: HumanDuration,
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (human-readable) or `json` (one object per line, with trace and span ids).
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax; the `RUST_LOG` variable overrides it.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); empty = no span export.
    #[serde(default)]
    pub otlp_endpoint: String,
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: defaults::log_format(),
            log_level: defaults::log_level(),
            otlp_endpoint: String::new(),
            service_name: defaults::service_name(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The HTTP listener: `/health`, `/ready`, `/status`, `/metrics` and the status page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`; empty = no listener.
    #[serde(default = "defaults::http_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: defaults::http_listen(),
        }
    }
}

/// Fault controls on the HTTP listener (`/admin/actors`, `/admin/kill`, `/admin/stop`):
/// off by default, and refused without the bearer token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub token: Secret,
}

/// Chaos for your own deployment: kills a random running actor of the chosen kinds every
/// `interval` (off by default). Keep `interval` long enough for `supervision` not to escalate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "defaults::chaos_interval")]
    pub interval: HumanDuration,
    /// Actor kinds by the last part of their path: `sink`, `source`, `worker`, `pool`.
    #[serde(default = "defaults::chaos_kinds")]
    pub kinds: Vec<String>,
    /// Seed of the choice (0: from the clock).
    #[serde(default)]
    pub seed: u64,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            enabled: false,
            interval: defaults::chaos_interval(),
            kinds: defaults::chaos_kinds(),
            seed: 0,
        }
    }
}

/// Restart policy of every supervisor (OTP's restart intensity plus exponential backoff).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// More than `max_restarts` restarts within `within` escalate: the pipeline stops.
    #[serde(default = "defaults::max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "defaults::within")]
    pub within: HumanDuration,
    #[serde(default = "defaults::backoff_initial")]
    pub backoff_initial: HumanDuration,
    #[serde(default = "defaults::backoff_max")]
    pub backoff_max: HumanDuration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: defaults::max_restarts(),
            within: defaults::within(),
            backoff_initial: defaults::backoff_initial(),
            backoff_max: defaults::backoff_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    /// `cdc` (PostgreSQL → ClickHouse) or `sentiment` (Mastodon or a replay file → LLM →
    /// ClickHouse).
    #[serde(default = "defaults::kind")]
    pub kind: PipelineKind,
    /// Source of a `cdc` pipeline.
    pub postgres: Option<PostgresConfig>,
    /// Live source of a `sentiment` pipeline.
    pub mastodon: Option<MastodonConfig>,
    /// Offline source of a `sentiment` pipeline (instead of `mastodon`).
    pub replay: Option<ReplayConfig>,
    /// Debezium topics as the source of a `cdc` pipeline (instead of `postgres`), or a
    /// statuses topic as the source of a `sentiment` pipeline.
    pub kafka_source: Option<KafkaSourceConfig>,
    /// Kafka as the sink (instead of ClickHouse): Debezium topics for a `cdc` pipeline, a
    /// statuses topic for a `sentiment` pipeline (which then has no `llm`).
    pub kafka_sink: Option<KafkaSinkConfig>,
    /// The classifier of a `sentiment` pipeline.
    pub llm: Option<LlmConfig>,
    #[serde(default = "defaults::clickhouse")]
    pub clickhouse: ClickHouseConfig,
    #[serde(default)]
    pub batch: BatchConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    Cdc,
    Sentiment,
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
}

/// Which posts are classified at all.
#[derive(Debug, Clone, Default, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    /// Ollama's `/api/generate` or `/api/chat`.
    Ollama,
    /// Any OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp, ...).
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OllamaEndpoint {
    Generate,
    Chat,
}

/// The LLM classifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub backend: LlmBackend,
    /// Base URL: `http://127.0.0.1:11434` (Ollama), `http://127.0.0.1:8000` (vLLM).
    pub url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Secret,
    #[serde(default = "defaults::ollama_endpoint")]
    pub endpoint: OllamaEndpoint,
    /// Prompt template with `{labels}` and `{text}`; empty = the built-in one.
    #[serde(default)]
    pub prompt: String,
    #[serde(default = "defaults::labels")]
    pub labels: Vec<String>,
    /// Output constrained to the labels: `off`, `json_schema` (OpenAI, vLLM, Ollama) or
    /// `json_object_with_schema` (llama.cpp's server). Ollama uses its `format` either way.
    #[serde(default = "defaults::structured")]
    pub structured: tributary_protocol::llm::Structured,
    /// Token budget of a reply (room for a reasoning model's `<think>` block).
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: u32,
    /// Requests in flight at most (the worker pool's size).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Adapt the requests in flight (1..=concurrency) to what the server sustains: a serial
    /// server (llama.cpp) gets one at a time, a batching one (vLLM) up to `concurrency`.
    #[serde(default = "defaults::yes")]
    pub adaptive_concurrency: bool,
    /// Posts waiting for a worker (the bounded queue in front of the pool).
    #[serde(default = "defaults::llm_queue")]
    pub queue: usize,
    #[serde(default = "defaults::llm_timeout")]
    pub timeout: HumanDuration,
    /// First retry delay after an LLM error (doubling, capped at `circuit_cooldown`). Errors
    /// are retried until the post is classified: a post is never dropped.
    #[serde(default = "defaults::backoff_initial")]
    pub backoff_initial: HumanDuration,
    /// Consecutive failures that open the circuit (intake pauses).
    #[serde(default = "defaults::circuit_failures")]
    pub circuit_failures: u32,
    /// How long an open circuit waits before one trial request.
    #[serde(default = "defaults::circuit_cooldown")]
    pub circuit_cooldown: HumanDuration,
    #[serde(default = "defaults::max_text_chars")]
    pub max_text_chars: usize,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    #[serde(default = "defaults::pg_host")]
    pub host: String,
    #[serde(default = "defaults::pg_port")]
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    pub database: String,
    /// Publication to read; created (for `tables`) when missing.
    pub publication: String,
    /// Logical replication slot (pgoutput); created when missing.
    pub slot: String,
    /// Tables as `schema.table` (or `table` for `public`). Empty: every table of an existing
    /// publication.
    #[serde(default)]
    pub tables: Vec<String>,
    /// How often a standby status update is sent even when nothing changed (keeps
    /// `wal_sender_timeout` from dropping a pipeline held back by backpressure).
    #[serde(default = "defaults::status_interval")]
    pub status_interval: HumanDuration,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Rows per message from the source to the sink (the unit of the bounded edge).
    #[serde(default = "defaults::chunk_rows")]
    pub chunk_rows: usize,
    /// A message is sent once its values reach this many bytes, however few its rows: the
    /// edge holds at most about `edge_capacity` × `chunk_bytes` of wide rows.
    #[serde(default = "defaults::chunk_bytes")]
    pub chunk_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    #[serde(default = "defaults::ch_url")]
    pub url: String,
    #[serde(default = "defaults::ch_database")]
    pub database: String,
    #[serde(default = "defaults::ch_user")]
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    /// Name of the ClickHouse table for a Postgres table: `{schema}` and `{table}` are
    /// replaced.
    #[serde(default = "defaults::table_template")]
    pub table_template: String,
    /// json/jsonb columns: `string` (every server) or `json` (ClickHouse ≥ 24.8 JSON type;
    /// falls back to String on older servers).
    #[serde(default = "defaults::json_as")]
    pub json_as: JsonAs,
    /// `lz4` or `none`.
    #[serde(default = "defaults::compression")]
    pub compression: Compression,
    /// Table of a `sentiment` pipeline.
    #[serde(default = "defaults::sentiment_table")]
    pub sentiment_table: String,
    /// TRUNCATE in Postgres: `truncate` the ClickHouse table too, or `ignore` it (keep history).
    #[serde(default = "defaults::on_truncate")]
    pub on_truncate: OnTruncate,
    /// Insert attempts before the sink gives up and fails (its supervisor then restarts it).
    #[serde(default = "defaults::insert_attempts")]
    pub insert_attempts: u32,
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Lz4,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTruncate {
    Truncate,
    Ignore,
}

/// When the sink flushes, and how much may wait between source and sink.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "defaults::max_rows")]
    pub max_rows: usize,
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: usize,
    /// Oldest buffered change waits at most this long before a flush.
    #[serde(default = "defaults::max_age")]
    pub max_age: HumanDuration,
    /// Messages (of up to `postgres.chunk_rows` rows) queued between source and sink.
    #[serde(default = "defaults::edge_capacity")]
    pub edge_capacity: usize,
    /// Memory for the values of TOASTed columns the sink wrote, so that an update leaving
    /// them unchanged needs no ClickHouse lookup (0 = always look up).
    #[serde(default = "defaults::toast_cache_bytes")]
    pub toast_cache_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: defaults::max_rows(),
            max_bytes: defaults::max_bytes(),
            max_age: defaults::max_age(),
            edge_capacity: defaults::edge_capacity(),
            toast_cache_bytes: defaults::toast_cache_bytes(),
        }
    }
}

/// Every default of the file, in one place.
pub mod defaults {
    use super::*;
    pub fn kafka_client_id() -> String {
        "tributary".into()
    }
    pub fn topic_prefix() -> String {
        "tributary".into()
    }
    pub fn one() -> i32 {
        1
    }
    pub fn decimal_handling() -> tributary_protocol::debezium::DecimalMode {
        tributary_protocol::debezium::DecimalMode::Precise
    }
    pub fn kafka_state_topic() -> String {
        "tributary.state".into()
    }
    pub fn statuses_topic() -> String {
        "mastodon.statuses".into()
    }
    pub fn delivery_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn dead_letter_topic() -> String {
        "tributary.dlq".into()
    }
    pub fn auto_offset_reset() -> String {
        "earliest".into()
    }
    pub fn kafka_chunk() -> usize {
        1000
    }
    pub fn commit_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    /// The LLM settings of a pipeline without an LLM (a publishing one): only the queue and
    /// pool sizes are read.
    pub fn llm() -> LlmConfig {
        toml::from_str("backend = \"openai\"\nurl = \"http://127.0.0.1:1\"\nmodel = \"none\"")
            .expect("a constant, valid [llm] section")
    }
    pub fn clickhouse() -> ClickHouseConfig {
        ClickHouseConfig {
            url: ch_url(),
            database: ch_database(),
            user: ch_user(),
            password: Secret::default(),
            table_template: table_template(),
            json_as: json_as(),
            compression: compression(),
            sentiment_table: sentiment_table(),
            on_truncate: on_truncate(),
            insert_attempts: insert_attempts(),
            request_timeout: request_timeout(),
        }
    }
    pub fn shutdown_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Text
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn service_name() -> String {
        "tributary".into()
    }
    pub fn max_restarts() -> u32 {
        5
    }
    pub fn within() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn backoff_initial() -> HumanDuration {
        HumanDuration(Duration::from_millis(500))
    }
    pub fn backoff_max() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn kind() -> PipelineKind {
        PipelineKind::Cdc
    }
    pub fn chaos_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn chaos_kinds() -> Vec<String> {
        vec!["sink".into(), "source".into(), "worker".into()]
    }
    pub fn http_listen() -> String {
        "127.0.0.1:9464".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn streams() -> Vec<String> {
        vec!["public:local".into()]
    }
    pub fn backfill_limit() -> usize {
        2000
    }
    pub fn reconnect_initial() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub fn reconnect_max() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn idle_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(90))
    }
    pub fn replay_instance() -> String {
        "replay".into()
    }
    pub fn ollama_endpoint() -> OllamaEndpoint {
        OllamaEndpoint::Generate
    }
    pub fn labels() -> Vec<String> {
        vec!["positive".into(), "negative".into(), "neutral".into()]
    }
    pub fn structured() -> tributary_protocol::llm::Structured {
        tributary_protocol::llm::Structured::JsonSchema
    }
    pub fn max_tokens() -> u32 {
        512
    }
    pub fn concurrency() -> usize {
        4
    }
    pub fn llm_queue() -> usize {
        64
    }
    pub fn llm_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn circuit_failures() -> u32 {
        5
    }
    pub fn circuit_cooldown() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub fn max_text_chars() -> usize {
        2000
    }
    pub fn sentiment_table() -> String {
        "mastodon_sentiment".into()
    }
    pub fn pg_host() -> String {
        "127.0.0.1".into()
    }
    pub fn pg_port() -> u16 {
        5432
    }
    pub fn status_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub fn connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub fn chunk_rows() -> usize {
        2000
    }
    pub fn chunk_bytes() -> usize {
        1 << 20
    }
    pub fn ch_url() -> String {
        "http://127.0.0.1:8123".into()
    }
    pub fn ch_database() -> String {
        "default".into()
    }
    pub fn ch_user() -> String {
        "default".into()
    }
    pub fn table_template() -> String {
        "{table}".into()
    }
    pub fn json_as() -> JsonAs {
        JsonAs::String
    }
    pub fn compression() -> Compression {
        Compression::Lz4
    }
    pub fn on_truncate() -> OnTruncate {
        OnTruncate::Truncate
    }
    pub fn insert_attempts() -> u32 {
        5
    }
    pub fn request_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn max_rows() -> usize {
        200_000
    }
    pub fn max_bytes() -> usize {
        32 << 20
    }
    pub fn max_age() -> HumanDuration {
        HumanDuration(Duration::from_millis(200))
    }
    pub fn edge_capacity() -> usize {
        32
    }
    pub fn toast_cache_bytes() -> usize {
        64 << 20
    }
}

impl Config {
    /// Reads, interpolates, parses and validates `path`. Nothing connects.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_str_named(&raw, &file, &|k| std::env::var(k).ok())
    }

    /// As [`Config::load`], for text already read; `env` looks variables up.
    pub fn from_str_named(
        raw: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = interpolate(raw, file, env)?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks a config built or edited in code (tests) as a loaded file is checked.
    pub fn validate_for_tests(&self) -> Result<(), ConfigError> {
        self.validate("<in code>")
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            message,
        };
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen".into(),
                format!(
                    "`{}` is not host:port (an IP address and a port)",
                    self.http.listen
                ),
            ));
        }
        if self.admin.enabled && self.admin.token.expose().len() < 16 {
            return Err(invalid(
                "admin.token".into(),
                "the admin API needs a token of at least 16 characters".into(),
            ));
        }
        if self.admin.enabled && self.http.listen.is_empty() {
            return Err(invalid(
                "admin.enabled".into(),
                "the admin API is served on http.listen, which is off".into(),
            ));
        }
        if self.chaos.enabled && (self.chaos.interval.0.is_zero() || self.chaos.kinds.is_empty()) {
            return Err(invalid(
                "chaos".into(),
                "an enabled chaos needs an interval above zero and at least one kind".into(),
            ));
        }
        if self.pipelines.is_empty() {
            return Err(invalid(
                "pipeline".into(),
                "at least one [[pipeline]] is required".into(),
            ));
        }
        let s = &self.supervision;
        if s.backoff_initial.0.is_zero() || s.backoff_initial.0 > s.backoff_max.0 {
            return Err(invalid(
                "supervision.backoff_initial".into(),
                "must be above zero and at most supervision.backoff_max".into(),
            ));
        }
        if s.within.0.is_zero() {
            return Err(invalid(
                "supervision.within".into(),
                "must be above zero".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = |k: &str| format!("pipeline[{i}].{k}");
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    at("name"),
                    "use letters, digits, `_` and `-` only".into(),
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(at("name"), format!("`{}` is used twice", p.name)));
            }
            let sources = [
                p.postgres.is_some(),
                p.mastodon.is_some(),
                p.replay.is_some(),
                p.kafka_source.is_some(),
            ];
            let n_sources = sources.iter().filter(|x| **x).count();
            let publishes = p.kafka_sink.is_some();
            match p.kind {
                PipelineKind::Cdc if p.postgres.is_none() && p.kafka_source.is_none() => {
                    return Err(invalid(at("postgres"), "a cdc pipeline needs a [pipeline.postgres] or a [pipeline.kafka_source] section".into()))
                }
                PipelineKind::Cdc if n_sources > 1 || p.llm.is_some() || p.mastodon.is_some() || p.replay.is_some() => {
                    return Err(invalid(at("kind"), "a cdc pipeline takes one of [pipeline.postgres] or [pipeline.kafka_source] (no mastodon, replay or llm)".into()))
                }
                PipelineKind::Cdc if publishes && p.postgres.is_none() => {
                    return Err(invalid(at("kafka_sink"), "a [pipeline.kafka_sink] of a cdc pipeline needs [pipeline.postgres] as its source".into()))
                }
                PipelineKind::Sentiment if p.postgres.is_some() || n_sources != 1 => {
                    return Err(invalid(at("kind"), "a sentiment pipeline needs exactly one of [pipeline.mastodon], [pipeline.replay] or [pipeline.kafka_source]".into()))
                }
                PipelineKind::Sentiment if publishes && (p.llm.is_some() || p.kafka_source.is_some()) => {
                    return Err(invalid(at("kafka_sink"), "a sentiment pipeline with [pipeline.kafka_sink] publishes statuses from mastodon or replay: it has no llm and no kafka_source".into()))
                }
                PipelineKind::Sentiment if !publishes && p.llm.is_none() => {
                    return Err(invalid(at("llm"), "a sentiment pipeline needs a [pipeline.llm] section".into()))
                }
                _ => {}
            }
            if (p.kafka_sink.is_some() || p.kafka_source.is_some()) && self.kafka.is_none() {
                return Err(invalid(
                    at("kafka_sink"),
                    "Kafka pipelines need a top-level [kafka] section with `brokers`".into(),
                ));
            }
            if let Some(k) = &p.kafka_source {
                if k.group.is_empty()
                    || k.topics.is_empty()
                    || k.topics.iter().any(|t| t.is_empty())
                {
                    return Err(invalid(
                        at("kafka_source"),
                        "needs a `group` and at least one non-empty topic".into(),
                    ));
                }
                if !matches!(k.start.as_str(), "earliest" | "latest") {
                    return Err(invalid(
                        at("kafka_source.start"),
                        format!("`{}` is not `earliest` or `latest`", k.start),
                    ));
                }
                if k.commit_interval.0.is_zero() {
                    return Err(invalid(
                        at("kafka_source.commit_interval"),
                        "must be above zero".into(),
                    ));
                }
                if k.chunk_messages == 0 {
                    return Err(invalid(
                        at("kafka_source.chunk_messages"),
                        "must be at least 1".into(),
                    ));
                }
            }
            if let Some(k) = &p.kafka_sink {
                if k.topic_prefix.is_empty() || k.partitions < 1 || k.replication_factor < 1 {
                    return Err(invalid(at("kafka_sink"), "topic_prefix must not be empty; partitions and replication_factor must be at least 1".into()));
                }
            }
            if let Some(m) = &p.mastodon {
                validate_mastodon(m)
                    .map_err(|(k, msg)| invalid(at(&format!("mastodon.{k}")), msg))?;
            }
            if let Some(l) = &p.llm {
                validate_llm(l).map_err(|(k, msg)| invalid(at(&format!("llm.{k}")), msg))?;
            }
            if let Some(pg) = &p.postgres {
                validate_postgres(pg)
                    .map_err(|(k, msg)| invalid(at(&format!("postgres.{k}")), msg))?;
            }
            let ch = &p.clickhouse;
            if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
                return Err(invalid(
                    at("clickhouse.url"),
                    format!("`{}` must start with http:// or https://", ch.url),
                ));
            }
            if !ch.table_template.contains("{table}") {
                return Err(invalid(
                    at("clickhouse.table_template"),
                    "must contain `{table}`".into(),
                ));
            }
            if ch.insert_attempts == 0 {
                return Err(invalid(
                    at("clickhouse.insert_attempts"),
                    "must be at least 1".into(),
                ));
            }
            let b = &p.batch;
            if b.max_rows == 0 || b.max_bytes == 0 || b.edge_capacity == 0 {
                return Err(invalid(
                    at("batch"),
                    "max_rows, max_bytes and edge_capacity must be at least 1".into(),
                ));
            }
            if b.max_age.0.is_zero() {
                return Err(invalid(at("batch.max_age"), "must be above zero".into()));
            }
        }
        Ok(())
    }
}

fn validate_postgres(pg: &PostgresConfig) -> Result<(), (String, String)> {
    for (k, v) in [("publication", &pg.publication), ("slot", &pg.slot)] {
        if v.is_empty() || v.len() > 63 {
            return Err((k.into(), "must be 1 to 63 characters".into()));
        }
    }
    // Slot names are restricted by Postgres itself: lower case, digits, underscore.
    if !pg
        .slot
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err((
            "slot".into(),
            "Postgres allows only lower-case letters, digits and `_` in slot names".into(),
        ));
    }
    for (j, t) in pg.tables.iter().enumerate() {
        if tributary_protocol::schema::split_table_name(t).is_none() {
            return Err((
                format!("tables[{j}]"),
                format!("`{t}` is not `schema.table` or `table`"),
            ));
        }
    }
    if pg.chunk_rows == 0 {
        return Err(("chunk_rows".into(), "must be at least 1".into()));
    }
    if pg.chunk_bytes == 0 {
        return Err(("chunk_bytes".into(), "must be at least 1".into()));
    }
    Ok(())
}

fn validate_mastodon(m: &MastodonConfig) -> Result<(), (String, String)> {
    if m.instances.is_empty() {
        return Err((
            "instance".into(),
            "at least one [[pipeline.mastodon.instance]] is required".into(),
        ));
    }
    for (i, inst) in m.instances.iter().enumerate() {
        if !(inst.url.starts_with("http://") || inst.url.starts_with("https://")) {
            return Err((
                format!("instance[{i}].url"),
                format!("`{}` must start with https:// (or http://)", inst.url),
            ));
        }
    }
    if m.streams.is_empty() {
        return Err(("streams".into(), "at least one stream is required".into()));
    }
    for (i, st) in m.streams.iter().enumerate() {
        let ok = matches!(st.as_str(), "public" | "public:local" | "public:remote")
            || st
                .strip_prefix("hashtag:local:")
                .or(st.strip_prefix("hashtag:"))
                .is_some_and(|t| !t.is_empty())
            || st.strip_prefix("list:").is_some_and(|t| !t.is_empty());
        if !ok {
            return Err((
                format!("streams[{i}]"),
                format!("`{st}`: use public, public:local, public:remote, hashtag:<tag>, hashtag:local:<tag> or list:<id>"),
            ));
        }
    }
    if m.reconnect_initial.0.is_zero() || m.reconnect_initial.0 > m.reconnect_max.0 {
        return Err((
            "reconnect_initial".into(),
            "must be above zero and at most reconnect_max".into(),
        ));
    }
    Ok(())
}

fn validate_llm(l: &LlmConfig) -> Result<(), (String, String)> {
    if !(l.url.starts_with("http://") || l.url.starts_with("https://")) {
        return Err((
            "url".into(),
            format!("`{}` must start with http:// or https://", l.url),
        ));
    }
    if l.model.is_empty() {
        return Err(("model".into(), "is required".into()));
    }
    let mut seen = HashSet::new();
    if l.labels.is_empty()
        || l.labels
            .iter()
            .any(|x| x.trim().is_empty() || !seen.insert(x.to_lowercase()))
    {
        return Err((
            "labels".into(),
            "need at least one label, all distinct and non-empty".into(),
        ));
    }
    if !l.prompt.is_empty() && !l.prompt.contains("{text}") {
        return Err(("prompt".into(), "must contain `{text}`".into()));
    }
    if l.concurrency == 0 || l.queue == 0 || l.circuit_failures == 0 || l.max_text_chars == 0 {
        return Err((
            "concurrency".into(),
            "concurrency, queue, circuit_failures and max_text_chars must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}` in the raw text. Values are escaped for TOML basic
/// strings, so interpolation belongs inside `"..."`; a missing variable without a default is
/// an error that names it and its line.
fn interpolate(
    raw: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(raw.len());
    for (n, line) in raw.split_inclusive('\n').enumerate() {
        let mut rest = line;
        // Comments are left alone, so an example in a comment need not be set.
        let code_end = comment_start(line).unwrap_or(line.len());
        let mut consumed = 0;
        while let Some(start) = rest.find("${") {
            if consumed + start >= code_end {
                break;
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(ConfigError::BadInterpolation {
                file: file.to_string(),
                line: n + 1,
            })?;
            let expr = &after[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            let value = match (env(var), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(ConfigError::MissingEnv {
                        file: file.to_string(),
                        line: n + 1,
                        var: var.to_string(),
                    })
                }
            };
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            consumed += start + 2 + end + 1;
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Byte offset of a `#` that starts a comment (outside a string), if any.
fn comment_start(line: &str) -> Option<usize> {
    let mut in_str = false;
    let mut prev = '\0';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '#' if !in_str => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

/// The body of the config fuzz target (fuzz/fuzz_targets/config.rs), shared with
/// tests/fuzz_regressions.rs. Must never: do I/O.
#[doc(hidden)]
pub mod fuzz {
    use super::Config;

    /// The config loader: `${VAR:-default}` interpolation, TOML, validation. Variables resolve to
    /// a fixed value, so the fuzzer reaches validation with every shape of file.
    pub fn config(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = Config::from_str_named(text, "fuzz.toml", &|_| Some("1".to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[[pipeline]]
name = "cdc"
[pipeline.postgres]
user = "u"
password = "${PGPASS}"
database = "d"
publication = "p"
slot = "s"
tables = ["public.t"]
[pipeline.clickhouse]
url = "http://127.0.0.1:8123"
"#;

    fn env(k: &str) -> Option<String> {
        (k == "PGPASS").then(|| "se\"cret".to_string())
    }

    #[test]
    fn loads_with_defaults_and_interpolation() {
        let c = Config::from_str_named(MIN, "x.toml", &env).unwrap();
        let p = &c.pipelines[0];
        assert_eq!(p.postgres.as_ref().unwrap().password.expose(), "se\"cret");
        assert_eq!(p.batch.max_age.0, Duration::from_millis(200));
        assert!(
            !format!("{c:?}").contains("cret"),
            "secret leaked into Debug"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = MIN.replace("slot = \"s\"", "slot = \"s\"\nslott = 1");
        let e = Config::from_str_named(&bad, "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("slott"), "{e}");
    }

    #[test]
    fn missing_env_is_named() {
        let e = Config::from_str_named(MIN, "x.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGPASS") && e.contains("line 6"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let bad = MIN.replace("slot = \"s\"", "slot = \"Bad-Slot\"");
        let e = Config::from_str_named(&bad, "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline[0].postgres.slot"), "{e}");
        let bad = MIN.replace("http://127.0.0.1:8123", "127.0.0.1:8123");
        let e = Config::from_str_named(&bad, "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline[0].clickhouse.url"), "{e}");
        let bad = MIN.to_string() + "[pipeline.batch]\nmax_age = \"10 parsecs\"\n";
        let e = Config::from_str_named(&bad, "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_age"), "{e}");
    }

    #[test]
    fn example_configs_load() {
        let env = |k: &str| match k {
            "PGPASSWORD" => Some("x".to_string()),
            _ => None,
        };
        for f in ["config/cdc.toml", "config/sentiment.toml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(f);
            let text = std::fs::read_to_string(&path).unwrap();
            Config::from_str_named(&text, f, &env).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn sentiment_needs_one_source_and_an_llm() {
        let base = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join("config/sentiment.toml"),
        )
        .unwrap();
        let no_llm = base.replace("[pipeline.llm]", "[pipeline.llm_x]");
        let e = Config::from_str_named(&no_llm, "s.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("llm"), "{e}");
        let two = base.replace("# [pipeline.replay]\n# file", "[pipeline.replay]\nfile");
        let e = Config::from_str_named(&two, "s.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one of"), "{e}");
        let bad_stream = base.replace("${MASTODON_STREAM:-public:local}", "federated");
        let e = Config::from_str_named(&bad_stream, "s.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline[0].mastodon.streams[0]"), "{e}");
    }

    #[test]
    fn admin_needs_a_token() {
        let text = MIN.to_string() + "[admin]\nenabled = true\ntoken = \"short\"\n";
        let e = Config::from_str_named(&text, "x.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.token"), "{e}");
        let ok = MIN.to_string() + "[admin]\nenabled = true\ntoken = \"0123456789abcdef\"\n";
        assert!(
            !format!("{:?}", Config::from_str_named(&ok, "x.toml", &env).unwrap())
                .contains("0123456789abcdef")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn comment_interpolation_is_ignored() {
        let text = MIN.to_string() + "# e.g. ${NOT_SET}\n";
        Config::from_str_named(&text, "x.toml", &env).unwrap();
    }
}
