//! The sentiment pipeline: Mastodon posts (live, replayed, or from a Kafka topic) classified
//! by LLM workers into ClickHouse `mastodon_sentiment`, or published to Kafka; and `eval`,
//! which measures label quality per model, prompt and mode.

pub mod check;
pub mod clickhouse_sink;
pub mod eval;
pub mod job;
pub mod kafka_publisher;
pub mod kafka_source;
pub mod llm_worker;
pub mod mastodon_source;
pub mod replay_source;
pub mod tree;
