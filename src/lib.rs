//! tributary: keeps ClickHouse in step with PostgreSQL (logical replication) and live streams,
//! as one supervised binary. The folders, from the bottom layer up (a module imports only from
//! its own folder and the ones listed before it; `scripts/module-deps.py` checks it):
//!
//! - [`protocol`] (crates/protocol): pure cores (bytes in, values out): pgoutput, Postgres
//!   text values, ClickHouse types and DDL, Debezium envelopes, Mastodon events, LLM replies.
//! - [`config`] (crates/config): the config file, its validation, and the typed plan it
//!   yields.
//! - [`flow`]: flow primitives shared by every pipeline: bounded edges, acknowledgement
//!   tracking, circuit breaker, adaptive limiter.
//! - [`runtime`]: the OTP-style supervisor, the registry of live actor states and counters,
//!   error classes, actor-owned tasks.
//! - [`clients`]: I/O with the servers: ClickHouse, Kafka, PostgreSQL, LLM servers, TLS.
//! - [`cdc`]: the CDC pipeline: change types, Postgres and Kafka sources, ClickHouse and
//!   Kafka sinks, its tree and its `check`.
//! - [`sentiment`]: the sentiment pipeline: jobs, Mastodon / replay / Kafka sources, the
//!   Kafka publisher, LLM workers, the ClickHouse sink, its tree, `check` and `eval`.
//! - [`pipelines`] and [`check`]: the root of the tree over every pipeline, and `check`.
//! - [`ops`]: operations: HTTP endpoints and status page, Prometheus metrics, OTLP
//!   telemetry, the chaos schedule.

pub use tributary_config as config;
pub use tributary_protocol as protocol;

pub mod cdc;
pub mod check;
pub mod clients;
pub mod flow;
pub mod ops;
pub mod pipelines;
pub mod runtime;
pub mod sentiment;
