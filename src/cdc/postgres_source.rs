//! The PostgreSQL source of a CDC pipeline: sets up the publication and slot, takes the
//! initial snapshot inside the slot's exported snapshot, then streams pgoutput and sends
//! ordered change chunks to the sink over a bounded edge. A status task reports to Postgres
//! only what the sink acknowledged, every `status_interval` even while the edge is full, so
//! `wal_sender_timeout` never drops a pipeline held back by backpressure.
//!
//! The actor is a thin shell: the stream runs in a task it owns, whose failure fails the
//! actor (and so reaches the supervisor). A restart resumes from the slot's confirmed LSN.
//!
//! Must never: confirm an LSN the sink did not acknowledge (except a keepalive position
//! while nothing is in flight), or buffer without bound.

use crate::cdc::backfill::{self, BackfillError, CopyShared, Job, Partition};
use crate::cdc::change::{ChangeChunk, ChangeItem, RowOp, SinkMsg};
use crate::cdc::partitions;
use crate::cdc::pg_changes::{unix_micros_from_pg, PgChanges, Step};
use crate::cdc::pg_tables;
use crate::cdc::standby;
use crate::cdc::table_state::{parse_tables, state_key, tables_entry, TableCopy};
use crate::clients::postgres::catalog::{self, TypeResolver};
use crate::clients::postgres::publication;
use crate::clients::postgres::replication::{ReplicationConn, ReplicationWriter};
use crate::clients::postgres::{PgError, PgParams};
use crate::config::{mapping_for, PostgresConfig, TableMapping};
use crate::flow::edge::{Edge, EdgeError};
use crate::protocol::pgoutput::{
    self, fmt_lsn, parse_lsn, Cell, DecodeError, Lsn, ReplicationMessage,
};
use crate::protocol::schema::{pg_ident, pg_literal, Column, SharedSchema, TableSchema};
use crate::runtime::fault::{classified, ErrorClass};
use crate::runtime::registry::PipelineCounters;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tracing::Span;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("pgoutput at {lsn}: {source}")]
    Decode { lsn: String, source: DecodeError },
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("sink: {0}")]
    Sink(String),
    #[error("replication slot `{slot}`: {message}")]
    Slot { slot: String, message: String },
    /// A slot that can never be used as it is (another plugin, invalidated): permanent.
    #[error("replication slot `{slot}`: {message}")]
    SlotUnusable { slot: String, message: String },
    #[error("the server ended the replication stream")]
    StreamEnded,
    #[error("copying a table: {0}")]
    Backfill(#[from] BackfillError),
}

impl SourceError {
    /// An outage when Postgres is away or ended the stream (shutting down); a Postgres
    /// error by its own class (see [`PgError::class`]); transient otherwise.
    pub fn class(&self) -> ErrorClass {
        match self {
            SourceError::Pg(e) => e.class(),
            SourceError::StreamEnded => ErrorClass::Outage,
            SourceError::SlotUnusable { .. } => ErrorClass::Permanent,
            SourceError::Backfill(BackfillError::Pg(e)) => e.class(),
            SourceError::Backfill(BackfillError::Unsupported(_)) => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

pub struct SourceArgs {
    pub pipeline: String,
    pub postgres: PostgresConfig,
    /// `[[pipeline.table]]`: column lists, row filters and sort keys.
    pub tables: Vec<TableMapping>,
    pub edge: Edge<SinkMsg>,
    pub acks: watch::Receiver<Lsn>,
    pub counters: Arc<PipelineCounters>,
    /// How long a graceful stop may wait for the sink to drain.
    pub drain_timeout: Duration,
    /// Where resync requests come in.
    pub resync: backfill::ResyncPort,
}

pub enum SourceMsg {
    /// The stream task ended with this error, of this class.
    Failed(String, ErrorClass),
}

pub struct SourceState {
    task: crate::runtime::task::TaskGuard,
    writer: Arc<Mutex<Option<ReplicationWriter>>>,
    edge: Edge<SinkMsg>,
    acks: watch::Receiver<Lsn>,
    drain_timeout: Duration,
    pipeline: String,
}

pub struct PostgresSource;

/// How often the catalog is asked for partitions attached to replicated partitioned tables.
const PARTITION_POLL: Duration = Duration::from_secs(1);

/// How long a chunk not yet full waits for more of the stream before it is sent: the most
/// it adds to commit → visible (the sink's `max_age` is 200 ms by default).
const LINGER: Duration = Duration::from_millis(5);

/// What a lingering chunk's read waits for in the socket before it wakes (see `wake_at`):
/// a few hundred rows of a typical table, a fraction of the smallest receive buffer.
const LINGER_BYTES: usize = 64 * 1024;

/// A commit sent by the server this long after it committed (both in the server's clock) means
/// the stream is working through a backlog (a restart, an outage, a burst).
const BACKLOG_LAG: Duration = Duration::from_secs(1);

/// Knows when the stream, having been behind, may have caught up: the walsender sends a
/// keepalive when it waits for WAL with changes sent that the client has not confirmed (at the
/// end of a backlog; Postgres 15 also when it waits for more WAL in the middle of one that is
/// still being written, older servers only when no earlier keepalive is unanswered). The chunk
/// then ends and the sink flushes it without waiting out its batch's age: the last rows of a
/// backlog land up to a batch age sooner; a keepalive in the middle costs one early flush. A
/// stream that keeps up never counts as behind, so its batches (and ClickHouse's inserts) stay
/// as they are. Only the server's lag is seen: a backlog that waits in tributary (the socket,
/// the edge) is not.
#[derive(Debug, Default)]
struct CatchUp {
    behind: bool,
}

impl CatchUp {
    /// A commit, sent at `send_us` by the server, committed at `commit_us` (µs, same clock).
    fn on_commit(&mut self, send_us: i64, commit_us: i64) {
        self.behind = send_us.saturating_sub(commit_us) > BACKLOG_LAG.as_micros() as i64;
    }

    /// A keepalive; true when it ends a backlog (outside a transaction).
    fn on_keepalive(&mut self, in_txn: bool) -> bool {
        if self.behind && !in_txn {
            self.behind = false;
            return true;
        }
        false
    }
}

impl Actor for PostgresSource {
    type Msg = SourceMsg;
    type State = SourceState;
    type Arguments = SourceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SourceMsg>,
        args: SourceArgs,
    ) -> Result<SourceState, ActorProcessingErr> {
        let writer = Arc::new(Mutex::new(None));
        // Bound to the sink running now: if it restarts, this source's sends fail (it is
        // restarted too, and the stream is replayed from the last acknowledged position).
        let edge = args.edge.for_sender();
        let stream = Stream {
            pipeline: args.pipeline.clone(),
            cfg: args.postgres,
            mappings: args.tables,
            edge: edge.clone(),
            acks: args.acks.clone(),
            counters: args.counters,
            writer: writer.clone(),
            idle_lsn: Arc::new(AtomicU64::new(0)),
            copy: CopyShared::default(),
            resync: args.resync,
        };
        let me = myself.clone();
        let me2 = myself.clone();
        let task = crate::runtime::task::TaskGuard::spawn_watched(
            async move {
                let r = stream.run().await;
                let (msg, class) = match r {
                    Ok(()) => ("stream ended".to_string(), ErrorClass::Transient),
                    Err(e) => (e.to_string(), e.class()),
                };
                let _ = me.cast(SourceMsg::Failed(msg, class));
            },
            move |why| {
                let _ = me2.cast(SourceMsg::Failed(why, ErrorClass::Transient));
            },
        );
        Ok(SourceState {
            task,
            writer,
            edge,
            acks: args.acks,
            drain_timeout: args.drain_timeout,
            pipeline: args.pipeline,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SourceMsg>,
        msg: SourceMsg,
        _st: &mut SourceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SourceMsg::Failed(e, class) => Err(classified(e, class)),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SourceMsg>,
        st: &mut SourceState,
    ) -> Result<(), ActorProcessingErr> {
        // Stop reading first; then let the sink insert what it holds and confirm that.
        st.task.0.abort();
        let writer = st.writer.lock().await.take();
        if let Some(w) = writer {
            let acked = match st.edge.call(SinkMsg::Drain, st.drain_timeout).await {
                Ok(lsn) => lsn,
                Err(e) => {
                    tracing::debug!(pipeline = %st.pipeline, error = %e, "no drain on stop");
                    *st.acks.borrow()
                }
            };
            if acked > 0 {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), w.send_status(acked, false)).await;
                tracing::info!(pipeline = %st.pipeline, lsn = %fmt_lsn(acked), "confirmed on stop");
            }
            w.close().await;
        }
        Ok(())
    }
}

struct Stream {
    pipeline: String,
    cfg: PostgresConfig,
    mappings: Vec<TableMapping>,
    edge: Edge<SinkMsg>,
    acks: watch::Receiver<Lsn>,
    counters: Arc<PipelineCounters>,
    writer: Arc<Mutex<Option<ReplicationWriter>>>,
    /// A keepalive position that may be confirmed because nothing was in flight then.
    idle_lsn: Arc<AtomicU64>,
    /// Shared with the copies of tables added while running.
    copy: CopyShared,
    resync: backfill::ResyncPort,
}

/// Builds the next chunk for the sink.
struct ChunkBuilder {
    items: Vec<ChangeItem>,
    rows: usize,
    /// Bytes of the rows' values.
    bytes: usize,
    /// Tables of the rows (few per chunk), for the trace.
    tables: Vec<u32>,
    /// WAL position of the last change taken in.
    last_lsn: Lsn,
    commit: Option<Lsn>,
    commit_times: Vec<i64>,
    caught_up: bool,
    trace: Option<(Span, Span)>,
    /// Schemas among the items (rare): the copies read with the one sent last.
    schemas: Vec<SharedSchema>,
}

impl ChunkBuilder {
    fn new() -> Self {
        ChunkBuilder {
            items: Vec::new(),
            rows: 0,
            bytes: 0,
            tables: Vec::new(),
            last_lsn: 0,
            commit: None,
            commit_times: Vec::new(),
            caught_up: false,
            trace: None,
            schemas: Vec::new(),
        }
    }
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.commit.is_none()
    }
    /// Full: `chunk_rows` rows or `chunk_bytes` of values.
    fn is_full(&self, cfg: &PostgresConfig) -> bool {
        self.rows >= cfg.chunk_rows || self.bytes >= cfg.chunk_bytes
    }
    fn push(&mut self, pipeline: &str, item: ChangeItem) {
        if self.trace.is_none() {
            let root = tracing::info_span!(parent: None, "cdc.chunk", pipeline = %pipeline, rows = tracing::field::Empty, lsn = tracing::field::Empty, tables = tracing::field::Empty);
            let decode = tracing::info_span!(parent: &root, "source.decode");
            self.trace = Some((root, decode));
        }
        if let ChangeItem::Row { rel_id, change } = &item {
            self.rows += 1;
            let cells = change
                .cells
                .iter()
                .chain(change.moved_from.iter().flatten());
            self.bytes += cells
                .map(|c| match c {
                    Cell::Text(b) => b.len(),
                    Cell::Null | Cell::UnchangedToast => 0,
                })
                .sum::<usize>();
            self.last_lsn = self.last_lsn.max(change.version);
            if !self.tables.contains(rel_id) {
                self.tables.push(*rel_id);
            }
        }
        if let ChangeItem::Schema(s) = &item {
            self.schemas.push(s.clone());
        }
        self.items.push(item);
    }
}

impl Stream {
    async fn run(self) -> Result<(), SourceError> {
        let params = PgParams::from_config(&self.cfg);
        let client = Arc::new(catalog::connect(&params).await?);
        // Another process with this config may be the active: this one waits as its standby
        // (and holds the slot's lock from here on: its session ends with this run).
        standby::acquire(
            &client,
            &params.addr(),
            &self.cfg.slot,
            self.cfg.takeover_after.0,
            &self.counters,
            &self.pipeline,
        )
        .await?;
        let wanted = pg_tables::wanted(&self.cfg, &self.mappings);
        let mut types = TypeResolver::default();
        let specs = pg_tables::specs(&client, &params, &mut types, &wanted, &self.mappings).await?;
        let published = publication::ensure_publication(
            &client,
            &params,
            &self.cfg.publication,
            &specs,
            publication::Apply::Commit,
        )
        .await?;
        if published.is_empty() {
            return Err(PgError::Setup(format!(
                "publication `{}` publishes no table",
                self.cfg.publication
            ))
            .into());
        }
        let mut schemas: HashMap<u32, SharedSchema> = HashMap::new();
        let mut tables = Vec::new();
        // The snapshot copies what the stream sends: the published columns and rows.
        let mut filters: HashMap<u32, String> = HashMap::new();
        for t in &published {
            tables.push(
                pg_tables::replicated(&client, &params, &mut types, t, &specs, &self.mappings)
                    .await?,
            );
            if let Some(f) = &t.filter {
                filters.insert(t.oid, f.clone());
            }
        }
        catalog::check_keys(&tables)?;
        // Each replicated column's attribute number, to tell a rename from a drop and an add.
        let mut attnums: HashMap<u32, Vec<(i16, String)>> = HashMap::new();
        for t in &tables {
            let mut now = catalog::attnums(&client, &params, t.rel_id).await?;
            now.retain(|(_, n)| t.columns.iter().any(|c| &c.name == n));
            attnums.insert(t.rel_id, now);
        }
        let mut chunk = ChunkBuilder::new();
        for t in tables {
            let s = Arc::new(t);
            schemas.insert(s.rel_id, s.clone());
            chunk.push(&self.pipeline, ChangeItem::Schema(s));
        }
        self.send(&mut chunk, &schemas).await?;

        let slot = catalog::slot_state(&client, &params, &self.cfg.slot).await?;
        // The snapshot marker and each table's copy, in one read.
        let mut keys = vec![
            "snapshot".to_string(),
            "copies".to_string(),
            "tables".to_string(),
        ];
        let mut rels: Vec<u32> = schemas.keys().copied().collect();
        rels.sort_unstable();
        keys.extend(rels.iter().map(|r| state_key(&schemas[r].qualified())));
        keys.extend(
            rels.iter()
                .map(|r| backfill::resync_key(&schemas[r].qualified())),
        );
        let mut states = self
            .edge
            .call(|r| SinkMsg::ReadState(keys, r), Duration::from_secs(60))
            .await?
            .map_err(SourceError::Sink)?
            .into_iter();
        let marker = states.next().flatten();
        let copies = states.next().flatten();
        let listed = states.next().flatten();
        let mut table_states: Vec<Option<String>> = states.collect();
        let resyncs = table_states.split_off(rels.len());
        // The partitions of partitioned tables now: what a copy of them covers.
        let parents = partitions::partitioned(&client, &params, &rels).await?;
        let mut current: HashMap<u32, Vec<Partition>> = HashMap::new();
        for p in &parents {
            current.insert(*p, partitions::leaves(&client, &params, *p).await?);
        }
        let mut repl = ReplicationConn::connect(&params).await?;
        let mut start = 0;
        let mut initial: Vec<Job> = Vec::new();
        let snapshot_needed = match (&slot, &marker) {
            (Some(s), Some(m)) if m.starts_with(&format!("{}@", self.cfg.slot)) => {
                if s.plugin != "pgoutput" {
                    return Err(SourceError::SlotUnusable {
                        slot: self.cfg.slot.clone(),
                        message: format!("uses plugin `{}`, not pgoutput", s.plugin),
                    });
                }
                match s.wal_status.as_deref() {
                    Some("lost") => {
                        return Err(SourceError::SlotUnusable {
                            slot: self.cfg.slot.clone(),
                            message: format!(
                                "was invalidated by Postgres (wal_status = lost: it fell further behind than max_slot_wal_keep_size allows), so the changes since tributary last confirmed are gone. Drop it (SELECT pg_drop_replication_slot({})) and start again: a new slot and a new snapshot, which copies every table anew",
                                pg_literal(&self.cfg.slot)
                            ),
                        })
                    }
                    Some("unreserved") => {
                        tracing::warn!(pipeline = %self.pipeline, slot = %self.cfg.slot, "the slot is past max_slot_wal_keep_size (wal_status = unreserved): it is lost at the next checkpoint unless it catches up")
                    }
                    _ => {}
                }
                tracing::info!(pipeline = %self.pipeline, slot = %self.cfg.slot, confirmed = %s.confirmed_flush.map(fmt_lsn).unwrap_or_default(), "resuming");
                // The slot's position until the first acknowledgement moves it (metrics and
                // status show where the slot stands from the start, not 0).
                self.counters
                    .confirmed_lsn
                    .fetch_max(s.confirmed_flush.unwrap_or(0), Ordering::Relaxed);
                false
            }
            _ => true,
        };
        if snapshot_needed {
            // The marker of an earlier slot must not survive into this one: a snapshot cut
            // short below would otherwise read as complete at the next start (the new slot
            // has the same name) and its missing rows would never be copied.
            if marker.is_some() {
                let pending = vec![("snapshot".to_string(), format!("pending:{}", self.cfg.slot))];
                self.edge
                    .call(|r| SinkMsg::WriteState(pending, r), Duration::from_secs(60))
                    .await?
                    .map_err(SourceError::Sink)?;
            }
            if let Some(s) = &slot {
                if s.active {
                    return Err(SourceError::Slot {
                        slot: self.cfg.slot.clone(),
                        message: "is active on another connection".into(),
                    });
                }
                tracing::warn!(pipeline = %self.pipeline, slot = %self.cfg.slot, "slot exists but no completed snapshot is recorded: dropping it and snapshotting again");
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&self.cfg.slot])
                    .await
                    .map_err(|e| PgError::client(params.addr(), e))?;
            }
            // Postgres builds the slot's snapshot once every transaction with an id running now
            // has ended, in any database: a forgotten one holds this for ever.
            let rows = crate::runtime::task::say_while_waiting(
                repl.simple_query(&format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                    self.cfg.slot
                )),
                Duration::from_secs(10),
                Duration::from_secs(60),
                |waited| {
                    tracing::warn!(pipeline = %self.pipeline, slot = %self.cfg.slot, waited_s = waited.as_secs(),
                        "creating the replication slot waits for the transactions running when it began to end (in any database: see pg_stat_activity's xact_start and pg_prepared_xacts)");
                },
            )
            .await?;
            let row = rows.first().ok_or_else(|| SourceError::Slot {
                slot: self.cfg.slot.clone(),
                message: "CREATE_REPLICATION_SLOT returned nothing".into(),
            })?;
            let consistent = row
                .get(1)
                .cloned()
                .flatten()
                .and_then(|s| parse_lsn(&s))
                .unwrap_or(0);
            let snapshot = row
                .get(2)
                .cloned()
                .flatten()
                .ok_or_else(|| SourceError::Slot {
                    slot: self.cfg.slot.clone(),
                    message: "no exported snapshot".into(),
                })?;
            tracing::info!(pipeline = %self.pipeline, slot = %self.cfg.slot, consistent = %fmt_lsn(consistent), "created slot; snapshot starts");
            self.counters
                .confirmed_lsn
                .fetch_max(consistent, Ordering::Relaxed);
            // Keyless tables are counted by content: a copy taken while they stream would
            // count some rows twice, so they are read inside the slot's exported snapshot,
            // before anything streams. Every other table is copied in chunks while everything
            // streams, resumable (see backfill.rs).
            let keyless: HashMap<u32, SharedSchema> = schemas
                .iter()
                .filter(|(_, s)| s.keyless())
                .map(|(r, s)| (*r, s.clone()))
                .collect();
            if !keyless.is_empty() {
                self.snapshot(&client, &params, &snapshot, &keyless, &filters, consistent)
                    .await?;
            }
            // The marker, that tables' copies are recorded, and each table's copy: done for
            // the keyless ones, to take for the others.
            let incarnation = format!("{}@{}", self.cfg.slot, fmt_lsn(consistent));
            let mut done = vec![
                ("snapshot".to_string(), incarnation.clone()),
                ("copies".to_string(), incarnation.clone()),
                tables_entry(
                    &incarnation,
                    rels.iter()
                        .map(|r| schemas[r].qualified())
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str),
                ),
            ];
            for r in &rels {
                let copied = keyless.contains_key(r);
                done.push((
                    state_key(&schemas[r].qualified()),
                    if copied {
                        TableCopy::Done.format(&incarnation).unwrap_or_default()
                    } else {
                        String::new()
                    },
                ));
                if !copied {
                    initial.push(Job {
                        schema: schemas[r].clone(),
                        filter: filters.get(r).cloned(),
                        from: TableCopy::Pending,
                        partition: None,
                        detached: false,
                        purge_below: None,
                        repair: None,
                    });
                }
            }
            for (p, leaves) in &current {
                let oids: BTreeSet<u32> = leaves.iter().map(|l| l.oid).collect();
                done.push(backfill::partitions_entry(
                    &schemas[p].qualified(),
                    &incarnation,
                    &oids,
                ));
                self.copy
                    .partitions
                    .lock()
                    .expect("not poisoned")
                    .insert(*p, oids);
            }
            self.edge
                .call(|r| SinkMsg::WriteState(done, r), Duration::from_secs(600))
                .await?
                .map_err(SourceError::Sink)?;
            backfill::register(&client, &params, &self.copy, &self.counters, &initial).await?;
            tracing::info!(pipeline = %self.pipeline, tables = initial.len(), workers = self.cfg.snapshot_workers, "snapshot: the tables are copied while everything streams");
            start = consistent;
        }
        // Tables without a complete copy in this incarnation (added to the config since) are
        // copied while everything streams.
        let jobs = if snapshot_needed {
            std::mem::take(&mut initial)
        } else {
            let incarnation = marker.clone().unwrap_or_default();
            let mut jobs = self
                .copy_jobs(
                    &client,
                    &params,
                    &incarnation,
                    copies.as_deref() == Some(incarnation.as_str()),
                    parse_tables(listed.as_deref(), &incarnation),
                    &rels,
                    &table_states,
                    &resyncs,
                    &schemas,
                    &filters,
                )
                .await?;
            jobs.extend(
                self.partition_jobs(&client, &params, &incarnation, &current, &schemas, &filters)
                    .await?,
            );
            jobs
        };
        let watched: Vec<partitions::Watched> = current
            .iter()
            .map(|(p, leaves)| partitions::Watched {
                table: schemas[p].clone(),
                filter: filters.get(p).cloned(),
                seen: leaves.iter().map(|l| l.oid).collect(),
            })
            .collect();
        let start_rels = rels.clone();
        let (jobs_tx, jobs_rx) = tokio::sync::mpsc::unbounded_channel();
        let incarnation = match snapshot_needed {
            true => format!("{}@{}", self.cfg.slot, fmt_lsn(start)),
            false => marker.clone().unwrap_or_default(),
        };
        let (mut reader, writer) = repl
            .start_replication(&self.cfg.slot, start, &self.cfg.publication)
            .await?;
        *self.writer.lock().await = Some(writer.clone());
        let status = tokio::spawn(status_loop(
            writer.clone(),
            self.acks.clone(),
            self.idle_lsn.clone(),
            // Often enough for a standby to see that this process is alive.
            standby::reply_every(self.cfg.status_interval.0, self.cfg.takeover_after.0),
            self.counters.clone(),
        ));
        let _status_guard = crate::runtime::task::TaskGuard(status);
        let lag = tokio::spawn(slot_lag_loop(
            client.clone(),
            self.cfg.slot.clone(),
            self.cfg.status_interval.0,
            self.counters.clone(),
            self.pipeline.clone(),
        ));
        let _lag_guard = crate::runtime::task::TaskGuard(lag);

        // The translation from pgoutput to change items is pure (pg_changes.rs); this loop
        // does the I/O around it.
        let mut changes = PgChanges::new(wanted, schemas);
        let mut frames = Vec::new();
        let mut last_sent_commit: Lsn = 0;
        let mut new_jobs: Vec<Job> = Vec::new();
        // A chunk begun and not full yet: since when (see `LINGER`).
        let mut lingering: Option<tokio::time::Instant> = None;
        let mut catch_up = CatchUp::default();
        // Ends the chunk here: sends it, then starts its new tables' copies.
        macro_rules! send_chunk {
            () => {{
                lingering = None;
                let sent = (&mut chunk, &mut new_jobs, &mut last_sent_commit);
                self.send_then_copy(&client, &params, changes.schemas(), sent, &jobs_tx)
                    .await?;
            }};
        }
        let streaming = async {
            loop {
                frames.clear();
                let read = match lingering {
                    None => {
                        reader.wake_at(1)?;
                        reader.next_batch(&mut frames).await?
                    }
                    Some(since) => {
                        // Waiting anyway: woken once a good read's worth is there, not
                        // for every message. A read that times out has taken nothing
                        // from the socket; what it left is read right after the chunk
                        // is sent (the threshold goes back to 1, which wakes it).
                        reader.wake_at(LINGER_BYTES)?;
                        match tokio::time::timeout_at(
                            since + LINGER,
                            reader.next_batch(&mut frames),
                        )
                        .await
                        {
                            Ok(read) => read?,
                            Err(_) => {
                                send_chunk!();
                                continue;
                            }
                        }
                    }
                };
                if !read {
                    return Err::<(), _>(SourceError::StreamEnded);
                }
                for frame in frames.drain(..) {
                    let msg = pgoutput::decode_replication(frame).map_err(|source| {
                        SourceError::Decode {
                            lsn: "?".into(),
                            source,
                        }
                    })?;
                    let (wal_start, data, send_ts) = match msg {
                        ReplicationMessage::XLogData {
                            wal_start,
                            data,
                            send_ts,
                            ..
                        } => (wal_start, data, send_ts),
                        ReplicationMessage::Keepalive {
                            wal_end,
                            reply_requested,
                        } => {
                            let caught_up = catch_up.on_keepalive(changes.in_txn());
                            if !changes.in_txn()
                                && chunk.is_empty()
                                && *self.acks.borrow() >= last_sent_commit
                            {
                                self.idle_lsn.fetch_max(wal_end, Ordering::Relaxed);
                            }
                            if reply_requested {
                                let pos = self.confirmable();
                                writer.send_status(pos, false).await?;
                                self.counters
                                    .confirmed_lsn
                                    .fetch_max(pos, Ordering::Relaxed);
                            }
                            if caught_up {
                                // The chunk ends here (outside a transaction: at a commit),
                                // goes at once, and the sink flushes it at once.
                                chunk.caught_up = true;
                                send_chunk!();
                            }
                            continue;
                        }
                    };
                    let lm =
                        pgoutput::decode_logical(data).map_err(|source| SourceError::Decode {
                            lsn: fmt_lsn(wal_start),
                            source,
                        })?;
                    let mut load = None;
                    changes.on_message(wal_start, lm, &mut |step| match step {
                    Step::Item(item) => chunk.push(&self.pipeline, item),
                    Step::Commit { end_lsn, commit_us } => {
                        chunk.commit = Some(end_lsn);
                        chunk.commit_times.push(commit_us);
                        catch_up.on_commit(unix_micros_from_pg(send_ts), commit_us);
                    }
                    Step::LoadRelation {
                        rel_id,
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    } => load = Some((rel_id, namespace, name, replica_identity, columns)),
                    Step::Skipped { table } => {
                        tracing::info!(pipeline = %self.pipeline, table = %table, "published but not in postgres.tables: skipped");
                    }
                });
                    if let Some((rel_id, namespace, name, replica_identity, columns)) = load {
                        // A table the stream shows for the first time (a FOR ALL TABLES
                        // publication's new table, or one added to the publication while
                        // running) may hold rows that were never changes: it is copied.
                        let first_seen = changes.schemas().get(&rel_id).is_none()
                            && !start_rels.contains(&rel_id);
                        let s = self
                            .schema_from_relation(
                                &client,
                                &params,
                                &mut types,
                                changes.schemas().get(&rel_id),
                                &mut attnums,
                                rel_id,
                                namespace,
                                name,
                                &columns,
                            )
                            .await?;
                        let s = self.with_mapping(s, replica_identity)?;
                        if let Some(item) = changes.relation_loaded(rel_id, columns, s) {
                            if let (true, ChangeItem::Schema(schema)) = (first_seen, &item) {
                                let job =
                                    self.new_table_job(&client, &params, schema.clone()).await?;
                                backfill::register(
                                    &client,
                                    &params,
                                    &self.copy,
                                    &self.counters,
                                    std::slice::from_ref(&job),
                                )
                                .await?;
                                // To the copy once the chunk with its schema is sent: the
                                // sink must know the table before the copy's first message.
                                new_jobs.push(job);
                            }
                            chunk.push(&self.pipeline, item);
                        }
                    }
                    if chunk.is_full(&self.cfg) {
                        send_chunk!();
                    }
                }
                // A chunk not full yet waits for more of the stream, up to `LINGER` from its
                // first read: a read returns what the socket holds, a few dozen rows while the
                // walsender is the slower side, and each chunk costs a message, spans and
                // wake-ups.
                if !chunk.is_empty() && lingering.is_none() {
                    lingering = Some(tokio::time::Instant::now());
                }
            }
        };
        let backfill = async {
            let ctx = backfill::Ctx {
                pipeline: &self.pipeline,
                params: &params,
                edge: &self.edge,
                shared: &self.copy,
                counters: &self.counters,
                incarnation: &incarnation,
                chunk_rows: self.cfg.snapshot_chunk_rows,
                workers: self.cfg.snapshot_workers,
                message_rows: self.cfg.chunk_rows,
                message_bytes: self.cfg.chunk_bytes,
            };
            crate::cdc::copy_workers::run(ctx, jobs, jobs_rx, self.cfg.snapshot_workers).await?;
            std::future::pending::<Result<(), SourceError>>().await
        };
        let watcher = async {
            if !watched.is_empty() {
                partitions::watch(
                    &client,
                    &params,
                    &self.copy,
                    &self.counters,
                    &jobs_tx,
                    watched,
                    PARTITION_POLL,
                )
                .await?;
            }
            std::future::pending::<Result<(), SourceError>>().await
        };
        let (resync_tx, mut resync_rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut port) = self.resync.lock() {
            *port = Some(resync_tx);
        }
        let requests = async {
            while let Some(mut req) = resync_rx.recv().await {
                if let Some((keys, purge)) = req.repair.take() {
                    // Answered once the repair is done (or not queued, with why).
                    let (tell, told) = tokio::sync::oneshot::channel();
                    match self
                        .repair_job(&client, &params, &req.table, &filters, keys, purge, tell)
                        .await
                    {
                        Ok(job) => {
                            let _ = jobs_tx.send(job);
                            tokio::spawn(async move {
                                let answer = told.await.unwrap_or_else(|_| {
                                    Err("the pipeline's Postgres source restarted".into())
                                });
                                let _ = req.reply.send(answer);
                            });
                        }
                        Err(e) => {
                            let _ = req.reply.send(Err(e));
                        }
                    }
                    continue;
                }
                let answer = match self
                    .resync_job(&client, &params, &req.table, &incarnation, &filters)
                    .await
                {
                    Ok(job) => {
                        let shown = job.display();
                        let _ = jobs_tx.send(job);
                        Ok(format!("resync of {shown} queued"))
                    }
                    Err(e) => Err(e),
                };
                let _ = req.reply.send(answer);
            }
            std::future::pending::<Result<(), SourceError>>().await
        };
        tokio::select! {
            r = streaming => r,
            r = backfill => r,
            r = watcher => r,
            r = requests => r,
        }
    }

    /// The table this pipeline replicates named `table` (`schema.table`, or a table of
    /// `public`), unless it is keyless or being copied.
    fn copyable(&self, table: &str) -> Result<SharedSchema, String> {
        let found = self
            .copy
            .schemas
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .values()
            .find(|s| {
                s.qualified() == table
                    || (!table.contains('.') && s.schema == "public" && s.name == table)
            })
            .cloned();
        let Some(schema) = found else {
            return Err(format!("`{table}` is not a table this pipeline replicates"));
        };
        if schema.keyless() {
            return Err(format!(
                "{}: a keyless table is counted by content and cannot be copied while it streams (a new snapshot copies it)",
                schema.qualified()
            ));
        }
        if self
            .copy
            .tables
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .contains_key(&schema.rel_id)
        {
            return Err(format!("{} is being copied already", schema.qualified()));
        }
        Ok(schema)
    }

    /// Makes a job taken while streaming known to the stream (see [`backfill::register`]).
    async fn register(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        job: &Job,
    ) -> Result<(), String> {
        backfill::register(
            client,
            params,
            &self.copy,
            &self.counters,
            std::slice::from_ref(job),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// The job that repairs the rows of `keys` (each key's values) and `purge` (every key's
    /// canonical text) of `table` (see [`backfill::Repair`]); `tell` hears when it is done.
    #[allow(clippy::too_many_arguments)]
    async fn repair_job(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        table: &str,
        filters: &HashMap<u32, String>,
        keys: Vec<Vec<String>>,
        purge: Vec<String>,
        tell: tokio::sync::oneshot::Sender<Result<String, String>>,
    ) -> Result<Job, String> {
        let schema = self.copyable(table)?;
        let width = schema.key_indexes().len();
        if let Some(k) = keys.iter().find(|k| k.len() != width) {
            return Err(format!(
                "{}: a key of {} value(s) for a key of {width} column(s)",
                schema.qualified(),
                k.len()
            ));
        }
        let job = Job {
            schema: schema.clone(),
            filter: filters.get(&schema.rel_id).cloned(),
            from: TableCopy::Pending,
            partition: None,
            detached: false,
            purge_below: None,
            repair: Some(backfill::Repair {
                keys,
                purge,
                done: std::sync::Mutex::new(Some(tell)),
            }),
        };
        self.register(client, params, &job).await?;
        tracing::info!(pipeline = %self.pipeline, table = %schema.qualified(), keys = job.repair.as_ref().map_or(0, |r| r.purge.len()), "repair requested: the rows of the keys verify found different are copied again");
        Ok(job)
    }

    /// The job that resyncs `table` (`schema.table`, or a table of `public`): copied over what
    /// ClickHouse has, the rows left over deleted at the end (see [`Job::purge_below`]),
    /// recorded so that a restart resumes it. Why not, for a table that cannot be resynced.
    async fn resync_job(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        table: &str,
        incarnation: &str,
        filters: &HashMap<u32, String>,
    ) -> Result<Job, String> {
        let schema = self.copyable(table)?;
        let below = backfill::read_position(client, params, &self.pipeline, &schema.qualified())
            .await
            .map_err(|e| e.to_string())?;
        let entries = vec![
            (
                backfill::resync_key(&schema.qualified()),
                format!("{incarnation}|{below}"),
            ),
            (state_key(&schema.qualified()), String::new()),
        ];
        self.edge
            .call(|r| SinkMsg::WriteState(entries, r), Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())??;
        let job = Job {
            schema: schema.clone(),
            filter: filters.get(&schema.rel_id).cloned(),
            from: TableCopy::Pending,
            partition: None,
            detached: false,
            purge_below: Some(below),
            repair: None,
        };
        self.register(client, params, &job).await?;
        tracing::info!(pipeline = %self.pipeline, table = %schema.qualified(), "resync requested: the table is copied over what ClickHouse has, then the rows Postgres no longer has are deleted");
        Ok(job)
    }

    /// Copy jobs for the partitions attached while tributary was away (not in the recorded
    /// list of what each partitioned table's copy covers); records the list where there is
    /// none yet (the table's own copy, done or to come, covers the partitions there now).
    async fn partition_jobs(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        incarnation: &str,
        current: &HashMap<u32, Vec<Partition>>,
        schemas: &HashMap<u32, SharedSchema>,
        filters: &HashMap<u32, String>,
    ) -> Result<Vec<Job>, SourceError> {
        let mut jobs = Vec::new();
        for (p, leaves) in current {
            let table = &schemas[p];
            let mut keys = vec![format!("partitions:{}", table.qualified())];
            keys.extend(
                leaves
                    .iter()
                    .map(|l| format!("{}#{}", state_key(&table.qualified()), l.oid)),
            );
            let mut values = self
                .edge
                .call(|r| SinkMsg::ReadState(keys, r), Duration::from_secs(60))
                .await?
                .map_err(SourceError::Sink)?
                .into_iter();
            let recorded =
                backfill::parse_partitions(values.next().flatten().as_deref(), incarnation);
            let progress: HashMap<u32, TableCopy> = leaves
                .iter()
                .zip(values)
                .map(|(l, v)| (l.oid, TableCopy::parse(v.as_deref(), incarnation)))
                .collect();
            let now: BTreeSet<u32> = leaves.iter().map(|l| l.oid).collect();
            if recorded.is_none() {
                let entry = vec![backfill::partitions_entry(
                    &table.qualified(),
                    incarnation,
                    &now,
                )];
                self.edge
                    .call(|r| SinkMsg::WriteState(entry, r), Duration::from_secs(60))
                    .await?
                    .map_err(SourceError::Sink)?;
            }
            let table_jobs =
                partitions::jobs_for(table, filters.get(p), leaves, recorded.as_ref(), &progress);
            // Partitions detached while tributary was away: their rows leave ClickHouse (they
            // stay in the recorded list until they have).
            let gone = recorded
                .iter()
                .flat_map(|rec| rec.difference(&now))
                .map(|&oid| partitions::retire_job(table, oid));
            let gone: Vec<Job> = gone.collect();
            self.copy
                .partitions
                .lock()
                .expect("not poisoned")
                .insert(*p, recorded.unwrap_or(now));
            backfill::register(client, params, &self.copy, &self.counters, &table_jobs).await?;
            jobs.extend(table_jobs);
            jobs.extend(gone);
        }
        Ok(jobs)
    }

    /// The copy job of a table the stream shows for the first time, with the publication's
    /// row filter for it.
    async fn new_table_job(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        schema: SharedSchema,
    ) -> Result<Job, SourceError> {
        let filter = publication::published_tables(client, params, &self.cfg.publication)
            .await?
            .into_iter()
            .find(|t| t.oid == schema.rel_id)
            .and_then(|t| t.filter);
        tracing::info!(pipeline = %self.pipeline, table = %schema.qualified(), "a table new to the stream: its rows are copied");
        Ok(Job {
            schema,
            filter,
            from: TableCopy::Pending,
            partition: None,
            detached: false,
            purge_below: None,
            repair: None,
        })
    }

    /// Sends a chunk of the stream, the unchanged TOAST values of tables being copied filled
    /// first; returns its commit LSN.
    /// Sends the chunk (recording its commit as the last sent), then starts the copies of
    /// the new tables it introduced: the sink must know a table before the copy's first
    /// message.
    async fn send_then_copy(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        schemas: &HashMap<u32, SharedSchema>,
        (chunk, new_jobs, last_sent_commit): (&mut ChunkBuilder, &mut Vec<Job>, &mut Lsn),
        jobs_tx: &tokio::sync::mpsc::UnboundedSender<Job>,
    ) -> Result<(), SourceError> {
        if let Some(lsn) = self.send_streamed(client, params, chunk, schemas).await? {
            *last_sent_commit = lsn;
        }
        for j in new_jobs.drain(..) {
            let _ = jobs_tx.send(j);
        }
        Ok(())
    }

    async fn send_streamed(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        chunk: &mut ChunkBuilder,
        schemas: &HashMap<u32, SharedSchema>,
    ) -> Result<Option<Lsn>, SourceError> {
        if self.copy.any() {
            self.fill_toast(client, params, chunk, schemas).await?;
        }
        self.send(chunk, schemas).await
    }

    /// Fills the unchanged TOAST values of the chunk's rows of tables being copied.
    async fn fill_toast(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        chunk: &mut ChunkBuilder,
        schemas: &HashMap<u32, SharedSchema>,
    ) -> Result<(), SourceError> {
        for item in chunk.items.iter_mut() {
            if let ChangeItem::Row { rel_id, change } = item {
                if change.is_delete() {
                    continue;
                }
                if let Some(s) = schemas.get(rel_id) {
                    backfill::fill_unchanged_toast(client, params, &self.copy, s, change).await?;
                }
            }
        }
        Ok(())
    }

    /// The tables to copy while streaming: those without a complete copy in `incarnation`.
    /// A pipeline whose copies were not recorded per table yet (`recorded` false: an earlier
    /// version's complete snapshot) records every table as copied instead.
    #[allow(clippy::too_many_arguments)]
    async fn copy_jobs(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        incarnation: &str,
        recorded: bool,
        listed: Option<Vec<String>>,
        rels: &[u32],
        states: &[Option<String>],
        resyncs: &[Option<String>],
        schemas: &HashMap<u32, SharedSchema>,
        filters: &HashMap<u32, String>,
    ) -> Result<Vec<Job>, SourceError> {
        let names: Vec<String> = rels.iter().map(|r| schemas[r].qualified()).collect();
        let this_start = tables_entry(incarnation, names.iter().map(String::as_str));
        if !recorded {
            let mut done = vec![("copies".to_string(), incarnation.to_string()), this_start];
            for r in rels {
                done.push((
                    state_key(&schemas[r].qualified()),
                    TableCopy::Done.format(incarnation).unwrap_or_default(),
                ));
            }
            self.edge
                .call(|r| SinkMsg::WriteState(done, r), Duration::from_secs(600))
                .await?
                .map_err(SourceError::Sink)?;
            return Ok(Vec::new());
        }
        let jobs: Vec<Job> = rels
            .iter()
            .zip(states)
            .zip(resyncs)
            .map(|((r, v), resync)| {
                let mut from = TableCopy::parse(v.as_deref(), incarnation);
                // A resync under way resumes (and still deletes what is left over at its end).
                let purge_below = backfill::parse_resync(resync.as_deref(), incarnation);
                let name = schemas[r].qualified();
                if from == TableCopy::Done && listed.as_ref().is_some_and(|l| !l.contains(&name)) {
                    tracing::info!(pipeline = %self.pipeline, table = %name, "the table was not replicated for a while (out of the configuration): it is copied again");
                    from = TableCopy::Pending;
                }
                Job {
                    schema: schemas[r].clone(),
                    filter: filters.get(r).cloned(),
                    from,
                    partition: None,
                    detached: false,
                    purge_below,
                    repair: None,
                }
            })
            .filter(|j| j.from != TableCopy::Done)
            .filter(|j| {
                // Still stopped (the sink kept the stop when it took the schemas): its copy
                // would only be skipped.
                let stopped = states[rels.iter().position(|r| *r == j.schema.rel_id).unwrap_or(0)]
                    .as_deref()
                    .and_then(crate::cdc::table_state::stopped_reason)
                    .is_some();
                if stopped {
                    tracing::warn!(pipeline = %self.pipeline, table = %j.schema.qualified(), "the table stays stopped: not copied");
                }
                !stopped
            })
            .filter(|j| {
                // Counted by content, a keyless table cannot be copied while it streams (its
                // rows would count twice): only a new snapshot copies it. The other tables go on.
                if j.schema.keyless() {
                    tracing::error!(pipeline = %self.pipeline, table = %j.schema.qualified(),
                        "a keyless table's copy is to be taken again (stopped, its ClickHouse table dropped, or out of the configuration for a while), which only a new snapshot can do: drop the slot (SELECT pg_drop_replication_slot(...)) and restart; until then it streams as it is, or stays stopped");
                }
                !j.schema.keyless()
            })
            .collect();
        // The tables of this start, with the copies to take again marked as not started in the
        // same write (a crash before they end must not find them complete).
        let mut entries = vec![this_start];
        for j in jobs.iter().filter(|j| j.from == TableCopy::Pending) {
            entries.push((j.state_key(), String::new()));
        }
        self.edge
            .call(|r| SinkMsg::WriteState(entries, r), Duration::from_secs(60))
            .await?
            .map_err(SourceError::Sink)?;
        // Registered before the stream starts: its unchanged TOAST values of these tables
        // are filled from Postgres from the first change on.
        backfill::register(client, params, &self.copy, &self.counters, &jobs).await?;
        Ok(jobs)
    }

    fn confirmable(&self) -> Lsn {
        (*self.acks.borrow()).max(self.idle_lsn.load(Ordering::Relaxed))
    }

    /// Sends the chunk (waiting for room on the edge); returns its commit LSN.
    async fn send(
        &self,
        chunk: &mut ChunkBuilder,
        schemas: &HashMap<u32, SharedSchema>,
    ) -> Result<Option<Lsn>, SourceError> {
        let c = std::mem::replace(chunk, ChunkBuilder::new());
        // A TRUNCATE of a table being copied makes the chunks read before it stale; the copy
        // checks under the same lock before it sends one.
        let _held = self.copy.send_lock.lock().await;
        self.copy.truncating(&c.items);
        self.copy.schemas_sent(&c.schemas);
        let commit = c.commit;
        PipelineCounters::add(&self.counters.rows_read, c.rows as u64);
        let (trace, decode) = c.trace.unwrap_or_else(|| (tracing::info_span!(parent: None, "cdc.chunk", pipeline = %self.pipeline, rows = tracing::field::Empty, lsn = tracing::field::Empty, tables = tracing::field::Empty), Span::none()));
        trace.record("rows", c.rows as i64);
        let lsn = commit.unwrap_or(c.last_lsn);
        if lsn > 0 {
            trace.record("lsn", fmt_lsn(lsn).as_str());
        }
        if !c.tables.is_empty() {
            let names: Vec<String> = c
                .tables
                .iter()
                .filter_map(|r| schemas.get(r))
                .map(|s| s.qualified())
                .collect();
            trace.record("tables", names.join(",").as_str());
        }
        drop(decode);
        let queue_span =
            tracing::info_span!(parent: &trace, "edge.queue", depth = self.edge.depth() as u64);
        let msg = ChangeChunk {
            items: c.items,
            commit,
            commit_times: c.commit_times,
            caught_up: c.caught_up,
            trace,
            queue_span,
        };
        self.edge
            .send(move |permit| SinkMsg::Changes(msg, permit))
            .await?;
        Ok(commit)
    }

    /// A schema learned from a Relation message, with the table's identity and its mapping's
    /// sort key (checked again: the identity may have changed).
    fn with_mapping(
        &self,
        s: TableSchema,
        replica_identity: u8,
    ) -> Result<TableSchema, SourceError> {
        let s = TableSchema {
            identity: catalog::identity_of(replica_identity, true),
            ..s
        };
        let order_by = mapping_for(&self.mappings, &s.schema, &s.name)
            .map(|m| m.order_by.as_slice())
            .unwrap_or(&[]);
        Ok(crate::protocol::mapping::shape(s, None, order_by).map_err(PgError::Setup)?)
    }

    #[allow(clippy::too_many_arguments)]
    async fn schema_from_relation(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        types: &mut TypeResolver,
        known: Option<&SharedSchema>,
        attnums: &mut HashMap<u32, Vec<(i16, String)>>,
        rel_id: u32,
        namespace: String,
        name: String,
        columns: &[pgoutput::RelationColumn],
    ) -> Result<TableSchema, SourceError> {
        // Renames, by attribute number: the catalog now against the last schema's. Only
        // when the catalog still has the columns this Relation lists (a later ALTER may have
        // changed it already; then a renamed column arrives as an added one).
        let now = catalog::attnums(client, params, rel_id).await?;
        let listed: Option<Vec<(i16, String)>> = columns
            .iter()
            .map(|rc| now.iter().find(|(_, n)| *n == rc.name).cloned())
            .collect();
        let renames = match (listed, attnums.get(&rel_id), known) {
            (Some(listed), Some(before), Some(_)) => {
                let r = crate::protocol::schema::renamed(before, &listed);
                attnums.insert(rel_id, listed);
                r
            }
            (Some(listed), _, _) => {
                attnums.insert(rel_id, listed);
                Vec::new()
            }
            (None, _, _) => {
                tracing::warn!(table = %format!("{namespace}.{name}"), "the catalog changed again before this schema change was streamed: a column renamed now is replicated as an added column");
                attnums.remove(&rel_id);
                Vec::new()
            }
        };
        let mut out = Vec::with_capacity(columns.len());
        for rc in columns {
            let renamed_from = renames
                .iter()
                .find(|(_, new)| *new == rc.name)
                .map(|(old, _)| old.clone());
            let existing = known.and_then(|k| {
                let name = renamed_from.as_ref().unwrap_or(&rc.name);
                k.columns.iter().find(|c| &c.name == name)
            });
            let pg_type = types
                .resolve(client, params, rc.type_oid, rc.type_mod, 1)
                .await?;
            match existing {
                Some(c) => {
                    // A type change goes to the sink, which widens the ClickHouse column
                    // or refuses the change.
                    if c.pg_type != pg_type {
                        tracing::info!(table = %format!("{namespace}.{name}"), column = %c.name, from = ?c.pg_type, to = ?pg_type,
                            "column type changed in Postgres");
                    }
                    if let Some(old) = &renamed_from {
                        tracing::info!(table = %format!("{namespace}.{name}"), from = %old, to = %rc.name, "column renamed in Postgres");
                    }
                    out.push(Column {
                        name: rc.name.clone(),
                        pg_type,
                        renamed_from,
                        ..c.clone()
                    })
                }
                None => {
                    let added_default = match known {
                        Some(_) => catalog::added_default(client, params, rel_id, &rc.name).await?,
                        None => None,
                    };
                    // A column added to a known table is never part of its key (a key needs
                    // its own ALTER); pgoutput flags every column as identity under REPLICA
                    // IDENTITY FULL, so its flag would turn an update into a key change.
                    let is_key = rc.is_key && known.is_none();
                    out.push(Column {
                        name: rc.name.clone(),
                        pg_type,
                        nullable: !is_key,
                        is_key,
                        added_default,
                        renamed_from: None,
                    })
                }
            }
        }
        Ok(TableSchema {
            rel_id,
            schema: namespace,
            name,
            columns: out,
            identity: known.map(|k| k.identity).unwrap_or_default(),
            order_by: known.map(|k| k.order_by.clone()).unwrap_or_default(),
        })
    }

    /// Copies every table inside the exported snapshot, as rows whose version is the slot's
    /// consistent point: every change streamed from the slot comes after it (and wins in
    /// FINAL), and every version left in ClickHouse by an earlier slot comes before it (a
    /// re-snapshot wins over what was streamed before it; version 0 would lose to it, and
    /// would be fenced by an earlier TRUNCATE's mark).
    async fn snapshot(
        &self,
        client: &tokio_postgres::Client,
        params: &PgParams,
        snapshot: &str,
        schemas: &HashMap<u32, SharedSchema>,
        filters: &HashMap<u32, String>,
        version: Lsn,
    ) -> Result<(), SourceError> {
        use futures_util::StreamExt;
        let pg = |e: tokio_postgres::Error| SourceError::Pg(PgError::client(params.addr(), e));
        let mut chunk = ChunkBuilder::new();
        let rels: Vec<u32> = schemas.keys().copied().collect();
        chunk.push(&self.pipeline, ChangeItem::SnapshotBegin(rels));
        self.send(&mut chunk, schemas).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(pg)?;
        client
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT {}",
                pg_literal(snapshot)
            ))
            .await
            .map_err(pg)?;
        for s in schemas.values() {
            let cols: Vec<String> = s.columns.iter().map(|c| pg_ident(&c.name)).collect();
            let sql = format!(
                "COPY (SELECT {} FROM {}.{}{}) TO STDOUT",
                cols.join(", "),
                pg_ident(&s.schema),
                pg_ident(&s.name),
                filters
                    .get(&s.rel_id)
                    .map(|f| format!(" WHERE {f}"))
                    .unwrap_or_default()
            );
            let stream = client.copy_out(sql.as_str()).await.map_err(pg)?;
            futures_util::pin_mut!(stream);
            let mut partial: Vec<u8> = Vec::new();
            let mut n = 0u64;
            while let Some(buf) = stream.next().await {
                let buf = buf.map_err(pg)?;
                partial.extend_from_slice(&buf);
                let mut start = 0;
                while let Some(pos) = partial[start..].iter().position(|&b| b == b'\n') {
                    let line = &partial[start..start + pos];
                    let mut cells = Vec::with_capacity(s.columns.len());
                    catalog::parse_copy_line(line, &mut cells).ok_or_else(|| {
                        SourceError::Pg(PgError::Protocol {
                            addr: params.addr(),
                            message: format!("unreadable COPY line in {}", s.qualified()),
                        })
                    })?;
                    chunk.push(
                        &self.pipeline,
                        ChangeItem::row(s.rel_id, RowOp::Snapshot, version, cells, (0, 0)),
                    );
                    n += 1;
                    PipelineCounters::add(&self.counters.snapshot_rows, 1);
                    start += pos + 1;
                    if chunk.is_full(&self.cfg) {
                        self.send(&mut chunk, schemas).await?;
                    }
                }
                partial.drain(..start);
            }
            if !chunk.is_empty() {
                self.send(&mut chunk, schemas).await?;
            }
            tracing::info!(pipeline = %self.pipeline, table = %s.qualified(), rows = n, "table snapshot copied");
        }
        client.batch_execute("COMMIT").await.map_err(pg)?;
        Ok(())
    }
}

/// Samples how much WAL the slot holds back, its `wal_status`, `safe_wal_size` and how far
/// its restart point trails its confirmed position, for the `tributary_slot_lag_bytes`,
/// `tributary_slot_wal_status`, `tributary_slot_safe_wal_bytes` and
/// `tributary_slot_restart_bytes` gauges; says so once when the slot passes
/// `max_slot_wal_keep_size` or is invalidated.
async fn slot_lag_loop(
    client: Arc<tokio_postgres::Client>,
    slot: String,
    every: Duration,
    counters: Arc<PipelineCounters>,
    pipeline: String,
) {
    let mut tick = tokio::time::interval(every.min(Duration::from_secs(15)));
    let mut said = 0;
    loop {
        tick.tick().await;
        let row = client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
                 to_jsonb(s) ->> 'wal_status', (to_jsonb(s) ->> 'safe_wal_size')::bigint, \
                 pg_wal_lsn_diff(confirmed_flush_lsn, restart_lsn)::bigint \
                 FROM pg_replication_slots s WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match row {
            Ok(Some(r)) => {
                let bytes: Option<i64> = r.get(0);
                let status: Option<String> = r.get(1);
                let safe: Option<i64> = r.get(2);
                counters
                    .slot_lag_bytes
                    .store(bytes.unwrap_or(0).max(0) as u64, Ordering::Relaxed);
                let code = crate::runtime::registry::wal_status_code(status.as_deref());
                counters.slot_wal_status.store(code, Ordering::Relaxed);
                // A lost slot has no safe size left (Postgres reports NULL, as when unlimited).
                let safe = match (code, safe) {
                    (4, _) => 0,
                    (_, Some(b)) => b.max(0) as u64,
                    (_, None) => i64::MAX as u64,
                };
                counters.slot_safe_wal_bytes.store(safe, Ordering::Relaxed);
                let restart: Option<i64> = r.get(3);
                counters
                    .slot_restart_bytes
                    .store(restart.unwrap_or(0).max(0) as u64, Ordering::Relaxed);
                if code == 3 && said < 3 {
                    tracing::error!(pipeline = %pipeline, slot = %slot, "the replication slot is past max_slot_wal_keep_size (wal_status = unreserved): Postgres invalidates it at the next checkpoint unless it catches up; then the pipeline stops, and the remedy is a new slot and a new snapshot");
                } else if code == 4 && said < 4 {
                    tracing::error!(pipeline = %pipeline, slot = %slot, "Postgres invalidated the replication slot (wal_status = lost): the pipeline stops at its next start; the remedy is a new slot and a new snapshot");
                }
                // Said again if it gets there again after catching up.
                said = code;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "slot lag sample failed"),
        }
    }
}

/// Reports the confirmable position every `interval`, and at once when the sink acknowledges
/// more.
async fn status_loop(
    writer: ReplicationWriter,
    mut acks: watch::Receiver<Lsn>,
    idle: Arc<AtomicU64>,
    interval: Duration,
    counters: Arc<PipelineCounters>,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = acks.changed() => if r.is_err() { return },
        }
        let pos = (*acks.borrow()).max(idle.load(Ordering::Relaxed));
        if writer.send_status(pos, false).await.is_err() {
            return;
        }
        counters.confirmed_lsn.fetch_max(pos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wide_row(bytes: usize) -> ChangeItem {
        let cells = vec![
            Cell::Text(bytes::Bytes::from_static(b"1")),
            Cell::Text(bytes::Bytes::from(vec![b'x'; bytes])),
        ];
        ChangeItem::row(1, RowOp::Insert, 1, cells, (1, 0))
    }

    #[test]
    fn a_backlog_ends_once_at_the_first_keepalive_after_it() {
        let s = 1_000_000;
        let mut c = CatchUp::default();
        // Keeping up: commits sent right after they were made; keepalives end nothing.
        c.on_commit(10 * s + 3_000, 10 * s);
        assert!(!c.on_keepalive(false));
        // A backlog: commits seconds old when sent. A keepalive inside a transaction is not
        // its end; the first one outside is, once.
        c.on_commit(20 * s, 12 * s);
        assert!(!c.on_keepalive(true));
        assert!(c.on_keepalive(false));
        assert!(!c.on_keepalive(false));
        // Caught up inside the backlog's last chunks: a fresh commit clears it.
        c.on_commit(30 * s, 25 * s);
        c.on_commit(31 * s, 31 * s - 500);
        assert!(!c.on_keepalive(false));
        // A clock value that went backwards is not a backlog.
        c.on_commit(40 * s, 41 * s);
        assert!(!c.on_keepalive(false));
    }

    #[test]
    fn a_chunk_is_full_at_chunk_rows_or_chunk_bytes() {
        let cfg: PostgresConfig = toml::from_str(
            "user = \"u\"\ndatabase = \"d\"\npublication = \"p\"\nslot = \"s\"\n\
             chunk_rows = 3\nchunk_bytes = 1000",
        )
        .expect("postgres config");
        let mut c = ChunkBuilder::new();
        c.push("p", wide_row(10));
        c.push("p", wide_row(10));
        assert!(!c.is_full(&cfg), "2 small rows");
        c.push("p", wide_row(10));
        assert!(c.is_full(&cfg), "chunk_rows reached");
        let mut c = ChunkBuilder::new();
        c.push("p", wide_row(600));
        assert!(!c.is_full(&cfg), "601 bytes");
        c.push("p", wide_row(600));
        assert!(c.is_full(&cfg), "two wide rows pass chunk_bytes");
        assert_eq!(c.bytes, 1202);
    }
}
