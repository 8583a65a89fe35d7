//! The Kafka sink of a CDC pipeline: writes each row change as a Debezium PostgreSQL change
//! event to the table's topic (`<prefix>.<schema>.<table>`, key = the primary key, so every
//! change of a row lands in one partition, in order), a tombstone after each delete, and a
//! truncate event per truncated table. The producer is idempotent with acks=all. A change
//! the producer refuses as larger than `message.max.bytes` cannot be sent by retrying: a
//! letter standing for it (its key, the sizes and the reason, never the row) goes to the
//! dead-letter topic instead, counted, and the stream moves on. A batch the broker refuses
//! fails the sink (it may hold small changes too).
//!
//! Must never: acknowledge a commit LSN (which the source then confirms to Postgres) before
//! the broker has acknowledged every message up to it. Deliveries are awaited in the order
//! they were produced, by one task; a failed delivery fails the sink, and the stream is
//! replayed from the last confirmed LSN (duplicates, never gaps); an oversized change counts
//! as delivered only once its dead letter is.

use crate::cdc::change::{ChangeChunk, ChangeItem, RowOp, SinkMsg};
use crate::clients::kafka::{self, KafkaError};
use crate::config::{KafkaConfig, KafkaSinkConfig};
use crate::flow::edge::Edge;
use crate::protocol::debezium::{self, EncodeOptions, EncodeStats, Op, SnapshotFlag, SourceInfo};
use crate::protocol::pgoutput::Lsn;
use crate::protocol::schema::SharedSchema;
use crate::runtime::registry::PipelineCounters;
use crate::runtime::task::TaskGuard;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Span;

pub struct KafkaSinkArgs {
    pub pipeline: String,
    pub kafka: KafkaConfig,
    pub sink: KafkaSinkConfig,
    /// The Postgres database (Debezium's `source.db`).
    pub database: String,
    pub edge: Edge<SinkMsg>,
    pub acks: Arc<watch::Sender<Lsn>>,
    pub counters: Arc<PipelineCounters>,
}

/// The deliveries of one chunk, awaited in order by the acknowledging task.
enum Pending {
    Chunk {
        deliveries: Vec<DeliveryFuture>,
        commit: Option<Lsn>,
        commit_times: Vec<i64>,
        trace: Span,
    },
    /// Answered once everything sent before it is acknowledged.
    Barrier(oneshot::Sender<()>),
}

pub struct KafkaSinkState {
    pipeline: String,
    kafka: KafkaConfig,
    cfg: KafkaSinkConfig,
    producer: FutureProducer,
    opts: EncodeOptions,
    schemas: HashMap<u32, (SharedSchema, String)>,
    topics: HashSet<String>,
    pending: mpsc::Sender<Pending>,
    letters: Letters,
    _acker: TaskGuard,
    acks: Arc<watch::Sender<Lsn>>,
    counters: Arc<PipelineCounters>,
    stats: EncodeStats,
    /// End LSN of the last commit produced (Debezium's `sequence` starts with it).
    last_commit: Option<Lsn>,
    _ticker: TaskGuard,
    /// Last progress line: when, and messages produced then.
    progress: (std::time::Instant, u64),
}

/// How often the sink logs its progress (messages/s, in flight, acknowledged LSN).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

pub struct KafkaSink;

impl Actor for KafkaSink {
    type Msg = SinkMsg;
    type State = KafkaSinkState;
    type Arguments = KafkaSinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SinkMsg>,
        a: KafkaSinkArgs,
    ) -> Result<KafkaSinkState, ActorProcessingErr> {
        let producer = kafka::producer(&a.kafka, a.sink.delivery_timeout.0)?;
        // Fail here, not at the first row, when the brokers cannot be reached.
        let p = producer.clone();
        let k = a.kafka.clone();
        tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|_| ())
                .map_err(|e| KafkaError::Client {
                    role: "producer",
                    message: kafka::scrub(&k, e),
                })
        })
        .await??;
        tracing::info!(pipeline = %a.pipeline, brokers = %a.kafka.brokers, prefix = %a.sink.topic_prefix, "kafka sink connected");
        // A few chunks may wait for the broker; then the sink (and so the source) waits.
        let (tx, rx) = mpsc::channel(8);
        kafka::ensure_topics(
            &a.kafka,
            std::slice::from_ref(&a.sink.dead_letter_topic),
            1,
            a.sink.replication_factor,
        )
        .await?;
        let letters = Letters {
            producer: producer.clone(),
            topic: a.sink.dead_letter_topic.clone(),
            pipeline: a.pipeline.clone(),
        };
        let acker = TaskGuard::spawn(acknowledge(
            rx,
            a.acks.clone(),
            a.counters.clone(),
            myself.clone(),
        ));
        let ticker = TaskGuard(myself.send_interval(PROGRESS_EVERY, || SinkMsg::Tick));
        a.edge.attach(myself);
        Ok(KafkaSinkState {
            _ticker: ticker,
            progress: (std::time::Instant::now(), 0),
            opts: EncodeOptions {
                schemas: a.sink.schemas,
                decimal: a.sink.decimal_handling,
                prefix: a.sink.topic_prefix.clone(),
                database: a.database,
            },
            pipeline: a.pipeline,
            kafka: a.kafka,
            cfg: a.sink,
            producer,
            schemas: HashMap::new(),
            topics: HashSet::new(),
            pending: tx,
            letters,
            _acker: acker,
            acks: a.acks,
            counters: a.counters,
            stats: EncodeStats::default(),
            last_commit: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        st: &mut KafkaSinkState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Changes(chunk, permit) => {
                drop(permit);
                st.produce(chunk).await?;
            }
            SinkMsg::Tick => st.log_progress(),
            SinkMsg::Drain(reply) => {
                st.barrier().await?;
                let _ = reply.send(*st.acks.borrow());
            }
            SinkMsg::WriteState(entries, reply) => {
                let r = st.write_states(&entries).await;
                let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r?;
            }
            // Written at once (the producer batches on its own).
            SinkMsg::RecordState(entries, _permit, recorded) => {
                st.write_states(&entries).await?;
                let _ = recorded.send(());
            }
            SinkMsg::ReadState(keys, reply) => {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}/{k}", st.pipeline))
                    .collect();
                let r = kafka::read_state(
                    &st.kafka,
                    &st.cfg.state_topic,
                    st.cfg.replication_factor,
                    &keys,
                )
                .await;
                let _ = reply.send(r.as_ref().map(|m| m.clone()).map_err(|e| e.to_string()));
                r?;
            }
            SinkMsg::Purge { reply, .. } => {
                // Topics cannot take rows back: what the resync copied went out as `r` events
                // at a version above every earlier one, and rows Postgres no longer has stay
                // downstream.
                tracing::warn!(pipeline = %st.pipeline, "resync through Kafka: rows Postgres no longer has are not removed downstream");
                let _ = reply.send(Ok(0));
            }
            SinkMsg::Columns(_, reply) => {
                let _ = reply.send(None);
            }
            SinkMsg::Fail(reason) => return Err(KafkaError::Consumer(reason).into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SinkMsg>,
        st: &mut KafkaSinkState,
    ) -> Result<(), ActorProcessingErr> {
        // Best effort: what is not acknowledged here is replayed from the last confirmed LSN.
        if let Err(e) = st.barrier().await {
            tracing::warn!(pipeline = %st.pipeline, error = %e, "final flush failed; the changes will be replayed");
        }
        Ok(())
    }
}

impl KafkaSinkState {
    fn log_progress(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let produced = self.counters.kafka_produced.load(Relaxed);
        let secs = self.progress.0.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            pipeline = %self.pipeline,
            messages_per_s = ((produced - self.progress.1) as f64 / secs).round() as u64,
            messages_produced = produced,
            in_flight = self.counters.kafka_in_flight.load(Relaxed),
            acked_lsn = %crate::protocol::pgoutput::fmt_lsn(*self.acks.borrow()),
            "progress"
        );
        self.progress = (std::time::Instant::now(), produced);
    }

    /// Records `entries` in the state topic once everything produced before is delivered.
    async fn write_states(&self, entries: &[(String, String)]) -> Result<(), KafkaError> {
        self.barrier().await?;
        for (key, value) in entries {
            kafka::write_state(
                &self.kafka,
                &self.producer,
                &self.cfg.state_topic,
                self.cfg.replication_factor,
                &format!("{}/{key}", self.pipeline),
                value,
            )
            .await?;
        }
        Ok(())
    }

    async fn barrier(&self) -> Result<(), KafkaError> {
        let (tx, rx) = oneshot::channel();
        let gone = || KafkaError::Consumer("the delivery task is gone".into());
        self.pending
            .send(Pending::Barrier(tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    async fn ensure_topic(&mut self, topic: &str) -> Result<(), KafkaError> {
        if !self.topics.contains(topic) {
            kafka::ensure_topics(
                &self.kafka,
                &[topic.to_string()],
                self.cfg.partitions,
                self.cfg.replication_factor,
            )
            .await?;
            self.topics.insert(topic.to_string());
        }
        Ok(())
    }

    async fn produce(&mut self, chunk: ChangeChunk) -> Result<(), KafkaError> {
        drop(chunk.queue_span);
        let span = tracing::info_span!(parent: &chunk.trace, "kafka.produce", messaging.system = "kafka", messages = tracing::field::Empty);
        let headers = kafka::trace_headers(&span);
        let now_us = now_micros();
        let mut deliveries = Vec::new();
        for item in chunk.items {
            match item {
                ChangeItem::Schema(s) => {
                    let topic = debezium::topic_name(&self.opts.prefix, &s.schema, &s.name);
                    self.ensure_topic(&topic).await?;
                    self.schemas.insert(s.rel_id, (s, topic));
                }
                ChangeItem::Row { rel_id, change } => {
                    let Some((schema, topic)) = self.schemas.get(&rel_id) else {
                        return Err(KafkaError::Consumer(format!(
                            "row for relation {rel_id} before its schema"
                        )));
                    };
                    let (op, snapshot) = match change.op {
                        RowOp::Snapshot => (Op::Read, SnapshotFlag::True),
                        RowOp::Insert => (Op::Create, SnapshotFlag::False),
                        RowOp::Update => (Op::Update, SnapshotFlag::False),
                        RowOp::Delete => (Op::Delete, SnapshotFlag::False),
                    };
                    let src = SourceInfo {
                        lsn: change.version,
                        tx_id: (change.xid != 0).then_some(change.xid),
                        commit_us: if change.commit_us != 0 {
                            change.commit_us
                        } else {
                            now_us
                        },
                        snapshot,
                        last_commit_lsn: self.last_commit,
                    };
                    let cells = &change.cells;
                    let (before, after) = if op == Op::Delete {
                        (Some(cells.as_slice()), None)
                    } else {
                        (None, Some(cells.as_slice()))
                    };
                    let key = debezium::encode_key(schema, cells, &self.opts, &mut self.stats);
                    let value = debezium::encode_change(
                        schema,
                        op,
                        before,
                        after,
                        &src,
                        now_us,
                        &self.opts,
                        &mut self.stats,
                    );
                    let topic = topic.clone();
                    // The create event of a key change names the old key, as Debezium does.
                    let moved = change.moved_from.as_ref().and_then(|old| {
                        debezium::encode_key(schema, old, &self.opts, &mut self.stats)
                    });
                    let row_headers = match &moved {
                        Some(old) => headers.clone().insert(Header {
                            key: debezium::OLD_KEY_HEADER,
                            value: Some(old.as_slice()),
                        }),
                        None => headers.clone(),
                    };
                    let f = self
                        .letters
                        .send(
                            &self.counters,
                            &topic,
                            key.as_deref(),
                            Some(&value),
                            None,
                            &row_headers,
                        )
                        .await?;
                    deliveries.push(f);
                    if op == Op::Delete && self.cfg.tombstones && key.is_some() {
                        let f = self
                            .letters
                            .send(&self.counters, &topic, key.as_deref(), None, None, &headers)
                            .await?;
                        deliveries.push(f);
                    }
                }
                ChangeItem::Truncate {
                    rels,
                    lsn,
                    xid,
                    commit_us,
                } => {
                    for rel in rels {
                        let Some((schema, topic)) = self.schemas.get(&rel) else {
                            continue;
                        };
                        let src = SourceInfo {
                            lsn,
                            tx_id: (xid != 0).then_some(xid),
                            commit_us: if commit_us != 0 { commit_us } else { now_us },
                            snapshot: SnapshotFlag::False,
                            last_commit_lsn: self.last_commit,
                        };
                        let value = debezium::encode_truncate(schema, &src, now_us, &self.opts);
                        let topic = topic.clone();
                        // Debezium's truncate events have no key: partition 0 keeps them in
                        // order with the rows of a single-partition topic.
                        let f = self
                            .letters
                            .send(
                                &self.counters,
                                &topic,
                                None,
                                Some(&value),
                                Some(0),
                                &headers,
                            )
                            .await?;
                        deliveries.push(f);
                    }
                }
                // Topics cannot be emptied: a repeated snapshot writes its rows again (as
                // Debezium does); consumers collapse them by key.
                ChangeItem::SnapshotBegin(_) => {}
                // Never sent here: this sink answers `Columns` with none.
                ChangeItem::Block { .. } => {
                    return Err(KafkaError::Consumer(
                        "a block of ClickHouse rows reached the Kafka sink".into(),
                    ))
                }
            }
        }
        span.record("messages", deliveries.len());
        PipelineCounters::add(&self.counters.kafka_in_flight, deliveries.len() as u64);
        PipelineCounters::add(
            &self.counters.values_unrepresentable,
            std::mem::take(&mut self.stats.unrepresentable),
        );
        if let Some(lsn) = chunk.commit {
            self.last_commit = Some(lsn);
        }
        drop(span);
        self.pending
            .send(Pending::Chunk {
                deliveries,
                commit: chunk.commit,
                commit_times: chunk.commit_times,
                trace: chunk.trace,
            })
            .await
            .map_err(|_| KafkaError::Consumer("the delivery task is gone".into()))
    }
}

/// The dead-letter topic of changes too large to produce.
#[derive(Clone)]
struct Letters {
    producer: FutureProducer,
    topic: String,
    pipeline: String,
}

impl Letters {
    /// Hands one change to the producer; one it refuses as too large is replaced by its
    /// letter.
    async fn send(
        &self,
        counters: &PipelineCounters,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition: Option<i32>,
        headers: &OwnedHeaders,
    ) -> Result<DeliveryFuture, KafkaError> {
        match send(&self.producer, topic, key, value, partition, headers).await? {
            Sent::Queued(f) => Ok(f),
            Sent::TooLarge(reason) => {
                let len = value.map_or(0, <[u8]>::len);
                self.letter(counters, topic, key, len, headers, &reason)
                    .await
            }
        }
    }

    /// Queues the letter that stands for a change of `topic` that could not be produced.
    async fn letter(
        &self,
        counters: &PipelineCounters,
        topic: &str,
        key: Option<&[u8]>,
        value_bytes: usize,
        headers: &OwnedHeaders,
        reason: &str,
    ) -> Result<DeliveryFuture, KafkaError> {
        let key_bytes = key.map_or(0, <[u8]>::len);
        let (h, v) = oversize_letter(
            &self.pipeline,
            topic,
            key_bytes,
            value_bytes,
            headers,
            reason,
        );
        tracing::warn!(pipeline = %self.pipeline, topic, key_bytes, value_bytes, reason, dead_letter_topic = %self.topic, "a change too large for message.max.bytes went to the dead-letter topic; the row is missing downstream until it changes again or its table is resynced");
        PipelineCounters::add(&counters.kafka_dead_letters, 1);
        // A key too large on its own: the letter goes without it.
        for k in [key, None] {
            if let Sent::Queued(f) =
                send(&self.producer, &self.topic, k, Some(&v), None, &h).await?
            {
                return Ok(f);
            }
        }
        Err(KafkaError::Delivery {
            topic: self.topic.clone(),
            message: "even the dead letter is larger than message.max.bytes".into(),
        })
    }
}

/// The headers and value of a dead letter for a change too large to produce: the change's
/// own headers (trace context), Kafka Connect's `__connect.errors.*` headers, and a JSON
/// summary as its value. No row data: only sizes and names.
fn oversize_letter(
    pipeline: &str,
    topic: &str,
    key_bytes: usize,
    value_bytes: usize,
    headers: &OwnedHeaders,
    reason: &str,
) -> (OwnedHeaders, Vec<u8>) {
    let mut h = OwnedHeaders::new();
    // The old key may be what made the change too large: the letter goes without it.
    for x in headers.iter().filter(|x| x.key != debezium::OLD_KEY_HEADER) {
        h = h.insert(Header {
            key: x.key,
            value: x.value,
        });
    }
    for (key, value) in [
        ("__connect.errors.topic", topic),
        ("__connect.errors.connector.name", pipeline),
        ("__connect.errors.stage", "KAFKA_PRODUCE"),
        (
            "__connect.errors.exception.class.name",
            "org.apache.kafka.common.errors.RecordTooLargeException",
        ),
        ("__connect.errors.exception.message", reason),
    ] {
        h = h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let summary = serde_json::json!({
        "topic": topic,
        "key_bytes": key_bytes,
        "value_bytes": value_bytes,
        "reason": reason,
    });
    (h, summary.to_string().into_bytes())
}

/// What became of a message handed to the producer.
enum Sent {
    Queued(DeliveryFuture),
    /// Refused as larger than `message.max.bytes`: retrying cannot help.
    TooLarge(String),
}

fn too_large(e: &rdkafka::error::KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// Hands one message to the producer, waiting while its queue is full.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    partition: Option<i32>,
    headers: &OwnedHeaders,
) -> Result<Sent, KafkaError> {
    loop {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers.clone());
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(v) = value {
            r = r.payload(v);
        }
        if let Some(p) = partition {
            r = r.partition(p);
        }
        match producer.send_result(r) {
            Ok(f) => return Ok(Sent::Queued(f)),
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) if too_large(&e) => return Ok(Sent::TooLarge(e.to_string())),
            Err((e, _)) => {
                return Err(KafkaError::Delivery {
                    topic: topic.to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// Awaits deliveries in production order and moves the acknowledged LSN.
async fn acknowledge(
    mut rx: mpsc::Receiver<Pending>,
    acks: Arc<watch::Sender<Lsn>>,
    counters: Arc<PipelineCounters>,
    sink: ActorRef<SinkMsg>,
) {
    while let Some(p) = rx.recv().await {
        match p {
            Pending::Barrier(tx) => {
                let _ = tx.send(());
            }
            Pending::Chunk {
                deliveries,
                commit,
                commit_times,
                trace,
            } => {
                let span =
                    tracing::info_span!(parent: &trace, "kafka.ack", messages = deliveries.len());
                let n = deliveries.len() as u64;
                for f in deliveries {
                    let failure = match f.await {
                        Ok(Ok(_)) => None,
                        // The broker refuses whole record batches, so small changes that
                        // shared a batch come back refused too: none of them may be replaced
                        // by a letter. A failure (and replay) that says what to change.
                        Ok(Err((e, m))) if too_large(&e) => Some(format!(
                            "the broker refused a record batch of `{}` as too large ({e}): the topic's max.message.bytes is below the producer's message.max.bytes and batch.size; set both at most the topic's limit under [kafka.properties] (a single change over it then goes to the dead-letter topic)",
                            rdkafka::Message::topic(&m)
                        )),
                        Ok(Err((e, m))) => Some(format!(
                            "delivery to `{}` failed: {e}",
                            rdkafka::Message::topic(&m)
                        )),
                        Err(_) => Some("the producer was dropped".to_string()),
                    };
                    if let Some(reason) = failure {
                        counters.kafka_in_flight.store(0, Ordering::Relaxed);
                        let _ = sink.cast(SinkMsg::Fail(reason));
                        return;
                    }
                    counters.kafka_in_flight.fetch_sub(1, Ordering::Relaxed);
                }
                drop(span);
                PipelineCounters::add(&counters.kafka_produced, n);
                PipelineCounters::add(&counters.rows_written, n);
                if n > 0 {
                    PipelineCounters::add(&counters.batches_written, 1);
                }
                if let Some(lsn) = commit {
                    acks.send_if_modified(|cur| {
                        let moved = lsn > *cur;
                        if moved {
                            *cur = lsn;
                        }
                        moved
                    });
                }
                let now = now_micros();
                for t in commit_times {
                    counters
                        .commit_lag
                        .record_micros(now.saturating_sub(t).max(0) as u64);
                }
            }
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_letter_of_an_oversized_change_names_it_without_its_row() {
        let orig = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".as_slice()),
            })
            .insert(Header {
                key: debezium::OLD_KEY_HEADER,
                value: Some(b"{\"id\":1}".as_slice()),
            });
        let (h, v) = oversize_letter("p", "t.public.big", 9, 2_000_000, &orig, "too large");
        let headers: HashMap<&str, &[u8]> = h
            .iter()
            .map(|x| (x.key, x.value.unwrap_or_default()))
            .collect();
        assert!(headers["traceparent"].starts_with(b"00-0af7"), "trace kept");
        assert!(
            !headers.contains_key(debezium::OLD_KEY_HEADER),
            "the old key left out"
        );
        assert_eq!(headers["__connect.errors.topic"], b"t.public.big");
        assert_eq!(headers["__connect.errors.stage"], b"KAFKA_PRODUCE");
        assert_eq!(headers["__connect.errors.connector.name"], b"p");
        assert_eq!(headers["__connect.errors.exception.message"], b"too large");
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"topic": "t.public.big", "key_bytes": 9, "value_bytes": 2_000_000, "reason": "too large"})
        );
    }
}
