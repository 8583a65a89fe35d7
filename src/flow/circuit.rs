//! A circuit breaker shared by the workers of one LLM pool. After `threshold` consecutive
//! failures the circuit opens: workers wait (and so stop taking posts: the queue fills and
//! the source pauses) until `cooldown` has passed; then one trial request goes out, and the
//! circuit closes on its success or opens again on its failure.
//!
//! Must never: let more than one trial through while half-open, or drop work while open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial: bool },
}

pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    opened: AtomicU64,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
            opened: AtomicU64::new(0),
        }
    }

    /// Waits until a request may go out.
    pub async fn ready(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                match *s {
                    State::Closed { .. } => return,
                    State::Open { until } if Instant::now() >= until => {
                        *s = State::HalfOpen { trial: true };
                        return;
                    }
                    State::Open { until } => until - Instant::now(),
                    State::HalfOpen { trial: false } => {
                        *s = State::HalfOpen { trial: true };
                        return;
                    }
                    State::HalfOpen { trial: true } => Duration::from_millis(50),
                }
            };
            tokio::time::sleep(wait.min(Duration::from_millis(500))).await;
        }
    }

    pub fn success(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Closed { failures: 0 };
    }

    pub fn failure(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let open = match *s {
            State::Closed { failures } if failures + 1 >= self.threshold => true,
            State::Closed { failures } => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if open {
            *s = State::Open {
                until: Instant::now() + self.cooldown,
            };
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(cooldown = ?self.cooldown, "LLM circuit open: intake paused");
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Closed { .. }
        )
    }

    /// How often the circuit opened.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_lets_one_trial_through() {
        let b = std::sync::Arc::new(CircuitBreaker::new(2, Duration::from_secs(10)));
        b.failure();
        assert!(!b.is_open());
        b.failure();
        assert!(b.is_open() && b.opened() == 1);
        let t0 = tokio::time::Instant::now();
        b.ready().await; // waits the cooldown, then takes the trial
        assert!(t0.elapsed() >= Duration::from_secs(10));
        let b2 = b.clone();
        let second = tokio::spawn(async move { b2.ready().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !second.is_finished(),
            "a second request waits while the trial is out"
        );
        b.success();
        second.await.unwrap();
        assert!(!b.is_open());
    }
}
