//! The sections of a pipeline's sink and its batching: `[pipeline.clickhouse]`,
//! `[pipeline.kafka_sink]` and `[pipeline.batch]`.
//!
//! Must never: hold a default of its own (they are all in [`crate::defaults`]).

use crate::defaults;
use crate::value::{empty_path_is_none, HumanDuration, Secret};
use serde::Deserialize;
use std::path::PathBuf;
use tributary_protocol::chtypes::JsonAs;

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
    /// Where a change goes that the producer or the broker refuses as too large
    /// (`message.max.bytes`): a summary with its key, sizes and the reason, never the row.
    #[serde(default = "defaults::dead_letter_topic")]
    pub dead_letter_topic: String,
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
    /// A file holding the password instead (a Docker or Kubernetes secret): read by
    /// [`crate::Config::load`], one trailing newline dropped.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub password_file: Option<PathBuf>,
    /// Roots (PEM) that sign the server's certificate, trusted instead of the system's for an
    /// `https://` url.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub ca_cert: Option<PathBuf>,
    /// A client certificate and its key (PEM), both or neither, for an `https://` url.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub client_key: Option<PathBuf>,
    /// Name of the ClickHouse table for a Postgres table: `{schema}` and `{table}` are
    /// replaced.
    #[serde(default = "defaults::table_template")]
    pub table_template: String,
    /// json/jsonb columns: `string` (every server) or `json` (ClickHouse ≥ 24.8 JSON type;
    /// falls back to String on older servers).
    #[serde(default = "defaults::json_as")]
    pub json_as: JsonAs,
    /// `auto` (lz4, except to a server on this machine: compressing costs both ends CPU
    /// and saves no network there), `lz4` or `none`.
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
    /// More replicas of the same cluster (URLs like `url`, same user and TLS settings): each
    /// request goes to the first of `url`, `replicas`… that answers, and moves on to the
    /// next when it cannot reach one.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// A cluster of the servers' `remote_servers`: every table is created replicated
    /// (`ReplicatedReplacingMergeTree`, its ZooKeeper path from `replication_path`) and every
    /// DDL runs `ON CLUSTER` this name. Empty: one server (or ClickHouse Cloud, whose
    /// tables are replicated without being asked).
    #[serde(default)]
    pub cluster: String,
    /// The ZooKeeper path of a replicated table: `{database}` and `{table}` are replaced by
    /// tributary; `{shard}` (and the replica, `{replica}`) are the servers' macros.
    #[serde(default = "defaults::replication_path")]
    pub replication_path: String,
    /// With `cluster`: beside each table's live view `<table>_live`, a `Distributed` table
    /// `<table>_all` over the cluster, to read the live rows from any node of any shard.
    /// (Tables are written on the shard of `url` and `replicas`.)
    #[serde(default)]
    pub distributed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Auto,
    Lz4,
    None,
}

impl Compression {
    /// What `self` means for a server at `host`: `auto` is lz4 but to a loopback address.
    pub fn for_host(self, host: &str) -> Compression {
        match self {
            Compression::Auto => {
                let h = host.trim_start_matches('[').trim_end_matches(']');
                let loopback = h.eq_ignore_ascii_case("localhost")
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if loopback {
                    Compression::None
                } else {
                    Compression::Lz4
                }
            }
            c => c,
        }
    }
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
