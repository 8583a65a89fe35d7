//! Acknowledgements for sources whose items complete out of order (a pool of LLM workers):
//! the source registers each item under a resume key (an instance and stream, or a replay
//! file) with a sequence number; the sink completes items after ClickHouse has them; the
//! resume point of a key is the position of the last item before which everything is
//! complete. Only that position is ever persisted, so a restart replays, never skips.
//!
//! Must never: move a resume point past an item that is not complete.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct KeyState {
    /// seq → (position, done)
    pending: BTreeMap<u64, (String, bool)>,
    resume: Option<String>,
    dirty: bool,
}

#[derive(Default)]
pub struct AckTracker {
    inner: Mutex<(u64, HashMap<String, KeyState>)>,
}

/// Identifies one registered item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub key: String,
    pub seq: u64,
}

impl AckTracker {
    /// Forgets everything in flight (a restarted source delivers it again from the last
    /// resume point); completions of forgotten items are ignored.
    pub fn reset(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for st in g.1.values_mut() {
            st.pending.clear();
        }
    }

    /// Registers the item at `position` (e.g. a status id) under `key`.
    pub fn register(&self, key: &str, position: &str) -> Ticket {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let seq = g.0;
        g.1.entry(key.to_string())
            .or_default()
            .pending
            .insert(seq, (position.to_string(), false));
        Ticket {
            key: key.to_string(),
            seq,
        }
    }

    /// Marks an item durable downstream.
    pub fn complete(&self, t: &Ticket) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(st) = g.1.get_mut(&t.key) else {
            return;
        };
        if let Some(e) = st.pending.get_mut(&t.seq) {
            e.1 = true;
        }
        while let Some(entry) = st.pending.first_entry() {
            if !entry.get().1 {
                break;
            }
            let (pos, _) = entry.remove();
            st.resume = Some(pos);
            st.dirty = true;
        }
    }

    /// Resume points that moved since the last call.
    pub fn take_moved(&self) -> Vec<(String, String)> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter_mut()
            .filter(|(_, s)| s.dirty)
            .filter_map(|(k, s)| {
                s.dirty = false;
                s.resume.clone().map(|r| (k.clone(), r))
            })
            .collect()
    }

    /// The current resume point of every key.
    pub fn positions(&self) -> Vec<(String, String)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter()
            .filter_map(|(k, s)| s.resume.clone().map(|r| (k.clone(), r)))
            .collect()
    }

    /// Items registered and not yet complete.
    pub fn in_flight(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.values()
            .map(|s| s.pending.values().filter(|(_, d)| !d).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_point_waits_for_the_oldest() {
        let t = AckTracker::default();
        let a = t.register("k", "10");
        let b = t.register("k", "11");
        let c = t.register("k", "12");
        t.complete(&b);
        t.complete(&c);
        assert!(
            t.take_moved().is_empty(),
            "10 is not done: nothing may move"
        );
        t.complete(&a);
        assert_eq!(t.take_moved(), vec![("k".to_string(), "12".to_string())]);
        assert!(t.take_moved().is_empty());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn reset_forgets_in_flight_items() {
        let t = AckTracker::default();
        let a = t.register("k", "1");
        t.reset();
        let b = t.register("k", "1");
        t.complete(&a); // late completion of a forgotten item
        assert!(t.take_moved().is_empty());
        t.complete(&b);
        assert_eq!(t.take_moved(), vec![("k".to_string(), "1".to_string())]);
    }
}
