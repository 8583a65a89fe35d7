//! Tasks an actor owns. Must never: outlive the actor that spawned them.

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
