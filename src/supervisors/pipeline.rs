//! The trees: one rest_for_one supervisor per pipeline over [sink, source] (a sink that
//! restarts takes the source with it, so the stream is replayed from the last confirmed LSN;
//! a source that restarts leaves the sink and its acknowledged work alone), and the root
//! over all pipelines (a pipeline that escalates stops; the root ends when none is left).
//!
//! The objects a restart must not lose live here, outside the actors: the edge, the
//! acknowledgement channel and the counters.

use super::supervisor::{
    supervisor_start, ChildSpec, Restart, StartFn, Strategy, Supervisor, SupervisorArgs,
    SupervisorMsg,
};
use crate::actors::clickhouse_sink::{ClickHouseSink, SinkArgs, SinkMsg};
use crate::actors::kafka_sink::{KafkaSink, KafkaSinkArgs};
use crate::actors::kafka_source::{KafkaCdcSource, KafkaSourceArgs, TableIds};
use crate::actors::postgres_source::{PostgresSource, SourceArgs};
use crate::config::{Config, PipelineConfig, PipelineKind};
use crate::edge::Edge;
use crate::protocol::pgoutput::Lsn;
use crate::status::Registry;
use ractor::{Actor, ActorRef};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The long-lived parts of one pipeline.
#[derive(Clone)]
pub enum PipelineHandles {
    Cdc {
        edge: Edge<SinkMsg>,
        acks: Arc<watch::Sender<Lsn>>,
    },
    Sentiment(super::sentiment::SentimentHandles),
}

impl PipelineHandles {
    /// The source → sink edge of a cdc pipeline.
    pub fn cdc_edge(&self) -> Option<&Edge<SinkMsg>> {
        match self {
            PipelineHandles::Cdc { edge, .. } => Some(edge),
            PipelineHandles::Sentiment(_) => None,
        }
    }
}

/// A cdc pipeline: Postgres or Debezium topics in, ClickHouse or Debezium topics out.
pub fn cdc_pipeline(
    cfg: &Config,
    p: &PipelineConfig,
    registry: Arc<Registry>,
) -> (ChildSpec, PipelineHandles) {
    let edge: Edge<SinkMsg> = Edge::new(format!("{}/source->sink", p.name), p.batch.edge_capacity);
    let acks = Arc::new(watch::channel(0 as Lsn).0);
    let counters = registry.pipeline(&p.name);
    let handles = PipelineHandles::Cdc {
        edge: edge.clone(),
        acks: acks.clone(),
    };

    let sink_start: StartFn = {
        let (p, edge, acks, counters) = (p.clone(), edge.clone(), acks.clone(), counters.clone());
        let kafka = cfg.kafka.clone();
        Arc::new(move |sup| {
            if let (Some(k), Some(ks)) = (&kafka, &p.kafka_sink) {
                let args = KafkaSinkArgs {
                    pipeline: p.name.clone(),
                    kafka: k.clone(),
                    sink: ks.clone(),
                    database: p
                        .postgres
                        .as_ref()
                        .map(|pg| pg.database.clone())
                        .unwrap_or_default(),
                    edge: edge.clone(),
                    acks: acks.clone(),
                    counters: counters.clone(),
                };
                return Box::pin(async move {
                    Ok(Actor::spawn_linked(None, KafkaSink, args, sup)
                        .await?
                        .0
                        .get_cell())
                });
            }
            let args = SinkArgs {
                pipeline: p.name.clone(),
                clickhouse: p.clickhouse.clone(),
                batch: p.batch,
                edge: edge.clone(),
                acks: acks.clone(),
                counters: counters.clone(),
            };
            Box::pin(async move {
                Ok(Actor::spawn_linked(None, ClickHouseSink, args, sup)
                    .await?
                    .0
                    .get_cell())
            })
        })
    };
    let drain_timeout = cfg.shutdown_timeout.0;
    let seq = Arc::new(AtomicU64::new(0));
    let tables: TableIds = Arc::default();
    let source_start: StartFn = {
        let (p, edge, acks, counters) = (p.clone(), edge.clone(), acks.clone(), counters.clone());
        let kafka = cfg.kafka.clone();
        Arc::new(move |sup| {
            let (Some(pg), None) = (&p.postgres, &p.kafka_source) else {
                let (Some(k), Some(ks)) = (&kafka, &p.kafka_source) else {
                    // The config's validation rules this out.
                    return Box::pin(async {
                        Err(ractor::SpawnErr::StartupFailed(
                            "a cdc pipeline needs postgres, or kafka_source with [kafka]".into(),
                        ))
                    });
                };
                let args = KafkaSourceArgs {
                    pipeline: p.name.clone(),
                    kafka: k.clone(),
                    source: ks.clone(),
                    edge: edge.clone(),
                    acks: acks.subscribe(),
                    seq: seq.clone(),
                    tables: tables.clone(),
                    counters: counters.clone(),
                    drain_timeout,
                };
                return Box::pin(async move {
                    Ok(Actor::spawn_linked(None, KafkaCdcSource, args, sup)
                        .await?
                        .0
                        .get_cell())
                });
            };
            let args = SourceArgs {
                pipeline: p.name.clone(),
                postgres: pg.clone(),
                edge: edge.clone(),
                acks: acks.subscribe(),
                counters: counters.clone(),
                drain_timeout,
            };
            Box::pin(async move {
                Ok(Actor::spawn_linked(None, PostgresSource, args, sup)
                    .await?
                    .0
                    .get_cell())
            })
        })
    };
    let start = supervisor_start(
        format!("root/{}", p.name),
        Strategy::RestForOne,
        cfg.supervision,
        vec![
            ChildSpec {
                name: "sink".into(),
                restart: Restart::Permanent,
                start: sink_start,
            },
            ChildSpec {
                name: "source".into(),
                restart: Restart::Permanent,
                start: source_start,
            },
        ],
        registry,
        cfg.shutdown_timeout.0,
    );
    (
        ChildSpec {
            name: p.name.clone(),
            restart: Restart::Temporary,
            start,
        },
        handles,
    )
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
        let (spec, h) = match p.kind {
            PipelineKind::Cdc => cdc_pipeline(cfg, p, registry.clone()),
            PipelineKind::Sentiment => {
                super::sentiment::sentiment_pipeline(cfg, p, registry.clone())
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
