//! The tree of a CDC pipeline: one rest_for_one supervisor over [sink, source] (a sink that
//! restarts takes the source with it, so the stream is replayed from the last confirmed LSN;
//! a source that restarts leaves the sink and its acknowledged work alone).
//!
//! The objects a restart must not lose live here, outside the actors: the edge, the
//! acknowledgement channel and the counters.
//!
//! Must never: let a restart lose the edge or the acknowledged position (they outlive the
//! actors), or start a source before its sink.

use crate::cdc::change::SinkMsg;
use crate::cdc::clickhouse_sink::{ClickHouseSink, SinkArgs};
use crate::cdc::kafka_sink::{KafkaSink, KafkaSinkArgs};
use crate::cdc::kafka_source::{KafkaCdcSource, KafkaSourceArgs, TableIds};
use crate::cdc::postgres_source::{PostgresSource, SourceArgs};
use crate::config::{CdcPlan, CdcSink, CdcSource, Config, PipelineConfig};
use crate::flow::edge::Edge;
use crate::protocol::pgoutput::Lsn;
use crate::runtime::fault::Classify;
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
    /// Resync requests to the Postgres source (never set with a Kafka source).
    pub resync: crate::cdc::backfill::ResyncPort,
}

/// A cdc pipeline: Postgres or Debezium topics in, ClickHouse or Debezium topics out, as
/// its `plan` says.
pub fn cdc_pipeline(
    cfg: &Config,
    p: &PipelineConfig,
    plan: CdcPlan,
    registry: Arc<Registry>,
) -> (ChildSpec, CdcHandles) {
    let edge: Edge<SinkMsg> = Edge::new(format!("{}/source->sink", p.name), p.batch.edge_capacity);
    let acks = Arc::new(watch::channel(0 as Lsn).0);
    let counters = registry.pipeline(&p.name);
    let resync = crate::cdc::backfill::ResyncPort::default();
    let handles = CdcHandles {
        edge: edge.clone(),
        acks: acks.clone(),
        resync: resync.clone(),
    };
    let pipeline = p.name.clone();
    // What both start functions capture.
    let shared = || {
        (
            pipeline.clone(),
            edge.clone(),
            acks.clone(),
            counters.clone(),
        )
    };

    let sink_start: StartFn = {
        let (pipeline, edge, acks, counters) = shared();
        let (sink, batch, mappings) = (plan.sink.clone(), p.batch, p.tables.clone());
        Arc::new(move |sup| match &sink {
            CdcSink::Kafka {
                kafka,
                sink,
                database,
            } => {
                let args = KafkaSinkArgs {
                    pipeline: pipeline.clone(),
                    kafka: kafka.clone(),
                    sink: sink.clone(),
                    database: database.clone(),
                    edge: edge.clone(),
                    acks: acks.clone(),
                    counters: counters.clone(),
                };
                spawn_child(KafkaSink, args, sup)
            }
            CdcSink::ClickHouse(clickhouse) => {
                let args = SinkArgs {
                    pipeline: pipeline.clone(),
                    clickhouse: clickhouse.clone(),
                    batch,
                    tables: mappings.clone(),
                    edge: edge.clone(),
                    acks: acks.clone(),
                    counters: counters.clone(),
                };
                spawn_child(ClickHouseSink, args, sup)
            }
        })
    };
    let drain_timeout = cfg.shutdown_timeout.0;
    let seq = Arc::new(AtomicU64::new(0));
    let tables: TableIds = Arc::default();
    let source_start: StartFn = {
        let (pipeline, edge, acks, counters) = shared();
        let source = plan.source.clone();
        let mappings = p.tables.clone();
        Arc::new(move |sup| match &source {
            CdcSource::Kafka { kafka, source } => {
                let args = KafkaSourceArgs {
                    pipeline: pipeline.clone(),
                    kafka: kafka.clone(),
                    source: source.clone(),
                    edge: edge.clone(),
                    acks: acks.subscribe(),
                    seq: seq.clone(),
                    tables: tables.clone(),
                    counters: counters.clone(),
                    drain_timeout,
                };
                spawn_child(KafkaCdcSource, args, sup)
            }
            CdcSource::Postgres(pg) => {
                let args = SourceArgs {
                    pipeline: pipeline.clone(),
                    postgres: pg.clone(),
                    tables: mappings.clone(),
                    edge: edge.clone(),
                    acks: acks.subscribe(),
                    counters: counters.clone(),
                    drain_timeout,
                    resync: resync.clone(),
                };
                spawn_child(PostgresSource, args, sup)
            }
        })
    };
    // Each actor's errors are classified by its own function.
    let (sink_class, source_class): (Classify, Classify) = (
        match plan.sink {
            CdcSink::ClickHouse(_) => crate::cdc::clickhouse_sink::classify,
            CdcSink::Kafka { .. } => crate::runtime::fault::classify,
        },
        match plan.source {
            CdcSource::Postgres(_) => crate::clients::postgres::classify,
            CdcSource::Kafka { .. } => crate::runtime::fault::classify,
        },
    );
    let start = supervisor_start(
        format!("root/{}", p.name),
        Strategy::RestForOne,
        cfg.supervision,
        vec![
            ChildSpec::new("sink", Restart::Permanent, sink_start).classified_by(sink_class),
            ChildSpec::new("source", Restart::Permanent, source_start).classified_by(source_class),
        ],
        registry,
        cfg.shutdown_timeout.0,
    );
    (
        ChildSpec::new(p.name.clone(), Restart::Temporary, start),
        handles,
    )
}
