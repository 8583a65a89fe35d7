//! An adaptive limit on the LLM requests in flight. LLM servers differ: llama.cpp serves one
//! request at a time (more in flight only adds latency), vLLM batches many. The limit climbs
//! the throughput hill: it measures completions per second over a window, tries a smaller
//! limit (×¾ at first, then one less) and keeps it when throughput holds (≥ 95 %), tries one
//! more and keeps it when throughput grows by at least half a lane's share, and otherwise
//! returns and waits, longer each time, before probing again. It starts at the configured
//! maximum, so a parallel server loses almost nothing while it learns.
//!
//! Must never: go below 1 or above the maximum, or block a request forever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The pure hill-climbing controller: fed one throughput per window, returns the next limit.
#[derive(Debug, Clone)]
pub struct Controller {
    max: usize,
    base: usize,
    base_tp: Option<f64>,
    trial: Option<usize>,
    /// Next probe goes down (true) or up.
    down: bool,
    /// Down-probes cut by a quarter until one is refused, then by one.
    big_step: bool,
    rejected: u32,
    hold: u32,
    /// Windows to wait after both directions were refused; doubles while nothing changes.
    hold_len: u32,
}

impl Controller {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Controller {
            max,
            base: max,
            base_tp: None,
            trial: None,
            down: true,
            big_step: true,
            rejected: 0,
            hold: 0,
            hold_len: 4,
        }
    }

    /// The limit in force now.
    pub fn limit(&self) -> usize {
        self.trial.unwrap_or(self.base)
    }

    fn probe(&self) -> Option<usize> {
        let t = match (self.down, self.big_step) {
            (true, true) => (self.base * 3 / 4).min(self.base.saturating_sub(1)).max(1),
            (true, false) => self.base.saturating_sub(1).max(1),
            (false, _) => (self.base + 1).min(self.max),
        };
        (t != self.base).then_some(t)
    }

    /// Records the throughput (completions/s) of the window just ended; returns the limit
    /// for the next one.
    pub fn window(&mut self, tp: f64) -> usize {
        match self.trial.take() {
            None => {
                self.base_tp = Some(tp);
                if self.hold > 0 {
                    self.hold -= 1;
                } else if let Some(t) = self.probe() {
                    self.trial = Some(t);
                } else {
                    // At a bound: this direction counts as refused.
                    self.down = !self.down;
                    self.refused();
                    if self.hold == 0 {
                        self.trial = self.probe();
                    }
                }
            }
            Some(t) => {
                let base_tp = self.base_tp.unwrap_or(tp);
                // Fewer in flight must keep the throughput; one more must add at least half
                // of what one more lane would.
                let keep = if t < self.base {
                    tp >= 0.95 * base_tp
                } else {
                    tp >= (1.0 + 0.5 / self.base as f64) * base_tp
                };
                if keep {
                    self.base = t;
                    self.base_tp = Some(tp);
                    self.rejected = 0;
                    self.hold_len = 4;
                    self.trial = self.probe();
                } else {
                    if t < self.base {
                        self.big_step = false;
                    }
                    self.down = !self.down;
                    self.refused();
                }
            }
        }
        self.limit()
    }

    fn refused(&mut self) {
        self.rejected += 1;
        if self.rejected >= 2 {
            self.rejected = 0;
            self.hold = self.hold_len;
            self.hold_len = (self.hold_len * 2).min(64);
        }
    }
}

/// Shared by the workers of a pool.
pub struct Limiter {
    adaptive: bool,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    notify: Notify,
    window: Mutex<(Controller, Instant, u32)>,
}

/// Held while a request is in flight.
pub struct Slot<'a> {
    limiter: &'a Limiter,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.limiter.notify.notify_waiters();
    }
}

impl Limiter {
    /// `adaptive = false` keeps the limit at `max`.
    pub fn new(max: usize, adaptive: bool) -> Self {
        let c = Controller::new(max);
        Limiter {
            adaptive,
            limit: AtomicUsize::new(c.limit()),
            in_flight: AtomicUsize::new(0),
            notify: Notify::new(),
            window: Mutex::new((c, Instant::now(), 0)),
        }
    }

    /// Waits for room under the current limit.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let notified = self.notify.notified();
            let cur = self.in_flight.load(Ordering::Acquire);
            if cur < self.limit.load(Ordering::Acquire)
                && self
                    .in_flight
                    .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Slot { limiter: self };
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Counts a completed request; at the end of a window (2 × limit completions, or 3 s
    /// with at least 2) the controller picks the next limit.
    pub fn completed(&self) {
        if !self.adaptive {
            return;
        }
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.2 += 1;
        let elapsed = w.1.elapsed();
        let limit = w.0.limit() as u32;
        if w.2 >= (2 * limit).max(4) || (elapsed >= Duration::from_secs(3) && w.2 >= 2) {
            let tp = w.2 as f64 / elapsed.as_secs_f64().max(1e-3);
            let new = w.0.window(tp);
            *w = (w.0.clone(), Instant::now(), 0);
            if self.limit.swap(new, Ordering::AcqRel) != new {
                tracing::debug!(limit = new, throughput = tp, "LLM concurrency adjusted");
                self.notify.notify_waiters();
            }
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Throughput of a server with `lanes` parallel lanes of `service` seconds at `limit`.
    fn tp(limit: usize, lanes: usize, service: f64) -> f64 {
        limit.min(lanes) as f64 / service
    }

    fn run(c: &mut Controller, lanes: usize, service: f64, windows: usize) -> Vec<usize> {
        (0..windows)
            .map(|_| {
                let l = c.limit();
                c.window(tp(l, lanes, service))
            })
            .collect()
    }

    #[test]
    fn a_serial_server_settles_at_one_request() {
        let mut c = Controller::new(16);
        let seen = run(&mut c, 1, 0.3, 40);
        assert!(seen[12..].iter().all(|&l| l <= 2), "{seen:?}");
        assert_eq!(c.limit().min(c.base), 1, "{seen:?}");
    }

    #[test]
    fn a_parallel_server_keeps_the_maximum() {
        let mut c = Controller::new(16);
        let seen = run(&mut c, 64, 0.2, 40);
        let at_max = seen.iter().filter(|&&l| l == 16).count();
        assert!(at_max >= 36, "probes down are brief and rare: {seen:?}");
        let mut long = Controller::new(16);
        let seen = run(&mut long, 64, 0.2, 400);
        let lost: usize = seen.iter().map(|&l| 16 - l).sum();
        assert!(
            (lost as f64) < 0.01 * 16.0 * 400.0,
            "under 1% of the capacity lost to probing: {lost}"
        );
    }

    #[test]
    fn it_finds_a_server_with_four_lanes() {
        let mut c = Controller::new(16);
        let seen = run(&mut c, 4, 0.5, 60);
        assert!(seen[20..].iter().all(|&l| (3..=6).contains(&l)), "{seen:?}");
    }

    #[tokio::test]
    async fn slots_are_bounded_and_released() {
        let l = Limiter::new(2, false);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        assert_eq!(l.in_flight(), 2);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire())
                .await
                .is_err(),
            "a third request waits"
        );
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), l.acquire())
            .await
            .expect("room after a release");
    }
}
