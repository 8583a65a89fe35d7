//! The ClickHouse sink of a CDC pipeline: takes ordered change chunks from its edge, creates
//! and alters tables from the source schema, encodes rows as TabSeparated per table (a binary
//! copy's blocks come as RowBinary and go in an insert of their own), and flushes on rows,
//! bytes or age. Only after ClickHouse answered success for every table of
//! a flush does it acknowledge the last commit LSN it had taken in (the source then confirms
//! it to Postgres).
//!
//! Large batches (a copy, a backlog) are pipelined: a table's rows go on to an open insert in
//! 1 MiB pieces as they are encoded, so ClickHouse parses them meanwhile, and a flush by size
//! or age leaves those inserts ending in the background while the next batch is taken in;
//! what depends on them (the acknowledgement, state entries recorded with the flush, a copy's
//! progress among them) lands only once they have ended, and anything else that reaches
//! ClickHouse (a query, a TRUNCATE, DDL, a state read or write) waits for them first.
//!
//! The end of a backlog is flushed at once: the source marks the chunk that ends where the
//! server, having been behind, said it waits for more WAL (see `postgres_source::CatchUp`).
//!
//! Replays are harmless: a row's versions merge by `_version`, and a TRUNCATE, which has no
//! version, is fenced: once applied it is recorded with its LSN in the state table, a replayed
//! change older than it is skipped and the TRUNCATE itself is not applied again. (Without the
//! fence a replay that stops between the old rows and the TRUNCATE, while Postgres already
//! confirmed past it, would leave truncated rows alive, or a re-applied TRUNCATE would remove
//! rows confirmed long ago.)
//!
//! A schema change ClickHouse cannot follow (a key column renamed or retyped, a column's type
//! changed other than by widening) stops that table alone: recorded in the state, its changes
//! skipped and counted, the other tables going on; the next copy of it (which the source takes
//! at its next start) lifts the stop.
//!
//! Must never: acknowledge a commit whose rows are not inserted (or record state that depends
//! on them), offer a copy the binary way into a table whose ClickHouse types it has not seen to
//! be exactly its columns' types, let an insert of a stopped sink land after its restart, write
//! NULL over a stored value because Postgres did not resend an unchanged TOAST column, drop a
//! column's data (dropped Postgres columns stay in ClickHouse), let a replay take a table back
//! to an older state, skip a change of a stopped table before the stop is recorded, or let a
//! copy recorded as complete hide a stop.

use crate::cdc::change::{ChangeItem, RowChange, RowOp, SinkColumns, SinkMsg};
use crate::cdc::table_state::{state_key, stopped_reason, stopped_value};
use crate::cdc::toast::{
    fields_for, key_tsv, lookup_batches, lookup_sql, parse_lookup, plan_lookups, Fields, TableView,
    ToastCache,
};
use crate::clients::clickhouse::{ChClient, ChError, OpenInsert};
use crate::config::{mapping_for, BatchConfig, ClickHouseConfig, OnTruncate, TableMapping};
use crate::flow::age::AgeTimer;
use crate::flow::edge::Edge;
use crate::protocol::chtypes::*;
use crate::protocol::pgoutput::{Cell, Lsn};
use crate::protocol::pgtext::unescape_tsv;
use crate::protocol::schema::{SharedSchema, TableSchema};
use crate::runtime::fault::ErrorClass;
use crate::runtime::registry::PipelineCounters;
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Span;

pub struct SinkArgs {
    pub pipeline: String,
    pub clickhouse: ClickHouseConfig,
    pub batch: BatchConfig,
    /// `[[pipeline.table]]`: target names and ClickHouse layouts.
    pub tables: Vec<TableMapping>,
    pub edge: Edge<SinkMsg>,
    pub acks: Arc<watch::Sender<Lsn>>,
    pub counters: Arc<PipelineCounters>,
}

struct TableState {
    /// `schema.table` in Postgres.
    pg_name: String,
    ch_name: String,
    /// Every column; `is_key` marks the sort key's (the key, or the mapping's order_by).
    cols: Vec<ChColumn>,
    /// The schema `cols` were made from, as the source sent it.
    schema: SharedSchema,
    /// Per-table counters (`schema.table` in the metrics).
    counters: Arc<crate::runtime::registry::TableCounters>,
    /// Rows taken in, TabSeparated.
    rows: Vec<u8>,
    /// A binary copy's rows taken in (RowBinary), and how many.
    binary: Vec<u8>,
    binary_rows: u64,
    tombstones: Vec<u8>,
    toast: ToastCache,
    /// LSN of the last TRUNCATE applied to the table (0: none): changes before it are skipped.
    fence: u64,
    /// A skipped change was logged (once per table and sink instance).
    fence_logged: bool,
    /// No key (REPLICA IDENTITY FULL): every change is a row, counted by content.
    keyless: bool,
    /// Every version kept (`engine = "append"`): FINAL does not collapse a row's versions.
    append: bool,
    /// Snapshot rows of a keyless table taken in so far (their `_seq`).
    snapshot_seq: u64,
    /// The ClickHouse table was created by this sink and nothing was sent to it since: a
    /// copy that begins has nothing to clear there.
    created_empty: bool,
    /// ClickHouse's columns have exactly the types of `cols` (see `SinkColumns::exact`).
    exact_types: bool,
}

/// A table the sink stopped: a schema change ClickHouse cannot follow (a key column renamed
/// or retyped, a column's type changed other than by widening). Its changes are skipped
/// (counted) while the other tables go on; the start of a new copy of it lifts the stop.
struct StoppedTable {
    /// The table's latest schema (applied again when its copy begins).
    schema: SharedSchema,
    counters: Arc<crate::runtime::registry::TableCounters>,
}

pub struct SinkState {
    pipeline: String,
    /// Another process took over (see `truncate`): what this one holds is never written.
    superseded: bool,
    cfg: ClickHouseConfig,
    batch: BatchConfig,
    mappings: Vec<TableMapping>,
    ch: ChClient,
    tables: HashMap<u32, TableState>,
    /// Tables stopped by a schema change, by relation.
    stopped: HashMap<u32, StoppedTable>,
    /// Relations whose recorded stop was looked up (once per sink instance).
    stops_read: std::collections::HashSet<u32>,
    /// Recorded TRUNCATE fences by ClickHouse table, as read from or written to the state
    /// table by this sink.
    fences: HashMap<String, u64>,
    /// The stored TOAST values of the chunk being taken in, read before its first row: by
    /// relation and key, the values (`None`: ClickHouse has no such row). Each is taken once.
    prefetched: HashMap<(u32, Vec<u8>), Option<Fields>>,
    pending_commit: Option<Lsn>,
    pending_commit_times: Vec<i64>,
    /// State entries to record with the next flush, after its inserts.
    pending_state: Vec<(String, String)>,
    /// Told once `pending_state` is recorded.
    state_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Inserts under way, by table and form: rows already sent on (see
    /// [`SinkState::send_pieces`]), committed by the next flush.
    open: HashMap<(u32, RowForm), Streamed>,
    /// The last batch-size flush's inserts ending in the background, and what lands with
    /// them (acknowledgement, state, counts): settled before anything else reaches ClickHouse.
    sealed: Option<Sealed>,
    buffered_rows: usize,
    oldest: Option<Instant>,
    age_timer: AgeTimer,
    /// This sink, for its timers and its background inserts to send `Tick` to.
    wake: ActorRef<SinkMsg>,
    traces: Vec<Span>,
    acks: Arc<watch::Sender<Lsn>>,
    counters: Arc<PipelineCounters>,
    ticker: Option<crate::runtime::task::TaskGuard>,
    stats: EncodeStats,
    edge: Edge<SinkMsg>,
    /// Last progress line: when, and rows written then.
    progress: (Instant, u64),
}

/// How often the sink logs its progress (rows/s, queue depth, acknowledged LSN).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
const PROGRESS_SLACK: Duration = Duration::from_secs(1);

pub struct ClickHouseSink;

impl Actor for ClickHouseSink {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = SinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SinkMsg>,
        args: SinkArgs,
    ) -> Result<SinkState, ActorProcessingErr> {
        let ch = ChClient::connect(&args.clickhouse).await?;
        tracing::info!(pipeline = %args.pipeline, server = %ch.addr(), version = %ch.caps.version, generation = ch.caps.generation(), "clickhouse sink connected");
        ch.ensure_state_table().await?;
        // Only for the progress line: a batch's age and an insert's end ask for their own
        // `Tick` (an idle sink is not woken 20 times a second to find nothing to do).
        let ticker = Some(crate::runtime::task::TaskGuard(
            myself.send_interval(PROGRESS_EVERY, || SinkMsg::Tick),
        ));
        args.edge.attach(myself.clone());
        Ok(SinkState {
            superseded: false,
            pipeline: args.pipeline,
            cfg: args.clickhouse,
            batch: args.batch,
            mappings: args.tables,
            // Set up, it waits out ClickHouse outages instead of failing (and restarting
            // into a connect that cannot succeed until ClickHouse is back).
            ch: ch.wait_out_outages(args.counters.clone()),
            tables: HashMap::new(),
            stopped: HashMap::new(),
            stops_read: Default::default(),
            fences: HashMap::new(),
            prefetched: HashMap::new(),
            pending_commit: None,
            pending_commit_times: Vec::new(),
            pending_state: Vec::new(),
            state_waiters: Vec::new(),
            open: HashMap::new(),
            sealed: None,
            buffered_rows: 0,
            oldest: None,
            age_timer: AgeTimer::default(),
            wake: myself.clone(),
            traces: Vec::new(),
            acks: args.acks,
            counters: args.counters,
            ticker,
            stats: EncodeStats::default(),
            edge: args.edge,
            progress: (Instant::now(), 0),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        st: &mut SinkState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Changes(chunk, permit) => {
                drop(chunk.queue_span);
                drop(permit);
                let caught_up = chunk.caught_up;
                let encode = tracing::info_span!(parent: &chunk.trace, "sink.encode", rows = tracing::field::Empty);
                let mut rows = 0u64;
                st.prefetch_toast(&chunk.items).await?;
                for item in chunk.items {
                    match item {
                        ChangeItem::Row { rel_id, change } => {
                            rows += 1;
                            st.take_row(rel_id, change).await?;
                        }
                        ChangeItem::Schema(s) => st.on_schema(&s).await?,
                        ChangeItem::Truncate { rels, lsn, .. } => {
                            if st.cfg.on_truncate == OnTruncate::Truncate {
                                st.truncate(&rels, Some(lsn)).await?
                            } else {
                                st.ignore_truncate(&rels);
                            }
                        }
                        ChangeItem::SnapshotBegin(rels) => {
                            st.copy_begins(&rels).await?;
                            // (A table just created holds nothing to clear: no TRUNCATE, and
                            // none of the flush before it, which would stall every copy.)
                            if !st.all_created_empty(&rels) {
                                st.truncate(&rels, None).await?
                            }
                        }
                        ChangeItem::Block {
                            rel_id,
                            columns,
                            rows: n,
                            version,
                            form,
                            body,
                        } => {
                            rows += n as u64;
                            st.take_block(rel_id, &columns, (n, form), version, &body)?;
                        }
                    }
                }
                st.prefetched.clear();
                encode.record("rows", rows);
                drop(encode);
                if let Some(lsn) = chunk.commit {
                    st.pending_commit = Some(st.pending_commit.map_or(lsn, |p| p.max(lsn)));
                }
                st.pending_commit_times.extend(chunk.commit_times);
                st.traces.push(chunk.trace);
                st.oldest.get_or_insert_with(Instant::now);
                if st.should_flush() || caught_up {
                    st.flush_as(false).await?;
                } else {
                    st.send_pieces().await;
                }
                st.arm_age();
            }
            SinkMsg::Tick => {
                st.age_timer.rang(Instant::now());
                if st.oldest.is_some_and(|t| t.elapsed() >= st.batch.max_age.0) {
                    st.flush_as(false).await?;
                } else if st.sealed.as_ref().is_some_and(Sealed::ended) {
                    // Acknowledged as soon as its inserts are in, more rows or not.
                    st.settle().await?;
                }
                st.arm_age();
                // The ticker's schedule runs a little ahead of the last line's time (taken when
                // it was handled): without the slack every other tick would be too early.
                if st.progress.0.elapsed() + PROGRESS_SLACK >= PROGRESS_EVERY {
                    st.log_progress();
                }
            }
            SinkMsg::Drain(reply) => {
                st.flush().await?;
                let _ = reply.send(*st.acks.borrow());
            }
            SinkMsg::WriteState(mut entries, reply) => {
                st.keep_stops(&mut entries);
                let r = async {
                    st.flush().await?;
                    Ok::<_, SinkError>(st.ch.write_state(&st.pipeline, &entries).await?)
                }
                .await;
                let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r?;
            }
            SinkMsg::RecordState(mut entries, _permit, recorded) => {
                st.keep_stops(&mut entries);
                st.state_waiters.push(recorded);
                for (k, v) in entries {
                    match st.pending_state.iter_mut().find(|(pk, _)| *pk == k) {
                        Some(e) => e.1 = v,
                        None => st.pending_state.push((k, v)),
                    }
                }
                // Recorded by the next flush: by size, or by age at the latest.
                st.oldest.get_or_insert_with(Instant::now);
                st.arm_age();
            }
            SinkMsg::ReadState(keys, reply) => {
                // Everything taken in before is recorded first: a source restarted alone reads
                // the progress its last life sent (a copy's records wait for a flush).
                st.flush().await?;
                let r = st.ch.read_states(&st.pipeline, &keys).await;
                let _ = reply.send(r.as_ref().map(|m| m.clone()).map_err(|e| e.to_string()));
                r?;
            }
            SinkMsg::Purge {
                rel,
                below,
                only,
                reply,
            } => {
                let r = st.purge(rel, below, only.as_deref()).await;
                let _ = reply.send(r.as_ref().map(|n| *n).map_err(|e| e.to_string()));
                if let Err(e) = r {
                    if !matches!(e, SinkError::Schema(_)) {
                        return Err(e.into());
                    }
                }
            }
            SinkMsg::Columns(rel, reply) => {
                let cols = st
                    .tables
                    .get(&rel)
                    .filter(|t| !t.keyless && !st.stopped.contains_key(&rel))
                    .map(|t| {
                        let cols = SinkColumns {
                            cols: Arc::new(t.cols.clone()),
                            exact: t.exact_types,
                        };
                        (t.schema.clone(), cols)
                    });
                let _ = reply.send(cols);
            }
            SinkMsg::Fail(reason) => return Err(SinkError::Protocol(reason).into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SinkMsg>,
        st: &mut SinkState,
    ) -> Result<(), ActorProcessingErr> {
        drop(st.ticker.take());
        if st.superseded {
            return Ok(());
        }
        // Best effort: what is not flushed here is replayed from the last confirmed LSN.
        if let Err(e) = st.flush().await {
            tracing::warn!(pipeline = %st.pipeline, error = %e, "final flush failed; the data will be replayed");
        }
        Ok(())
    }
}

impl SinkState {
    fn log_progress(&mut self) {
        let written = self
            .counters
            .rows_written
            .load(std::sync::atomic::Ordering::Relaxed);
        let secs = self.progress.0.elapsed().as_secs_f64();
        tracing::info!(
            pipeline = %self.pipeline,
            rows_per_s = ((written - self.progress.1) as f64 / secs).round() as u64,
            rows_written = written,
            queue_depth = self.edge.depth(),
            queue_capacity = self.edge.capacity(),
            acked_lsn = %crate::protocol::pgoutput::fmt_lsn(*self.acks.borrow()),
            lag_p99_ms = self.counters.commit_lag.quantile_micros(0.99).map_or(0, |us| us / 1000),
            "progress"
        );
        self.progress = (Instant::now(), written);
    }

    /// Asks for a `Tick` when the batch taken in comes of age (`max_age` after its first
    /// change).
    fn arm_age(&mut self) {
        let max_age = self.batch.max_age.0;
        self.age_timer
            .arm(self.oldest, max_age, &self.wake, || SinkMsg::Tick);
    }

    fn should_flush(&self) -> bool {
        let bytes: usize = self
            .tables
            .values()
            .map(|t| t.rows.len() + t.binary.len() + t.tombstones.len())
            .sum::<usize>()
            + self.open.values().map(|s| s.insert.len()).sum::<usize>();
        self.buffered_rows >= self.batch.max_rows || bytes >= self.batch.max_bytes
    }

    async fn take_row(&mut self, rel_id: u32, change: RowChange) -> Result<(), SinkError> {
        if let Some(stop) = self.stopped.get(&rel_id) {
            PipelineCounters::add(&stop.counters.rows_skipped, 1);
            return Ok(());
        }
        let Some(t) = self.tables.get(&rel_id) else {
            return Err(SinkError::Protocol(format!(
                "row for relation {rel_id} before its schema"
            )));
        };
        let read_bytes: usize = change
            .cells
            .iter()
            .map(|c| if let Cell::Text(b) = c { b.len() } else { 0 })
            .sum();
        PipelineCounters::add(&t.counters.rows_read, 1);
        PipelineCounters::add(&t.counters.bytes_read, read_bytes as u64);
        if change.version > 0 && change.version < t.fence {
            // A replay of a change the table's last TRUNCATE removed.
            PipelineCounters::add(&self.counters.truncate_fenced, 1);
            let t = self.tables.get_mut(&rel_id).expect("checked above");
            if !t.fence_logged {
                t.fence_logged = true;
                tracing::info!(table = %t.ch_name, truncated_at = %crate::protocol::pgoutput::fmt_lsn(t.fence), version = %crate::protocol::pgoutput::fmt_lsn(change.version),
                    "skipping replayed changes older than the table's last TRUNCATE (counted in tributary_truncate_fenced)");
            }
            return Ok(());
        }
        if change.cells.len() != t.cols.len() {
            return Err(SinkError::Protocol(format!(
                "row of `{}` has {} values for {} columns",
                t.ch_name,
                change.cells.len(),
                t.cols.len()
            )));
        }
        if t.keyless {
            return self.take_keyless_row(rel_id, change);
        }
        let toast = change.unchanged_toast();
        // The key names the row in the TOAST cache: not needed (nor encoded) for a row of a
        // table without TOAST values to remember, the common case of a copy.
        let key = if change.is_delete()
            || !toast.is_empty()
            || !t.toast.cols.is_empty()
            || change.moved_from.is_some()
        {
            key_tsv(&t.cols, &change.cells)
        } else {
            Vec::new()
        };
        let moved_key = change.moved_from.as_ref().map(|old| key_tsv(&t.cols, old));
        let t = self.tables.get_mut(&rel_id).expect("checked above");
        let last_deleted = t.toast.last_deleted.take();
        let stored = if change.is_delete() || toast.is_empty() {
            None
        } else {
            for &i in &toast {
                if !t.toast.cols.contains(&i) {
                    t.toast.cols.push(i);
                }
            }
            // Where the values are: under this row's key, or under the old key of a key change
            // (whose delete usually came just before).
            let at = moved_key.as_ref().unwrap_or(&key);
            let remembered = match &last_deleted {
                Some((k, prev)) if k == at => prev.as_ref(),
                _ => t.toast.get(at),
            };
            match remembered.and_then(|have| fields_for(have, &toast)) {
                Some(found) => {
                    PipelineCounters::add(&self.counters.toast_cache_hits, 1);
                    Some(found)
                }
                None => {
                    let at = at.clone();
                    // Read before the chunk's first row (see `prefetch_toast`), or now.
                    let prefetched =
                        self.prefetched
                            .remove(&(rel_id, at.clone()))
                            .and_then(|p| match p {
                                Some(have) => fields_for(&have, &toast),
                                None => Some(absent_row(&t.ch_name)),
                            });
                    match prefetched {
                        Some(found) => {
                            PipelineCounters::add(&self.counters.toast_lookups, 1);
                            Some(found)
                        }
                        None => {
                            if let Some((k, None)) = &last_deleted {
                                if *k == at {
                                    // The old key's delete: the lookup's flush reads the old
                                    // row before it writes the tombstone (see `flush`).
                                    t.toast.last_deleted = last_deleted;
                                }
                            }
                            Some(self.stored_values(rel_id, &at, &toast).await?)
                        }
                    }
                }
            }
        };
        let t = self.tables.get_mut(&rel_id).expect("checked above");
        self.buffered_rows += 1;
        if change.is_delete() {
            let out = &mut t.tombstones;
            for (c, cell) in t.cols.iter().zip(&change.cells).filter(|(c, _)| c.is_key) {
                encode_field(out, c, cell, &mut self.stats);
                out.push(b'\t');
            }
            end_row(out, change.version, true);
            let prev = t.toast.remove(&key);
            t.toast.last_deleted = Some((key, prev));
        } else {
            let out = &mut t.rows;
            let mut remember: Fields = Vec::new();
            for (i, (c, cell)) in t.cols.iter().zip(&change.cells).enumerate() {
                let from = out.len();
                match stored.as_ref().and_then(|s| s.get(&i)) {
                    // The stored value, already in ClickHouse's TSV form.
                    Some(raw) => out.extend_from_slice(raw),
                    None => encode_field(out, c, cell, &mut self.stats),
                }
                if t.toast.cols.contains(&i) {
                    remember.push((i, out[from..].to_vec()));
                }
                out.push(b'\t');
            }
            end_row(out, change.version, false);
            if !remember.is_empty() {
                t.toast.put(key, change.version, remember);
                let total: usize = self.tables.values().map(|t| t.toast.bytes).sum();
                if total > self.batch.toast_cache_bytes {
                    // Over budget: forget everything (misses fall back to lookups).
                    for t in self.tables.values_mut() {
                        t.toast.forget_rows();
                    }
                }
            }
        }
        Ok(())
    }

    /// Snapshot rows already in ClickHouse's form (a passthrough or binary copy): taken in
    /// as they are.
    fn take_block(
        &mut self,
        rel_id: u32,
        columns: &[ChColumn],
        (rows, form): (usize, RowForm),
        version: u64,
        body: &[u8],
    ) -> Result<(), SinkError> {
        if let Some(stop) = self.stopped.get(&rel_id) {
            PipelineCounters::add(&stop.counters.rows_skipped, rows as u64);
            return Ok(());
        }
        let Some(t) = self.tables.get_mut(&rel_id) else {
            return Err(SinkError::Protocol(format!(
                "rows for relation {rel_id} before its schema"
            )));
        };
        // The copy asked for the columns under the schema it read with, and a chunk read
        // under an older one is never sent: these are the table's columns.
        if t.keyless || t.cols != columns {
            return Err(SinkError::Protocol(format!(
                "rows of `{}` written for other columns than the table has",
                t.ch_name
            )));
        }
        PipelineCounters::add(&t.counters.rows_read, rows as u64);
        PipelineCounters::add(&t.counters.bytes_read, body.len() as u64);
        if version > 0 && version < t.fence {
            PipelineCounters::add(&self.counters.truncate_fenced, rows as u64);
            return Ok(());
        }
        match form {
            RowForm::TabSeparated => t.rows.extend_from_slice(body),
            RowForm::RowBinary => {
                t.binary.extend_from_slice(body);
                t.binary_rows += rows as u64;
            }
        }
        self.buffered_rows += rows;
        Ok(())
    }

    /// A change of a keyless table: its whole row (the old content for a delete, which
    /// REPLICA IDENTITY FULL sends), numbered within its version so that it is a row of its
    /// own and a replay of it collapses with it: a delete 0, an insert 1 (an update is both,
    /// at one WAL position), snapshot rows from 2 on.
    fn take_keyless_row(&mut self, rel_id: u32, change: RowChange) -> Result<(), SinkError> {
        let t = self.tables.get_mut(&rel_id).expect("checked by the caller");
        if change
            .cells
            .iter()
            .any(|c| matches!(c, Cell::UnchangedToast))
        {
            return Err(SinkError::Protocol(format!(
                "a change of keyless table `{}` without its whole row",
                t.ch_name
            )));
        }
        let seq = match change.op {
            RowOp::Delete => 0,
            RowOp::Insert | RowOp::Update => 1,
            RowOp::Snapshot => {
                t.snapshot_seq += 1;
                1 + t.snapshot_seq
            }
        };
        let out = &mut t.rows;
        for (c, cell) in t.cols.iter().zip(&change.cells) {
            encode_field(out, c, cell, &mut self.stats);
            out.push(b'\t');
        }
        end_row_seq(out, change.version, change.is_delete(), seq);
        self.buffered_rows += 1;
        Ok(())
    }

    /// Values of unchanged TOAST columns as ClickHouse has them for the row of `key` (the key
    /// columns' TSV), in TSV form: the latest version not deleted (a key change deletes the
    /// row under its old key first). Everything buffered is flushed first, so ClickHouse holds
    /// the latest version.
    async fn stored_values(
        &mut self,
        rel_id: u32,
        key: &[u8],
        toast: &[usize],
    ) -> Result<HashMap<usize, Vec<u8>>, SinkError> {
        self.flush().await?;
        let t = self.tables.get_mut(&rel_id).expect("a known table");
        if let Some((k, Some(prev))) = &t.toast.last_deleted {
            if k == key {
                if let Some(found) = fields_for(prev, toast) {
                    t.toast.last_deleted = None;
                    return Ok(found);
                }
            }
        }
        t.toast.last_deleted = None;
        self.query_stored(rel_id, key, toast).await
    }

    /// The stored values of `toast` columns for the row of `key`, as ClickHouse has them now
    /// (the latest version not deleted), in TSV form.
    async fn query_stored(
        &self,
        rel_id: u32,
        key: &[u8],
        toast: &[usize],
    ) -> Result<HashMap<usize, Vec<u8>>, SinkError> {
        PipelineCounters::add(&self.counters.toast_lookups, 1);
        let t = &self.tables[&rel_id];
        let mut cond = Vec::new();
        let fields = key.split(|&b| b == b'\t');
        for (c, v) in t.cols.iter().filter(|c| c.is_key).zip(fields) {
            cond.push(key_equals_sql(
                c,
                &unescape_tsv(&String::from_utf8_lossy(v)),
            ));
        }
        cond.push(format!("{} = 0", ch_ident(DELETED_COL)));
        let cols: Vec<String> = toast
            .iter()
            .map(|&i| stored_select_expr(&t.cols[i]))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}.{} WHERE {} ORDER BY {} DESC LIMIT 1",
            cols.join(", "),
            ch_ident(&self.ch.database),
            ch_ident(&t.ch_name),
            cond.join(" AND "),
            ch_ident(VERSION_COL)
        );
        let text = self.ch.query_text(&sql).await?;
        let mut out = HashMap::new();
        match text.lines().next() {
            Some(line) => {
                for (&i, field) in toast.iter().zip(line.split('\t')) {
                    let Some(tsv) = stored_field_tsv(&t.cols[i], field) else {
                        return Err(SinkError::Protocol(format!(
                            "unreadable stored value of `{}`.`{}`",
                            t.ch_name, t.cols[i].name
                        )));
                    };
                    out.insert(i, tsv);
                }
            }
            None => out = absent_row(&t.ch_name),
        }
        Ok(out)
    }

    /// Reads back, before a chunk's first row, the stored TOAST values its rows will need
    /// and the cache does not hold: one flush, then one query per table and batch of keys,
    /// instead of a flush and a query per row.
    async fn prefetch_toast(&mut self, items: &[ChangeItem]) -> Result<(), SinkError> {
        self.prefetched.clear();
        let plan = plan_lookups(items, |rel| {
            if self.stopped.contains_key(&rel) {
                return None;
            }
            self.tables
                .get(&rel)
                .filter(|t| !t.keyless)
                .map(|t| TableView {
                    cols: &t.cols,
                    cache: &t.toast,
                    fence: t.fence,
                })
        });
        if plan.is_empty() {
            return Ok(());
        }
        // ClickHouse holds every row taken in before this chunk.
        self.flush().await?;
        for (rel, lookups) in plan {
            let t = &self.tables[&rel];
            for keys in lookup_batches(&lookups.keys) {
                let sql = lookup_sql(&self.ch.database, &t.ch_name, &t.cols, keys, &lookups.cols);
                let text = self.ch.query_text(&sql).await?;
                let mut found = parse_lookup(&text, &t.cols, keys.len(), &lookups.cols)
                    .map_err(|e| SinkError::Protocol(format!("`{}`: {e}", t.ch_name)))?;
                for (i, key) in keys.iter().enumerate() {
                    self.prefetched.insert((rel, key.clone()), found.remove(&i));
                }
            }
        }
        Ok(())
    }

    /// A table's schema, first or changed: applied, or the table stopped where ClickHouse
    /// cannot follow the change (or a stop recorded before still holds).
    async fn on_schema(&mut self, s: &SharedSchema) -> Result<(), SinkError> {
        if let Some(stop) = self.stopped.get_mut(&s.rel_id) {
            // Still stopped: its copy, when it begins, takes the latest schema.
            stop.schema = s.clone();
            return Ok(());
        }
        if !self.tables.contains_key(&s.rel_id) && self.stops_read.insert(s.rel_id) {
            let key = state_key(&s.qualified());
            let recorded = self.ch.read_state(&self.pipeline, &key).await?;
            if recorded.as_deref().and_then(stopped_reason).is_some() {
                // Stopped before: lifted once its ClickHouse table takes the schema (dropped
                // and created now, or fixed by hand), and then copied anew (the source reads
                // the copy to take after the schemas); kept otherwise, and not copied.
                match self.apply_schema(s).await? {
                    Some(reason) => {
                        tracing::error!(pipeline = %self.pipeline, table = %s.qualified(), reason = %reason,
                            "table stays stopped: its changes are skipped. Drop (or fix) its ClickHouse table and restart: it is created and copied anew");
                        self.mark_stopped(s, reason);
                    }
                    None => {
                        self.ch
                            .write_state(&self.pipeline, &[(key, String::new())])
                            .await?;
                        tracing::warn!(pipeline = %self.pipeline, table = %s.qualified(),
                            "the stopped table's ClickHouse table takes its schema now: the stop is lifted and the table is copied anew (through Kafka: the changes skipped meanwhile come back only with a snapshot at the producer)");
                    }
                }
                return Ok(());
            }
        }
        if let Some(reason) = self.apply_schema(s).await? {
            self.stop_table(s, reason).await?;
        }
        Ok(())
    }

    fn mark_stopped(&mut self, s: &SharedSchema, reason: String) {
        let counters = self.counters.table(&s.qualified());
        *counters.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.tables.remove(&s.rel_id);
        self.stopped.insert(
            s.rel_id,
            StoppedTable {
                schema: s.clone(),
                counters,
            },
        );
    }

    /// Stops table `s`: recorded in the state before any of its changes is skipped, so that
    /// the next start copies it anew.
    async fn stop_table(&mut self, s: &SharedSchema, reason: String) -> Result<(), SinkError> {
        // What was taken in before the change is written (encoded for the old columns).
        self.flush().await?;
        let key = state_key(&s.qualified());
        let current = self.ch.read_state(&self.pipeline, &key).await?;
        let value = stopped_value(current.as_deref(), &reason);
        self.ch.write_state(&self.pipeline, &[(key, value)]).await?;
        tracing::error!(pipeline = %self.pipeline, table = %s.qualified(), reason = %reason,
            "table stopped: its changes are skipped from here while the other tables go on. Drop (or fix) its ClickHouse table, then restart tributary: the table is created and copied anew from Postgres (through Kafka: snapshot it again at the producer)");
        self.mark_stopped(s, reason);
        Ok(())
    }

    /// Every table of `rels`, and every other relation written to its ClickHouse table, was
    /// created by this sink with no TRUNCATE fence, and nothing was sent to it or is taken in.
    fn all_created_empty(&self, rels: &[u32]) -> bool {
        rels.iter().all(|rel| {
            let Some(t) = self.tables.get(rel) else {
                return false;
            };
            self.tables
                .values()
                .filter(|o| o.ch_name == t.ch_name)
                .all(|o| {
                    o.created_empty
                        && o.fence == 0
                        && o.rows.is_empty()
                        && o.binary.is_empty()
                        && o.tombstones.is_empty()
                })
        })
    }

    /// A copy of these tables begins (a snapshot, or a table's copy while streaming): a stopped
    /// one among them is taken up again, with its latest schema.
    async fn copy_begins(&mut self, rels: &[u32]) -> Result<(), SinkError> {
        for rel in rels {
            if let Some(stop) = self.stopped.remove(rel) {
                *stop
                    .counters
                    .stopped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(pipeline = %self.pipeline, table = %stop.schema.qualified(), "a copy of the stopped table begins: it is taken up again");
                self.on_schema(&stop.schema).await?;
            }
        }
        Ok(())
    }

    /// A stopped table's copy recorded by the source stays a stop: the sink skipped its
    /// changes, so only a copy begun after the stop makes it whole.
    fn keep_stops(&self, entries: &mut [(String, String)]) {
        for stop in self.stopped.values() {
            let key = state_key(&stop.schema.qualified());
            let reason = stop
                .counters
                .stopped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            for (_, v) in entries.iter_mut().filter(|(k, _)| *k == key) {
                *v = stopped_value(Some(v), &reason);
            }
        }
    }

    /// Applies a table's schema; `Some(reason)` where ClickHouse cannot follow a change of it
    /// (the table is to be stopped).
    async fn apply_schema(&mut self, s: &SharedSchema) -> Result<Option<String>, SinkError> {
        let sent = s.clone();
        let mapping = mapping_for(&self.mappings, &s.schema, &s.name).cloned();
        let mapping = mapping.as_ref();
        // A source that knows nothing of mappings (Debezium topics) leaves the sort key to
        // the sink.
        let shaped;
        let s: &TableSchema = match mapping {
            Some(m) if s.order_by.is_empty() && !m.order_by.is_empty() => {
                shaped = crate::protocol::mapping::shape((**s).clone(), None, &m.order_by)
                    .map_err(SinkError::Schema)?;
                &shaped
            }
            _ => s,
        };
        if !s.keyless() && s.sort_indexes().is_empty() {
            // From Debezium topics a table without a key cannot be told apart from one whose
            // key is not known: its rows would collapse into one.
            return Err(SinkError::Schema(format!(
                "{}: no key columns, and not known to be a REPLICA IDENTITY FULL table replicated by content (through Kafka, give the table a primary key)",
                s.qualified()
            )));
        }
        let layout = layout_of(mapping, s);
        if layout.purge_after_secs.is_some() && (layout.keyless || !self.ch.caps.cleanup_merges) {
            return Err(SinkError::Schema(format!(
                "{}: purge_deleted_after {}",
                s.qualified(),
                if layout.keyless {
                    "does not apply to a keyless table (its deletes are counts, not tombstones)"
                        .to_string()
                } else {
                    format!(
                        "needs ClickHouse 24.1 or later (cleanup merges); this server is {}",
                        self.ch.caps.version
                    )
                }
            )));
        }
        let cols = map_table(s, &self.ch.caps, self.cfg.json_as);
        if let Some(t) = self.tables.get_mut(&s.rel_id).filter(|t| t.cols == cols) {
            t.schema = sent;
            return Ok(None);
        }
        // Rows taken in so far were encoded for the previous column set.
        self.flush().await?;
        let name = target_table(mapping, &self.cfg.table_template, s);
        if let Some(col) = reserved_column(s) {
            return Err(SinkError::Schema(format!(
                "{}: column `{col}` has the name of a column tributary adds to every ClickHouse table; rename it in Postgres",
                s.qualified()
            )));
        }
        for other in self
            .tables
            .iter()
            .filter(|(r, _)| **r != s.rel_id)
            .map(|(_, t)| t)
        {
            if let Some(why) = name_clash(&name, &other.ch_name) {
                return Err(SinkError::Schema(format!(
                    "{} (ClickHouse `{name}`) and {} (ClickHouse `{}`): {why}; give them distinct names with clickhouse.table_template (e.g. \"{{schema}}_{{table}}\")",
                    s.qualified(),
                    other.pg_name,
                    other.ch_name
                )));
            }
        }
        for c in cols.iter().filter(|c| c.note.is_some()) {
            tracing::warn!(table = %s.qualified(), column = %c.name, note = c.note.as_deref().unwrap_or(""), "type mapping fallback");
        }
        let db = self.ch.database.clone();
        let mut created = false;
        // ClickHouse's columns have the mapping's types exactly (a table created now does).
        let mut exact_types = true;
        match self.ch.table_columns(&name).await? {
            None => {
                self.ch
                    .execute(&create_table_sql(&db, &name, &cols, &self.ch.caps, &layout))
                    .await?;
                created = true;
                tracing::info!(table = %name, columns = cols.len(), "created ClickHouse table");
                self.recreate_view(&db, &name, &cols, &layout).await?;
                // A table whose copy is recorded had its ClickHouse table dropped (to re-create
                // it, say): its rows are to be copied again. Recorded before any row is
                // written, so the source's read of the copies (at its start, after the
                // schemas) finds it to take.
                let key = state_key(&s.qualified());
                let recorded = self.ch.read_state(&self.pipeline, &key).await?;
                // (A keyless table cannot be copied while it streams: a new snapshot copies it.)
                if !s.keyless()
                    && recorded
                        .as_deref()
                        .is_some_and(|v| !v.is_empty() && stopped_reason(v).is_none())
                {
                    self.ch
                        .write_state(&self.pipeline, &[(key, String::new())])
                        .await?;
                    tracing::warn!(pipeline = %self.pipeline, table = %s.qualified(), "its ClickHouse table was missing and is created anew: the table is copied again (at this start, or if the table was dropped while running, at the next)");
                }
            }
            Some(existing) => {
                // Ours have both our columns; anything else was not created by us and is
                // neither written to nor truncated.
                let ours = [VERSION_COL, DELETED_COL]
                    .iter()
                    .all(|m| existing.iter().any(|(n, _)| n == m));
                if !ours {
                    return Err(SinkError::Schema(format!(
                        "{}: ClickHouse `{db}`.`{name}` exists and is not a table tributary created (no `{VERSION_COL}`/`{DELETED_COL}` columns); choose another database or table_template",
                        s.qualified()
                    )));
                }
                // ClickHouse cannot rename a sort key column, nor change the sort or
                // partition key: a new table is needed.
                if let Some(c) = cols.iter().find(|c| {
                    c.is_key
                        && !existing.iter().any(|(n, _)| n == &c.name)
                        && c.renamed_from
                            .as_ref()
                            .is_some_and(|old| existing.iter().any(|(n, _)| n == old))
                }) {
                    return Ok(Some(format!(
                        "key column `{}` was renamed to `{}` in Postgres; ClickHouse cannot rename a column of the table's ORDER BY (`{db}`.`{name}`)",
                        c.renamed_from.as_deref().unwrap_or(""),
                        c.name,
                    )));
                }
                if let Some((sorting, partition)) = self.ch.table_keys(&name).await? {
                    if let Some(why) = layout_mismatch(&cols, &layout, &sorting, &partition) {
                        return Err(SinkError::Schema(format!(
                            "{}: ClickHouse `{db}`.`{name}` {why}; ClickHouse cannot change that in place. Drop it and start again (it is created and copied anew), or give the mapping another target",
                            s.qualified(),
                        )));
                    }
                }
                // Purging is a table setting: set on a table created without it too.
                if let Some(settings) = layout
                    .purge_after_secs
                    .and_then(|secs| purge_settings(secs, &self.ch.caps))
                {
                    self.ch
                        .execute(&format!(
                            "ALTER TABLE {}.{} MODIFY SETTING {settings}",
                            ch_ident(&db),
                            ch_ident(&name)
                        ))
                        .await?;
                }
                let mut added = 0;
                for c in &cols {
                    if let Some((_, have)) = existing.iter().find(|(n, _)| n == &c.name) {
                        match type_change(have, &c.ch_type) {
                            TypeChange::Same => {}
                            // ClickHouse refuses to change an ORDER BY column's type (18.16
                            // and 26.9 both: the sorted representation would change).
                            TypeChange::Widen(to) if c.is_key => {
                                return Ok(Some(format!(
                                    "key column `{}` changed type in Postgres and now maps to {to}; ClickHouse cannot change the type of a column of the table's ORDER BY (`{db}`.`{name}`.`{}` is {have})",
                                    c.name,
                                    c.name,
                                )));
                            }
                            TypeChange::Widen(to) => {
                                self.ch
                                    .execute(&modify_column_sql(&db, &name, &c.name, &to))
                                    .await?;
                                tracing::info!(table = %name, column = %c.name, from = %have, to = %to, "widened column");
                                added += 1;
                            }
                            TypeChange::Incompatible => {
                                return Ok(Some(format!(
                                    "column `{}` changed type in Postgres and now maps to {}; the ClickHouse column `{db}`.`{name}`.`{}` is {have} and cannot take it without losing or changing values (only widenings are applied: a wider integer, Float32 to Float64, a Decimal with no fewer digits)",
                                    c.name,
                                    c.ch_type,
                                    c.name
                                )));
                            }
                        }
                    }
                    if !existing.iter().any(|(n, _)| n == &c.name) {
                        let renamed = c
                            .renamed_from
                            .as_ref()
                            .and_then(|old| existing.iter().find(|(n, _)| n == old));
                        if let Some((old, old_type)) = renamed {
                            self.ch
                                .execute(&rename_column_sql(
                                    &db,
                                    &name,
                                    old,
                                    c,
                                    old_type,
                                    &self.ch.caps,
                                ))
                                .await?;
                            tracing::info!(table = %name, from = %old, to = %c.name, renamed = self.ch.caps.rename_column,
                                "column renamed (on servers before 20.4: added with DEFAULT of the old column, which keeps the history)");
                            added += 1;
                            continue;
                        }
                        self.ch.execute(&add_column_sql(&db, &name, c)).await?;
                        tracing::info!(table = %name, column = %c.name, r#type = %c.ch_type, "added column");
                        added += 1;
                    }
                }
                for (n, _) in existing
                    .iter()
                    .filter(|(n, _)| n != VERSION_COL && n != DELETED_COL)
                {
                    if !cols.iter().any(|c| &c.name == n) {
                        tracing::info!(table = %name, column = %n, "column is gone in Postgres; kept in ClickHouse (new rows get its default)");
                    }
                }
                // The types as they are now (read again only after an ALTER above), against
                // the mapping's: a narrower type or one without Nullable is left as it was.
                let now = match added {
                    0 => existing,
                    _ => self.ch.table_columns(&name).await?.unwrap_or_default(),
                };
                let norm = |t: &str| t.split_whitespace().collect::<String>();
                exact_types = cols.iter().all(|c| {
                    now.iter()
                        .any(|(n, t)| n == &c.name && norm(t) == norm(&c.ch_type))
                });
                if added > 0
                    || self
                        .ch
                        .table_columns(&format!("{name}{LIVE_VIEW_SUFFIX}"))
                        .await?
                        .is_none()
                {
                    self.recreate_view(&db, &name, &cols, &layout).await?;
                } else {
                    self.ch.ensure_distributed(&name).await?;
                }
            }
        }
        let fence = self.fence_of(&name).await?;
        let old_created_empty = self
            .tables
            .get(&s.rel_id)
            .is_some_and(|t| t.created_empty && t.ch_name == name);
        let old = self.tables.insert(
            s.rel_id,
            TableState {
                fence,
                fence_logged: false,
                keyless: s.keyless(),
                append: layout.engine == TableEngine::Append,
                snapshot_seq: 0,
                // (A schema applied again keeps what the table was.)
                created_empty: created || old_created_empty,
                exact_types,
                pg_name: s.qualified(),
                ch_name: name,
                cols,
                schema: sent,
                counters: self.counters.table(&s.qualified()),
                rows: Vec::new(),
                binary: Vec::new(),
                binary_rows: 0,
                tombstones: Vec::new(),
                toast: ToastCache::default(),
            },
        );
        debug_assert!(old.is_none_or(|o| o.rows.is_empty() && o.binary.is_empty()));
        Ok(None)
    }

    async fn recreate_view(
        &self,
        db: &str,
        name: &str,
        cols: &[ChColumn],
        layout: &TableLayout,
    ) -> Result<(), SinkError> {
        // Views keep the column list they were created with: rebuild after schema changes.
        // Only a view is dropped: a table of that name is someone's data (a replicated
        // `<t>_live` beside `t` is refused before; this guards the rest).
        let view = format!("{name}{LIVE_VIEW_SUFFIX}");
        match self.ch.table_engine(&view).await? {
            Some(engine) if engine != "View" => {
                return Err(SinkError::Schema(format!(
                    "ClickHouse `{db}`.`{view}` (the live view of `{name}`) exists as a {engine} table, not a view; it is left alone: rename it or choose another table_template"
                )))
            }
            _ => {}
        }
        let (drop, create) = live_view_sql(db, name, cols, layout);
        self.ch.execute(&drop).await?;
        self.ch.execute(&create).await?;
        self.ch.distribute_view(name).await?;
        Ok(())
    }

    /// Deletes the rows of table `rel` whose latest version is below `below` (see
    /// [`SinkMsg::Purge`]), with tombstones at `below`: a change streamed since has a higher
    /// version and wins over them. With `only`, the rows of those keys alone (their
    /// canonical text, as `tributary verify` names them). How many.
    async fn purge(
        &mut self,
        rel: u32,
        below: u64,
        only: Option<&[String]>,
    ) -> Result<u64, SinkError> {
        self.flush().await?;
        if let Some(stop) = self.stopped.get(&rel) {
            // Its copy was skipped: it stays stopped (recorded), and nothing is deleted.
            tracing::warn!(pipeline = %self.pipeline, table = %stop.schema.qualified(), "resync of a stopped table: it stays stopped (drop or fix its ClickHouse table, then restart)");
            return Ok(0);
        }
        let Some(t) = self.tables.get_mut(&rel) else {
            return Err(SinkError::Schema(format!(
                "relation {rel} is not a table this sink writes"
            )));
        };
        if t.keyless {
            return Err(SinkError::Schema(format!(
                "{}: a keyless table is counted by content, and cannot be resynced while it streams (a new snapshot copies it)",
                t.pg_name
            )));
        }
        t.toast.clear();
        let (db, name) = (ch_ident(&self.ch.database), ch_ident(&t.ch_name));
        // The whole row: a tombstone lands in the row's partition whatever the partition
        // key reads.
        let keys: Vec<String> = t.cols.iter().map(|c| ch_ident(&c.name)).collect();
        let keys = keys.join(", ");
        let (ver, del) = (ch_ident(VERSION_COL), ch_ident(DELETED_COL));
        // Each row's latest version: FINAL, or for an append table (whose versions FINAL
        // keeps) the highest of each sort key; older versions are not rows to delete.
        let live = if t.append {
            let sort: Vec<String> = t
                .cols
                .iter()
                .filter(|c| c.is_key)
                .map(|c| ch_ident(&c.name))
                .collect();
            format!(
                "(SELECT * FROM {db}.{name} FINAL ORDER BY {ver} DESC LIMIT 1 BY {})",
                sort.join(", ")
            )
        } else {
            format!("{db}.{name} FINAL")
        };
        let mut stale = format!("FROM {live} WHERE {ver} < {below} AND {del} = 0");
        if let Some(only) = only {
            let key_cols: Vec<&ChColumn> = t.cols.iter().filter(|c| c.is_key).collect();
            if only.is_empty() || key_cols.is_empty() {
                return Ok(0);
            }
            let texts: Vec<String> = only.iter().map(|k| ch_literal(k)).collect();
            stale.push_str(&format!(
                " AND {} IN ({})",
                crate::protocol::verify::ch_key_text(&key_cols),
                texts.join(", ")
            ));
        }
        let n: u64 = self
            .ch
            .query_text(&format!("SELECT count() {stale}"))
            .await?
            .trim()
            .parse()
            .unwrap_or(0);
        if n > 0 {
            self.ch
                .execute(&format!(
                    "INSERT INTO {db}.{name} ({keys}, {ver}, {del}) SELECT {keys}, {below}, 1 {stale}"
                ))
                .await?;
        }
        if only.is_none() {
            tracing::info!(pipeline = %self.pipeline, table = %t.ch_name, rows = n, "resync: rows Postgres no longer has deleted");
        }
        Ok(n)
    }

    /// The state table's key of `table`'s TRUNCATE fence.
    fn fence_key(table: &str) -> String {
        format!("truncate:{table}")
    }

    /// The recorded TRUNCATE fence of `table` (0: none).
    async fn fence_of(&mut self, table: &str) -> Result<u64, SinkError> {
        if let Some(&f) = self.fences.get(table) {
            return Ok(f);
        }
        let f = match self
            .ch
            .read_state(&self.pipeline, &Self::fence_key(table))
            .await?
        {
            None => 0,
            Some(v) => v.trim().parse().map_err(|_| {
                SinkError::Protocol(format!(
                    "unreadable TRUNCATE fence {v:?} of `{table}` in the state table"
                ))
            })?,
        };
        self.fences.insert(table.to_string(), f);
        Ok(f)
    }

    /// The TRUNCATE fence of `table` as the state table holds it now (0: none).
    async fn recorded_fence(&mut self, table: &str) -> Result<u64, SinkError> {
        self.fences.remove(table);
        self.fence_of(table).await
    }

    async fn record_fence(&mut self, table: &str, lsn: u64) -> Result<(), SinkError> {
        self.ch
            .write_state(&self.pipeline, &[(Self::fence_key(table), lsn.to_string())])
            .await?;
        self.fences.insert(table.to_string(), lsn);
        Ok(())
    }

    fn ignore_truncate(&self, rels: &[u32]) {
        for t in rels.iter().filter_map(|r| self.tables.get(r)) {
            tracing::info!(table = %t.ch_name, "TRUNCATE in Postgres ignored (clickhouse.on_truncate = \"ignore\")");
        }
    }

    /// Empties the tables: a TRUNCATE at `lsn` (skipped where one at or after it was applied
    /// already: this is a replay), or with `None` the start of a snapshot (which clears the
    /// fence: the snapshot's rows have no version, and a new slot may restart the LSNs).
    async fn truncate(&mut self, rels: &[u32], lsn: Option<u64>) -> Result<(), SinkError> {
        if let Some(lsn) = lsn {
            // The fence as recorded now, not as read at start: when another sink of this
            // pipeline applied this TRUNCATE since (a standby took over while this process was
            // cut off, and may have written after it), this process is no longer the active:
            // what it holds is stale, and it stops without writing it.
            for rel in rels {
                let Some(t) = self.tables.get(rel) else {
                    continue;
                };
                let (name, known) = (t.ch_name.clone(), t.fence);
                let recorded = self.recorded_fence(&name).await?;
                if recorded >= lsn && recorded > known {
                    self.superseded = true;
                    return Err(SinkError::Superseded(format!(
                        "the TRUNCATE of `{name}` at {} was applied by another process of this pipeline since this one started (a standby took over): stopping without writing what this one holds",
                        crate::protocol::pgoutput::fmt_lsn(lsn)
                    )));
                }
            }
        }
        self.flush().await?;
        for rel in rels {
            let Some(t) = self.tables.get_mut(rel) else {
                continue;
            };
            if let Some(lsn) = lsn {
                if lsn <= t.fence {
                    tracing::info!(table = %t.ch_name, lsn = %crate::protocol::pgoutput::fmt_lsn(lsn), "replayed TRUNCATE applied before: skipped");
                    continue;
                }
            }
            t.toast.clear();
            let name = t.ch_name.clone();
            self.ch
                .execute(&format!(
                    "TRUNCATE TABLE {}.{}",
                    ch_ident(&self.ch.database),
                    ch_ident(&name)
                ))
                .await?;
            // Recorded after the TRUNCATE and before any later row is written: a crash in
            // between replays the TRUNCATE, which is then still harmless.
            let fence = lsn.unwrap_or(0);
            if fence != self.fence_of(&name).await? {
                self.record_fence(&name, fence).await?;
            }
            // Every relation written to this ClickHouse table (a table template may map
            // several to one) is behind the fence.
            for t in self.tables.values_mut().filter(|t| t.ch_name == name) {
                t.fence = fence;
                t.toast.clear();
                t.snapshot_seq = 0;
            }
            tracing::info!(table = %name, "truncated");
        }
        Ok(())
    }

    /// Sends each table's rows taken in so far on to an insert under way (opened with the
    /// first piece), once they make a piece: ClickHouse parses them while more are encoded,
    /// and the flush has only the last piece to send (the insert stays one part; nothing of
    /// it is committed before the flush ends it).
    async fn send_pieces(&mut self) {
        let db = &self.ch.database;
        for (rel, t) in self.tables.iter_mut() {
            for form in [RowForm::RowBinary, RowForm::TabSeparated] {
                let buf = match form {
                    RowForm::TabSeparated => &mut t.rows,
                    RowForm::RowBinary => &mut t.binary,
                };
                if buf.len() < PIECE_BYTES {
                    continue;
                }
                // The next piece's room taken at once: no copy as the buffer grows to it.
                let next = Vec::with_capacity(PIECE_BYTES + PIECE_BYTES / 4);
                let piece = Bytes::from(std::mem::replace(buf, next));
                let rows = match form {
                    RowForm::TabSeparated => bytecount_newlines(&piece),
                    RowForm::RowBinary => std::mem::take(&mut t.binary_rows),
                };
                t.created_empty = false;
                let open = self.open.entry((*rel, form)).or_insert_with(|| {
                    let names = t.cols.iter().map(|c| c.name.as_str());
                    let sql = insert_sql_as(db, &t.ch_name, names, t.keyless, form);
                    Streamed {
                        insert: self.ch.open_insert(&sql),
                        rows: 0,
                        sql,
                    }
                });
                open.rows += rows;
                open.insert.send(piece).await;
            }
        }
    }

    /// Inserts everything buffered, then acknowledges the last commit taken in.
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_as(true).await?;
        self.settle().await
    }

    /// Inserts everything buffered. With `wait`, acknowledges the last commit taken in (and
    /// records the state entries taken in) once every insert is in; without (the flush by
    /// size or age), the inserts sent in pieces end in the background while more rows are
    /// taken in, and all that lands with them when they are settled: at the next flush, at
    /// anything else that reaches ClickHouse, or at a tick once they have ended. A table with
    /// tombstones has its rows in before them (see `resolve_last_deleted`).
    async fn flush_as(&mut self, wait: bool) -> Result<(), SinkError> {
        self.settle().await?;
        let started = Instant::now();
        let db = self.ch.database.clone();
        let insert_spans: Vec<Span> = self
            .traces
            .iter()
            .map(|root| tracing::info_span!(parent: root, "clickhouse.insert", db.system = "clickhouse", rows = self.buffered_rows))
            .collect();
        let mut bytes_total = 0u64;
        let mut rows_total = 0u64;
        let mut ending = Vec::new();
        let rels: Vec<u32> = self.tables.keys().copied().collect();
        for rel in rels {
            for lane in [Lane::Binary, Lane::Rows, Lane::Tombstones] {
                let tomb = lane == Lane::Tombstones;
                if tomb {
                    self.resolve_last_deleted(rel).await?;
                }
                let form = lane.form();
                let t = self.tables.get_mut(&rel).expect("key from map");
                let (buf, counted) = match lane {
                    Lane::Binary => (&mut t.binary, Some(std::mem::take(&mut t.binary_rows))),
                    Lane::Rows => (&mut t.rows, None),
                    Lane::Tombstones => (&mut t.tombstones, None),
                };
                let open = if tomb {
                    None
                } else {
                    self.open.remove(&(rel, form))
                };
                if buf.is_empty() && open.is_none() {
                    continue;
                }
                let mut body = Bytes::from(std::mem::take(buf));
                let mut n = counted.unwrap_or_else(|| bytecount_newlines(&body));
                t.created_empty = false;
                if let Some(open) = open {
                    let rows = n + open.rows;
                    let bytes = (open.insert.len() + body.len()) as u64;
                    if !wait && t.tombstones.is_empty() {
                        // Says when it has its answer: the sink then settles it at once.
                        let done = Arc::new(AtomicBool::new(false));
                        let (flag, wake) = (done.clone(), self.wake.clone());
                        let end = open.insert.end(body);
                        ending.push(Ending {
                            table: t.ch_name.clone(),
                            sql: open.sql,
                            rows,
                            bytes,
                            counters: t.counters.clone(),
                            started: Instant::now(),
                            done,
                            handle: tokio::spawn(async move {
                                let r = end.await;
                                flag.store(true, Ordering::Release);
                                let _ = wake.cast(SinkMsg::Tick);
                                r
                            }),
                        });
                        continue;
                    }
                    let started = Instant::now();
                    match open.insert.end(body.clone()).await {
                        Ok(()) => {
                            self.counters.insert_duration.record(started.elapsed());
                            PipelineCounters::add(&t.counters.rows_written, rows);
                            PipelineCounters::add(&t.counters.bytes_written, bytes);
                            bytes_total += bytes;
                            rows_total += rows;
                            continue;
                        }
                        // Inserted again below, whole, with the retries and outage waits.
                        Err(whole) => {
                            PipelineCounters::add(&self.counters.insert_retries, 1);
                            tracing::warn!(table = %t.ch_name, "an insert sent in pieces failed; inserting its rows again");
                            body = whole;
                            n = rows;
                        }
                    }
                }
                if body.is_empty() {
                    continue;
                }
                let names = t
                    .cols
                    .iter()
                    .filter(|c| !tomb || c.is_key)
                    .map(|c| c.name.as_str());
                let sql = insert_sql_as(&db, &t.ch_name, names, t.keyless, form);
                let name = t.ch_name.clone();
                // Inside the first chunk's insert span: its logs carry that trace id.
                let insert = self.insert_with_retry(&name, &sql, body.clone(), n);
                let insert = match insert_spans.first() {
                    Some(span) => tracing::Instrument::instrument(insert, span.clone()).await,
                    None => insert.await,
                };
                if let Err(e) = insert {
                    // Keep the rows: a later flush (or the restart's replay) retries them.
                    let t = self.tables.get_mut(&rel).expect("key from map");
                    let buf = match lane {
                        Lane::Binary => {
                            t.binary_rows += n;
                            &mut t.binary
                        }
                        Lane::Rows => &mut t.rows,
                        Lane::Tombstones => &mut t.tombstones,
                    };
                    let mut restored = body.to_vec();
                    restored.extend_from_slice(buf);
                    *buf = restored;
                    return Err(e);
                }
                let t = &self.tables[&rel];
                PipelineCounters::add(&t.counters.rows_written, n);
                PipelineCounters::add(&t.counters.bytes_written, body.len() as u64);
                bytes_total += body.len() as u64;
                rows_total += n;
            }
        }
        drop(insert_spans);
        // An insert of a table no longer taken in (tables leave only after a flush, so none
        // normally): ended too, or the sink restarts and the stream is replayed.
        for (_, s) in self.open.drain() {
            if s.insert.end(Bytes::new()).await.is_err() {
                return Err(SinkError::Protocol(
                    "an insert of a table that left the sink failed".into(),
                ));
            }
        }
        let c = &self.counters;
        PipelineCounters::add(&c.values_clamped, std::mem::take(&mut self.stats.clamped));
        PipelineCounters::add(
            &c.values_unrepresentable,
            std::mem::take(&mut self.stats.unrepresentable),
        );
        let landed = Landed {
            rows: rows_total,
            bytes: bytes_total,
            commit: self.pending_commit.take(),
            commit_times: std::mem::take(&mut self.pending_commit_times),
            state: std::mem::take(&mut self.pending_state),
            state_waiters: std::mem::take(&mut self.state_waiters),
        };
        self.traces.clear();
        self.buffered_rows = 0;
        self.oldest = None;
        if rows_total > 0 || !ending.is_empty() {
            tracing::debug!(pipeline = %self.pipeline, rows = rows_total, bytes = bytes_total, ending = ending.len(), ms = started.elapsed().as_millis() as u64, "flushed");
        }
        if ending.is_empty() {
            return self.land(landed).await;
        }
        self.sealed = Some(Sealed { ending, landed });
        Ok(())
    }

    /// Waits for the inserts the last flush left ending (one that failed is inserted again,
    /// whole, with the retries and outage waits), then lands what came with them.
    async fn settle(&mut self) -> Result<(), SinkError> {
        let Some(sealed) = self.sealed.take() else {
            return Ok(());
        };
        let mut landed = sealed.landed;
        for mut e in sealed.ending {
            let ended = (&mut e.handle).await.map_err(|err| {
                SinkError::Protocol(format!("an insert into `{}` was lost: {err}", e.table))
            })?;
            if let Err(whole) = ended {
                PipelineCounters::add(&self.counters.insert_retries, 1);
                tracing::warn!(table = %e.table, "an insert sent in pieces failed; inserting its rows again");
                self.insert_with_retry(&e.table, &e.sql, whole, e.rows)
                    .await?;
            } else {
                self.counters.insert_duration.record(e.started.elapsed());
            }
            PipelineCounters::add(&e.counters.rows_written, e.rows);
            PipelineCounters::add(&e.counters.bytes_written, e.bytes);
            landed.rows += e.rows;
            landed.bytes += e.bytes;
        }
        self.land(landed).await
    }

    /// What a flush makes true once its inserts are in: the state entries taken in are
    /// recorded, the counts added, the last commit acknowledged.
    async fn land(&mut self, landed: Landed) -> Result<(), SinkError> {
        if !landed.state.is_empty() {
            self.ch.write_state(&self.pipeline, &landed.state).await?;
        }
        for w in landed.state_waiters {
            let _ = w.send(());
        }
        let c = &self.counters;
        PipelineCounters::add(&c.rows_written, landed.rows);
        PipelineCounters::add(&c.bytes_written, landed.bytes);
        if landed.rows > 0 {
            PipelineCounters::add(&c.batches_written, 1);
        }
        if let Some(lsn) = landed.commit {
            self.acks.send_if_modified(|cur| {
                let moved = lsn > *cur;
                if moved {
                    *cur = lsn;
                }
                moved
            });
        }
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        for t in landed.commit_times {
            self.counters
                .commit_lag
                .record_micros(now_us.saturating_sub(t).max(0) as u64);
        }
        Ok(())
    }

    /// The last delete of a table with TOAST columns may be the first half of a key change,
    /// whose row under the new key (in a later chunk, through Kafka) takes the unchanged TOAST
    /// values of the old one. When they are not remembered, read them now, with the table's
    /// rows written and its tombstones not yet: once the tombstone is in, a merge may drop
    /// the old row, and the new one would get NULL.
    async fn resolve_last_deleted(&mut self, rel: u32) -> Result<(), SinkError> {
        let t = &self.tables[&rel];
        let key = match &t.toast.last_deleted {
            Some((key, None)) if !t.toast.cols.is_empty() && !t.tombstones.is_empty() => {
                key.clone()
            }
            _ => return Ok(()),
        };
        let cols = t.toast.cols.clone();
        let found = self.query_stored(rel, &key, &cols).await?;
        let fields: Fields = cols
            .iter()
            .filter_map(|i| found.get(i).map(|v| (*i, v.clone())))
            .collect();
        let t = self.tables.get_mut(&rel).expect("key from map");
        t.toast.last_deleted = Some((key, Some(fields)));
        Ok(())
    }

    async fn insert_with_retry(
        &self,
        table: &str,
        sql: &str,
        body: Bytes,
        rows: u64,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let r = self.insert_attempts(table, sql, body).await;
        self.counters.insert_duration.record(started.elapsed());
        if r.is_ok() {
            tracing::debug!(
                table,
                rows,
                ms = started.elapsed().as_millis() as u64,
                "inserted"
            );
        }
        r
    }

    async fn insert_attempts(&self, table: &str, sql: &str, body: Bytes) -> Result<(), SinkError> {
        let attempts = self.cfg.insert_attempts;
        self.ch
            .insert_tsv_retrying(sql, body, attempts, &self.counters, table)
            .await
            .map_err(|source| SinkError::Insert {
                table: table.to_string(),
                attempts,
                source,
            })
    }
}

/// Rows taken in for a table are sent on to an insert under way once they make this many
/// bytes.
const PIECE_BYTES: usize = 1 << 20;

/// A table's rows at a flush, in the order they are inserted: a binary copy's, the rest,
/// then the tombstones (see `resolve_last_deleted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Binary,
    Rows,
    Tombstones,
}

impl Lane {
    fn form(self) -> RowForm {
        match self {
            Lane::Binary => RowForm::RowBinary,
            Lane::Rows | Lane::Tombstones => RowForm::TabSeparated,
        }
    }
}

/// A table's insert under way, and how many rows it has been sent.
struct Streamed {
    insert: OpenInsert,
    rows: u64,
    sql: String,
}

/// A flush whose inserts sent in pieces end in the background (see [`SinkState::flush_as`]).
struct Sealed {
    ending: Vec<Ending>,
    landed: Landed,
}

impl Sealed {
    /// Every insert has its answer (set before its `Tick` is sent, so that `Tick` finds it;
    /// the task itself may still be returning).
    fn ended(&self) -> bool {
        self.ending.iter().all(|e| e.done.load(Ordering::Acquire))
    }
}

/// One insert ending in the background.
struct Ending {
    table: String,
    sql: String,
    rows: u64,
    bytes: u64,
    counters: Arc<crate::runtime::registry::TableCounters>,
    started: Instant,
    /// Set once the insert has its answer.
    done: Arc<AtomicBool>,
    /// The whole body back when it failed.
    handle: tokio::task::JoinHandle<Result<(), Bytes>>,
}

/// A sink that stops (killed, failed) takes its unsettled inserts with it, as it would an
/// insert it was waiting for: none lands after a restart has replayed past it.
impl Drop for Ending {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What a flush makes true once its inserts are in: rows and bytes written (besides the
/// ending inserts'), the commit to acknowledge, the commits' times, the state to record.
struct Landed {
    rows: u64,
    bytes: u64,
    commit: Option<Lsn>,
    commit_times: Vec<i64>,
    state: Vec<(String, String)>,
    state_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// The ClickHouse table of `s`: its mapping's target, else the table template's name.
/// The values of unchanged TOAST columns of a row ClickHouse does not have: none (NULL),
/// said once per row.
fn absent_row(table: &str) -> HashMap<usize, Vec<u8>> {
    tracing::warn!(table = %table, "unchanged TOAST value of a row ClickHouse does not have: stored as NULL");
    HashMap::new()
}

pub fn target_table(mapping: Option<&TableMapping>, template: &str, s: &TableSchema) -> String {
    match mapping.and_then(|m| m.target.clone()) {
        Some(target) => target,
        None => table_name(template, s),
    }
}

/// The ClickHouse layout of `s`: its mapping's partitions and engine, its sort key.
pub fn layout_of(mapping: Option<&TableMapping>, s: &TableSchema) -> TableLayout {
    TableLayout {
        order_by: s.order_by.clone(),
        keyless: s.keyless(),
        ..mapping.map(|m| m.layout()).unwrap_or_default()
    }
}

fn bytecount_newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    ClickHouse(#[from] ChError),
    #[error("insert into `{table}` failed after {attempts} attempts: {source}")]
    Insert {
        table: String,
        attempts: u32,
        source: ChError,
    },
    #[error("sink protocol: {0}")]
    Protocol(String),
    /// A table that cannot be replicated as it is (a name clash, a reserved column, a
    /// ClickHouse object we did not create in the way): the same would be found again.
    #[error("{0}")]
    Schema(String),
    /// Another process of the pipeline took over (see [`ClickHouseSink`]'s TRUNCATE fence):
    /// the restart finds it active and waits as the standby.
    #[error("{0}")]
    Superseded(String),
}

impl SinkError {
    /// ClickHouse's errors by their own class (see [`ChError::class`]); a protocol error
    /// between source and sink is transient (the restart replays the stream).
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::ClickHouse(e) | SinkError::Insert { source: e, .. } => e.class(),
            SinkError::Protocol(_) | SinkError::Superseded(_) => ErrorClass::Transient,
            SinkError::Schema(_) => ErrorClass::Permanent,
        }
    }
}

/// The class of the sink's errors: [`SinkError::class`], a bare [`ChError`] by its own, and
/// anything else by [`crate::runtime::fault::classify`].
pub fn classify(err: &(dyn std::error::Error + 'static)) -> ErrorClass {
    match err.downcast_ref::<SinkError>() {
        Some(e) => e.class(),
        None => crate::clients::clickhouse::classify(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_classify_by_their_clickhouse_cause() {
        let addr = || "127.0.0.1:1".to_string();
        let boxed = |e: SinkError| -> Box<dyn std::error::Error> { Box::new(e) };
        let away = ChError::Unreachable {
            addr: addr(),
            message: "refused".into(),
        };
        let answered = ChError::Server {
            addr: addr(),
            code: Some(241),
            message: "memory".into(),
        };
        assert_eq!(
            classify(boxed(SinkError::ClickHouse(away)).as_ref()),
            ErrorClass::Outage
        );
        let insert = SinkError::Insert {
            table: "t".into(),
            attempts: 3,
            source: answered,
        };
        assert_eq!(classify(boxed(insert).as_ref()), ErrorClass::Transient);
        let protocol = SinkError::Protocol("x".into());
        assert_eq!(classify(boxed(protocol).as_ref()), ErrorClass::Transient);
        let timeout: Box<dyn std::error::Error> = Box::new(ChError::Timeout {
            addr: addr(),
            after: Duration::from_secs(1),
        });
        assert_eq!(classify(timeout.as_ref()), ErrorClass::Outage);
    }
}
