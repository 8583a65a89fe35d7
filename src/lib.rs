//! tributary: keeps ClickHouse in step with PostgreSQL (logical replication) as one
//! supervised binary. See README.md for the architecture; each module's doc says what it
//! is for and what it must never do.

pub mod ack;
pub mod actors;
pub mod chaos;
pub mod check;
pub mod circuit;
pub mod clickhouse;
pub mod config;
pub mod edge;
pub mod eval;
pub mod http;
pub mod kafka;
pub mod limiter;
pub mod llm;
pub mod observe;
pub mod postgres;
pub mod protocol;
pub mod status;
pub mod supervisors;
pub mod telemetry;
pub mod tls;
