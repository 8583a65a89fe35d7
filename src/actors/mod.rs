//! Actors: thin shells that do the I/O around the pure cores in [`crate::protocol`].
//! Sources read, sinks write; they meet only through the typed messages of the sink they
//! feed ([`clickhouse_sink::SinkMsg`]) carried over a bounded [`crate::edge::Edge`].

pub mod clickhouse_sink;
pub mod llm_worker;
pub mod mastodon_source;
pub mod postgres_source;
pub mod replay_source;
pub mod sentiment_sink;
