//! The Kafka source of a CDC pipeline: a consumer group member that reads Debezium topics
//! (written by tributary's Kafka sink or by a real Debezium) and feeds the ClickHouse sink
//! the same ordered change chunks the Postgres source does, so tables, `_version` and
//! `_is_deleted` come out the same.
//!
//! Each chunk carries a sequence number where the Postgres source puts a commit LSN; once
//! the sink acknowledges a sequence number (its rows are inserted), the offsets of every
//! message up to it are committed. When the edge to the sink is full, the consumer pauses
//! its partitions and keeps polling, so it stays in the group.
//!
//! Must never: commit an offset whose message is not in ClickHouse (or in the dead-letter
//! topic), or drop a message silently: a message that cannot be read goes to the dead-letter
//! topic, with the reason in Kafka Connect's `__connect.errors.*` headers, and is counted.

use crate::cdc::change::{ChangeChunk, ChangeItem, RowChange, RowOp, SinkMsg};
use crate::clients::kafka::{self, KafkaError};
use crate::config::{KafkaConfig, KafkaSourceConfig};
use crate::flow::edge::Edge;
use crate::protocol::debezium::{self, Decoded, Op};
use crate::protocol::pgoutput::Lsn;
use crate::protocol::schema::{Column, TableSchema};
use crate::runtime::registry::PipelineCounters;
use crate::runtime::task::TaskGuard;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Relation ids the source gives the tables it meets (`schema`, `table`): they outlive a
/// restart of the source, so the sink keeps one state per table.
pub type TableIds = Arc<Mutex<HashMap<(String, String), u32>>>;

pub struct KafkaSourceArgs {
    pub pipeline: String,
    pub kafka: KafkaConfig,
    pub source: KafkaSourceConfig,
    pub edge: Edge<SinkMsg>,
    pub acks: watch::Receiver<Lsn>,
    /// The last chunk sequence number given out (kept across restarts: the sink's
    /// acknowledgements only move forward).
    pub seq: Arc<AtomicU64>,
    pub tables: TableIds,
    pub counters: Arc<PipelineCounters>,
    pub drain_timeout: Duration,
}

pub enum KafkaSourceMsg {
    /// The consuming task failed.
    Failed(String),
}

type TopicPartition = (String, i32);

/// What the consuming task and the actor share.
struct Shared {
    pipeline: String,
    kafka: KafkaConfig,
    consumer: kafka::GroupConsumer,
    /// Offsets of the messages of each chunk in flight, by sequence number.
    in_flight: Mutex<BTreeMap<u64, HashMap<TopicPartition, i64>>>,
    /// The last offset of each partition whose messages are all inserted.
    acked: Mutex<HashMap<TopicPartition, i64>>,
    counters: Arc<PipelineCounters>,
}

pub struct KafkaSourceState {
    shared: Arc<Shared>,
    edge: Edge<SinkMsg>,
    drain_timeout: Duration,
    task: Option<TaskGuard>,
}

pub struct KafkaCdcSource;

impl Actor for KafkaCdcSource {
    type Msg = KafkaSourceMsg;
    type State = KafkaSourceState;
    type Arguments = KafkaSourceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<KafkaSourceMsg>,
        a: KafkaSourceArgs,
    ) -> Result<KafkaSourceState, ActorProcessingErr> {
        let (consumer, dlq) =
            kafka::subscribe_with_dead_letters(&a.kafka, &a.source, &a.pipeline).await?;
        let shared = Arc::new(Shared {
            pipeline: a.pipeline.clone(),
            kafka: a.kafka.clone(),
            consumer,
            in_flight: Mutex::new(BTreeMap::new()),
            acked: Mutex::new(HashMap::new()),
            counters: a.counters.clone(),
        });
        // Bound to the sink running now (see `Edge::for_sender`).
        let edge = a.edge.for_sender();
        let run = Run {
            shared: shared.clone(),
            dlq,
            cfg: a.source,
            edge: edge.clone(),
            acks: a.acks,
            seq: a.seq,
            tables: a.tables,
            sent: HashMap::new(),
            stash: VecDeque::new(),
            uncommitted: false,
            watchdog: kafka::AssignmentWatchdog::default(),
        };
        let me = myself.clone();
        let task = TaskGuard::spawn_watched(
            async move {
                if let Err(e) = run.run().await {
                    let _ = myself.cast(KafkaSourceMsg::Failed(e.to_string()));
                }
            },
            move |why| {
                let _ = me.cast(KafkaSourceMsg::Failed(why));
            },
        );
        Ok(KafkaSourceState {
            shared,
            edge,
            drain_timeout: a.drain_timeout,
            task: Some(task),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<KafkaSourceMsg>,
        msg: KafkaSourceMsg,
        _st: &mut KafkaSourceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            KafkaSourceMsg::Failed(e) => Err(KafkaError::Consumer(e).into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<KafkaSourceMsg>,
        st: &mut KafkaSourceState,
    ) -> Result<(), ActorProcessingErr> {
        drop(st.task.take());
        // Let the sink insert what it has, then commit up to there.
        match st.edge.call(SinkMsg::Drain, st.drain_timeout).await {
            Ok(acked) => {
                st.shared.take_acked(acked);
                // A synchronous commit blocks its thread while the coordinator does not
                // answer: off the runtime, and waited for at most 10 s (not committed, the
                // messages are read again).
                let shared = st.shared.clone();
                let commit = tokio::task::spawn_blocking(move || shared.commit(CommitMode::Sync));
                if tokio::time::timeout(Duration::from_secs(10), commit)
                    .await
                    .is_err()
                {
                    tracing::warn!(pipeline = %st.shared.pipeline, "the final offset commit did not finish in 10 s; uncommitted messages will be read again");
                }
            }
            Err(e) => {
                tracing::warn!(pipeline = %st.shared.pipeline, error = %e, "no final drain; uncommitted messages will be read again")
            }
        }
        Ok(())
    }
}

impl Shared {
    /// Moves the offsets of every chunk up to `acked` into the committable positions.
    fn take_acked(&self, acked: u64) -> bool {
        let mut fl = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mut pos = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        let mut moved = false;
        while let Some(e) = fl.first_entry() {
            if *e.key() > acked {
                break;
            }
            for (tp, off) in e.remove() {
                let cur = pos.entry(tp).or_insert(-1);
                *cur = (*cur).max(off);
                moved = true;
            }
        }
        moved
    }

    /// Commits the positions whose messages are all inserted, of the partitions assigned to
    /// this member now: a partition a rebalance gave to another member is that member's to
    /// commit (committing our older position there would move the group back). A failed
    /// commit is repeated by the next one (it commits every position again).
    fn commit(&self, mode: CommitMode) {
        let pos = self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if pos.is_empty() {
            return;
        }
        let owned = self.consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &pos {
            if owned.find_partition(t, *p).is_some() {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o + 1));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => PipelineCounters::add(&self.counters.kafka_commits, 1),
            Err(e) => {
                PipelineCounters::add(&self.counters.kafka_commit_errors, 1);
                tracing::warn!(pipeline = %self.pipeline, error = %kafka::scrub(&self.kafka, e), "offset commit failed; the next commit repeats it");
            }
        }
    }
}

/// The consuming task.
struct Run {
    shared: Arc<Shared>,
    dlq: FutureProducer,
    cfg: KafkaSourceConfig,
    edge: Edge<SinkMsg>,
    acks: watch::Receiver<Lsn>,
    seq: Arc<AtomicU64>,
    tables: TableIds,
    /// The columns last sent to the sink, per relation id.
    sent: HashMap<u32, Vec<Column>>,
    /// Messages that arrived while the partitions were being paused.
    stash: VecDeque<OwnedMessage>,
    /// Inserted positions not committed yet.
    uncommitted: bool,
    watchdog: kafka::AssignmentWatchdog,
}

impl Run {
    async fn run(mut self) -> Result<(), KafkaError> {
        let mut lag_every = tokio::time::interval(Duration::from_secs(5));
        let mut watch = tokio::time::interval(kafka::WATCH_EVERY);
        let mut commit_every = tokio::time::interval(self.cfg.commit_interval.0);
        loop {
            let first = match self.stash.pop_front() {
                Some(m) => m,
                None => tokio::select! {
                    biased;
                    r = self.acks.changed() => {
                        r.map_err(|_| KafkaError::Consumer("the sink is gone".into()))?;
                        self.on_ack();
                        continue;
                    }
                    _ = lag_every.tick() => {
                        self.sample_lag().await;
                        continue;
                    }
                    _ = watch.tick() => {
                        let (shared, group) = (self.shared.clone(), self.cfg.group.clone());
                        kafka::watch_assignment(
                            &mut self.watchdog,
                            self.shared.consumer.context().assigned(),
                            &self.shared.counters,
                            move || kafka::group_view(&shared.consumer, &group),
                        )
                        .await?;
                        continue;
                    }
                    _ = commit_every.tick() => {
                        self.commit_acked();
                        continue;
                    }
                    m = self.shared.consumer.recv() => match m {
                        Ok(m) => m.detach(),
                        Err(e) => {
                            self.consumer_error(e);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                },
            };
            let mut batch = vec![first];
            while batch.len() < self.cfg.chunk_messages {
                if let Some(m) = self.stash.pop_front() {
                    batch.push(m);
                    continue;
                }
                match tokio::time::timeout(Duration::from_millis(2), self.shared.consumer.recv())
                    .await
                {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(e)) => {
                        self.consumer_error(e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.forward(batch).await?;
        }
    }

    fn consumer_error(&self, e: rdkafka::error::KafkaError) {
        tracing::warn!(pipeline = %self.shared.pipeline, error = %kafka::scrub(&self.shared.kafka, e), "kafka consumer error");
    }

    /// The sink inserted more: its offsets become committable (at the next commit tick).
    fn on_ack(&mut self) {
        let acked = *self.acks.borrow_and_update();
        self.uncommitted |= self.shared.take_acked(acked);
    }

    fn commit_acked(&mut self) {
        if std::mem::take(&mut self.uncommitted) {
            self.shared.commit(CommitMode::Async);
        }
    }

    fn rel_id(&self, schema: &str, table: &str) -> u32 {
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let next = t.len() as u32 + 1;
        *t.entry((schema.to_string(), table.to_string()))
            .or_insert(next)
    }

    /// Decodes a batch into one chunk and hands it to the sink.
    async fn forward(&mut self, batch: Vec<OwnedMessage>) -> Result<(), KafkaError> {
        let root = tracing::info_span!(parent: None, "kafka.chunk", pipeline = %self.shared.pipeline, messages = batch.len());
        let mut traced = Vec::new();
        for m in &batch {
            if let Some(cx) = kafka::trace_context(m.headers().map(|h| h.as_borrowed())) {
                use opentelemetry::trace::TraceContextExt;
                let sc = cx.span().span_context().clone();
                if traced.is_empty() {
                    let _ = root.set_parent(cx);
                } else if traced.len() < 32 && !traced.contains(&sc.trace_id()) {
                    root.add_link(sc.clone());
                }
                if !traced.contains(&sc.trace_id()) {
                    traced.push(sc.trace_id());
                }
            }
        }
        let decode = tracing::info_span!(parent: &root, "source.decode");
        let mut items = Vec::new();
        let mut commit_times = Vec::new();
        let mut offsets: HashMap<TopicPartition, i64> = HashMap::new();
        PipelineCounters::add(&self.shared.counters.kafka_consumed, batch.len() as u64);
        for m in &batch {
            let tp = (m.topic().to_string(), m.partition());
            let off = offsets.entry(tp).or_insert(-1);
            *off = (*off).max(m.offset());
            let old_key = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == debezium::OLD_KEY_HEADER)
                    .and_then(|h| h.value)
            });
            match debezium::decode_moved(m.topic(), m.key(), m.payload(), old_key) {
                Ok(Decoded::Change(c)) => {
                    let rel = self.rel_id(&c.schema, &c.table);
                    let (op, cells) = match c.op {
                        Op::Delete => (RowOp::Delete, c.before),
                        Op::Read => (RowOp::Snapshot, c.after),
                        Op::Create => (RowOp::Insert, c.after),
                        Op::Update => (RowOp::Update, c.after),
                        Op::Truncate => (RowOp::Update, None),
                    };
                    let Some(cells) = cells else {
                        self.dead_letter(m, "the event has no row image for its op")
                            .await?;
                        continue;
                    };
                    if self.sent.get(&rel) != Some(&c.columns) {
                        self.sent.insert(rel, c.columns.clone());
                        items.push(ChangeItem::Schema(Arc::new(TableSchema {
                            rel_id: rel,
                            schema: c.schema.clone(),
                            name: c.table.clone(),
                            columns: c.columns,
                            ..Default::default()
                        })));
                    }
                    if c.commit_us > 0 {
                        commit_times.push(c.commit_us);
                    }
                    items.push(ChangeItem::Row {
                        rel_id: rel,
                        change: RowChange {
                            op,
                            version: c.lsn,
                            cells,
                            xid: 0,
                            commit_us: c.commit_us,
                            moved_from: c.moved_from,
                        },
                    });
                }
                Ok(Decoded::Truncate {
                    schema,
                    table,
                    lsn,
                    commit_us,
                }) => {
                    let rel = self.rel_id(&schema, &table);
                    items.push(ChangeItem::Truncate {
                        rels: vec![rel],
                        lsn,
                        xid: 0,
                        commit_us,
                    });
                }
                Ok(Decoded::Tombstone) => {
                    PipelineCounters::add(&self.shared.counters.kafka_tombstones, 1)
                }
                Err(e) => self.dead_letter(m, &e.to_string()).await?,
            }
        }
        drop(decode);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let queue_span = tracing::info_span!(parent: &root, "edge.queue");
        let chunk = ChangeChunk {
            items,
            commit: Some(seq),
            commit_times,
            caught_up: false,
            trace: root,
            queue_span,
        };
        let slot = match self.edge.try_reserve() {
            Some(s) => s,
            None => self.wait_paused().await?,
        };
        self.shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, offsets);
        self.edge
            .send_reserved(slot, move |permit| SinkMsg::Changes(chunk, permit))
            .await
            .map_err(|e| KafkaError::Consumer(e.to_string()))
    }

    /// The edge is full: pause every assigned partition and keep polling (heartbeats,
    /// rebalances, acknowledgements) until a slot frees, then resume.
    async fn wait_paused(&mut self) -> Result<crate::flow::edge::Slot, KafkaError> {
        let c = &self.shared.consumer;
        let paused = c.assignment().unwrap_or_default();
        if let Err(e) = c.pause(&paused) {
            tracing::warn!(error = %e, "could not pause partitions");
        }
        PipelineCounters::add(&self.shared.counters.kafka_pauses, 1);
        tracing::debug!(pipeline = %self.shared.pipeline, partitions = paused.count(), "edge full: partitions paused");
        let edge = self.edge.clone();
        let reserve = edge.reserve();
        tokio::pin!(reserve);
        let slot = loop {
            tokio::select! {
                s = &mut reserve => break s.map_err(|e| KafkaError::Consumer(e.to_string()))?,
                r = self.acks.changed() => {
                    r.map_err(|_| KafkaError::Consumer("the sink is gone".into()))?;
                    self.on_ack();
                }
                m = self.shared.consumer.recv() => match m {
                    Ok(m) => self.stash.push_back(m.detach()),
                    Err(e) => self.consumer_error(e),
                },
            }
        };
        // Resume what is assigned now (a rebalance may have changed it meanwhile).
        let now = self.shared.consumer.assignment().unwrap_or_default();
        if let Err(e) = self.shared.consumer.resume(&now) {
            tracing::warn!(error = %e, "could not resume partitions");
        }
        Ok(slot)
    }

    /// Sends a message that cannot be read to the dead-letter topic and waits for the broker.
    async fn dead_letter(&self, m: &OwnedMessage, reason: &str) -> Result<(), KafkaError> {
        kafka::dead_letter(
            &self.dlq,
            &self.cfg.dead_letter_topic,
            m,
            &self.shared.pipeline,
            "tributary::protocol::debezium::DecodeError",
            reason,
        )
        .await?;
        PipelineCounters::add(&self.shared.counters.kafka_dead_letters, 1);
        Ok(())
    }

    /// Messages of the assigned partitions that are not committed yet (a gauge).
    async fn sample_lag(&self) {
        let shared = self.shared.clone();
        let lag = tokio::task::spawn_blocking(move || {
            let c = &shared.consumer;
            let assigned = c.assignment().ok()?;
            let position = c.position().ok();
            let acked = shared
                .acked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut lag = 0i64;
            for e in assigned.elements() {
                let (low, high) = c
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                    .ok()?;
                let next = match acked.get(&(e.topic().to_string(), e.partition())) {
                    Some(o) => o + 1,
                    None => position
                        .as_ref()
                        .and_then(|p| p.find_partition(e.topic(), e.partition()))
                        .and_then(|p| p.offset().to_raw())
                        .filter(|o| *o >= 0)
                        .unwrap_or(low),
                };
                lag += (high - next).max(0);
            }
            Some(lag as u64)
        })
        .await
        .ok()
        .flatten();
        if let Some(lag) = lag {
            self.shared
                .counters
                .kafka_consumer_lag
                .store(lag, Ordering::Relaxed);
        }
    }
}
