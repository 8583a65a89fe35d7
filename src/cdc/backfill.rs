//! Copies the tables whose rows the stream alone would not bring (every table at the first
//! start, a table added to a running pipeline, an attached partition) while every table keeps
//! streaming, several at once (`postgres.snapshot_workers`): in chunks in key order, each one
//! statement (its own short snapshot, so nothing pins the xmin horizon for the whole copy),
//! each recorded in the pipeline state once the sink has written it, so that a restart resumes
//! after the last recorded chunk. (Debezium's incremental snapshots and Netflix's DBLog
//! interleave chunks with the stream the same way; here ClickHouse's versions take the place
//! of their watermarks.)
//!
//! Why rows read at any time are right: the table is in the publication and the slot streams
//! every change committed after that; copied rows carry the version of a [`read_position`]
//! taken before the copy reads, so a streamed change the copy missed wins in FINAL, and the
//! copy wins over every change it includes and every version an earlier life of the table left
//! (a re-copy through Kafka, deletes of a detached partition). Two cases need care and get it
//! here:
//! - a TRUNCATE streamed while a chunk read before it is on its way: the stream bumps the
//!   table's generation under the send lock, and a chunk whose table's generation moved since
//!   it was read is dropped and the copy starts over;
//! - an update whose TOAST value is unchanged, for a row the copy has not reached: the
//!   sink has no value to take, so the stream fills it from Postgres first
//!   ([`fill_unchanged_toast`]).
//!
//! Must never: send a chunk read before a TRUNCATE that the sink has applied, record a chunk
//! as copied before the sink wrote it, or let a streamed unchanged TOAST value of a table
//! being copied reach the sink unfilled.

use crate::cdc::change::{ChangeChunk, ChangeItem, RowChange, RowOp, SinkColumns, SinkMsg};
use crate::cdc::table_state::{state_key, RangeCopy, TableCopy};
use crate::clients::postgres::{catalog, PgError, PgParams};
use crate::flow::edge::{Edge, EdgeError};
use crate::protocol::chtypes::{ChColumn, RowForm};
use crate::protocol::passthrough;
use crate::protocol::pgoutput::Cell;
use crate::protocol::rowbinary::{self, BinaryCopy};
use crate::protocol::schema::{pg_ident, pg_literal, SharedSchema, TableSchema};
use crate::runtime::registry::{CopyProgress, CopyState, PipelineCounters};

/// How often a copy logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the stream loop and the copies share.
#[derive(Default)]
pub struct CopyShared {
    /// Held while a chunk goes onto the edge, by the stream and by the copies.
    pub send_lock: tokio::sync::Mutex<()>,
    /// The tables being copied, each with its generation (bumped by a streamed TRUNCATE)
    /// and its columns' SQL types (for lookups by key).
    pub tables: std::sync::Mutex<HashMap<u32, Copying>>,
    /// Each table's schema as the stream sent it last (set under the send lock): a copy
    /// reads the columns the sink expects, and drops a chunk read under an older schema.
    pub schemas: std::sync::Mutex<HashMap<u32, SharedSchema>>,
    /// The partitions (OIDs) each partitioned table's copy covers: its own copy's, and each
    /// attached since and copied.
    pub partitions: std::sync::Mutex<HashMap<u32, std::collections::BTreeSet<u32>>>,
    /// Each table's ClickHouse columns as the sink gave them for a passthrough copy, with
    /// the schema they were asked under (`None`: the ordinary way).
    passthrough: std::sync::Mutex<HashMap<u32, (SharedSchema, Option<SinkColumns>)>>,
}

pub struct Copying {
    pub generation: u64,
    /// Every column's type as `format_type` prints it, by name.
    pub types: HashMap<String, String>,
    /// Jobs of the table registered and not finished (a partitioned table may have several:
    /// one per partition attached while running).
    pub jobs: usize,
}

impl CopyShared {
    /// Whether any table is being copied.
    pub fn any(&self) -> bool {
        self.tables.lock().map(|t| !t.is_empty()).unwrap_or(false)
    }

    /// Called with the send lock held, for a chunk the stream is about to send: every table
    /// it truncates that is being copied moves to a new generation.
    pub fn truncating(&self, items: &[ChangeItem]) {
        let Ok(mut tables) = self.tables.lock() else {
            return;
        };
        // On the stream's hot path: nothing to look for while nothing is copied.
        if tables.is_empty() {
            return;
        }
        for item in items {
            if let ChangeItem::Truncate { rels, .. } = item {
                for r in rels {
                    if let Some(c) = tables.get_mut(r) {
                        c.generation += 1;
                    }
                }
            }
        }
    }

    /// Called with the send lock held, for the schemas of a chunk the stream is about to send.
    pub fn schemas_sent(&self, sent: &[SharedSchema]) {
        if sent.is_empty() {
            return;
        }
        if let Ok(mut now) = self.schemas.lock() {
            for s in sent {
                now.insert(s.rel_id, s.clone());
            }
        }
    }

    /// What is known of table `s`'s passthrough under this schema (`Some(None)`: none).
    fn passthrough_known(&self, s: &SharedSchema) -> Option<Option<SinkColumns>> {
        let known = self.passthrough.lock().ok()?;
        known
            .get(&s.rel_id)
            .filter(|(under, _)| Arc::ptr_eq(under, s))
            .map(|(_, cols)| cols.clone())
    }

    fn passthrough_set(&self, s: &SharedSchema, cols: Option<SinkColumns>) {
        if let Ok(mut known) = self.passthrough.lock() {
            known.insert(s.rel_id, (s.clone(), cols));
        }
    }

    /// Table `s`'s copy goes on the ordinary way (until its schema changes).
    fn passthrough_off(&self, s: &SharedSchema) {
        self.passthrough_set(s, None);
    }

    /// Table `rel`'s schema as the stream sent it last.
    pub fn schema(&self, rel: u32) -> Option<SharedSchema> {
        self.schemas.lock().ok().and_then(|m| m.get(&rel).cloned())
    }

    /// Records that `partition` of `table` is covered by the table's copy (`true`: copied)
    /// or no longer (`false`: it left the table and its rows were deleted from ClickHouse); the
    /// state entry that says which partitions the table's copy covers now.
    pub fn partition_covered(
        &self,
        table: &TableSchema,
        partition: u32,
        covered: bool,
        incarnation: &str,
    ) -> (String, String) {
        let mut all = self.partitions.lock().expect("not poisoned");
        let set = all.entry(table.rel_id).or_default();
        if covered {
            set.insert(partition);
        } else {
            set.remove(&partition);
        }
        partitions_entry(&table.qualified(), incarnation, set)
    }

    pub(crate) fn generation(&self, rel: u32) -> u64 {
        self.tables
            .lock()
            .ok()
            .and_then(|t| t.get(&rel).map(|c| c.generation))
            .unwrap_or(0)
    }

    fn types(&self, rel: u32) -> Option<HashMap<String, String>> {
        self.tables
            .lock()
            .ok()
            .and_then(|t| t.get(&rel).map(|c| c.types.clone()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("sink: {0}")]
    Sink(String),
    #[error("{0}")]
    Unsupported(String),
}

/// One table to copy: its schema, its publication row filter, where its copy stands.
pub struct Job {
    pub schema: SharedSchema,
    pub filter: Option<String>,
    pub from: TableCopy,
    /// A partition attached to the (partitioned) table while running: only its rows are
    /// copied, read from it, as rows of the table.
    pub partition: Option<Partition>,
    /// The partition was detached (or dropped): its rows are deleted from ClickHouse instead
    /// of copied (see `partitions::retire`).
    pub detached: bool,
    /// A resync: the table is copied over what ClickHouse has (no TRUNCATE: it stays
    /// readable), then the rows whose latest version is below this (the resync's first read
    /// position) are deleted: Postgres no longer has them.
    pub purge_below: Option<u64>,
    /// A repair of single keys (`tributary verify --repair`) instead of a copy of the table.
    pub repair: Option<Repair>,
}

/// A repair of the keys `tributary verify` found different: the rows Postgres has of `keys`
/// are copied as snapshot rows (read after a [`read_position`], at its version), then the rows
/// of `purge` whose latest version in ClickHouse is older are deleted (Postgres no longer has
/// them: every row it has was just copied at that version, and a change streamed since is
/// newer). Nothing of it is recorded in the state: a repair cut short is run again.
pub struct Repair {
    /// Each row's key values (the key columns' text, in key order).
    pub keys: Vec<Vec<String>>,
    /// The canonical key texts (see `protocol::verify`) of every key to repair.
    pub purge: Vec<String>,
    /// Told what was done, once it is.
    pub done: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Result<String, String>>>>,
}

/// A partition of a replicated partitioned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

impl Job {
    /// The table as progress shows it: `schema.table`, or for a partition
    /// `schema.table (partition schema.name)`.
    pub fn display(&self) -> String {
        if self.repair.is_some() {
            return format!("{} (repair)", self.schema.qualified());
        }
        match &self.partition {
            None => self.schema.qualified(),
            Some(p) => format!(
                "{} (partition {}.{})",
                self.schema.qualified(),
                p.schema,
                p.name
            ),
        }
    }

    /// Where its copy is recorded: `table:<schema>.<table>`, or for a partition
    /// `table:<schema>.<table>#<partition oid>`.
    pub fn state_key(&self) -> String {
        match &self.partition {
            None => state_key(&self.schema.qualified()),
            Some(p) => format!("{}#{}", state_key(&self.schema.qualified()), p.oid),
        }
    }
}

/// A request to resync a table (`schema.table`, or a table of `public`), answered with what
/// was queued or why not.
pub struct ResyncRequest {
    pub table: String,
    /// A repair of single keys instead: each key's values, and every key's canonical text
    /// (see [`Repair`]); answered once it is done.
    pub repair: Option<(Vec<Vec<String>>, Vec<String>)>,
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// Where a pipeline's Postgres source takes resync requests while it streams (`None` while it
/// does not).
pub type ResyncPort =
    std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ResyncRequest>>>>;

/// Asks the pipeline behind `port` to resync `table`; waits for its answer.
pub async fn request_resync(port: &ResyncPort, table: &str) -> Result<String, String> {
    request(port, table, None).await
}

/// Asks the pipeline behind `port` to repair these keys of `table` (see [`Repair`]); waits
/// until it is done.
pub async fn request_repair(
    port: &ResyncPort,
    table: &str,
    keys: Vec<Vec<String>>,
    purge: Vec<String>,
) -> Result<String, String> {
    request(port, table, Some((keys, purge))).await
}

async fn request(
    port: &ResyncPort,
    table: &str,
    repair: Option<(Vec<Vec<String>>, Vec<String>)>,
) -> Result<String, String> {
    let sender = port
        .lock()
        .map_err(|_| "the source's port is poisoned".to_string())?
        .clone()
        .ok_or_else(|| "the pipeline's Postgres source is not streaming now".to_string())?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    sender
        .send(ResyncRequest {
            table: table.to_string(),
            repair,
            reply,
        })
        .map_err(|_| "the pipeline's Postgres source is restarting".to_string())?;
    tokio::time::timeout(Duration::from_secs(600), answer)
        .await
        .map_err(|_| "no answer from the source within 10 minutes".to_string())?
        .map_err(|_| "the pipeline's Postgres source restarted".to_string())?
}

/// What a copy needs of its pipeline.
pub struct Ctx<'a> {
    pub pipeline: &'a str,
    pub params: &'a PgParams,
    pub edge: &'a Edge<SinkMsg>,
    pub shared: &'a CopyShared,
    pub counters: &'a PipelineCounters,
    pub incarnation: &'a str,
    /// Rows per chunk (one statement, one state record).
    pub chunk_rows: usize,
    /// Workers copying at once (a table of several chunks is split into key ranges when
    /// more than one).
    pub workers: usize,
    /// Rows per message to the sink, and bytes (a message goes once either is reached).
    pub message_rows: usize,
    pub message_bytes: usize,
}

/// Makes `jobs` known to the stream (which fills their unchanged TOAST values) before it
/// starts; refuses a keyless table, which cannot be copied while it streams.
pub async fn register(
    client: &tokio_postgres::Client,
    params: &PgParams,
    shared: &CopyShared,
    counters: &PipelineCounters,
    jobs: &[Job],
) -> Result<(), BackfillError> {
    for j in jobs {
        if j.schema.key_indexes().is_empty() {
            return Err(BackfillError::Unsupported(format!(
                "{} has no key (REPLICA IDENTITY FULL without a primary key) and was added to a running pipeline: its rows are counted by content, and a copy taken while it streams would count some twice. A new snapshot copies it: drop the slot (SELECT pg_drop_replication_slot(…)) to take one",
                j.schema.qualified()
            )));
        }
        let types = catalog::column_types(client, params, j.schema.rel_id).await?;
        if let Ok(mut copies) = counters.copies.lock() {
            copies.insert(
                j.display(),
                crate::runtime::registry::CopyProgress::queued(),
            );
        }
        shared
            .tables
            .lock()
            .expect("not poisoned")
            .entry(j.schema.rel_id)
            .or_insert_with(|| Copying {
                generation: 0,
                types: types.into_iter().collect(),
                jobs: 0,
            })
            .jobs += 1;
    }
    Ok(())
}

/// The version of rows read from now on: `L - 1`, `L` being Postgres's WAL insert position,
/// returned once every transaction running at `L` has ended. A read that starts after that
/// reflects every change written below `L`, and a change it does not reflect is written at `L`
/// or beyond (WAL records are 8-byte aligned, so none starts at `L - 1`): rows read carry a
/// version above every change they include and below every streamed change they miss, which
/// then wins in FINAL. Waits as long as those transactions run (logged after 10 s).
///
/// The running transactions are those holding the lock on their own transaction id: taken
/// when the id is assigned (before its first WAL record) and released only once the end is
/// visible to new snapshots. (A snapshot's `xip` list would miss the ones at or above its
/// `xmax`, and the commit log says "committed" a moment before new snapshots see it.)
pub async fn read_position(
    client: &tokio_postgres::Client,
    params: &PgParams,
    pipeline: &str,
    what: &str,
) -> Result<u64, PgError> {
    let pg = |e: tokio_postgres::Error| PgError::client(params.addr(), e);
    let at: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(pg)?
        .get(0);
    // Of this database only (another's changes are never decoded here): a session's by its
    // backend, a prepared transaction's (no backend) by pg_prepared_xacts.
    const RUNNING: &str = "SELECT l.transactionid::text AS transactionid FROM pg_locks l \
        LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
        WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted \
          AND (a.datname = current_database() \
               OR (l.pid IS NULL AND l.transactionid IN \
                   (SELECT transaction FROM pg_prepared_xacts WHERE database = current_database())))";
    let running: Vec<String> = client
        .query_one(
            &format!("SELECT coalesce(array_agg(transactionid), '{{}}') FROM ({RUNNING}) r"),
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    let waiting = std::time::Instant::now();
    let mut said = Duration::ZERO;
    while !running.is_empty() {
        let left: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM ({RUNNING}) r WHERE transactionid = ANY($1)"),
                &[&running],
            )
            .await
            .map_err(pg)?
            .get(0);
        if left == 0 {
            break;
        }
        // After 10 s, then every minute: a forgotten prepared transaction or an idle writer
        // holds every copy here.
        if waiting.elapsed() > Duration::from_secs(10) && waiting.elapsed() >= said {
            tracing::warn!(pipeline = %pipeline, table = %what, transactions = left, waited_s = waiting.elapsed().as_secs(),
                "waiting for transactions of this database that were running to end before the table is read (see pg_stat_activity and pg_prepared_xacts)");
            said = waiting.elapsed() + Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(crate::protocol::pgoutput::parse_lsn(&at)
        .unwrap_or(1)
        .saturating_sub(1))
}

/// What a worker got done of a job.
pub(crate) enum Copied {
    /// The job is complete: the table's copy is recorded done.
    Done,
    /// The table is copied in key ranges, by any worker: these of `run`'s ranges are left.
    Split(std::sync::Arc<TableRun>, Vec<usize>),
}

/// A table copied in key ranges, several at once: the ranges as recorded, how many are not
/// done, and the version rows read from the start on carry.
pub(crate) struct TableRun {
    pub job: Job,
    /// Held while a range's progress is recorded, so records land in the order they were
    /// made (the value holds every range).
    ranges: tokio::sync::Mutex<Vec<RangeCopy>>,
    left: std::sync::atomic::AtomicUsize,
    version: u64,
    logged: std::sync::Mutex<std::time::Instant>,
}

/// At most this many ranges per worker: a worker that finishes early takes another.
const RANGES_PER_WORKER: usize = 2;
/// About this many pages of a table are sampled for its range bounds.
const SAMPLE_PAGES: i64 = 300;

/// Copies one table (or partition) as the job says: resumes after its recorded chunk (or
/// ranges), splits a table of several chunks into key ranges when more than one worker
/// copies, or copies it in order.
pub(crate) async fn copy_table(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    j: Job,
) -> Result<Copied, BackfillError> {
    if let Some(r) = &j.repair {
        // Never the table's own copy (which starts with a TRUNCATE).
        let answer = repair(ctx, client, &j, r).await;
        let told = match &answer {
            Ok(done) => Ok(done.clone()),
            Err(e) => Err(e.to_string()),
        };
        if let Some(tell) = r.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = tell.send(told);
        }
        answer?;
        return Ok(Copied::Done);
    }
    let s = &j.schema;
    let rel = s.rel_id;
    let what = what(&j);
    let mut after = match &j.from {
        TableCopy::Done => {
            if let Ok(mut copies) = ctx.counters.copies.lock() {
                copies.remove(&j.display());
            }
            return Ok(Copied::Done);
        }
        TableCopy::Copying { after } => {
            tracing::info!(pipeline = %ctx.pipeline, table = %what, "resuming the table's copy after its last recorded chunk");
            Some(after.clone())
        }
        TableCopy::Ranges(_) => {
            tracing::info!(pipeline = %ctx.pipeline, table = %what, "resuming the table's copy in ranges after their last recorded chunks");
            None
        }
        TableCopy::Pending => None,
    };
    if after.is_none() && j.partition.is_some() && j.from == TableCopy::Pending {
        tracing::info!(pipeline = %ctx.pipeline, table = %what, "copying a partition attached while running, as it streams");
    }
    // Before the TRUNCATE below: the table is not left empty in ClickHouse while this waits.
    let mut version = read_position(client, ctx.params, ctx.pipeline, &what).await?;
    if j.from == TableCopy::Pending && j.partition.is_none() && j.purge_below.is_none() {
        // What an earlier life of the table left in ClickHouse may be older than anything
        // streamed now: start from an empty table.
        tracing::info!(pipeline = %ctx.pipeline, table = %s.qualified(), "copying the table, as it streams");
        send(ctx, rel, None, vec![ChangeItem::SnapshotBegin(vec![rel])]).await?;
    }
    let pg = |e: tokio_postgres::Error| BackfillError::Pg(PgError::client(ctx.params.addr(), e));
    let (from_schema, from_name) = source_of(&j);
    let size = client
        .query_one(
            "SELECT CASE WHEN c.relkind = 'p' THEN \
               (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0) FROM pg_partition_tree(c.oid) t \
                JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf) \
             ELSE greatest(c.reltuples, 0) END::bigint, \
             (CASE WHEN c.relkind = 'p' THEN \
               (SELECT coalesce(sum(pg_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t WHERE t.isleaf) \
             ELSE pg_relation_size(c.oid) END / current_setting('block_size')::bigint)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&from_schema, &from_name],
        )
        .await
        .map_err(pg)?;
    let (estimate, pages): (i64, i64) = (size.get(0), size.get(1));
    let shown = j.display();
    progress(ctx, &shown, &|p| {
        p.state = CopyState::Copying;
        p.estimate = estimate.max(0) as u64;
        p.resumed = j.from != TableCopy::Pending;
        p.started = Some(std::time::Instant::now());
        p.rows = 0;
    });
    let ranges = match &j.from {
        TableCopy::Ranges(r) => Some(r.clone()),
        TableCopy::Pending if ctx.workers > 1 => {
            let bounds = range_bounds(ctx, client, &j, pages).await?;
            if bounds.is_empty() {
                None
            } else {
                let r = RangeCopy::between(&bounds);
                tracing::info!(pipeline = %ctx.pipeline, table = %what, ranges = r.len(), "copying the table in key ranges, several at once");
                record(ctx, &j, TableCopy::Ranges(r.clone())).await?;
                Some(r)
            }
        }
        _ => None,
    };
    if let Some(ranges) = ranges {
        let open: Vec<usize> = (0..ranges.len()).filter(|&i| !ranges[i].done).collect();
        let run = std::sync::Arc::new(TableRun {
            job: j,
            left: std::sync::atomic::AtomicUsize::new(open.len()),
            ranges: tokio::sync::Mutex::new(ranges),
            version,
            logged: std::sync::Mutex::new(std::time::Instant::now()),
        });
        if open.is_empty() {
            finish(ctx, &run.job).await?;
            return Ok(Copied::Done);
        }
        return Ok(Copied::Split(run, open));
    }
    let mut logged = std::time::Instant::now();
    let mut unrecorded = Unrecorded::default();
    loop {
        let chunk = copy_chunk(ctx, client, &j, after.as_ref(), None, version).await?;
        match chunk.outcome {
            // The chunk is read again with the new columns (what was sent of it is sent
            // again: the same rows at the same version).
            Sent::SchemaChanged => {
                tracing::info!(pipeline = %ctx.pipeline, table = %what, "the table's schema changed during the copy: the chunk is read again");
                continue;
            }
            Sent::Truncated => {
                tracing::info!(pipeline = %ctx.pipeline, table = %what, "TRUNCATE streamed during the copy: the copy starts over");
                after = None;
                record(ctx, &j, TableCopy::Pending).await?;
                // Read anew, after the TRUNCATE: above its fence.
                version = read_position(client, ctx.params, ctx.pipeline, &what).await?;
                continue;
            }
            Sent::Yes => {}
        }
        if chunk.rows < ctx.chunk_rows {
            finish(ctx, &j).await?;
            return Ok(Copied::Done);
        }
        after = chunk.last_key;
        let recorded = record_later(
            ctx,
            &j,
            TableCopy::Copying {
                after: after.clone().unwrap_or_default(),
            },
        )
        .await?;
        unrecorded.push(recorded).await?;
        log_progress(ctx, &j, &mut logged);
    }
}

/// Copies range `i` of `run` (resuming after its last recorded chunk); `true` when it was
/// the table's last range not done (the table's copy is then recorded done).
pub(crate) async fn copy_range(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    run: &TableRun,
    i: usize,
) -> Result<bool, BackfillError> {
    let j = &run.job;
    let what = what(j);
    let (mut after, hi) = {
        let r = &run.ranges.lock().await[i];
        (r.after().cloned(), r.hi.clone())
    };
    let mut version = run.version;
    let mut unrecorded = Unrecorded::default();
    loop {
        let chunk = copy_chunk(ctx, client, j, after.as_ref(), hi.as_ref(), version).await?;
        match chunk.outcome {
            Sent::SchemaChanged => continue,
            Sent::Truncated => {
                // This range starts over, above the TRUNCATE's fence; a range done before it
                // has nothing to take again (its rows were sent before the TRUNCATE, and
                // every row added since streams).
                tracing::info!(pipeline = %ctx.pipeline, table = %what, "TRUNCATE streamed during the copy: the range starts over");
                version = read_position(client, ctx.params, ctx.pipeline, &what).await?;
                let (from, recorded) = record_range(ctx, run, i, |r| r.at = None).await?;
                after = from;
                unrecorded.push(recorded).await?;
                continue;
            }
            Sent::Yes => {}
        }
        if chunk.rows < ctx.chunk_rows {
            record_range(ctx, run, i, |r| r.done = true).await?;
            let last = run.left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1;
            if last {
                finish(ctx, j).await?;
            }
            return Ok(last);
        }
        after = chunk.last_key.clone();
        let (_, recorded) = record_range(ctx, run, i, |r| r.at = chunk.last_key.clone()).await?;
        unrecorded.push(recorded).await?;
        if let Ok(mut logged) = run.logged.lock() {
            log_progress(ctx, j, &mut logged);
        }
    }
}

/// Changes range `i` of `run` as `f` says and records every range (see [`record_later`]);
/// where the range's next chunk starts.
async fn record_range(
    ctx: &Ctx<'_>,
    run: &TableRun,
    i: usize,
    f: impl FnOnce(&mut RangeCopy),
) -> Result<(Option<Vec<String>>, Recorded), BackfillError> {
    let mut ranges = run.ranges.lock().await;
    f(&mut ranges[i]);
    let recorded = record_later(ctx, &run.job, TableCopy::Ranges(ranges.clone())).await?;
    Ok((ranges[i].after().cloned(), recorded))
}

/// Said once a record sent with [`record_later`] is in the state.
type Recorded = tokio::sync::oneshot::Receiver<()>;

/// Chunks a copy may read ahead of its last record in the state: what a crash makes it read
/// again (the records land with the sink's flushes, by size or `batch.max_age`). Two held
/// one worker back (a flush and its record take longer than two default chunks are read:
/// 455k against 618k rows/s in the snapshot bench, one worker).
const RECORDS_AHEAD: usize = 4;

/// A copy's records not yet in the state, oldest first.
#[derive(Default)]
struct Unrecorded(std::collections::VecDeque<Recorded>);

impl Unrecorded {
    /// Adds one; waits while more than [`RECORDS_AHEAD`] are out.
    async fn push(&mut self, r: Recorded) -> Result<(), BackfillError> {
        self.0.push_back(r);
        while self.0.len() > RECORDS_AHEAD {
            let oldest = self.0.pop_front().expect("more than one");
            match tokio::time::timeout(Duration::from_secs(600), oldest).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(BackfillError::Sink(
                        "the sink stopped before the copy's progress was recorded".into(),
                    ))
                }
                Err(_) => {
                    return Err(BackfillError::Sink(
                        "the copy's progress was not recorded within 10 minutes".into(),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Up to `RANGES_PER_WORKER` per worker key bounds splitting the job's table into ranges of
/// about a chunk or more each, from a sample of its pages (`TABLESAMPLE SYSTEM`); none when
/// the table holds under two chunks.
async fn range_bounds(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    j: &Job,
    pages: i64,
) -> Result<Vec<Vec<String>>, BackfillError> {
    if pages <= 0 {
        return Ok(Vec::new());
    }
    let s: SharedSchema = ctx
        .shared
        .schema(j.schema.rel_id)
        .unwrap_or_else(|| j.schema.clone());
    let keys: Vec<String> = s
        .key_indexes()
        .iter()
        .map(|&i| pg_ident(&s.columns[i].name))
        .collect();
    let buckets = (ctx.workers * RANGES_PER_WORKER).max(2);
    let percent = (100.0 * SAMPLE_PAGES as f64 / pages as f64).min(100.0);
    let (from_schema, from_name) = source_of(j);
    let sql = format!(
        "SELECT DISTINCT ON (b) n, {texts} FROM (SELECT {list}, ntile({buckets}) OVER (ORDER BY {list}) AS b, count(*) OVER () AS n \
           FROM {}.{} TABLESAMPLE SYSTEM ({percent:.6}){filter}) s \
         ORDER BY b, {desc}",
        pg_ident(from_schema),
        pg_ident(from_name),
        texts = keys
            .iter()
            .map(|k| format!("{k}::text"))
            .collect::<Vec<_>>()
            .join(", "),
        list = keys.join(", "),
        filter = j
            .filter
            .as_ref()
            .map(|f| format!(" WHERE ({f})"))
            .unwrap_or_default(),
        desc = keys
            .iter()
            .map(|k| format!("{k} DESC"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let rows = client
        .query(sql.as_str(), &[])
        .await
        .map_err(|e| BackfillError::Pg(PgError::client(ctx.params.addr(), e)))?;
    let sampled: i64 = rows.first().map_or(0, |r| r.get(0));
    // The last bucket's highest key bounds nothing.
    let maxima: Vec<Vec<String>> = rows
        .iter()
        .take(rows.len().saturating_sub(1))
        .map(|r| (1..=keys.len()).map(|c| r.get::<_, String>(c)).collect())
        .collect();
    let rows_estimate = sampled as f64 * 100.0 / percent;
    let wanted = (rows_estimate / ctx.chunk_rows.max(1) as f64) as usize;
    Ok(pick_bounds(maxima, wanted.min(buckets)))
}

/// Of the ascending `bounds` (each the highest key of one of `bounds.len() + 1` buckets),
/// those that split the table into `ranges` ranges of about equal size; none under two.
fn pick_bounds(bounds: Vec<Vec<String>>, ranges: usize) -> Vec<Vec<String>> {
    let buckets = bounds.len() + 1;
    let ranges = ranges.min(buckets);
    if ranges < 2 {
        return Vec::new();
    }
    (1..ranges)
        .map(|i| bounds[i * buckets / ranges - 1].clone())
        .collect()
}

/// Copies the rows of the repair's keys, then deletes those of its keys Postgres no longer
/// has (see [`Repair`]); what was done.
async fn repair(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    j: &Job,
    r: &Repair,
) -> Result<String, BackfillError> {
    let what = what(j);
    let rel = j.schema.rel_id;
    let mut version = read_position(client, ctx.params, ctx.pipeline, &what).await?;
    progress(ctx, &j.display(), &|p| {
        p.state = CopyState::Copying;
        p.estimate = r.keys.len() as u64;
        p.started = Some(std::time::Instant::now());
        p.rows = 0;
    });
    let mut copied = 0;
    let mut after: Option<Vec<String>> = None;
    while !r.keys.is_empty() {
        let chunk = copy_chunk(ctx, client, j, after.as_ref(), None, version).await?;
        match chunk.outcome {
            Sent::SchemaChanged => continue,
            Sent::Truncated => {
                // Read anew, above the TRUNCATE's fence.
                after = None;
                copied = 0;
                version = read_position(client, ctx.params, ctx.pipeline, &what).await?;
                continue;
            }
            Sent::Yes => {}
        }
        copied += chunk.rows;
        if chunk.rows < ctx.chunk_rows {
            break;
        }
        after = chunk.last_key;
    }
    let deleted = if r.purge.is_empty() {
        0
    } else {
        ctx.edge
            .call(
                |reply| SinkMsg::Purge {
                    rel,
                    below: version,
                    only: Some(r.purge.clone()),
                    reply,
                },
                Duration::from_secs(600),
            )
            .await?
            .map_err(BackfillError::Sink)?
    };
    progress(ctx, &j.display(), &|p| {
        p.state = CopyState::Done;
        p.seconds = p.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    });
    tracing::info!(pipeline = %ctx.pipeline, table = %what, keys = r.purge.len(), copied, deleted, "repair complete");
    Ok(format!(
        "repair of {what}: {copied} row(s) copied from Postgres, {deleted} deleted from ClickHouse"
    ))
}

/// Records the job's copy done (a resync's rows left over deleted first) and shows it.
async fn finish(ctx: &Ctx<'_>, j: &Job) -> Result<(), BackfillError> {
    let what = what(j);
    let rel = j.schema.rel_id;
    if let Some(below) = j.purge_below {
        let purged = ctx
            .edge
            .call(
                |reply| SinkMsg::Purge {
                    rel,
                    below,
                    only: None,
                    reply,
                },
                Duration::from_secs(3600),
            )
            .await?
            .map_err(BackfillError::Sink)?;
        tracing::info!(pipeline = %ctx.pipeline, table = %what, deleted = purged, "resync complete");
    }
    record(ctx, j, TableCopy::Done).await?;
    let mut rows = 0;
    progress(ctx, &j.display(), &|p| {
        p.state = CopyState::Done;
        p.seconds = p.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    });
    if let Ok(copies) = ctx.counters.copies.lock() {
        rows = copies.get(&j.display()).map_or(0, |p| p.rows);
    }
    tracing::info!(pipeline = %ctx.pipeline, table = %what, rows, "table copied");
    Ok(())
}

/// The table's progress as `/status` shows it, changed by `f`.
fn progress(ctx: &Ctx<'_>, shown: &str, f: &dyn Fn(&mut CopyProgress)) {
    if let Ok(mut copies) = ctx.counters.copies.lock() {
        f(copies
            .entry(shown.to_string())
            .or_insert_with(CopyProgress::queued));
    }
}

/// Logs the job's progress if it was last logged `PROGRESS_EVERY` ago.
fn log_progress(ctx: &Ctx<'_>, j: &Job, logged: &mut std::time::Instant) {
    if logged.elapsed() < PROGRESS_EVERY {
        return;
    }
    *logged = std::time::Instant::now();
    let now = ctx
        .counters
        .copies
        .lock()
        .ok()
        .and_then(|c| c.get(&j.display()).cloned());
    if let Some(p) = now {
        tracing::info!(pipeline = %ctx.pipeline, table = %what(j), rows = p.rows, estimated = p.estimate,
            rows_per_s = p.rate().round() as u64, eta_s = p.eta_s().unwrap_or(0), "copy progress");
    }
}

/// The job as logs name it.
fn what(j: &Job) -> String {
    match &j.partition {
        Some(p) => format!(
            "partition {}.{} of {}",
            p.schema,
            p.name,
            j.schema.qualified()
        ),
        None => j.schema.qualified(),
    }
}

/// Where the job's rows are read: an attached partition from itself, a table from itself.
fn source_of(j: &Job) -> (&str, &str) {
    match &j.partition {
        Some(p) => (p.schema.as_str(), p.name.as_str()),
        None => (j.schema.schema.as_str(), j.schema.name.as_str()),
    }
}

/// One chunk read and sent.
struct Chunk {
    rows: usize,
    last_key: Option<Vec<String>>,
    outcome: Sent,
}

/// Reads and sends up to a chunk of the job's rows with a key above `after` and up to `hi`,
/// in key order, as snapshot rows at `version`; stops at the first message not sent.
async fn copy_chunk(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    j: &Job,
    after: Option<&Vec<String>>,
    hi: Option<&Vec<String>>,
    version: u64,
) -> Result<Chunk, BackfillError> {
    let rel = j.schema.rel_id;
    let types = ctx.shared.types(rel).unwrap_or_default();
    let generation = ctx.shared.generation(rel);
    // The columns the sink expects now: a schema change streamed during the copy (ADD
    // COLUMN, say) applies from the next chunk on.
    let s: SharedSchema = ctx.shared.schema(rel).unwrap_or_else(|| j.schema.clone());
    let keys: Vec<&str> = s
        .key_indexes()
        .iter()
        .map(|&i| s.columns[i].name.as_str())
        .collect();
    let key_list: Vec<String> = keys.iter().map(|k| pg_ident(k)).collect();
    let key_list = key_list.join(", ");
    let filter: Vec<String> = j.filter.iter().map(|f| format!("({f})")).collect();
    let key_literal = |key: &Vec<String>| {
        keys.iter()
            .zip(key)
            .map(|(k, v)| typed_literal(v, types.get(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keys_in = |these: &[Vec<String>]| {
        let rows: Vec<String> = these
            .iter()
            .map(|k| format!("({})", key_literal(k)))
            .collect();
        format!("({key_list}) IN ({})", rows.join(", "))
    };
    let mut conds = filter.clone();
    if let Some(a) = after {
        conds.push(format!("({key_list}) > ({})", key_literal(a)));
    }
    if let Some(h) = hi {
        conds.push(format!("({key_list}) <= ({})", key_literal(h)));
    }
    let read = Read {
        j,
        s: &s,
        generation,
        key_list: &key_list,
        version,
    };
    if let Some(r) = &j.repair {
        conds.push(keys_in(&r.keys));
        return copy_rows(ctx, client, &read, &conds).await;
    }
    let Some((cols, fast)) = passthrough_of(ctx, &s, version).await? else {
        return copy_rows(ctx, client, &read, &conds).await;
    };
    let mut chunk = match fast {
        Fast::Binary(plan) => copy_binary(ctx, client, &read, cols, &plan, &conds).await?,
        Fast::Text(list) => copy_through(ctx, client, &read, cols, &list, &conds).await?,
    };
    if chunk.done.outcome != Sent::Yes || chunk.marked.is_empty() {
        return Ok(chunk.done);
    }
    // The rows Postgres could not write for ClickHouse: read again the ordinary way, where
    // the encoder clamps or counts their values.
    if chunk.marked.len() > MARKED_ENOUGH && chunk.marked.len() * 100 > chunk.done.rows {
        tracing::info!(pipeline = %ctx.pipeline, table = %j.display(), marked = chunk.marked.len(), rows = chunk.done.rows,
            "many rows with values outside ClickHouse's range: the table's copy goes on without passthrough");
        ctx.shared.passthrough_off(&s);
    }
    for these in chunk.marked.chunks(MARKED_PER_READ) {
        let mut conds = filter.clone();
        conds.push(keys_in(these));
        let again = copy_rows(ctx, client, &read, &conds).await?;
        if again.outcome != Sent::Yes {
            chunk.done.outcome = again.outcome;
            break;
        }
    }
    Ok(chunk.done)
}

/// Marked rows of a chunk read again in one statement at most.
const MARKED_PER_READ: usize = 1000;
/// Marked rows in one chunk above which (and above 1 % of it) a table's copy goes on without
/// passthrough.
const MARKED_ENOUGH: usize = 100;

/// What a chunk's statements share.
struct Read<'a> {
    j: &'a Job,
    s: &'a SharedSchema,
    generation: u64,
    key_list: &'a str,
    version: u64,
}

impl Read<'_> {
    /// The chunk's statement: `select` of the job's rows under `conds`, in key order.
    fn sql(&self, select: &str, conds: &[String], limit: usize) -> String {
        self.sql_as(select, conds, limit, "")
    }

    /// [`Read::sql`] with COPY options (`options`: empty, or ` (FORMAT binary)`).
    fn sql_as(&self, select: &str, conds: &[String], limit: usize, options: &str) -> String {
        let (from_schema, from_name) = source_of(self.j);
        format!(
            "COPY (SELECT {select} FROM {}.{}{} ORDER BY {} LIMIT {limit}) TO STDOUT{options}",
            pg_ident(from_schema),
            pg_ident(from_name),
            if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            },
            self.key_list,
        )
    }

    /// The key (Postgres text) of a COPY line (without its newline) whose first columns are
    /// the table's.
    fn key_of_line(
        &self,
        ctx: &Ctx<'_>,
        line: &bytes::Bytes,
    ) -> Result<Vec<String>, BackfillError> {
        let mut cells = Vec::with_capacity(self.s.columns.len() + 2);
        catalog::parse_copy_line_shared(line, &mut cells).ok_or_else(|| unreadable(ctx, self.s))?;
        Ok(key_of(self.s, &cells))
    }
}

fn unreadable(ctx: &Ctx<'_>, s: &TableSchema) -> BackfillError {
    BackfillError::Pg(PgError::Protocol {
        addr: ctx.params.addr(),
        message: format!("unreadable COPY line in {}", s.qualified()),
    })
}

/// How a chunk reaches ClickHouse without being decoded into values.
enum Fast {
    /// Postgres's binary COPY, written as RowBinary (see `protocol::rowbinary`).
    Binary(BinaryCopy),
    /// Postgres writes ClickHouse's TabSeparated: the select list (see `protocol::passthrough`).
    Text(String),
}

/// The sink's columns of table `s` and how its copy goes without decoding: binary where
/// every column has a binary form, else passthrough where it can; asked of the sink once
/// per schema.
async fn passthrough_of(
    ctx: &Ctx<'_>,
    s: &SharedSchema,
    version: u64,
) -> Result<Option<(Arc<Vec<ChColumn>>, Fast)>, BackfillError> {
    let cols = match ctx.shared.passthrough_known(s) {
        Some(known) => known,
        None => {
            let rel = s.rel_id;
            let answer = ctx
                .edge
                .call(|r| SinkMsg::Columns(rel, r), Duration::from_secs(600))
                .await?;
            match answer {
                // The columns of this schema (the stream may have sent it and the sink not
                // taken it in yet: then they are another schema's, and this chunk goes the
                // ordinary way; the next one asks again).
                Some((made_from, cols)) if *made_from == **s => {
                    ctx.shared.passthrough_set(s, Some(cols.clone()));
                    let not_binary = if cols.exact {
                        rowbinary::not_binary_because(&s.columns, &cols.cols)
                    } else {
                        Some("ClickHouse's table has other column types than the mapping's (wider, or Nullable)".into())
                    };
                    match (
                        &not_binary,
                        passthrough::ordinary_because(&s.columns, &cols.cols),
                    ) {
                        (None, _) => {
                            tracing::info!(pipeline = %ctx.pipeline, table = %s.qualified(),
                            "the table's copy is binary: Postgres's binary COPY goes to ClickHouse as RowBinary")
                        }
                        (Some(binary), None) => {
                            tracing::info!(pipeline = %ctx.pipeline, table = %s.qualified(), not_binary = %binary,
                            "the table's copy passes through: Postgres writes ClickHouse's rows")
                        }
                        (Some(_), Some(why)) => {
                            tracing::info!(pipeline = %ctx.pipeline, table = %s.qualified(), reason = %why,
                            "the table is copied the ordinary way")
                        }
                    }
                    Some(cols)
                }
                Some(_) => None,
                None => {
                    ctx.shared.passthrough_set(s, None);
                    None
                }
            }
        }
    };
    Ok(cols.and_then(|c| {
        if let Some(plan) = rowbinary::plan(&s.columns, &c.cols).filter(|_| c.exact) {
            return Some((c.cols, Fast::Binary(plan)));
        }
        passthrough::select_list(&s.columns, &c.cols, version).map(|l| (c.cols, Fast::Text(l)))
    }))
}

/// A chunk read in passthrough, and the keys of its marked rows (not sent).
struct Through {
    done: Chunk,
    marked: Vec<Vec<String>>,
}

impl Through {
    fn new(
        rows: usize,
        last_key: Option<Vec<String>>,
        outcome: Sent,
        marked: Vec<Vec<String>>,
    ) -> Self {
        let done = Chunk {
            rows,
            last_key,
            outcome,
        };
        Through { done, marked }
    }
}

/// Reads a chunk with Postgres writing ClickHouse's rows (`list`) and sends them as they
/// come, in blocks; keeps the keys of the rows marked for the ordinary way.
async fn copy_through(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    read: &Read<'_>,
    cols: Arc<Vec<ChColumn>>,
    list: &str,
    conds: &[String],
) -> Result<Through, BackfillError> {
    use futures_util::StreamExt;
    let pg = |e: tokio_postgres::Error| BackfillError::Pg(PgError::client(ctx.params.addr(), e));
    let sql = read.sql(list, conds, ctx.chunk_rows);
    let stream = client.copy_out(sql.as_str()).await.map_err(pg)?;
    futures_util::pin_mut!(stream);
    let mut block = bytes::BytesMut::new();
    let (mut in_block, mut n) = (0usize, 0usize);
    let mut marked = Vec::new();
    let mut last_line = bytes::Bytes::new();
    let mut last_key: Option<Vec<String>> = None;
    let mut partial = bytes::BytesMut::new();
    while let Some(buf) = stream.next().await {
        partial.extend_from_slice(&buf.map_err(pg)?);
        while let Some(pos) = memchr::memchr(b'\n', &partial) {
            let line = partial.split_to(pos + 1).freeze();
            n += 1;
            // The last column: 1 for a row to read again the ordinary way.
            if line.ends_with(b"\t1\n") {
                marked.push(read.key_of_line(ctx, &line.slice(..pos))?);
            } else {
                block.extend_from_slice(&line);
                in_block += 1;
            }
            last_line = line;
            if in_block < ctx.message_rows && block.len() < ctx.message_bytes {
                continue;
            }
            last_key = Some(read.key_of_line(ctx, &last_line.slice(..last_line.len() - 1))?);
            let body = block.split().freeze();
            let outcome =
                send_block(ctx, read, &cols, in_block, RowForm::TabSeparated, body).await?;
            if outcome != Sent::Yes {
                return Ok(Through::new(n, last_key, outcome, marked));
            }
            in_block = 0;
        }
    }
    if !partial.is_empty() {
        return Err(unreadable(ctx, read.s));
    }
    if n > 0 {
        last_key = Some(read.key_of_line(ctx, &last_line.slice(..last_line.len() - 1))?);
    }
    let body = block.freeze();
    let outcome = last_block(ctx, read, &cols, in_block, RowForm::TabSeparated, body).await?;
    Ok(Through::new(n, last_key, outcome, marked))
}

/// Reads a chunk as Postgres's binary COPY and sends its rows as RowBinary (`plan`) as they
/// come, in blocks; keeps the keys of the rows marked for the ordinary way.
async fn copy_binary(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    read: &Read<'_>,
    cols: Arc<Vec<ChColumn>>,
    plan: &BinaryCopy,
    conds: &[String],
) -> Result<Through, BackfillError> {
    use futures_util::StreamExt;
    let pg = |e: tokio_postgres::Error| BackfillError::Pg(PgError::client(ctx.params.addr(), e));
    let bad = |e: rowbinary::CopyError| {
        BackfillError::Pg(PgError::Protocol {
            addr: ctx.params.addr(),
            message: format!("{} of {}", e, read.s.qualified()),
        })
    };
    let sql = read.sql_as(
        plan.select_list(),
        conds,
        ctx.chunk_rows,
        " (FORMAT binary)",
    );
    let stream = client.copy_out(sql.as_str()).await.map_err(pg)?;
    futures_util::pin_mut!(stream);
    let mut reader = rowbinary::CopyReader::default();
    let (mut fields, mut last_fields) = (Vec::new(), Vec::new());
    let mut last = Vec::new();
    let mut block = Vec::with_capacity(ctx.message_bytes + ctx.message_bytes / 4);
    let (mut in_block, mut n) = (0usize, 0usize);
    let mut marked = Vec::new();
    let mut last_key: Option<Vec<String>> = None;
    while let Some(buf) = stream.next().await {
        reader.push(&buf.map_err(pg)?);
        while let Some(tuple) = reader.next_tuple(&mut fields).map_err(bad)? {
            n += 1;
            if plan
                .write_row(tuple, &fields, read.version, &mut block)
                .map_err(bad)?
                == rowbinary::Row::Marked
            {
                marked.push(plan.key_of(tuple, &fields).map_err(bad)?);
            } else {
                in_block += 1;
            }
            if in_block < ctx.message_rows && block.len() < ctx.message_bytes {
                // The chunk's last row, for its key at the end.
                last.clear();
                last.extend_from_slice(tuple);
                last_fields.clone_from(&fields);
                continue;
            }
            last_key = Some(plan.key_of(tuple, &fields).map_err(bad)?);
            last.clear();
            let body = bytes::Bytes::from(std::mem::replace(
                &mut block,
                Vec::with_capacity(ctx.message_bytes + ctx.message_bytes / 4),
            ));
            let outcome = send_block(ctx, read, &cols, in_block, RowForm::RowBinary, body).await?;
            if outcome != Sent::Yes {
                return Ok(Through::new(n, last_key, outcome, marked));
            }
            in_block = 0;
        }
    }
    if !reader.ended() {
        return Err(unreadable(ctx, read.s));
    }
    if !last.is_empty() {
        last_key = Some(plan.key_of(&last, &last_fields).map_err(bad)?);
    }
    let body = bytes::Bytes::from(block);
    let outcome = last_block(ctx, read, &cols, in_block, RowForm::RowBinary, body).await?;
    Ok(Through::new(n, last_key, outcome, marked))
}

/// A chunk's last block, when it has rows: [`send_block`].
async fn last_block(
    ctx: &Ctx<'_>,
    read: &Read<'_>,
    cols: &Arc<Vec<ChColumn>>,
    rows: usize,
    form: RowForm,
    body: bytes::Bytes,
) -> Result<Sent, BackfillError> {
    if rows == 0 {
        return Ok(Sent::Yes);
    }
    send_block(ctx, read, cols, rows, form, body).await
}

/// Sends `rows` rows in ClickHouse's `form` as one block, and counts them once sent.
async fn send_block(
    ctx: &Ctx<'_>,
    read: &Read<'_>,
    cols: &Arc<Vec<ChColumn>>,
    rows: usize,
    form: RowForm,
    body: bytes::Bytes,
) -> Result<Sent, BackfillError> {
    let rel = read.s.rel_id;
    let item = ChangeItem::Block {
        rel_id: rel,
        columns: cols.clone(),
        rows,
        version: read.version,
        form,
        body,
    };
    let outcome = send(ctx, rel, Some((read.generation, read.s)), vec![item]).await?;
    if outcome == Sent::Yes {
        PipelineCounters::add(&ctx.counters.snapshot_rows, rows as u64);
        PipelineCounters::add(&ctx.counters.snapshot_rows_passthrough, rows as u64);
        if form == RowForm::RowBinary {
            PipelineCounters::add(&ctx.counters.snapshot_rows_binary, rows as u64);
        }
        progress(ctx, &read.j.display(), &|p| p.rows += rows as u64);
    }
    Ok(outcome)
}

/// Reads a chunk of the job's rows under `conds` (up to a chunk's worth, in key order) and
/// sends them as row changes, a message at a time.
async fn copy_rows(
    ctx: &Ctx<'_>,
    client: &tokio_postgres::Client,
    read: &Read<'_>,
    conds: &[String],
) -> Result<Chunk, BackfillError> {
    use futures_util::StreamExt;
    let s = read.s;
    let rel = s.rel_id;
    let (version, generation) = (read.version, read.generation);
    let pg = |e: tokio_postgres::Error| BackfillError::Pg(PgError::client(ctx.params.addr(), e));
    let cols: Vec<String> = s.columns.iter().map(|c| pg_ident(&c.name)).collect();
    let sql = read.sql(&cols.join(", "), conds, ctx.chunk_rows);
    let stream = client.copy_out(sql.as_str()).await.map_err(pg)?;
    futures_util::pin_mut!(stream);
    let shown = read.j.display();
    let sent = |k: usize| {
        PipelineCounters::add(&ctx.counters.snapshot_rows, k as u64);
        progress(ctx, &shown, &|p| p.rows += k as u64);
    };
    // Sent as read, a message at a time: memory holds one message, however wide the rows.
    let mut batch: Vec<ChangeItem> = Vec::new();
    let (mut batch_bytes, mut n) = (0usize, 0usize);
    let mut last_key: Option<Vec<String>> = None;
    // Lines are split off the read buffer without a copy; their plain fields are slices of it.
    let mut partial = bytes::BytesMut::new();
    while let Some(buf) = stream.next().await {
        partial.extend_from_slice(&buf.map_err(pg)?);
        while let Some(pos) = memchr::memchr(b'\n', &partial) {
            let line = partial.split_to(pos + 1).freeze();
            let mut cells = Vec::with_capacity(s.columns.len());
            catalog::parse_copy_line_shared(&line.slice(..pos), &mut cells)
                .ok_or_else(|| unreadable(ctx, s))?;
            batch_bytes += pos;
            n += 1;
            batch.push(ChangeItem::row(
                rel,
                RowOp::Snapshot,
                version,
                cells,
                (0, 0),
            ));
            if batch.len() >= ctx.message_rows || batch_bytes >= ctx.message_bytes {
                let k = batch.len();
                // Of a message's last row only (a key's text costs an allocation).
                last_key = last_key_of(s, &batch).or(last_key);
                let outcome =
                    send(ctx, rel, Some((generation, s)), std::mem::take(&mut batch)).await?;
                if outcome != Sent::Yes {
                    return Ok(Chunk {
                        rows: n,
                        last_key,
                        outcome,
                    });
                }
                batch_bytes = 0;
                sent(k);
            }
        }
    }
    let mut outcome = Sent::Yes;
    if !batch.is_empty() {
        let k = batch.len();
        last_key = last_key_of(s, &batch).or(last_key);
        outcome = send(ctx, rel, Some((generation, s)), batch).await?;
        if outcome == Sent::Yes {
            sent(k);
        }
    }
    Ok(Chunk {
        rows: n,
        last_key,
        outcome,
    })
}

/// The key of the last row of `batch`.
fn last_key_of(s: &TableSchema, batch: &[ChangeItem]) -> Option<Vec<String>> {
    match batch.last()? {
        ChangeItem::Row { change, .. } => Some(key_of(s, &change.cells)),
        _ => None,
    }
}

/// The key columns' values of a copied row, in key order (Postgres text).
fn key_of(s: &TableSchema, cells: &[Cell]) -> Vec<String> {
    s.key_indexes()
        .iter()
        .map(|&i| match cells.get(i) {
            Some(Cell::Text(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        })
        .collect()
}

/// Whether a copy's message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Yes,
    /// Not sent: a TRUNCATE streamed since the rows were read (the copy starts over).
    Truncated,
    /// Not sent: the stream sent another schema of the table since (the chunk is read again).
    SchemaChanged,
}

/// Sends `items` with the send lock held; with `read_under` (the table's generation and
/// schema when the rows were read), only while the table is still in both (a streamed
/// TRUNCATE moves its generation on, a streamed schema change its schema).
pub(crate) async fn send(
    ctx: &Ctx<'_>,
    rel: u32,
    read_under: Option<(u64, &SharedSchema)>,
    items: Vec<ChangeItem>,
) -> Result<Sent, BackfillError> {
    let _held = ctx.shared.send_lock.lock().await;
    if let Some((generation, schema)) = read_under {
        if generation != ctx.shared.generation(rel) {
            return Ok(Sent::Truncated);
        }
        if ctx
            .shared
            .schema(rel)
            .is_some_and(|now| !std::sync::Arc::ptr_eq(&now, schema))
        {
            return Ok(Sent::SchemaChanged);
        }
    }
    let trace = tracing::info_span!(parent: None, "cdc.backfill", pipeline = %ctx.pipeline, rows = items.len());
    let queue_span = tracing::info_span!(parent: &trace, "edge.queue");
    let chunk = ChangeChunk {
        items,
        commit: None,
        commit_times: Vec::new(),
        caught_up: false,
        trace,
        queue_span,
    };
    ctx.edge
        .send(move |permit| SinkMsg::Changes(chunk, permit))
        .await?;
    Ok(Sent::Yes)
}

/// Records the table's copy once the sink has written everything sent before (the state
/// write flushes first).
async fn record(ctx: &Ctx<'_>, j: &Job, copy: TableCopy) -> Result<(), BackfillError> {
    let value = copy.format(ctx.incarnation).unwrap_or_default();
    let mut entries = vec![(j.state_key(), value)];
    // A resync is over once its copy is complete (and the rows left over are deleted).
    if copy == TableCopy::Done && j.purge_below.is_some() {
        entries.push((resync_key(&j.schema.qualified()), String::new()));
    }
    // A partition copied is one the table's copy now covers.
    if let (Some(p), TableCopy::Done) = (&j.partition, &copy) {
        entries.push(
            ctx.shared
                .partition_covered(&j.schema, p.oid, true, ctx.incarnation),
        );
    }
    ctx.edge
        .call(
            |r| SinkMsg::WriteState(entries, r),
            Duration::from_secs(600),
        )
        .await?
        .map_err(BackfillError::Sink)
}

/// Records a chunk's progress with the sink's next flush (the one that writes the chunk or
/// a later one), without waiting: the copy reads on, and the sink's inserts keep their size.
async fn record_later(ctx: &Ctx<'_>, j: &Job, copy: TableCopy) -> Result<Recorded, BackfillError> {
    let value = copy.format(ctx.incarnation).unwrap_or_default();
    let entries = vec![(j.state_key(), value)];
    let (tell, recorded) = tokio::sync::oneshot::channel();
    ctx.edge
        .send(move |permit| SinkMsg::RecordState(entries, permit, tell))
        .await?;
    Ok(recorded)
}

/// The state key of a resync of table `qualified` under way: `resync:<schema>.<table>` =
/// `<incarnation>|<version>` (the version below which rows left over are deleted at its end).
pub fn resync_key(qualified: &str) -> String {
    format!("resync:{qualified}")
}

/// The version of a resync recorded in `incarnation`.
pub fn parse_resync(value: Option<&str>, incarnation: &str) -> Option<u64> {
    value?
        .strip_prefix(incarnation)?
        .strip_prefix('|')?
        .parse()
        .ok()
}

/// The state entry of the partitions a partitioned table's copy covers:
/// `partitions:<schema>.<table>` = `<incarnation>|<oid>,<oid>…`.
pub fn partitions_entry(
    qualified: &str,
    incarnation: &str,
    oids: &std::collections::BTreeSet<u32>,
) -> (String, String) {
    let list: Vec<String> = oids.iter().map(|o| o.to_string()).collect();
    (
        format!("partitions:{qualified}"),
        format!("{incarnation}|{}", list.join(",")),
    )
}

/// The partitions recorded by [`partitions_entry`] in `incarnation` (`None`: none recorded in
/// it).
pub fn parse_partitions(
    value: Option<&str>,
    incarnation: &str,
) -> Option<std::collections::BTreeSet<u32>> {
    let list = value?.strip_prefix(incarnation)?.strip_prefix('|')?;
    Some(list.split(',').filter_map(|o| o.parse().ok()).collect())
}

/// `'text'::type`, or the bare literal where the type is not known.
fn typed_literal(v: &str, ty: Option<&String>) -> String {
    match ty {
        Some(t) => format!("{}::{t}", pg_literal(v)),
        None => pg_literal(v),
    }
}

/// Fills the unchanged TOAST values of a streamed change of a table being copied, from the
/// row as Postgres has it now (the sink may not have the row yet: its chunk may come later).
/// A value newer than the change is corrected by the later change that set it; a row gone
/// since is deleted by a later change. Left unfilled when the row is gone.
pub async fn fill_unchanged_toast(
    client: &tokio_postgres::Client,
    params: &PgParams,
    shared: &CopyShared,
    schema: &TableSchema,
    change: &mut RowChange,
) -> Result<(), PgError> {
    let missing = change.unchanged_toast();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(types) = shared.types(schema.rel_id) else {
        return Ok(());
    };
    let mut conds = Vec::new();
    for i in schema.key_indexes() {
        let c = &schema.columns[i];
        match change.cells.get(i) {
            Some(Cell::Text(v)) => conds.push(format!(
                "{} = {}",
                pg_ident(&c.name),
                typed_literal(&String::from_utf8_lossy(v), types.get(&c.name))
            )),
            _ => return Ok(()),
        }
    }
    let cols: Vec<String> = missing
        .iter()
        .map(|&i| format!("{}::text", pg_ident(&schema.columns[i].name)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{} WHERE {}",
        cols.join(", "),
        pg_ident(&schema.schema),
        pg_ident(&schema.name),
        conds.join(" AND ")
    );
    let row = client
        .query_opt(sql.as_str(), &[])
        .await
        .map_err(|e| PgError::client(params.addr(), e))?;
    if let Some(r) = row {
        for (k, &i) in missing.iter().enumerate() {
            let v: Option<String> = r.get(k);
            change.cells[i] = match v {
                Some(v) => Cell::Text(bytes::Bytes::from(v)),
                None => Cell::Null,
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_lists_round_trip_in_their_incarnation() {
        let set: std::collections::BTreeSet<u32> = [5, 3].into_iter().collect();
        let (k, v) = partitions_entry("public.p", "s@0/1", &set);
        assert_eq!(
            (k.as_str(), v.as_str()),
            ("partitions:public.p", "s@0/1|3,5")
        );
        assert_eq!(parse_partitions(Some(&v), "s@0/1"), Some(set));
        assert_eq!(parse_partitions(Some(&v), "s@0/2"), None);
        assert_eq!(parse_partitions(None, "s@0/1"), None);
        let empty = partitions_entry("public.p", "s@0/1", &Default::default()).1;
        assert_eq!(
            parse_partitions(Some(&empty), "s@0/1"),
            Some(Default::default())
        );
    }

    #[test]
    fn bounds_split_into_even_ranges() {
        let b =
            |v: &[&str]| -> Vec<Vec<String>> { v.iter().map(|k| vec![k.to_string()]).collect() };
        // Eight buckets (seven bounds) into four ranges: every second bound.
        let seven = b(&["1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(pick_bounds(seven.clone(), 4), b(&["2", "4", "6"]));
        assert_eq!(pick_bounds(seven.clone(), 8), seven);
        // More ranges than buckets: one per bucket.
        assert_eq!(pick_bounds(b(&["1", "2"]), 8), b(&["1", "2"]));
        // Under two ranges (a table of under two chunks, or an empty sample): none.
        assert!(pick_bounds(seven, 1).is_empty());
        assert!(pick_bounds(Vec::new(), 4).is_empty());
    }

    #[test]
    fn literals_are_quoted_and_typed() {
        assert_eq!(
            typed_literal("it's", Some(&"text".to_string())),
            "'it''s'::text"
        );
        assert_eq!(typed_literal("5", None), "'5'");
    }

    #[test]
    fn a_truncate_moves_only_tables_being_copied() {
        let shared = CopyShared::default();
        shared.tables.lock().unwrap().insert(
            7,
            Copying {
                generation: 0,
                types: HashMap::new(),
                jobs: 1,
            },
        );
        shared.truncating(&[ChangeItem::Truncate {
            rels: vec![7, 8],
            lsn: 1,
            xid: 1,
            commit_us: 0,
        }]);
        assert_eq!(shared.generation(7), 1);
        assert!(!shared.tables.lock().unwrap().contains_key(&8));
        assert!(shared.any());
    }
}
