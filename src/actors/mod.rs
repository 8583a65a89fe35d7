//! Actors: thin shells that do the I/O around the pure cores in [`crate::protocol`].
//! Sources read, sinks write; they meet only through the typed messages of the sink they
//! feed ([`clickhouse_sink::SinkMsg`]) carried over a bounded [`crate::edge::Edge`].

pub mod clickhouse_sink;
pub mod kafka_sink;
pub mod kafka_source;
pub mod llm_worker;
pub mod mastodon_source;
pub mod postgres_source;
pub mod replay_source;
pub mod sentiment_sink;
pub mod status_publisher;
pub mod status_source;

/// A task an actor owns: aborted when the guard drops, which also happens when the actor is
/// killed (ractor then drops its state without calling `post_stop`). Without it a killed
/// source would leave its stream task running and holding the replication slot.
pub struct TaskGuard(pub tokio::task::JoinHandle<()>);

impl TaskGuard {
    pub fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> TaskGuard {
        TaskGuard(tokio::spawn(f))
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
