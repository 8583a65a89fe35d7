//! A batch's age timer for the sinks: one wake-up at the moment the batch taken in comes of
//! age (`max_age` after its first item), instead of a ticker that wakes an idle sink several
//! times a second to find nothing to do.
//!
//! One timer at a time: a batch begins no earlier than the one before it, so a timer that
//! rings for an earlier batch rings early for the current one, and the sink's handling of that
//! wake-up arms the next ([`AgeTimer::rang`], then [`AgeTimer::arm`]).
//!
//! Must never: leave a batch with no timer due at or before its age (it would wait for the
//! next item or forever), or keep more than one timer pending.

use ractor::{ActorRef, Message};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct AgeTimer {
    /// When the pending timer rings.
    due: Option<Instant>,
}

impl AgeTimer {
    /// The moment a new timer must ring for a batch begun at `oldest` (`None`: no batch, or
    /// the pending timer rings soon enough); recorded as pending.
    pub fn needs(&mut self, oldest: Option<Instant>, max_age: Duration) -> Option<Instant> {
        let due = oldest? + max_age;
        if self.due.is_some_and(|t| t <= due) {
            return None;
        }
        self.due = Some(due);
        Some(due)
    }

    /// A wake-up came at `now`: the pending timer is spent once its moment has passed (a
    /// wake-up for another reason leaves it pending).
    pub fn rang(&mut self, now: Instant) {
        if self.due.is_some_and(|t| now >= t) {
            self.due = None;
        }
    }

    /// Arms a timer that sends `msg()` to `to` when the batch begun at `oldest` comes of age,
    /// unless one pending rings by then.
    pub fn arm<M: Message>(
        &mut self,
        oldest: Option<Instant>,
        max_age: Duration,
        to: &ActorRef<M>,
        msg: fn() -> M,
    ) {
        let Some(due) = self.needs(oldest, max_age) else {
            return;
        };
        let to = to.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            // The wake-up must find its moment passed by the clock the sink reads (a timer
            // that rang early would stay pending, and the batch would have none).
            let left = due.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                tokio::time::sleep(left).await;
            }
            // A sink that stopped meanwhile has nothing left to flush.
            let _ = to.cast(msg());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_millis(200);

    #[test]
    fn no_batch_no_timer() {
        let mut t = AgeTimer::default();
        assert_eq!(t.needs(None, AGE), None);
    }

    #[test]
    fn one_timer_per_batch_and_an_early_ring_arms_the_next() {
        let t0 = Instant::now();
        let mut t = AgeTimer::default();
        assert_eq!(t.needs(Some(t0), AGE), Some(t0 + AGE));
        // More items of the same batch: the pending timer rings at its age.
        assert_eq!(t.needs(Some(t0), AGE), None);
        // The batch flushed by size, the next begins: the pending timer rings before its
        // age, so no second one is armed...
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(t.needs(Some(t1), AGE), None);
        // ...a wake-up before its moment leaves it pending...
        t.rang(t0 + Duration::from_millis(100));
        assert_eq!(t.needs(Some(t1), AGE), None);
        // ...and when it rings (early for this batch), the next is armed for this batch.
        t.rang(t0 + AGE);
        assert_eq!(t.needs(Some(t1), AGE), Some(t1 + AGE));
    }

    #[test]
    fn a_spent_timer_with_no_batch_arms_nothing_until_one_begins() {
        let t0 = Instant::now();
        let mut t = AgeTimer::default();
        t.needs(Some(t0), AGE);
        t.rang(t0 + AGE);
        assert_eq!(t.needs(None, AGE), None);
        let t2 = t0 + Duration::from_secs(5);
        assert_eq!(t.needs(Some(t2), AGE), Some(t2 + AGE));
    }

    #[tokio::test(start_paused = true)]
    async fn the_message_comes_at_the_batch_age() {
        use ractor::{Actor, ActorProcessingErr};
        struct Probe;
        impl Actor for Probe {
            type Msg = ();
            type State = tokio::sync::mpsc::UnboundedSender<tokio::time::Instant>;
            type Arguments = tokio::sync::mpsc::UnboundedSender<tokio::time::Instant>;
            async fn pre_start(
                &self,
                _: ActorRef<()>,
                tx: Self::Arguments,
            ) -> Result<Self::State, ActorProcessingErr> {
                Ok(tx)
            }
            async fn handle(
                &self,
                _: ActorRef<()>,
                _: (),
                tx: &mut Self::State,
            ) -> Result<(), ActorProcessingErr> {
                let _ = tx.send(tokio::time::Instant::now());
                Ok(())
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (probe, handle) = Actor::spawn(None, Probe, tx).await.unwrap();
        let start = tokio::time::Instant::now();
        let mut t = AgeTimer::default();
        t.arm(Some(start.into_std()), AGE, &probe, || ());
        t.arm(Some(start.into_std()), AGE, &probe, || ());
        let rang = rx.recv().await.unwrap();
        assert!(rang - start >= AGE, "rang after {:?}", rang - start);
        // One timer: nothing more comes.
        tokio::time::sleep(AGE * 3).await;
        assert!(rx.try_recv().is_err());
        probe.stop(None);
        handle.await.unwrap();
    }
}
