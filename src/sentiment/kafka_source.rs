//! The Kafka source of a sentiment pipeline: a consumer group member that reads the
//! statuses topic (written by a publishing pipeline, see
//! [`crate::sentiment::kafka_publisher`]) and queues each post for the LLM workers; a tombstone
//! deletes the status's row. Offsets are committed from the acknowledgement tracker: a
//! partition's offset moves only past posts whose sentiment rows are in ClickHouse.
//! When the queue is full the consumer pauses its partitions and keeps polling.
//!
//! Must never: commit past a post whose row is not in ClickHouse, or drop a message
//! silently (unreadable ones go to the dead-letter topic, counted).

use crate::clients::kafka::{self, KafkaError};
use crate::config::{KafkaConfig, KafkaSourceConfig};
use crate::flow::ack::AckTracker;
use crate::flow::edge::WorkQueue;
use crate::protocol::mastodon::Post;
use crate::runtime::registry::PipelineCounters;
use crate::runtime::task::TaskGuard;
use crate::sentiment::job::{Job, JobKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub struct StatusSourceArgs {
    pub pipeline: String,
    pub kafka: KafkaConfig,
    pub source: KafkaSourceConfig,
    pub queue: WorkQueue<Job>,
    pub tracker: Arc<AckTracker>,
    pub counters: Arc<PipelineCounters>,
}

pub enum StatusSourceMsg {
    Failed(String),
}

pub struct StatusSourceState {
    _task: TaskGuard,
}

pub struct KafkaStatusSource;

/// Resume keys of this source in the tracker: `kafka:<topic>/<partition>`.
const KEY_PREFIX: &str = "kafka:";

impl Actor for KafkaStatusSource {
    type Msg = StatusSourceMsg;
    type State = StatusSourceState;
    type Arguments = StatusSourceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StatusSourceMsg>,
        a: StatusSourceArgs,
    ) -> Result<StatusSourceState, ActorProcessingErr> {
        // Whatever was in flight is read again from the committed offsets.
        a.tracker.reset();
        let (consumer, dlq) =
            kafka::subscribe_with_dead_letters(&a.kafka, &a.source, &a.pipeline).await?;
        let run = Run {
            a,
            consumer: std::sync::Arc::new(consumer),
            dlq,
            stash: VecDeque::new(),
            committed: HashMap::new(),
            watchdog: kafka::AssignmentWatchdog::default(),
        };
        let me = myself.clone();
        let task = TaskGuard::spawn_watched(
            async move {
                if let Err(e) = run.run().await {
                    let _ = myself.cast(StatusSourceMsg::Failed(e.to_string()));
                }
            },
            move |why| {
                let _ = me.cast(StatusSourceMsg::Failed(why));
            },
        );
        Ok(StatusSourceState { _task: task })
    }

    async fn handle(
        &self,
        _myself: ActorRef<StatusSourceMsg>,
        msg: StatusSourceMsg,
        _st: &mut StatusSourceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StatusSourceMsg::Failed(e) => Err(KafkaError::Consumer(e).into()),
        }
    }
}

struct Run {
    a: StatusSourceArgs,
    /// Shared with the blocking group lookup of the assignment watchdog.
    consumer: std::sync::Arc<kafka::GroupConsumer>,
    dlq: FutureProducer,
    stash: VecDeque<OwnedMessage>,
    /// Offsets committed last, per resume key.
    committed: HashMap<String, i64>,
    watchdog: kafka::AssignmentWatchdog,
}

impl Run {
    async fn run(mut self) -> Result<(), KafkaError> {
        let mut tick = tokio::time::interval(self.a.source.commit_interval.0);
        let mut watch = tokio::time::interval(kafka::WATCH_EVERY);
        loop {
            let m = match self.stash.pop_front() {
                Some(m) => m,
                None => tokio::select! {
                    _ = tick.tick() => {
                        self.commit();
                        continue;
                    }
                    _ = watch.tick() => {
                        let (consumer, group) = (self.consumer.clone(), self.a.source.group.clone());
                        kafka::watch_assignment(
                            &mut self.watchdog,
                            self.consumer.context().assigned(),
                            &self.a.counters,
                            move || kafka::group_view(&*consumer, &group),
                        )
                        .await?;
                        continue;
                    }
                    m = self.consumer.recv() => match m {
                        Ok(m) => m.detach(),
                        Err(e) => {
                            tracing::warn!(pipeline = %self.a.pipeline, error = %kafka::scrub(&self.a.kafka, e), "kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                },
            };
            PipelineCounters::add(&self.a.counters.kafka_consumed, 1);
            let key = format!("{KEY_PREFIX}{}/{}", m.topic(), m.partition());
            let ticket = self.a.tracker.register(&key, &m.offset().to_string());
            let job = match job_of(&m) {
                Ok(kind) => kind,
                Err(reason) => {
                    kafka::dead_letter(
                        &self.dlq,
                        &self.a.source.dead_letter_topic,
                        &m,
                        &self.a.pipeline,
                        // A stable name for dead-letter consumers (the type's path before
                        // the code moved): filters on it keep matching.
                        "tributary::actors::status_source::UnreadableStatus",
                        &reason,
                    )
                    .await?;
                    PipelineCounters::add(&self.a.counters.kafka_dead_letters, 1);
                    self.a.tracker.complete(&ticket);
                    continue;
                }
            };
            let (instance, status) = match &job {
                JobKind::Classify(p) => (p.instance.clone(), p.status_id.clone()),
                JobKind::Delete {
                    instance,
                    status_id,
                } => (instance.clone(), status_id.clone()),
            };
            let trace = tracing::info_span!(parent: None, "sentiment.post", pipeline = %self.a.pipeline, instance = %instance, status = %status);
            if let Some(cx) = kafka::trace_context(m.headers().map(|h| h.as_borrowed())) {
                let _ = trace.set_parent(cx);
            }
            let queued = Some(tracing::info_span!(parent: &trace, "edge.queue", stage = "llm"));
            let job = Job {
                kind: job,
                ticket: Some(ticket),
                trace,
                queued,
            };
            if let Err((job, closed)) = self.a.queue.try_send(job) {
                if let Some(e) = closed {
                    return Err(KafkaError::Consumer(e.to_string()));
                }
                self.wait_paused(job).await?;
            }
        }
    }

    /// The queue is full: pause the partitions, keep polling and committing, enqueue the job
    /// when there is room, resume.
    async fn wait_paused(&mut self, job: Job) -> Result<(), KafkaError> {
        let paused = self.consumer.assignment().unwrap_or_default();
        let _ = self.consumer.pause(&paused);
        PipelineCounters::add(&self.a.counters.kafka_pauses, 1);
        let queue = self.a.queue.clone();
        let mut tick = tokio::time::interval(self.a.source.commit_interval.0);
        {
            let reserve = queue.reserve();
            tokio::pin!(reserve);
            loop {
                tokio::select! {
                    p = &mut reserve => {
                        p.map_err(|e| KafkaError::Consumer(e.to_string()))?.send(job);
                        break;
                    }
                    _ = tick.tick() => self.commit(),
                    m = self.consumer.recv() => if let Ok(m) = m {
                        self.stash.push_back(m.detach());
                    },
                }
            }
        }
        let now = self.consumer.assignment().unwrap_or_default();
        let _ = self.consumer.resume(&now);
        Ok(())
    }

    /// Commits, per partition, the offset after the last post whose row is in ClickHouse.
    fn commit(&mut self) {
        // Only partitions assigned to this member now (see the CDC Kafka source's commit).
        let owned = self.consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for (key, pos) in self.a.tracker.positions() {
            let Some(tp) = key.strip_prefix(KEY_PREFIX) else {
                continue;
            };
            let (Some((topic, part)), Ok(off)) = (tp.rsplit_once('/'), pos.parse::<i64>()) else {
                continue;
            };
            let Ok(part) = part.parse::<i32>() else {
                continue;
            };
            if owned.find_partition(topic, part).is_none() {
                continue;
            }
            if self.committed.get(&key) == Some(&off) {
                continue;
            }
            if tpl
                .add_partition_offset(topic, part, Offset::Offset(off + 1))
                .is_ok()
            {
                self.committed.insert(key, off);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match self.consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => PipelineCounters::add(&self.a.counters.kafka_commits, 1),
            Err(e) => {
                // Forget what was "committed": the next tick tries again.
                self.committed.clear();
                PipelineCounters::add(&self.a.counters.kafka_commit_errors, 1);
                tracing::warn!(pipeline = %self.a.pipeline, error = %kafka::scrub(&self.a.kafka, e), "offset commit failed");
            }
        }
    }
}

/// What a statuses-topic message asks for: classify a post, or delete a status (tombstone).
fn job_of(m: &OwnedMessage) -> Result<JobKind, String> {
    let key = m
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or("the message has no UTF-8 key (`instance/status id`)")?;
    let (instance, status_id) = key
        .rsplit_once('/')
        .filter(|(i, s)| !i.is_empty() && !s.is_empty())
        .ok_or_else(|| format!("key `{key}` is not `instance/status id`"))?;
    match m.payload() {
        None => Ok(JobKind::Delete {
            instance: instance.to_string(),
            status_id: status_id.to_string(),
        }),
        Some(v) => {
            let post: Post = serde_json::from_slice(v).map_err(|e| format!("not a post: {e}"))?;
            if post.instance != instance || post.status_id != status_id {
                return Err(format!(
                    "key `{key}` does not match the post ({}/{})",
                    post.instance, post.status_id
                ));
            }
            Ok(JobKind::Classify(post))
        }
    }
}
