//! The tree of a sentiment pipeline:
//!
//! ```text
//! pipeline (rest_for_one)
//! ├── sink: ClickHouse mastodon_sentiment
//! ├── pool (one_for_one): llm workers 0..concurrency
//! └── source: Mastodon streams, or a replay file
//! ```
//! A sink restart restarts the pool and the source (the source resumes from the last
//! recorded position); a worker restart touches only that worker, which finishes the job its
//! predecessor held. The queue, leases, ack tracker and breaker live here, across restarts.

use crate::clients::llm::{LlmClient, LlmCounters};
use crate::config::{Config, PipelineConfig, PostSink, PostSource, SentimentPlan};
use crate::flow::ack::AckTracker;
use crate::flow::circuit::CircuitBreaker;
use crate::flow::edge::{Edge, WorkQueue};
use crate::runtime::registry::{Registry, ROLE_ACTIVE};
use crate::runtime::supervisor::{
    spawn_child, supervisor_start, ChildSpec, Restart, StartFn, Strategy,
};
use crate::sentiment::clickhouse_sink::{SentimentSink, SentimentSinkArgs, SentimentSinkMsg};
use crate::sentiment::job::Job;
use crate::sentiment::kafka_publisher::{PublisherArgs, StatusPublisher};
use crate::sentiment::kafka_source::{KafkaStatusSource, StatusSourceArgs};
use crate::sentiment::llm_worker::{Leases, LlmWorker, WorkerArgs};
use crate::sentiment::mastodon_source::{MastodonArgs, MastodonSource};
use crate::sentiment::replay_source::{ReplayArgs, ReplaySource};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The long-lived parts of a sentiment pipeline (also what tests and status read).
#[derive(Clone)]
pub struct SentimentHandles {
    pub queue: WorkQueue<Job>,
    pub sink_edge: Edge<SentimentSinkMsg>,
    pub tracker: Arc<AckTracker>,
    pub leases: Arc<Leases>,
    pub breaker: Arc<CircuitBreaker>,
    /// The adaptive limit on requests in flight.
    pub limiter: Arc<crate::flow::limiter::Limiter>,
    pub llm: Arc<LlmCounters>,
    /// Posts skipped by the filter or unreadable.
    pub skipped: Arc<AtomicU64>,
    /// Stream events that could not be read (malformed), counted and skipped.
    pub malformed: Arc<AtomicU64>,
    /// Stream events received, and stream reconnects.
    pub events: Arc<AtomicU64>,
    pub reconnects: Arc<AtomicU64>,
}

pub fn sentiment_pipeline(
    cfg: &Config,
    p: &PipelineConfig,
    plan: SentimentPlan,
    registry: Arc<Registry>,
) -> (ChildSpec, SentimentHandles) {
    // A publishing pipeline has no LLM: its handles get the defaults (one slot, no limits).
    let llm_cfg = match &plan.sink {
        PostSink::Classify { llm, .. } => llm.clone(),
        PostSink::Publish { .. } => crate::config::defaults::llm(),
    };
    let h = SentimentHandles {
        queue: WorkQueue::new(
            format!(
                "{}/source->{}",
                p.name,
                match plan.sink {
                    PostSink::Publish { .. } => "kafka",
                    PostSink::Classify { .. } => "llm",
                }
            ),
            llm_cfg.queue,
        ),
        sink_edge: Edge::new(format!("{}/llm->sink", p.name), p.batch.edge_capacity),
        tracker: Arc::new(AckTracker::default()),
        leases: Arc::new(Leases::new(llm_cfg.concurrency)),
        breaker: Arc::new(CircuitBreaker::new(
            llm_cfg.circuit_failures,
            llm_cfg.circuit_cooldown.0,
        )),
        limiter: Arc::new(crate::flow::limiter::Limiter::new(
            llm_cfg.concurrency,
            llm_cfg.adaptive_concurrency,
        )),
        llm: Arc::new(LlmCounters::default()),
        skipped: Arc::new(AtomicU64::new(0)),
        malformed: Arc::new(AtomicU64::new(0)),
        events: Arc::new(AtomicU64::new(0)),
        reconnects: Arc::new(AtomicU64::new(0)),
    };
    let counters = registry.pipeline(&p.name);
    let path = format!("root/{}", p.name);

    let sink: StartFn = {
        let (p, h, counters) = (p.clone(), h.clone(), counters.clone());
        Arc::new(move |sup| {
            let args = SentimentSinkArgs {
                pipeline: p.name.clone(),
                clickhouse: p.clickhouse.clone(),
                batch: p.batch,
                edge: h.sink_edge.clone(),
                tracker: h.tracker.clone(),
                counters: counters.clone(),
            };
            spawn_child(SentimentSink, args, sup)
        })
    };
    let workers: Vec<ChildSpec> = (0..llm_cfg.concurrency)
        .map(|index| {
            let (h, counters, llm_cfg) = (h.clone(), counters.clone(), llm_cfg.clone());
            let start: StartFn = Arc::new(move |sup| {
                let client = LlmClient::new(&llm_cfg).map(Arc::new);
                let args = client.map(|client| WorkerArgs {
                    index,
                    queue: h.queue.clone(),
                    leases: h.leases.clone(),
                    client,
                    breaker: h.breaker.clone(),
                    limiter: h.limiter.clone(),
                    sink: h.sink_edge.clone(),
                    counters: h.llm.clone(),
                    pipeline_counters: counters.clone(),
                    backoff_initial: llm_cfg.backoff_initial.0,
                    backoff_max: llm_cfg.circuit_cooldown.0.max(llm_cfg.backoff_initial.0),
                });
                match args {
                    Ok(args) => spawn_child(LlmWorker, args, sup),
                    Err(e) => Box::pin(async move {
                        Err(ractor::SpawnErr::StartupFailed(e.to_string().into()))
                    }),
                }
            });
            ChildSpec::new(format!("worker-{index}"), Restart::Permanent, start)
        })
        .collect();
    let pool = supervisor_start(
        format!("{path}/pool"),
        Strategy::OneForOne,
        cfg.supervision,
        workers,
        registry.clone(),
        cfg.shutdown_timeout.0,
    );
    let source: StartFn = {
        let (p, h, counters) = (p.clone(), h.clone(), counters.clone());
        let source = plan.source.clone();
        Arc::new(move |sup| match &source {
            PostSource::Kafka { kafka, source } => {
                let args = StatusSourceArgs {
                    pipeline: p.name.clone(),
                    kafka: kafka.clone(),
                    source: source.clone(),
                    queue: h.queue.clone(),
                    tracker: h.tracker.clone(),
                    counters: counters.clone(),
                };
                spawn_child(KafkaStatusSource, args, sup)
            }
            PostSource::Replay(replay) => {
                // One process reads the file: it is the active.
                counters.role.store(ROLE_ACTIVE, Ordering::Relaxed);
                let args = ReplayArgs {
                    pipeline: p.name.clone(),
                    replay: replay.clone(),
                    clickhouse: p.clickhouse.clone(),
                    queue: h.queue.clone(),
                    tracker: h.tracker.clone(),
                    skipped: h.skipped.clone(),
                };
                spawn_child(ReplaySource, args, sup)
            }
            PostSource::Mastodon(m) => {
                counters.role.store(ROLE_ACTIVE, Ordering::Relaxed);
                let args = MastodonArgs {
                    pipeline: p.name.clone(),
                    mastodon: m.clone(),
                    clickhouse: p.clickhouse.clone(),
                    queue: h.queue.clone(),
                    tracker: h.tracker.clone(),
                    skipped: h.skipped.clone(),
                    malformed: h.malformed.clone(),
                    events: h.events.clone(),
                    reconnects: h.reconnects.clone(),
                };
                spawn_child(MastodonSource, args, sup)
            }
        })
    };
    let children = match &plan.sink {
        // Publishing: source → statuses topic, no LLM and no ClickHouse table.
        PostSink::Publish { kafka: k, sink: ks } => {
            let publisher: StartFn = {
                let (p, h, counters, k, ks) = (
                    p.clone(),
                    h.clone(),
                    counters.clone(),
                    k.clone(),
                    ks.clone(),
                );
                Arc::new(move |sup| {
                    let args = PublisherArgs {
                        pipeline: p.name.clone(),
                        kafka: k.clone(),
                        sink: ks.clone(),
                        clickhouse: p.clickhouse.clone(),
                        queue: h.queue.clone(),
                        tracker: h.tracker.clone(),
                        counters: counters.clone(),
                    };
                    spawn_child(StatusPublisher, args, sup)
                })
            };
            vec![
                ChildSpec::new("sink", Restart::Permanent, publisher)
                    .classified_by(crate::clients::clickhouse::classify),
                ChildSpec::new("source", Restart::Permanent, source)
                    .classified_by(crate::clients::clickhouse::classify),
            ]
        }
        PostSink::Classify { .. } => vec![
            ChildSpec::new("sink", Restart::Permanent, sink)
                .classified_by(crate::clients::clickhouse::classify),
            ChildSpec::new("pool", Restart::Permanent, pool),
            ChildSpec::new("source", Restart::Permanent, source)
                .classified_by(crate::clients::clickhouse::classify),
        ],
    };
    let start = supervisor_start(
        path,
        Strategy::RestForOne,
        cfg.supervision,
        children,
        registry,
        cfg.shutdown_timeout.0,
    );
    (ChildSpec::new(p.name.clone(), Restart::Temporary, start), h)
}
