//! The Kafka sink of a publishing sentiment pipeline: takes the posts the Mastodon (or
//! replay) source queued and writes them to the statuses topic, key `instance/status id`,
//! value the post as JSON ([`crate::protocol::mastodon::Post`]), a tombstone for a deleted
//! status, with the trace context in the headers. A post counts as done (its source may move
//! its resume point past it) only once the broker has acknowledged it.
//!
//! Must never: complete a post before the broker acknowledged it.

use crate::clients::clickhouse::ChClient;
use crate::clients::kafka::{self, KafkaError};
use crate::config::{ClickHouseConfig, KafkaConfig, KafkaSinkConfig};
use crate::flow::ack::AckTracker;
use crate::flow::edge::WorkQueue;
use crate::runtime::registry::PipelineCounters;
use crate::runtime::task::TaskGuard;
use crate::sentiment::job::{Job, JobKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;

pub struct PublisherArgs {
    pub pipeline: String,
    pub kafka: KafkaConfig,
    pub sink: KafkaSinkConfig,
    /// Where the source's resume points are kept (`_tributary_state`).
    pub clickhouse: ClickHouseConfig,
    pub queue: WorkQueue<Job>,
    pub tracker: Arc<AckTracker>,
    pub counters: Arc<PipelineCounters>,
}

pub enum PublisherMsg {
    Failed(String),
}

pub struct PublisherState {
    _task: TaskGuard,
}

pub struct StatusPublisher;

/// The key of a post on the statuses topic.
pub fn status_key(instance: &str, status_id: &str) -> String {
    format!("{instance}/{status_id}")
}

impl Actor for StatusPublisher {
    type Msg = PublisherMsg;
    type State = PublisherState;
    type Arguments = PublisherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PublisherMsg>,
        a: PublisherArgs,
    ) -> Result<PublisherState, ActorProcessingErr> {
        let producer = kafka::producer(&a.kafka, a.sink.delivery_timeout.0)?;
        kafka::ensure_topics(
            &a.kafka,
            std::slice::from_ref(&a.sink.topic),
            a.sink.partitions,
            a.sink.replication_factor,
        )
        .await?;
        let ch = ChClient::connect(&a.clickhouse).await?;
        ch.ensure_state_table().await?;
        tracing::info!(pipeline = %a.pipeline, topic = %a.sink.topic, "publishing statuses to Kafka");
        let me = myself.clone();
        let task = TaskGuard::spawn_watched(
            async move {
                if let Err(e) = publish(a, producer, ch).await {
                    let _ = myself.cast(PublisherMsg::Failed(e.to_string()));
                }
            },
            move |why| {
                let _ = me.cast(PublisherMsg::Failed(why));
            },
        );
        Ok(PublisherState { _task: task })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PublisherMsg>,
        msg: PublisherMsg,
        _st: &mut PublisherState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PublisherMsg::Failed(e) => Err(KafkaError::Consumer(e).into()),
        }
    }
}

/// Up to this many posts wait for the broker at once.
const WINDOW: usize = 256;

async fn publish(
    a: PublisherArgs,
    producer: FutureProducer,
    ch: ChClient,
) -> Result<(), KafkaError> {
    let mut waiting: std::collections::VecDeque<(Job, DeliveryFuture)> = Default::default();
    let mut recorded = std::time::Instant::now();
    let mut unrecorded = false;
    loop {
        // Take what is queued; wait a little when nothing is waiting for the broker either.
        let wait = if waiting.is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(1)
        };
        let job = if waiting.len() < WINDOW {
            a.queue.recv_timeout(wait).await
        } else {
            None
        };
        let got = job.is_some();
        if let Some(mut job) = job {
            drop(job.queued.take());
            let span = tracing::info_span!(parent: &job.trace, "kafka.produce", messaging.system = "kafka", topic = %a.sink.topic);
            let headers = kafka::trace_headers(&span);
            let (key, value) = match &job.kind {
                JobKind::Classify(post) => (
                    status_key(&post.instance, &post.status_id),
                    Some(
                        serde_json::to_vec(post)
                            .map_err(|e| KafkaError::Consumer(e.to_string()))?,
                    ),
                ),
                JobKind::Delete {
                    instance,
                    status_id,
                } => (status_key(instance, status_id), None),
            };
            let f = loop {
                let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(&a.sink.topic)
                    .key(key.as_str())
                    .headers(headers.clone());
                if let Some(v) = &value {
                    r = r.payload(v.as_slice());
                }
                match producer.send_result(r) {
                    Ok(f) => break f,
                    Err((e, _))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err((e, _)) => {
                        return Err(KafkaError::Delivery {
                            topic: a.sink.topic.clone(),
                            message: e.to_string(),
                        })
                    }
                }
            };
            waiting.push_back((job, f));
        }
        // Complete, in order, what the broker acknowledged (all of it when the queue is idle).
        let mut completed = false;
        let busy = got && waiting.len() < WINDOW;
        while let Some((_, f)) = waiting.front_mut() {
            let ready = if busy {
                match futures_util::FutureExt::now_or_never(&mut *f) {
                    Some(r) => r,
                    None => break,
                }
            } else {
                f.await
            };
            let (job, _) = waiting.pop_front().expect("front exists");
            match ready {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(KafkaError::Delivery {
                        topic: a.sink.topic.clone(),
                        message: e.to_string(),
                    })
                }
                Err(_) => return Err(KafkaError::Consumer("the producer was dropped".into())),
            }
            PipelineCounters::add(&a.counters.kafka_produced, 1);
            PipelineCounters::add(&a.counters.rows_written, 1);
            if let Some(t) = &job.ticket {
                a.tracker.complete(t);
            }
            completed = true;
        }
        unrecorded |= completed;
        // Resume points: when idle, and at least every second under load.
        if unrecorded && (waiting.is_empty() || recorded.elapsed() >= Duration::from_secs(1)) {
            a.tracker.take_moved();
            let positions = a.tracker.positions();
            match ch.write_state(&a.pipeline, &positions).await {
                Ok(()) => unrecorded = false,
                Err(e) => {
                    tracing::warn!(pipeline = %a.pipeline, error = %e, "could not record resume points; retried with the next ones")
                }
            }
            recorded = std::time::Instant::now();
        }
    }
}
