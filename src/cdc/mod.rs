//! The CDC pipeline: PostgreSQL (or Debezium topics) in, ClickHouse (or Debezium topics)
//! out. Sources turn the stream into the change types of [`change`]; sinks take them from a
//! bounded edge and acknowledge what they wrote.

pub mod backfill;
pub mod change;
pub mod check;
pub mod clickhouse_sink;
pub mod copy_workers;
pub mod kafka_sink;
pub mod kafka_source;
pub mod partitions;
pub mod pg_changes;
pub mod pg_tables;
pub mod postgres_source;
pub mod standby;
pub mod table_state;
pub mod toast;
pub mod tree;
pub mod verify;
pub mod verify_schedule;
