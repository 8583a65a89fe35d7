//! The root of the tree: one supervisor over every pipeline of the config (one_for_one: a
//! pipeline that escalates stops; the root ends when none is left), and the handles each
//! pipeline keeps outside its actors for the status page and metrics.
//!
//! Must never: let one pipeline's failure stop another.

use crate::cdc::change::SinkMsg;
use crate::cdc::tree::{cdc_pipeline, CdcHandles};
use crate::config::{Config, PipelinePlan};
use crate::flow::edge::Edge;
use crate::runtime::registry::Registry;
use crate::runtime::supervisor::{Strategy, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::sentiment::tree::{sentiment_pipeline, SentimentHandles};
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;

/// The long-lived parts of one pipeline.
#[derive(Clone)]
pub enum PipelineHandles {
    Cdc(CdcHandles),
    Sentiment(SentimentHandles),
}

impl PipelineHandles {
    /// The source → sink edge of a cdc pipeline.
    pub fn cdc_edge(&self) -> Option<&Edge<SinkMsg>> {
        match self {
            PipelineHandles::Cdc(h) => Some(&h.edge),
            PipelineHandles::Sentiment(_) => None,
        }
    }
}

/// Starts the root supervisor with every pipeline of the config.
pub async fn start_root(
    cfg: &Config,
    registry: Arc<Registry>,
) -> Result<
    (
        ActorRef<SupervisorMsg>,
        tokio::task::JoinHandle<()>,
        Vec<PipelineHandles>,
    ),
    ractor::SpawnErr,
> {
    let mut children = Vec::new();
    let mut handles = Vec::new();
    for p in &cfg.pipelines {
        let plan = cfg
            .plan_of(p)
            .map_err(|e| ractor::SpawnErr::StartupFailed(e.to_string().into()))?;
        let (spec, h) = match plan {
            PipelinePlan::Cdc(plan) => {
                let (spec, h) = cdc_pipeline(cfg, p, plan, registry.clone());
                (spec, PipelineHandles::Cdc(h))
            }
            PipelinePlan::Sentiment(plan) => {
                let (spec, h) = sentiment_pipeline(cfg, p, plan, registry.clone());
                (spec, PipelineHandles::Sentiment(h))
            }
        };
        children.push(spec);
        handles.push(h);
    }
    let args = SupervisorArgs {
        path: "root".into(),
        strategy: Strategy::OneForOne,
        policy: cfg.supervision,
        children,
        registry,
        // A pipeline's own children each get the shutdown timeout; give the pipeline room.
        shutdown_timeout: cfg.shutdown_timeout.0 * 2 + Duration::from_secs(1),
    };
    let (r, h) = Actor::spawn(None, Supervisor, args).await?;
    Ok((r, h, handles))
}
