//! The tree of a CDC pipeline: one rest_for_one supervisor over [sink, source] (a sink that
//! restarts takes the source with it, so the stream is replayed from the last confirmed LSN;
//! a source that restarts leaves the sink and its acknowledged work alone).
//!
//! The objects a restart must not lose live here, outside the actors: the edge, the
//! acknowledgement channel and the counters.
//!
//! Must never: let a restart lose the edge or the acknowledged position (they outlive the
//! actors), or start a source before its sink.

use crate::cdc::clickhouse_sink::{ClickHouseSink, SinkArgs, SinkMsg};
use crate::cdc::kafka_sink::{KafkaSink, KafkaSinkArgs};
use crate::cdc::kafka_source::{KafkaCdcSource, KafkaSourceArgs, TableIds};
use crate::cdc::postgres_source::{PostgresSource, SourceArgs};
use crate::config::{Config, PipelineConfig};
use crate::flow::edge::Edge;
use crate::protocol::pgoutput::Lsn;
use crate::runtime::registry::Registry;
use crate::runtime::supervisor::{
    spawn_child, supervisor_start, ChildSpec, Restart, StartFn, Strategy,
};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::watch;

/// The long-lived parts of a CDC pipeline.
#[derive(Clone)]
pub struct CdcHandles {
    /// The source → sink edge.
    pub edge: Edge<SinkMsg>,
    /// The last LSN the sink acknowledged.
    pub acks: Arc<watch::Sender<Lsn>>,
}

/// A cdc pipeline: Postgres or Debezium topics in, ClickHouse or Debezium topics out.
pub fn cdc_pipeline(
    cfg: &Config,
    p: &PipelineConfig,
    registry: Arc<Registry>,
) -> (ChildSpec, CdcHandles) {
    let edge: Edge<SinkMsg> = Edge::new(format!("{}/source->sink", p.name), p.batch.edge_capacity);
    let acks = Arc::new(watch::channel(0 as Lsn).0);
    let counters = registry.pipeline(&p.name);
    let handles = CdcHandles {
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
                return spawn_child(KafkaSink, args, sup);
            }
            let args = SinkArgs {
                pipeline: p.name.clone(),
                clickhouse: p.clickhouse.clone(),
                batch: p.batch,
                edge: edge.clone(),
                acks: acks.clone(),
                counters: counters.clone(),
            };
            spawn_child(ClickHouseSink, args, sup)
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
                return spawn_child(KafkaCdcSource, args, sup);
            };
            let args = SourceArgs {
                pipeline: p.name.clone(),
                postgres: pg.clone(),
                edge: edge.clone(),
                acks: acks.subscribe(),
                counters: counters.clone(),
                drain_timeout,
            };
            spawn_child(PostgresSource, args, sup)
        })
    };
    let start = supervisor_start(
        format!("root/{}", p.name),
        Strategy::RestForOne,
        cfg.supervision,
        vec![
            ChildSpec::new("sink", Restart::Permanent, sink_start)
                .classified_by(crate::cdc::clickhouse_sink::classify),
            ChildSpec::new("source", Restart::Permanent, source_start)
                .classified_by(crate::clients::postgres::classify),
        ],
        registry,
        cfg.shutdown_timeout.0,
    );
    (
        ChildSpec::new(p.name.clone(), Restart::Temporary, start),
        handles,
    )
}
