//! Kafka plumbing shared by the Kafka sink and the Kafka sources: client configuration
//! (our settings, then every librdkafka property of the config on top), topic creation, the
//! state topic, and W3C trace context in message headers.
//!
//! Must never: put a property value of the config (passwords, keys, tokens) in a log line or
//! an error message; errors from librdkafka are scrubbed of every such value.

use crate::config::KafkaConfig;
use opentelemetry::propagation::TextMapPropagator;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedHeaders, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client ({role}): {message}")]
    Client { role: &'static str, message: String },
    #[error("kafka topic `{topic}`: {message}")]
    Topic { topic: String, message: String },
    #[error("kafka delivery to `{topic}` failed: {message}")]
    Delivery { topic: String, message: String },
    #[error("kafka consumer: {0}")]
    Consumer(String),
}

/// Removes every configured property value from a message (librdkafka quotes invalid values
/// in its errors).
pub fn scrub(k: &KafkaConfig, message: impl std::fmt::Display) -> String {
    let mut m = message.to_string();
    for v in k.properties.values() {
        if v.expose().len() >= 3 {
            m = m.replace(v.expose(), "***");
        }
    }
    m
}

/// The client configuration of one role: ours, then the config's properties over it.
pub fn client_config(k: &KafkaConfig, ours: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    c.set("client.id", &k.client_id);
    // librdkafka logs through the log crate otherwise; its errors reach us as results.
    c.set("log_level", "4");
    for (key, v) in ours {
        c.set(*key, *v);
    }
    for (key, v) in &k.properties {
        c.set(key, v.expose());
    }
    c
}

/// An idempotent producer (acks=all, retries without reordering or duplicates).
/// `delivery_timeout` bounds how long a message may wait for the broker.
pub fn producer(k: &KafkaConfig, delivery_timeout: Duration) -> Result<FutureProducer, KafkaError> {
    let timeout_ms = delivery_timeout.as_millis().max(1).to_string();
    client_config(
        k,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", &timeout_ms),
            // Bound the producer's own queue: memory stays flat when the broker is slow.
            ("queue.buffering.max.kbytes", "65536"),
            ("queue.buffering.max.messages", "100000"),
        ],
    )
    .create()
    .map_err(|e| KafkaError::Client {
        role: "producer",
        message: scrub(k, e),
    })
}

/// Creates the topics that do not exist yet (existing ones are left as they are).
pub async fn ensure_topics(
    k: &KafkaConfig,
    topics: &[String],
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaError> {
    ensure_topics_with(k, topics, partitions, replication, &[]).await
}

/// The topic configuration of a state topic: compacted, so the last value of every key is
/// kept for ever (with the broker's default `delete` policy a snapshot marker would expire
/// after `retention.ms`, 7 days, and the next start would snapshot again).
pub const STATE_TOPIC_CONFIG: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// As [`ensure_topics`], creating missing topics with `config` (existing topics are left as
/// they are).
pub async fn ensure_topics_with(
    k: &KafkaConfig,
    topics: &[String],
    partitions: i32,
    replication: i32,
    config: &[(&str, &str)],
) -> Result<(), KafkaError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        client_config(k, &[])
            .create()
            .map_err(|e| KafkaError::Client {
                role: "admin",
                message: scrub(k, e),
            })?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            config.iter().fold(
                NewTopic::new(t, partitions, TopicReplication::Fixed(replication)),
                |n, (key, value)| n.set(key, value),
            )
        })
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| KafkaError::Client {
            role: "admin",
            message: scrub(k, e),
        })?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, partitions, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Topic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Headers that carry `span`'s W3C trace context (`traceparent`, `tracestate`).
pub fn trace_headers(span: &Span) -> OwnedHeaders {
    let mut map: HashMap<String, String> = HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&span.context(), &mut map);
    let mut h = OwnedHeaders::new_with_capacity(map.len());
    for (key, value) in &map {
        h = h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    h
}

/// The trace context a producer put in a message's headers, if any.
pub fn trace_context(headers: Option<&BorrowedHeaders>) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt;
    let headers = headers?;
    let mut map: HashMap<String, String> = HashMap::new();
    for h in headers.iter() {
        if h.key == "traceparent" || h.key == "tracestate" {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                map.insert(h.key.to_string(), v.to_string());
            }
        }
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&map);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The consumer settings both Kafka sources use: manual commits of inserted offsets only,
/// bounded prefetch, and dynamic group membership (static membership, `group.instance.id`,
/// only when `instance_id` is set: a static member sends no LeaveGroup when it closes, and on
/// brokers whose coordinator handles a returning static member poorly (tansu 0.6) the new
/// member can end up in a join/sync loop that never assigns it anything).
pub fn consumer_settings(s: &crate::config::KafkaSourceConfig) -> Vec<(&'static str, String)> {
    let mut settings = vec![("group.id", s.group.clone())];
    if !s.instance_id.is_empty() {
        settings.push(("group.instance.id", s.instance_id.clone()));
    }
    settings.extend([
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", s.start.clone()),
        ("enable.partition.eof", "false".into()),
        // Bound what librdkafka prefetches: memory stays flat while the sink is slow.
        ("queued.max.messages.kbytes", "16384".into()),
        // Topics created after the subscription (a regular expression) are found soon.
        ("topic.metadata.refresh.interval.ms", "5000".into()),
        // A member that died holds its partitions until its session expires: keep that
        // short. We poll all the time (also while paused), so a short max.poll.interval is
        // safe, and a rebalance waits at most that long.
        ("session.timeout.ms", "10000".into()),
        ("heartbeat.interval.ms", "2000".into()),
        ("max.poll.interval.ms", "30000".into()),
    ]);
    settings
}

/// The context of the sources' consumers: logs every change of the group's assignment (a
/// member that gets no partitions reads nothing, and says so here) and keeps the number of
/// partitions assigned now, for the sources' assignment watchdog.
pub struct GroupLog {
    pipeline: String,
    assigned: std::sync::atomic::AtomicUsize,
    /// The cooperative protocol (`partition.assignment.strategy` cooperative-sticky): a
    /// rebalance adds or takes away partitions; otherwise (eager) it assigns all anew.
    incremental: bool,
}

impl GroupLog {
    /// Partitions assigned to this member now.
    pub fn assigned(&self) -> usize {
        self.assigned.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A consumer without partitions for this long is restarted unless it is a standby (no
/// other member holds more than one partition of a topic): a group coordinator can leave a member joined
/// with nothing assigned, or in a join/sync loop that never completes (seen with tansu 0.6 after a member was killed), and
/// a new member gets a fresh join. (A member that has nothing to read because its topics do
/// not exist yet only restarts its consumer.)
pub const ASSIGNMENT_WATCHDOG: Duration = Duration::from_secs(60);

/// Sooner for a consumer that is the only member of its group: nobody else holds the
/// partitions, so having none is the coordinator's failure (tansu 0.6, when the member it
/// expired was the group's leader, leaves the one that is left with an empty assignment and
/// never asks it to join again). Measured from the start of its starvation: a fresh join may
/// take a while.
pub const ASSIGNMENT_WATCHDOG_ALONE: Duration = Duration::from_secs(20);

/// A standby member (it saw other members hold the partitions) that finds itself alone and
/// still without partitions this long after is restarted: the member it stood by for is gone
/// and the coordinator did not hand its partitions over (the takeover of a standby pair).
pub const ALONE_AFTER_OTHERS: Duration = Duration::from_secs(3);

/// Starvation shorter than this is not looked into (a rebalance under way).
const LOOK_AFTER: Duration = Duration::from_secs(3);

/// What the watchdog makes of a consumer's assignment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starvation {
    /// It has partitions, or has been without them only briefly.
    Fed,
    /// Without partitions for a while: look at the group ([`AssignmentWatchdog::decide`]).
    Look,
}

/// Tracks how long a consumer has been without partitions, and what its group looked like.
#[derive(Default)]
pub struct AssignmentWatchdog {
    since: Option<std::time::Instant>,
    /// A look found other members (this one stood by for them).
    others_seen: bool,
    alone_since: Option<std::time::Instant>,
}

impl AssignmentWatchdog {
    /// The verdict on a consumer with `assigned` partitions now (checked often).
    pub fn check(&mut self, assigned: usize) -> Starvation {
        self.check_at(std::time::Instant::now(), assigned)
    }

    fn check_at(&mut self, now: std::time::Instant, assigned: usize) -> Starvation {
        if assigned > 0 {
            *self = AssignmentWatchdog::default();
            return Starvation::Fed;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= LOOK_AFTER {
            Starvation::Look
        } else {
            Starvation::Fed
        }
    }

    /// After a look at the group: `Some(alone)` when the consumer is to be restarted.
    pub fn decide(&mut self, view: GroupView) -> Option<bool> {
        self.decide_at(std::time::Instant::now(), view)
    }

    fn decide_at(&mut self, now: std::time::Instant, view: GroupView) -> Option<bool> {
        let starving = now.duration_since(*self.since.get_or_insert(now));
        match view {
            GroupView::OthersFed => {
                self.others_seen = true;
                self.alone_since = None;
                None
            }
            GroupView::OthersStarved | GroupView::OthersCrowded => {
                self.others_seen = true;
                self.alone_since = None;
                (starving >= ASSIGNMENT_WATCHDOG).then_some(false)
            }
            GroupView::Alone => {
                let alone = now.duration_since(*self.alone_since.get_or_insert(now));
                let left_alone = self.others_seen && alone >= ALONE_AFTER_OTHERS;
                (left_alone || starving >= ASSIGNMENT_WATCHDOG_ALONE).then_some(true)
            }
            // A standby waits for an answer (a restart would take the active's partitions
            // away for a rebalance); a member that never saw others restarts as if alone.
            GroupView::Unknown if self.others_seen => None,
            GroupView::Unknown => (starving >= ASSIGNMENT_WATCHDOG_ALONE).then_some(true),
        }
    }
}

/// A consumer's group as its coordinator describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupView {
    /// This member is the only one, or the coordinator does not answer.
    Alone,
    /// Other members hold partitions, none more than one of a topic: this one is a standby
    /// (more members than partitions), nothing to cure.
    OthersFed,
    /// Another member holds several partitions of one topic while this one has none: the
    /// assignors spread a topic's partitions over the members, so the coordinator left this
    /// one out. (Several one-partition topics on one member is the range assignor's way.)
    OthersCrowded,
    /// The coordinator did not answer.
    Unknown,
    /// Other members, none with partitions (as far as the coordinator says).
    OthersStarved,
}

/// `consumer`'s group (a blocking call, of at most 2 s).
pub fn group_view<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    group: &str,
) -> GroupView {
    let Ok(list) = consumer.fetch_group_list(Some(group), Duration::from_secs(2)) else {
        return GroupView::Unknown;
    };
    let Some(g) = list.groups().iter().find(|g| g.name() == group) else {
        return GroupView::Alone;
    };
    if g.members().len() <= 1 {
        return GroupView::Alone;
    }
    let shapes: Vec<(usize, usize)> = g
        .members()
        .iter()
        .map(|m| m.assignment().map_or((0, 0), assignment_shape))
        .collect();
    if shapes.iter().all(|(total, _)| *total == 0) {
        GroupView::OthersStarved
    } else if shapes.iter().any(|(_, of_one_topic)| *of_one_topic > 1) {
        GroupView::OthersCrowded
    } else {
        GroupView::OthersFed
    }
}

/// A member's assignment (the consumer protocol's `Assignment`: version i16, then topics,
/// each a string and an array of i32 partitions): its partitions, and the most of one topic;
/// `(0, 0)` for bytes it cannot read.
pub fn assignment_shape(b: &[u8]) -> (usize, usize) {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    let read = |mut b: &[u8]| -> Option<(usize, usize)> {
        take(&mut b, 2)?;
        let topics = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
        let (mut n, mut most) = (0usize, 0usize);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
            take(&mut b, len.max(0) as usize)?;
            let parts = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?).max(0) as usize;
            take(&mut b, parts.checked_mul(4)?)?;
            n += parts;
            most = most.max(parts);
        }
        Some((n, most))
    };
    read(b).unwrap_or((0, 0))
}

/// The assignment watchdog's look at a consumer (often: a standby member takes partitions
/// over soon after the member holding them is gone): sets the pipeline's role, and returns
/// the error that restarts the consumer when it is starved for the coordinator's fault
/// (`lookup` reads the group, blocking, only then).
pub async fn watch_assignment(
    watchdog: &mut AssignmentWatchdog,
    assigned: usize,
    counters: &crate::runtime::registry::PipelineCounters,
    lookup: impl FnOnce() -> GroupView + Send + 'static,
) -> Result<(), KafkaError> {
    set_role(counters, assigned);
    if watchdog.check(assigned) == Starvation::Fed {
        return Ok(());
    }
    let view = tokio::task::spawn_blocking(lookup)
        .await
        .unwrap_or(GroupView::OthersFed);
    match watchdog.decide(view) {
        Some(alone) => Err(starved_error(alone)),
        None => Ok(()),
    }
}

/// How often the watchdog looks.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A group member's role: active while the group assigns it partitions, a standby (waiting
/// for a rebalance to give it some) while it has none.
pub fn set_role(counters: &crate::runtime::registry::PipelineCounters, assigned: usize) {
    use crate::runtime::registry::{ROLE_ACTIVE, ROLE_STANDBY};
    let role = if assigned > 0 {
        ROLE_ACTIVE
    } else {
        ROLE_STANDBY
    };
    counters
        .role
        .store(role, std::sync::atomic::Ordering::Relaxed);
}

/// The error that restarts a starved consumer.
pub fn starved_error(alone: bool) -> KafkaError {
    KafkaError::Consumer(if alone {
        "no partition assigned, and no other member in the group (or no answer from its coordinator): restarting the consumer for a fresh group join".to_string()
    } else {
        format!("no partition assigned for {ASSIGNMENT_WATCHDOG:?}, nor to any other member of the group: restarting the consumer for a fresh group join")
    })
}

impl rdkafka::client::ClientContext for GroupLog {}

impl rdkafka::consumer::ConsumerContext for GroupLog {
    fn post_rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let list = |l: &TopicPartitionList| {
            l.elements()
                .iter()
                .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // What is assigned after this rebalance, counted from the rebalance itself: asking the
        // consumer (`assignment()`) from here blocks for ever while it closes (its drop
        // revokes through this callback).
        let _ = consumer;
        let before = self.assigned();
        let now = match rebalance {
            Rebalance::Assign(l) if self.incremental => before + l.count(),
            Rebalance::Assign(l) => l.count(),
            Rebalance::Revoke(l) if self.incremental => before.saturating_sub(l.count()),
            Rebalance::Revoke(_) => 0,
            Rebalance::Error(_) => before,
        };
        self.assigned
            .store(now, std::sync::atomic::Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(l) => {
                tracing::info!(pipeline = %self.pipeline, count = l.count(), partitions = %list(l), assigned = now, "kafka partitions assigned")
            }
            Rebalance::Revoke(l) => {
                tracing::info!(pipeline = %self.pipeline, count = l.count(), partitions = %list(l), assigned = now, "kafka partitions revoked")
            }
            Rebalance::Error(e) => {
                tracing::warn!(pipeline = %self.pipeline, error = %e, "kafka group rebalance failed")
            }
        }
    }
}

pub type GroupConsumer = rdkafka::consumer::StreamConsumer<GroupLog>;

/// A consumer subscribed to the source's topics.
pub fn subscribe(
    k: &KafkaConfig,
    s: &crate::config::KafkaSourceConfig,
    pipeline: &str,
) -> Result<GroupConsumer, KafkaError> {
    let settings = consumer_settings(s);
    let ours: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let consumer: GroupConsumer = client_config(k, &ours)
        .create_with_context(GroupLog {
            pipeline: pipeline.to_string(),
            assigned: std::sync::atomic::AtomicUsize::new(0),
            incremental: k
                .properties
                .get("partition.assignment.strategy")
                .is_some_and(|v| v.expose().contains("cooperative")),
        })
        .map_err(|e| KafkaError::Client {
            role: "consumer",
            message: scrub(k, e),
        })?;
    let topics: Vec<&str> = s.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| KafkaError::Consumer(scrub(k, e)))?;
    Ok(consumer)
}

/// A source's consumer, subscribed to its topics, and the producer of its dead-letter topic
/// (created when missing): what every Kafka source starts with.
pub async fn subscribe_with_dead_letters(
    k: &KafkaConfig,
    s: &crate::config::KafkaSourceConfig,
    pipeline: &str,
) -> Result<(GroupConsumer, FutureProducer), KafkaError> {
    let consumer = subscribe(k, s, pipeline)?;
    let dlq = producer(k, Duration::from_secs(30))?;
    ensure_topics(k, std::slice::from_ref(&s.dead_letter_topic), 1, 1).await?;
    tracing::info!(pipeline = %pipeline, group = %s.group, topics = ?s.topics, "kafka source subscribed");
    Ok((consumer, dlq))
}

/// Waits for one message to be acknowledged by the broker.
pub async fn deliver(
    producer: &FutureProducer,
    record: FutureRecord<'_, str, [u8]>,
) -> Result<(), KafkaError> {
    let topic = record.topic.to_string();
    producer
        .send(record, rdkafka::util::Timeout::Never)
        .await
        .map(|_| ())
        .map_err(|(e, _)| KafkaError::Delivery {
            topic,
            message: e.to_string(),
        })
}

/// The last value written under `key` to the (single-partition) state topic, read from the
/// beginning up to the end as it is now. `None` when the topic is empty or missing.
pub async fn read_state(
    k: &KafkaConfig,
    topic: &str,
    replication: i32,
    keys: &[String],
) -> Result<Vec<Option<String>>, KafkaError> {
    // An empty state topic answers every question the same as a missing one, and reading a
    // missing topic's watermarks is an error on some brokers: create it first.
    ensure_topics_with(k, &[topic.to_string()], 1, replication, STATE_TOPIC_CONFIG).await?;
    let k = k.clone();
    let (topic, keys) = (topic.to_string(), keys.to_vec());
    tokio::task::spawn_blocking(move || read_state_blocking(&k, &topic, &keys))
        .await
        .map_err(|e| KafkaError::Consumer(e.to_string()))?
}

fn read_state_blocking(
    k: &KafkaConfig,
    topic: &str,
    keys: &[String],
) -> Result<Vec<Option<String>>, KafkaError> {
    let mut last: Vec<Option<String>> = vec![None; keys.len()];
    let consumer: BaseConsumer = client_config(
        k,
        &[
            ("group.id", "tributary-state-reader"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ],
    )
    .create()
    .map_err(|e| KafkaError::Client {
        role: "state reader",
        message: scrub(k, e),
    })?;
    let timeout = Duration::from_secs(10);
    let (low, high) = match consumer.fetch_watermarks(topic, 0, timeout) {
        Ok(w) => w,
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            return Ok(last)
        }
        Err(e) => return Err(KafkaError::Consumer(scrub(k, e))),
    };
    if high <= low {
        return Ok(last);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))
        .map_err(|e| KafkaError::Consumer(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::Consumer(scrub(k, e)))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Consumer(format!(
                "state topic `{topic}`: could not read up to offset {high} within 30 s"
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.map_err(|e| KafkaError::Consumer(scrub(k, e)))?;
        if let Some(i) = keys.iter().position(|k| m.key() == Some(k.as_bytes())) {
            last[i] = m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
        }
        if m.offset() >= high - 1 {
            return Ok(last);
        }
    }
}

/// Writes `value` under `key` to the state topic and waits for the broker.
pub async fn write_state(
    k: &KafkaConfig,
    producer: &FutureProducer,
    topic: &str,
    replication: i32,
    key: &str,
    value: &str,
) -> Result<(), KafkaError> {
    ensure_topics_with(k, &[topic.to_string()], 1, replication, STATE_TOPIC_CONFIG).await?;
    deliver(
        producer,
        FutureRecord::to(topic)
            .key(key)
            .payload(value.as_bytes())
            .partition(0),
    )
    .await
}

/// Sends a message that cannot be read to the dead-letter topic, with its original headers
/// and the reason in Kafka Connect's `__connect.errors.*` headers, and waits for the broker.
pub async fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    m: &rdkafka::message::OwnedMessage,
    connector: &str,
    class: &str,
    reason: &str,
) -> Result<(), KafkaError> {
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let mut h = OwnedHeaders::new();
    if let Some(orig) = m.headers() {
        for x in orig.iter() {
            h = h.insert(Header {
                key: x.key,
                value: x.value,
            });
        }
    }
    for (key, value) in [
        ("__connect.errors.topic", m.topic()),
        ("__connect.errors.partition", &partition),
        ("__connect.errors.offset", &offset),
        ("__connect.errors.connector.name", connector),
        ("__connect.errors.stage", "VALUE_CONVERTER"),
        ("__connect.errors.exception.class.name", class),
        ("__connect.errors.exception.message", reason),
    ] {
        h = h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq).headers(h);
    if let Some(k) = m.key() {
        r = r.key(k);
    }
    if let Some(v) = m.payload() {
        r = r.payload(v);
    }
    producer
        .send(r, rdkafka::util::Timeout::Never)
        .await
        .map(|_| ())
        .map_err(|(e, _)| KafkaError::Delivery {
            topic: dlq.to_string(),
            message: e.to_string(),
        })?;
    tracing::warn!(pipeline = %connector, topic = %m.topic(), partition = m.partition(), offset = m.offset(), reason, dead_letter_topic = %dlq, "unreadable message sent to the dead-letter topic");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn the_watchdog_restarts_a_starved_consumer_only_for_the_coordinators_fault() {
        use GroupView::*;
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // A fresh member alone: looked into after 3 s, restarted after 20 s.
        let mut w = AssignmentWatchdog::default();
        assert_eq!(w.check_at(at(0), 0), Starvation::Fed);
        assert_eq!(w.check_at(at(2), 0), Starvation::Fed);
        assert_eq!(w.check_at(at(3), 0), Starvation::Look);
        assert_eq!(w.decide_at(at(3), Alone), None);
        assert_eq!(w.decide_at(at(19), Alone), None);
        assert_eq!(w.decide_at(at(20), Alone), Some(true));
        // A standby member: never restarted while another holds partitions, however long.
        let mut w = AssignmentWatchdog::default();
        w.check_at(at(0), 0);
        for s in [3, 8, 10] {
            assert_eq!(w.check_at(at(s), 0), Starvation::Look);
            assert_eq!(w.decide_at(at(s), OthersFed), None);
        }
        // ... until it is left alone: restarted 3 s later (the takeover), or at once when it
        // has stood by longer than a fresh join may take.
        assert_eq!(w.decide_at(at(11), Alone), None);
        assert_eq!(w.decide_at(at(14), Alone), Some(true));
        let mut w = AssignmentWatchdog::default();
        w.check_at(at(0), 0);
        assert_eq!(w.decide_at(at(600), OthersFed), None);
        assert_eq!(w.decide_at(at(601), Alone), Some(true));
        // Others without partitions either, or one holding several: restarted after 60 s.
        for view in [OthersStarved, OthersCrowded] {
            let mut w = AssignmentWatchdog::default();
            w.check_at(at(0), 0);
            assert_eq!(w.decide_at(at(59), view), None);
            assert_eq!(w.decide_at(at(60), view), Some(false));
        }
        // No answer: a standby waits; a member that never saw others restarts after 20 s.
        let mut w = AssignmentWatchdog::default();
        w.check_at(at(0), 0);
        assert_eq!(w.decide_at(at(5), OthersFed), None);
        assert_eq!(w.decide_at(at(100), Unknown), None);
        let mut w = AssignmentWatchdog::default();
        w.check_at(at(0), 0);
        assert_eq!(w.decide_at(at(19), Unknown), None);
        assert_eq!(w.decide_at(at(20), Unknown), Some(true));
        // Partitions reset everything.
        assert_eq!(w.check_at(at(61), 2), Starvation::Fed);
        assert!(w.since.is_none() && !w.others_seen);
    }

    #[test]
    fn assignments_are_read_from_the_consumer_protocol() {
        // version 1; topics: "ab" [0, 2], "c" [5]; user data.
        let mut b = vec![0, 1, 0, 0, 0, 2, 0, 2, b'a', b'b', 0, 0, 0, 2];
        b.extend([0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend([0, 1, b'c', 0, 0, 0, 1, 0, 0, 0, 5]);
        b.extend([0, 0, 0, 0]);
        assert_eq!(assignment_shape(&b), (3, 2));
        assert_eq!(assignment_shape(&[0, 1, 0, 0, 0, 0]), (0, 0));
        // Cut short or absurd: nothing read, nothing counted, no panic.
        assert_eq!(assignment_shape(&b[..12]), (0, 0));
        assert_eq!(assignment_shape(&[]), (0, 0));
        assert_eq!(assignment_shape(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), (0, 0));
        assert_eq!(
            assignment_shape(&[0, 1, 0, 0, 0, 1, 0, 0, 0x7f, 0xff, 0xff, 0xff]),
            (0, 0)
        );
    }

    #[test]
    fn property_values_never_reach_an_error() {
        let mut properties = std::collections::BTreeMap::new();
        properties.insert("sasl.password".to_string(), Secret::new("hunter2-secret"));
        // An invalid value: librdkafka quotes it in its error.
        properties.insert(
            "security.protocol".to_string(),
            Secret::new("not-a-protocol-hunter2-secret"),
        );
        let k = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            client_id: "t".into(),
            properties,
            secret_files: Default::default(),
        };
        let err = producer(&k, Duration::from_secs(1))
            .err()
            .expect("invalid property");
        let text = err.to_string();
        assert!(text.contains("security.protocol"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
