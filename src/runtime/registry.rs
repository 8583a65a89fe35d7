//! Live state of the actor tree and pipeline counters, shared by actors (writers) and the
//! CLI, tests and (later) the HTTP status page (readers). Plain data behind a mutex and
//! atomics: nothing here does I/O. Must never: keep row data in an error it shows.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Starting,
    Running,
    Restarting,
    Stopped,
    Failed,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ActorStatus {
    pub state: ActorState,
    pub restarts: u64,
    pub last_error: Option<String>,
}

/// `pg_replication_slots.wal_status` as a number for the `tributary_slot_wal_status` gauge:
/// 0 not known (not sampled yet, or Postgres before 13), 1 `reserved`, 2 `extended`,
/// 3 `unreserved` (past `max_slot_wal_keep_size`: lost at the next checkpoint unless it
/// catches up), 4 `lost` (invalidated).
pub fn wal_status_code(status: Option<&str>) -> u64 {
    match status {
        Some("reserved") => 1,
        Some("extended") => 2,
        Some("unreserved") => 3,
        Some("lost") => 4,
        _ => 0,
    }
}

/// A process's role in a pipeline, as [`PipelineCounters::role`] holds it: starting; active
/// (streaming from the Postgres slot, or a consumer-group member with partitions); standby
/// (another process holds the slot, or the group gave this member no partition).
pub const ROLE_STARTING: u64 = 0;
pub const ROLE_ACTIVE: u64 = 1;
pub const ROLE_STANDBY: u64 = 2;

pub fn role_name(code: u64) -> &'static str {
    match code {
        ROLE_ACTIVE => "active",
        ROLE_STANDBY => "standby",
        _ => "starting",
    }
}

/// A histogram of durations in log2 buckets of microseconds (bucket i holds values below
/// 2^i µs), cheap enough for every commit and every request.
#[derive(Debug, Default)]
pub struct Log2Histogram {
    pub buckets: [AtomicU64; 32],
    pub sum_micros: AtomicU64,
}

impl Log2Histogram {
    pub fn record_micros(&self, us: u64) {
        let b = (64 - us.max(1).leading_zeros() as usize).min(31);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
    }

    pub fn record(&self, d: std::time::Duration) {
        self.record_micros(d.as_micros().min(u64::MAX as u128) as u64);
    }

    /// Upper bound (µs) of the bucket holding quantile `q`.
    pub fn quantile_micros(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(1u64 << i);
            }
        }
        None
    }

    /// (sum in seconds, count, cumulative buckets by upper bound in seconds, 1 ms to ~67 s).
    pub fn prometheus(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cum = 0;
        let mut buckets = Vec::new();
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b.load(Ordering::Relaxed);
            if (10..=26).contains(&i) {
                buckets.push(((1u64 << i) as f64 / 1e6, cum));
            }
        }
        buckets.push((f64::INFINITY, cum));
        (
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            cum,
            buckets,
        )
    }
}

/// Counters of one pipeline. Monotonic unless named otherwise.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    pub rows_read: AtomicU64,
    pub rows_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub insert_retries: AtomicU64,
    pub values_clamped: AtomicU64,
    pub values_unrepresentable: AtomicU64,
    pub snapshot_rows: AtomicU64,
    /// Of them, rows taken to ClickHouse without decoding them into values: a passthrough
    /// copy's (Postgres wrote ClickHouse's text) and a binary copy's.
    pub snapshot_rows_passthrough: AtomicU64,
    /// Of those, a binary copy's (Postgres's binary COPY as ClickHouse's RowBinary).
    pub snapshot_rows_binary: AtomicU64,
    /// Unchanged TOAST values taken from the sink's memory, and looked up in ClickHouse.
    pub toast_cache_hits: AtomicU64,
    pub toast_lookups: AtomicU64,
    /// Replayed changes older than their table's last TRUNCATE, skipped (it removed them).
    pub truncate_fenced: AtomicU64,
    /// Requests waiting for a ClickHouse they cannot reach (gauge; exported as 0 or 1).
    pub clickhouse_unreachable: AtomicU64,
    /// This process's role in the pipeline (gauge; [`ROLE_ACTIVE`] …).
    pub role: AtomicU64,
    /// Last LSN acknowledged to Postgres (gauge).
    pub confirmed_lsn: AtomicU64,
    /// Bytes of WAL the slot holds back (gauge; sampled by the source).
    pub slot_lag_bytes: AtomicU64,
    /// The slot's `wal_status` (gauge, see [`wal_status_code`]; sampled by the source).
    pub slot_wal_status: AtomicU64,
    /// The slot's `safe_wal_size`: WAL it may still fall behind before Postgres invalidates
    /// it (gauge; `i64::MAX` while `max_slot_wal_keep_size` is unlimited).
    pub slot_safe_wal_bytes: AtomicU64,
    /// WAL between the slot's `restart_lsn` and its confirmed position: what Postgres decodes
    /// again, sending nothing, before the first new change after a restart or a takeover
    /// (gauge; sampled by the source).
    pub slot_restart_bytes: AtomicU64,
    /// Commit → visible in ClickHouse.
    pub commit_lag: Log2Histogram,
    /// One ClickHouse insert (with its retries).
    pub insert_duration: Log2Histogram,
    /// Per table (`schema.table`): rows and bytes taken in, rows and bytes written.
    pub tables: Mutex<BTreeMap<String, Arc<TableCounters>>>,
    /// Tables' copies since this start (the first snapshot, tables added, partitions
    /// attached), by table (`schema.table`, a partition as `schema.table (partition s.p)`).
    pub copies: Mutex<BTreeMap<String, CopyProgress>>,
    /// Kafka: messages acknowledged by the broker (sink) and taken from it (source).
    pub kafka_produced: AtomicU64,
    pub kafka_consumed: AtomicU64,
    /// Messages sent to the dead-letter topic, and tombstones skipped by the source.
    pub kafka_dead_letters: AtomicU64,
    pub kafka_tombstones: AtomicU64,
    /// Times the consumer paused its partitions because the edge to the sink was full.
    pub kafka_pauses: AtomicU64,
    /// Offset commits (after ClickHouse inserts) and their failures.
    pub kafka_commits: AtomicU64,
    pub kafka_commit_errors: AtomicU64,
    /// Messages in the assigned partitions not yet committed (gauge; sampled).
    pub kafka_consumer_lag: AtomicU64,
    /// Messages handed to the producer and not yet acknowledged (gauge).
    pub kafka_in_flight: AtomicU64,
}

#[derive(Debug, Default)]
pub struct TableCounters {
    pub rows_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub rows_written: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Changes of the table skipped while it is stopped.
    pub rows_skipped: AtomicU64,
    /// Why the sink stopped the table (a schema change ClickHouse cannot follow), while it is.
    pub stopped: Mutex<Option<String>>,
}

impl PipelineCounters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of one table (created on first use).
    pub fn table(&self, name: &str) -> Arc<TableCounters> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn table_list(&self) -> Vec<(String, Arc<TableCounters>)> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    Queued,
    Copying,
    Done,
}

/// How far one table's copy has come in this run.
#[derive(Debug, Clone)]
pub struct CopyProgress {
    pub state: CopyState,
    /// Rows copied in this run (a copy resumed after a restart counts from there).
    pub rows: u64,
    /// Rows Postgres estimates the table holds (`pg_class.reltuples`; 0: not known).
    pub estimate: u64,
    /// Resumed after the last chunk an earlier run recorded.
    pub resumed: bool,
    pub started: Option<std::time::Instant>,
    /// Seconds the copy took, once done.
    pub seconds: f64,
}

impl CopyProgress {
    pub fn queued() -> Self {
        CopyProgress {
            state: CopyState::Queued,
            rows: 0,
            estimate: 0,
            resumed: false,
            started: None,
            seconds: 0.0,
        }
    }

    /// Rows per second since the copy started.
    pub fn rate(&self) -> f64 {
        let secs = match (self.state, self.started) {
            (CopyState::Done, _) => self.seconds,
            (_, Some(t)) => t.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        if secs > 0.0 {
            self.rows as f64 / secs
        } else {
            0.0
        }
    }

    /// Seconds left at the current rate, where the estimate says (a resumed copy's rows
    /// before the restart are not counted, so its estimate overstates what is left).
    pub fn eta_s(&self) -> Option<u64> {
        let rate = self.rate();
        (self.state == CopyState::Copying && self.estimate > 0 && rate > 0.0)
            .then(|| (self.estimate.saturating_sub(self.rows) as f64 / rate).ceil() as u64)
    }
}

/// The scheduled verify (`[verify] interval`): its last run, as `/status`, the status page
/// and `/metrics` show it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyState {
    pub interval_s: f64,
    /// Unix seconds at the end of the last run (0: none yet).
    pub last_run: f64,
    /// Unix seconds at the end of the last run without an error; the schedule's start until
    /// there is one (so that "no success for long" can alert).
    pub last_success: f64,
    pub duration_s: f64,
    /// Why the last run failed.
    pub error: Option<String>,
    /// Pipelines the last run left alone, and why (a copy under way, a standby).
    pub skipped: Vec<String>,
    /// Each table the last run compared.
    pub tables: Vec<VerifiedTable>,
    /// Runs by result: `equal`, `differences`, `error`, `skipped` (nothing compared).
    pub runs: BTreeMap<String, u64>,
    /// Postgres rows compared over every run, by (pipeline, table).
    #[serde(skip)]
    pub rows_checked: BTreeMap<(String, String), u64>,
}

/// One table as the scheduled verify last found it.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedTable {
    pub pipeline: String,
    pub table: String,
    pub postgres_rows: u64,
    pub clickhouse_rows: u64,
    pub equal: bool,
    /// Differing keys found (at most `[verify] limit`; `truncated` when there were more).
    pub differences: u64,
    pub truncated: bool,
    /// The first differing keys, as `kind key` (`changed key (columns)`).
    pub keys: Vec<String>,
    /// Why it was not compared, or a caveat.
    pub note: Option<String>,
}

#[derive(Default)]
pub struct Registry {
    actors: Mutex<BTreeMap<String, ActorStatus>>,
    pipelines: Mutex<BTreeMap<String, Arc<PipelineCounters>>>,
    escalations: Mutex<BTreeMap<String, u64>>,
    faults: Mutex<BTreeMap<String, u64>>,
    restart_reasons: Mutex<BTreeMap<(String, &'static str), u64>>,
    verify: Mutex<Option<VerifyState>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    pub fn set_state(&self, path: &str, state: ActorState, error: Option<String>) {
        let mut m = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(path.to_string()).or_insert(ActorStatus {
            state: ActorState::Starting,
            restarts: 0,
            last_error: None,
        });
        if state == ActorState::Restarting {
            e.restarts += 1;
        }
        e.state = state;
        if let Some(error) = error {
            // Shown on /status: no row data of a ClickHouse parse error.
            e.last_error = Some(crate::protocol::chtypes::hide_row_data(&error));
        }
    }

    pub fn actors(&self) -> BTreeMap<String, ActorStatus> {
        self.actors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn restarts(&self, path: &str) -> u64 {
        self.actors().get(path).map_or(0, |s| s.restarts)
    }

    /// A supervisor gave up (restart intensity exceeded).
    pub fn escalated(&self, supervisor: &str) {
        *self
            .escalations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(supervisor.to_string())
            .or_default() += 1;
    }

    /// An actor is restarted because it `failed`, was `killed`, its start failed
    /// (`start_failed`), or a sibling's failure took it down (`sibling`).
    pub fn restarted(&self, actor: &str, reason: &'static str) {
        *self
            .restart_reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((actor.to_string(), reason))
            .or_default() += 1;
    }

    pub fn restart_reasons(&self) -> Vec<(String, &'static str, u64)> {
        self.restart_reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((a, r), n)| (a.clone(), *r, *n))
            .collect()
    }

    /// Changes the scheduled verify's state (made on first use: `None` until then).
    pub fn update_verify(&self, f: impl FnOnce(&mut VerifyState)) {
        f(self
            .verify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(VerifyState::default))
    }

    /// The scheduled verify's state, `None` when it is off.
    pub fn verify(&self) -> Option<VerifyState> {
        self.verify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A fault was injected on purpose (admin API, chaos): counted by kind.
    pub fn fault_injected(&self, kind: &str) {
        *self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
    }

    pub fn faults(&self) -> BTreeMap<String, u64> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn escalations(&self) -> BTreeMap<String, u64> {
        self.escalations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn pipeline(&self, name: &str) -> Arc<PipelineCounters> {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_status_codes_rise_toward_lost() {
        let codes: Vec<u64> = [
            None,
            Some("reserved"),
            Some("extended"),
            Some("unreserved"),
            Some("lost"),
            Some("new"),
        ]
        .into_iter()
        .map(wal_status_code)
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn an_error_shown_keeps_no_row_data() {
        let r = Registry::new();
        let err = "insert into `t` failed after 5 attempts: Code: 27. DB::Exception: Cannot parse input: expected '\\t' before: 'card-4111\\t7\\n': (at row 1)\n: \nRow 1:\nColumn 0,   name: id, type: Int64,  ERROR: text \"card-4111<TAB>7\" is not like Int64\n\n: While executing File. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)";
        r.set_state("root/cdc/sink", ActorState::Restarting, Some(err.into()));
        let shown = r.actors()["root/cdc/sink"].last_error.clone().unwrap();
        assert!(!shown.contains("4111"), "{shown}");
        assert!(
            shown.contains("insert into `t` failed")
                && shown.contains("CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
            "{shown}"
        );
    }
}
