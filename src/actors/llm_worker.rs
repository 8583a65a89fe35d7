//! One worker of an LLM pool: pulls the next job from the pool's bounded queue, classifies
//! the post (retrying errors with backoff behind the shared circuit breaker; an unparseable
//! reply is asked once more, then stored as `unknown` and counted), and hands the result to
//! the sink. The job it holds is recorded in its lease slot, so a restarted worker (same
//! slot) finishes the job its predecessor was killed in.
//!
//! Must never: drop a post (errors are retried until it is classified), or hold more than one
//! job.

use crate::ack::Ticket;
use crate::actors::sentiment_sink::{Classified, SentimentItem, SentimentSinkMsg};
use crate::circuit::CircuitBreaker;
use crate::edge::{Edge, WorkQueue};
use crate::llm::LlmClient;
use crate::protocol::mastodon::Post;
use crate::status::PipelineCounters;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, Span};

/// Work for the pool.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: JobKind,
    pub ticket: Option<Ticket>,
    /// Root span of this post's trace (created by the source).
    pub trace: Span,
    /// Open while the job waits in the queue; the worker that takes it closes it.
    pub queued: Option<Span>,
}

#[derive(Debug, Clone)]
pub enum JobKind {
    Classify(Post),
    Delete { instance: String, status_id: String },
}

/// The job each worker slot holds, for redelivery after a crash.
#[derive(Default)]
pub struct Leases {
    slots: Mutex<Vec<Option<Job>>>,
}

impl Leases {
    pub fn new(n: usize) -> Self {
        Leases { slots: Mutex::new(vec![None; n]) }
    }
    fn get(&self, i: usize) -> Option<Job> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(i).cloned().flatten()
    }
    fn set(&self, i: usize, job: Option<Job>) {
        if let Some(s) = self.slots.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            *s = job;
        }
    }
    /// Jobs held now (a worker is busy with each).
    pub fn busy(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|s| s.is_some()).count()
    }
}

/// Counters of the LLM stage.
#[derive(Default)]
pub struct LlmCounters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub unparsed_retries: AtomicU64,
    pub unknown: AtomicU64,
    pub classified: AtomicU64,
    pub redelivered: AtomicU64,
    pub latency_ms_total: AtomicU64,
}

pub struct WorkerArgs {
    pub index: usize,
    pub queue: WorkQueue<Job>,
    pub leases: Arc<Leases>,
    pub client: Arc<LlmClient>,
    pub breaker: Arc<CircuitBreaker>,
    pub sink: Edge<SentimentSinkMsg>,
    pub counters: Arc<LlmCounters>,
    pub pipeline_counters: Arc<PipelineCounters>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

pub enum WorkerMsg {
    Next,
}

pub struct LlmWorker;

impl Actor for LlmWorker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, args: WorkerArgs) -> Result<WorkerArgs, ActorProcessingErr> {
        myself.cast(WorkerMsg::Next)?;
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<WorkerMsg>, _msg: WorkerMsg, st: &mut WorkerArgs) -> Result<(), ActorProcessingErr> {
        // A job left in our slot by a predecessor that died mid-request comes first.
        let job = match st.leases.get(st.index) {
            Some(j) => {
                st.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                Some(j)
            }
            None => st.queue.recv_timeout(Duration::from_millis(200)).await,
        };
        if let Some(mut job) = job {
            drop(job.queued.take());
            st.leases.set(st.index, Some(job.clone()));
            let item = match &job.kind {
                JobKind::Delete { instance, status_id } => SentimentItem::Deleted { instance: instance.clone(), status_id: status_id.clone() },
                JobKind::Classify(post) => SentimentItem::Classified(classify(st, post, &job.trace).await),
            };
            let trace = job.trace.clone();
            let ticket = job.ticket.clone();
            let queue = tracing::info_span!(parent: &trace, "edge.queue", stage = "sink");
            st.sink.send(move |permit| { drop(queue); SentimentSinkMsg::Item { item, ticket, trace, permit } }).await?;
            st.leases.set(st.index, None);
        }
        myself.cast(WorkerMsg::Next)?;
        Ok(())
    }
}

async fn classify(st: &WorkerArgs, post: &Post, trace: &Span) -> Classified {
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut asked_again = false;
    let mut delay = st.backoff_initial;
    let label = loop {
        st.breaker.ready().await;
        attempts += 1;
        st.counters.requests.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(parent: trace, "llm.call", model = %st.client.model(), attempt = attempts, outcome = tracing::field::Empty);
        let reply = st.client.complete(&post.text).instrument(span.clone()).await;
        match reply {
            Ok(text) => {
                st.breaker.success();
                match st.client.parse(&text) {
                    Ok(label) => {
                        span.record("outcome", "label");
                        break label;
                    }
                    Err(why) if !asked_again => {
                        span.record("outcome", "unparsed");
                        asked_again = true;
                        st.counters.unparsed_retries.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(status = %post.status_id, reason = %why, "unparseable reply; asking once more");
                    }
                    Err(why) => {
                        span.record("outcome", "unknown");
                        st.counters.unknown.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(status = %post.status_id, reason = %why, "unparseable reply twice: stored as `unknown`");
                        break "unknown".to_string();
                    }
                }
            }
            Err(e) => {
                span.record("outcome", "error");
                st.breaker.failure();
                st.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(status = %post.status_id, attempt = attempts, error = %e, retry_in = ?delay, "LLM request failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(st.backoff_max);
            }
        }
    };
    let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    st.counters.classified.fetch_add(1, Ordering::Relaxed);
    st.counters.latency_ms_total.fetch_add(latency_ms as u64, Ordering::Relaxed);
    PipelineCounters::add(&st.pipeline_counters.rows_read, 1);
    Classified {
        post: post.clone(),
        label,
        model: st.client.model().to_string(),
        prompt_id: st.client.prompt_id().to_string(),
        latency_ms,
        attempts,
    }
}
