//! The sections of a pipeline's source: `[pipeline.postgres]`, `[pipeline.kafka_source]`,
//! `[pipeline.mastodon]` and `[pipeline.replay]`.
//!
//! Must never: hold a default of its own (they are all in [`crate::defaults`]).

use crate::defaults;
use crate::value::{HumanDuration, Secret};
use serde::Deserialize;

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
