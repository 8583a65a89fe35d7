//! One worker of an LLM pool: pulls the next job from the pool's bounded queue, classifies
//! the post (retrying errors with backoff behind the shared circuit breaker; an unparseable
//! reply is asked once more, then stored as `unknown` and counted), and hands the result to
//! the sink. The job it holds is recorded in its lease slot, so a restarted worker (same
//! slot) finishes the job its predecessor was killed in.
//!
//! Must never: drop a post (errors are retried until it is classified), or hold more than one
//! job.

use crate::clients::llm::{LlmClient, LlmCounters};
use crate::flow::circuit::CircuitBreaker;
use crate::flow::edge::{Edge, WorkQueue};
use crate::protocol::mastodon::Post;
use crate::runtime::registry::PipelineCounters;
use crate::sentiment::clickhouse_sink::{Classified, SentimentItem, SentimentSinkMsg};
use crate::sentiment::job::{Job, JobKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Span;

/// The job each worker slot holds, for redelivery after a crash.
#[derive(Default)]
pub struct Leases {
    slots: Mutex<Vec<Option<Job>>>,
}

impl Leases {
    pub fn new(n: usize) -> Self {
        Leases {
            slots: Mutex::new(vec![None; n]),
        }
    }
    fn get(&self, i: usize) -> Option<Job> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .cloned()
            .flatten()
    }
    fn set(&self, i: usize, job: Option<Job>) {
        if let Some(s) = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(i)
        {
            *s = job;
        }
    }
    /// Jobs held now (a worker is busy with each).
    pub fn busy(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.is_some())
            .count()
    }
}

pub struct WorkerArgs {
    pub index: usize,
    pub queue: WorkQueue<Job>,
    pub leases: Arc<Leases>,
    pub client: Arc<LlmClient>,
    pub breaker: Arc<CircuitBreaker>,
    pub limiter: Arc<crate::flow::limiter::Limiter>,
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

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerArgs, ActorProcessingErr> {
        myself.cast(WorkerMsg::Next)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        _msg: WorkerMsg,
        st: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
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
                JobKind::Delete {
                    instance,
                    status_id,
                } => SentimentItem::Deleted {
                    instance: instance.clone(),
                    status_id: status_id.clone(),
                },
                JobKind::Classify(post) => {
                    SentimentItem::Classified(Box::new(classify(st, post, &job.trace).await))
                }
            };
            let trace = job.trace.clone();
            let ticket = job.ticket.clone();
            let queue = tracing::info_span!(parent: &trace, "edge.queue", stage = "sink");
            st.sink
                .send(move |permit| {
                    drop(queue);
                    SentimentSinkMsg::Item {
                        item,
                        ticket,
                        trace,
                        permit,
                    }
                })
                .await?;
            st.leases.set(st.index, None);
        }
        myself.cast(WorkerMsg::Next)?;
        Ok(())
    }
}

async fn classify(st: &WorkerArgs, post: &Post, trace: &Span) -> Classified {
    let policy = crate::clients::llm::RetryPolicy {
        backoff_initial: st.backoff_initial,
        backoff_max: st.backoff_max,
    };
    let out = crate::clients::llm::classify(
        &st.client,
        &st.breaker,
        &st.limiter,
        &st.counters,
        &policy,
        &post.text,
        trace,
    )
    .await;
    PipelineCounters::add(&st.pipeline_counters.rows_read, 1);
    Classified {
        post: post.clone(),
        label: out.label,
        model: st.client.model().to_string(),
        prompt_id: st.client.prompt_id().to_string(),
        latency_ms: out.latency_ms,
        attempts: out.attempts,
        confidence: out.confidence,
        llm_error: out.error,
    }
}
