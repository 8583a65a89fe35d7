//! One `[[pipeline]]`: its name, kind and sections, as written. What runs is decided by
//! [`crate::plan`], which turns a pipeline into its typed plan.

use crate::defaults;
use crate::llm::LlmConfig;
use crate::sinks::{BatchConfig, ClickHouseConfig, KafkaSinkConfig};
use crate::sources::{KafkaSourceConfig, MastodonConfig, PostgresConfig, ReplayConfig};
use crate::tables::TableMapping;
use serde::Deserialize;

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
    /// Per-table mappings of a `cdc` pipeline (`[[pipeline.table]]`).
    #[serde(default, rename = "table")]
    pub tables: Vec<TableMapping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    Cdc,
    Sentiment,
}
