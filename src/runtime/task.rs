//! Tasks an actor owns, and waits that say they are waiting. Must never: outlive the actor
//! that spawned them, or wait in silence for something that may never come.

use std::time::Duration;

/// Awaits `fut`; while it runs, calls `said` with the time waited so far after `first`, then
/// every `every` (a wait on another party, e.g. transactions Postgres waits for, is logged).
pub async fn say_while_waiting<F: std::future::Future>(
    fut: F,
    first: Duration,
    every: Duration,
    mut said: impl FnMut(Duration),
) -> F::Output {
    tokio::pin!(fut);
    let start = tokio::time::Instant::now();
    let mut next = start + first;
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tokio::time::sleep_until(next) => {
                said(start.elapsed());
                next += every;
            }
        }
    }
}

/// A task an actor owns: aborted when the guard drops, which also happens when the actor is
/// killed (ractor then drops its state without calling `post_stop`). Without it a killed
/// source would leave its stream task running and holding the replication slot.
pub struct TaskGuard(pub tokio::task::JoinHandle<()>);

impl TaskGuard {
    pub fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> TaskGuard {
        TaskGuard(tokio::spawn(f))
    }

    /// As [`TaskGuard::spawn`], and a panic of `f` is handed to `on_panic` (which tells the
    /// owning actor, so that it fails and its supervisor restarts it) instead of ending the
    /// task in silence while the actor looks alive.
    pub fn spawn_watched(
        f: impl std::future::Future<Output = ()> + Send + 'static,
        on_panic: impl FnOnce(String) + Send + 'static,
    ) -> TaskGuard {
        use futures_util::FutureExt;
        TaskGuard(tokio::spawn(async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(f).catch_unwind().await {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(panic = %text, "an actor's task panicked");
                on_panic(format!("its task panicked: {text}"));
            }
        }))
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_is_said_at_the_first_mark_then_at_every_period() {
        let mut said = Vec::new();
        let out = say_while_waiting(
            async {
                tokio::time::sleep(Duration::from_secs(35)).await;
                7
            },
            Duration::from_secs(10),
            Duration::from_secs(10),
            |waited| said.push(waited.as_secs()),
        )
        .await;
        assert_eq!((out, said), (7, vec![10, 20, 30]));
        // Over before the first mark: nothing said.
        let mut quiet = 0;
        say_while_waiting(
            async {},
            Duration::from_secs(10),
            Duration::from_secs(10),
            |_| quiet += 1,
        )
        .await;
        assert_eq!(quiet, 0);
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _g = TaskGuard::spawn_watched(
            async {
                let v: Vec<u8> = Vec::new();
                let _ = v[usize::from(v.is_empty())]; // out of bounds
            },
            move |why| {
                let _ = tx.send(why);
            },
        );
        let why = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("reported")
            .unwrap();
        assert!(
            why.contains("panicked") && why.contains("index out of bounds"),
            "{why}"
        );
    }
}
