//! Active and standby: several processes may run one CDC pipeline's config; one streams, the
//! others wait and take over when it dies. The replication slot is the lock Postgres already
//! enforces (one walsender per slot); a session advisory lock keyed by the slot's name covers
//! what comes before the stream starts (a new slot's copies of keyless tables, setup), so a
//! second process never drops or re-creates a slot another is about to stream from.
//!
//! The gate runs before anything else the source does. It takes the lock when the slot is
//! free; while another process holds either, it waits (this process is the standby). A dead
//! active's sessions end with its process (kill -9 closes its sockets); when its machine or
//! network is gone instead, nothing ends them for a long time (TCP keepalive), so the
//! standby watches the slot's walsender: the active replies at least every third of
//! `takeover_after`, and a walsender that waits (on its client, or for WAL) while its reply
//! time does not move for `takeover_after` (by the standby's own clock: the reply time is the
//! active's clock) is ended, with the lock holder's session, and the standby takes over from
//! the slot's confirmed position. A walsender at work is never judged: streaming one large
//! transaction it reads replies only every `wal_sender_timeout / 2`.
//!
//! Must never: take over while the slot's walsender still replies, end a session that is
//! not the slot's walsender or the holder of this slot's lock, or proceed without the lock.

use crate::clients::postgres::PgError;
use crate::runtime::registry::{PipelineCounters, ROLE_ACTIVE, ROLE_STANDBY};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// `tributary` in ASCII: the first key of every pipeline's advisory lock.
pub const LOCK_CLASS: i32 = 0x7472_6962;

/// The second key: the slot's name, hashed (FNV-1a, 32 bits), the same in every process.
pub fn lock_key(slot: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in slot.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

/// What one look at Postgres showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// This session holds the lock.
    pub locked: bool,
    /// The backend of the walsender streaming from the slot, if it is active.
    pub walsender: Option<i32>,
    /// That walsender's last reply time, as Postgres prints it (`None`: none yet).
    pub reply: Option<String>,
    /// The walsender is at work (decoding, reading WAL), not waiting on its client (a write
    /// that does not go through, a read) or for WAL:
    /// it reads replies only between its waits (or every `wal_sender_timeout / 2` while it
    /// streams one large transaction), so a reply time that stands still then says nothing.
    pub busy: bool,
    /// The backend holding the lock, when it is another session.
    pub holder: Option<i32>,
}

impl Seen {
    fn same_but_busy(&self, other: &Seen) -> bool {
        (self.locked, self.walsender, &self.reply, self.holder)
            == (other.locked, other.walsender, &other.reply, other.holder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ours: stream.
    Take,
    /// Another process is the active: look again.
    Wait,
    /// The active stopped replying: end these backends, then look again.
    End(Vec<i32>),
}

/// The standby's judgement over successive looks (pure: the caller brings the time).
#[derive(Debug)]
pub struct Gate {
    /// `None`: never end the active's sessions; wait until Postgres does.
    takeover_after: Option<Duration>,
    /// What was seen last, and since when it has not changed.
    last: Option<(Seen, Instant)>,
    /// Looks in a row that found the walsender waiting.
    waiting_looks: u32,
}

impl Gate {
    pub fn new(takeover_after: Duration) -> Self {
        Gate {
            takeover_after: (!takeover_after.is_zero()).then_some(takeover_after),
            last: None,
            waiting_looks: 0,
        }
    }

    pub fn observe(&mut self, now: Instant, seen: Seen) -> Verdict {
        if seen.locked && seen.walsender.is_none() {
            return Verdict::Take;
        }
        let busy = seen.busy;
        let since = match &mut self.last {
            // Anything moving (a reply, another walsender or holder) is a sign of life;
            // whether it is at work is not part of it.
            Some((prev, at)) if prev.same_but_busy(&seen) => {
                prev.busy = busy;
                *at
            }
            _ => {
                self.last = Some((seen, now));
                self.waiting_looks = 0;
                return Verdict::Wait;
            }
        };
        // Judged only while it waits, on two looks in a row: at work, it reads no replies.
        self.waiting_looks = if busy { 0 } else { self.waiting_looks + 1 };
        if self.waiting_looks < 2 {
            return Verdict::Wait;
        }
        match (self.takeover_after, seen.walsender) {
            // Only a walsender's silence is judged: before its stream starts, an active may
            // be busy for long (setup, a new slot's keyless copies) without a sign.
            (Some(after), Some(pid)) if now.duration_since(since) >= after => {
                self.last = None;
                let mut end = vec![pid];
                end.extend(seen.holder.filter(|h| *h != pid));
                Verdict::End(end)
            }
            _ => Verdict::Wait,
        }
    }
}

/// How often the active replies to its walsender so that a standby can tell it is alive.
pub fn reply_every(status_interval: Duration, takeover_after: Duration) -> Duration {
    if takeover_after.is_zero() {
        status_interval
    } else {
        status_interval
            .min(takeover_after / 3)
            .max(Duration::from_millis(100))
    }
}

/// How often the standby looks.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// A wait shorter than this is not called standby (a restart of this process's own source
/// waits for its previous sessions to end).
const STANDBY_AFTER: Duration = Duration::from_secs(1);

/// How long the standby waits for the sessions it ended to be gone before it looks again
/// anyway.
const GONE_WITHIN: Duration = Duration::from_secs(1);

/// Waits until the backends `pids` have exited and the slot is free (a terminated backend
/// takes a moment to exit), at most [`GONE_WITHIN`]; a failed or stuck query ends the wait
/// (the next look reports it).
async fn await_ended(client: &Client, slot: &str, pids: &[i32], within: Duration) {
    let until = Instant::now() + GONE_WITHIN;
    while Instant::now() < until {
        let gone = tokio::time::timeout(
            within,
            client.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1)) \
                   AND NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $2 AND active)",
                &[&pids, &slot],
            ),
        )
        .await;
        match gone {
            Ok(Ok(row)) if row.get::<_, bool>(0) => return,
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => return,
        }
    }
}

/// Returns once this session holds the slot's lock and the slot is free: this process is
/// then the active. Until then it is the standby.
pub async fn acquire(
    client: &Client,
    addr: &str,
    slot: &str,
    takeover_after: Duration,
    counters: &PipelineCounters,
    pipeline: &str,
) -> Result<(), PgError> {
    let key = lock_key(slot);
    let mut gate = Gate::new(takeover_after);
    let mut locked = false;
    let began = Instant::now();
    let mut said = false;
    let err = |e: tokio_postgres::Error| PgError::client(addr.to_string(), e);
    // A look that does not come back (this session's own connection half-open) ends the
    // run, and the restart connects again.
    let within = takeover_after.max(Duration::from_secs(5));
    let stuck = || PgError::Io {
        addr: addr.to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the standby's look at the slot took over {within:?}"),
        ),
    };
    loop {
        if !locked {
            locked = tokio::time::timeout(
                within,
                client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key]),
            )
            .await
            .map_err(|_| stuck())?
            .map_err(err)?
            .get(0);
        }
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&slot, &LOCK_CLASS, &key];
        let look = client.query_one(
                "SELECT s.active_pid, r.reply_time::text, \
                   coalesce(a.wait_event, '') NOT IN ('WalSenderMain', 'WalSenderWaitForWAL', 'WalSenderWriteData', 'ClientWrite', 'ClientRead'), \
                   (SELECT l.pid FROM pg_locks l \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                       AND l.classid = $2::int4::oid AND l.objid = $3::int4::oid \
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                       AND l.pid <> pg_backend_pid() LIMIT 1) \
                 FROM (SELECT 1) one \
                 LEFT JOIN pg_replication_slots s ON s.slot_name = $1 AND s.active \
                 LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
                 LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid",
                &params,
            );
        let row = tokio::time::timeout(within, look)
            .await
            .map_err(|_| stuck())?
            .map_err(err)?;
        let walsender: Option<i32> = row.get(0);
        let seen = Seen {
            locked,
            walsender,
            reply: row.get(1),
            busy: walsender.is_some() && row.get::<_, Option<bool>>(2).unwrap_or(false),
            holder: row.get(3),
        };
        match gate.observe(Instant::now(), seen.clone()) {
            Verdict::Take => {
                counters.role.store(ROLE_ACTIVE, Ordering::Relaxed);
                if said {
                    tracing::info!(pipeline = %pipeline, slot = %slot, waited_ms = began.elapsed().as_millis() as u64, "taking over: this process is now the active");
                }
                return Ok(());
            }
            Verdict::Wait => {}
            Verdict::End(pids) => {
                tracing::warn!(pipeline = %pipeline, slot = %slot, walsender = ?seen.walsender, after = ?takeover_after,
                    "the active's walsender has not heard from it within takeover_after: ending its sessions and taking over");
                let ended: Vec<bool> = client
                    .query(
                        "SELECT pg_terminate_backend(p) FROM unnest($1::int4[]) p",
                        &[&pids],
                    )
                    .await
                    .map_err(err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if ended.iter().any(|e| !e) {
                    tracing::warn!(pipeline = %pipeline, slot = %slot, backends = ?pids, "could not end every session of the silent active (they may have ended already)");
                }
                // Looked at again as soon as they are gone, not a whole look later.
                await_ended(client, slot, &pids, within).await;
                continue;
            }
        }
        if !said && began.elapsed() >= STANDBY_AFTER {
            said = true;
            counters.role.store(ROLE_STANDBY, Ordering::Relaxed);
            tracing::info!(pipeline = %pipeline, slot = %slot, walsender = ?seen.walsender, holder = ?seen.holder,
                "standby: another process streams from this slot; taking over when it stops");
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(locked: bool, ws: Option<i32>, reply: Option<&str>, holder: Option<i32>) -> Seen {
        Seen {
            locked,
            walsender: ws,
            reply: reply.map(str::to_string),
            busy: false,
            holder,
        }
    }

    #[test]
    fn the_lock_and_a_free_slot_make_the_active() {
        let t = Instant::now();
        let mut g = Gate::new(Duration::from_secs(3));
        assert_eq!(g.observe(t, seen(true, None, None, None)), Verdict::Take);
        // The lock with the slot still streaming (an earlier session's walsender): wait.
        let mut g = Gate::new(Duration::from_secs(3));
        assert_eq!(
            g.observe(t, seen(true, Some(7), Some("a"), None)),
            Verdict::Wait
        );
        // A free slot without the lock (another process sets up): wait, however long.
        let mut g = Gate::new(Duration::from_secs(3));
        for s in 0..100 {
            let v = g.observe(t + Duration::from_secs(s), seen(false, None, None, Some(9)));
            assert_eq!(v, Verdict::Wait);
        }
    }

    #[test]
    fn a_replying_active_is_never_ended() {
        let t = Instant::now();
        let mut g = Gate::new(Duration::from_secs(3));
        for s in 0..60 {
            let reply = format!("12:00:{s:02}");
            let v = g.observe(
                t + Duration::from_secs(s),
                seen(false, Some(7), Some(&reply), Some(8)),
            );
            assert_eq!(v, Verdict::Wait, "second {s}");
        }
    }

    #[test]
    fn a_silent_walsender_is_ended_after_takeover_after_by_our_clock() {
        let t = Instant::now();
        let mut g = Gate::new(Duration::from_secs(3));
        let s = seen(false, Some(7), Some("12:00:00"), Some(8));
        assert_eq!(g.observe(t, s.clone()), Verdict::Wait);
        assert_eq!(
            g.observe(t + Duration::from_millis(2900), s.clone()),
            Verdict::Wait
        );
        assert_eq!(
            g.observe(t + Duration::from_secs(3), s.clone()),
            Verdict::End(vec![7, 8])
        );
        // Judged again from scratch after ending them.
        assert_eq!(g.observe(t + Duration::from_secs(4), s), Verdict::Wait);
        // A walsender that never replied, holding the lock itself: ended once.
        let mut g = Gate::new(Duration::from_secs(1));
        let s = seen(false, Some(7), None, Some(7));
        g.observe(t, s.clone());
        g.observe(t + Duration::from_millis(500), s.clone());
        assert_eq!(
            g.observe(t + Duration::from_secs(1), s),
            Verdict::End(vec![7])
        );
    }

    #[test]
    fn a_busy_walsender_is_never_judged_by_its_reply_time() {
        // Streaming one large transaction, it reads no reply for up to wal_sender_timeout/2.
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut g = Gate::new(Duration::from_secs(3));
        let mut s = seen(false, Some(7), Some("12:00:00"), Some(8));
        s.busy = true;
        for i in 0..120 {
            assert_eq!(g.observe(ms(i * 250), s.clone()), Verdict::Wait);
        }
        // One look waiting is not enough (it may not have read what came meanwhile) ...
        s.busy = false;
        assert_eq!(g.observe(ms(30_000), s.clone()), Verdict::Wait);
        // ... two are, the silence counted from the last reply seen.
        assert_eq!(g.observe(ms(30_250), s.clone()), Verdict::End(vec![7, 8]));
        // Busy in between starts the waiting looks over.
        let mut g = Gate::new(Duration::from_secs(3));
        let mut s = seen(false, Some(7), Some("x"), None);
        g.observe(ms(0), s.clone());
        g.observe(ms(3000), s.clone());
        s.busy = true;
        assert_eq!(g.observe(ms(3250), s.clone()), Verdict::Wait);
        s.busy = false;
        assert_eq!(g.observe(ms(3500), s.clone()), Verdict::Wait);
        assert_eq!(g.observe(ms(3750), s), Verdict::End(vec![7]));
    }

    #[test]
    fn a_new_walsender_restarts_the_clock_and_zero_never_ends() {
        let t = Instant::now();
        let mut g = Gate::new(Duration::from_secs(3));
        g.observe(t, seen(false, Some(7), Some("x"), None));
        assert_eq!(
            g.observe(
                t + Duration::from_secs(2),
                seen(false, Some(9), Some("x"), None)
            ),
            Verdict::Wait
        );
        assert_eq!(
            g.observe(
                t + Duration::from_secs(4),
                seen(false, Some(9), Some("x"), None)
            ),
            Verdict::Wait
        );
        let mut g = Gate::new(Duration::ZERO);
        for s in 0..100 {
            let v = g.observe(
                t + Duration::from_secs(s),
                seen(false, Some(7), Some("x"), None),
            );
            assert_eq!(v, Verdict::Wait);
        }
    }

    #[test]
    fn keys_and_cadence() {
        assert_eq!(lock_key("tributary"), lock_key("tributary"));
        assert_ne!(lock_key("a"), lock_key("b"));
        let s = Duration::from_secs;
        assert_eq!(reply_every(s(10), s(3)), s(1));
        assert_eq!(reply_every(s(10), Duration::ZERO), s(10));
        assert_eq!(
            reply_every(Duration::from_millis(500), s(3)),
            Duration::from_millis(500)
        );
    }
}
