//! I/O with the servers tributary talks to: ClickHouse (HTTP), Kafka (librdkafka),
//! PostgreSQL (walsender and SQL), LLM servers (Ollama and OpenAI-compatible HTTP), Mastodon
//! instances (REST and the opening of streams), a running tributary's admin API, and the
//! process-wide TLS setup. Each client
//! classifies its own errors (outage or not).
//! Must never: import a pipeline (cdc, sentiment) or log a secret.

pub mod admin;
pub mod clickhouse;
pub mod kafka;
pub mod llm;
pub mod mastodon;
pub mod postgres;
pub mod tls;
