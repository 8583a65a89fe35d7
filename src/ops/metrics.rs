//! What the process shows about itself: a snapshot of the actor tree and of every pipeline
//! (for `/status`, the status page and `tributary status`), and the Prometheus metrics read
//! from the same live state at scrape time (a prometheus-client collector), so the page, the
//! JSON and the metrics can never disagree.
//!
//! Must never: hold a lock across I/O, or put a secret or an unbounded value in a label.

use crate::pipelines::PipelineHandles;
use crate::runtime::registry::{ActorState, ActorStatus, PipelineCounters, Registry};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Everything the HTTP endpoints read.
#[derive(Clone)]
pub struct Observed {
    pub registry: Arc<Registry>,
    pub pipelines: Vec<(String, PipelineHandles)>,
    pub started: std::time::Instant,
    /// The root supervisor and the admin token, when the admin API is on.
    pub admin: Option<Admin>,
}

/// The fault controls behind `/admin/*` (off unless configured, always behind a token).
#[derive(Clone)]
pub struct Admin {
    pub root: ractor::ActorRef<crate::runtime::supervisor::SupervisorMsg>,
    pub token: crate::config::Secret,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observed({} pipelines)", self.pipelines.len())
    }
}

#[derive(Debug, Serialize)]
pub struct Queue {
    pub name: String,
    pub depth: usize,
    pub capacity: usize,
}

#[derive(Debug, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub kind: &'static str,
    /// `active`, `standby` (another process streams from the pipeline's slot; this one takes
    /// over when it stops) or `starting`.
    pub role: &'static str,
    pub rows_read: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
    pub batches_written: u64,
    pub insert_retries: u64,
    pub snapshot_rows: u64,
    pub values_clamped: u64,
    pub values_unrepresentable: u64,
    pub toast_cache_hits: u64,
    pub toast_lookups: u64,
    pub truncate_fenced: u64,
    pub clickhouse_unreachable: bool,
    /// Last LSN confirmed to Postgres (cdc), as Postgres prints it.
    pub confirmed_lsn: Option<String>,
    pub lag_p50_ms: Option<u64>,
    pub lag_p99_ms: Option<u64>,
    pub queues: Vec<Queue>,
    /// Tables the sink stopped (a schema change ClickHouse cannot follow), with why.
    pub stopped_tables: Vec<StoppedTable>,
    /// Tables' copies since this start (the first snapshot, tables added, partitions
    /// attached): queued and running first, then done.
    pub copies: Vec<CopyStatus>,
    /// LLM stage (sentiment pipelines).
    pub llm: Option<LlmStatus>,
}

#[derive(Debug, Serialize)]
pub struct CopyStatus {
    pub table: String,
    pub state: crate::runtime::registry::CopyState,
    pub rows_copied: u64,
    /// Postgres's estimate of the table's rows (0: not known).
    pub rows_estimated: u64,
    pub rows_per_s: u64,
    /// Seconds left at the current rate, while copying with an estimate.
    pub eta_s: Option<u64>,
    /// Resumed after the last chunk an earlier run recorded.
    pub resumed: bool,
}

#[derive(Debug, Serialize)]
pub struct StoppedTable {
    pub table: String,
    pub reason: String,
    /// Its changes skipped since it stopped.
    pub rows_skipped: u64,
}

#[derive(Debug, Serialize)]
pub struct LlmStatus {
    pub requests: u64,
    pub errors: u64,
    pub unknown: u64,
    pub classified: u64,
    /// Posts the server refused for good (stored as `unknown` with the reason).
    pub rejected: u64,
    /// Score mode: posts classified by label scores, and the mean confidence of them.
    pub scored: u64,
    pub mean_confidence: Option<f64>,
    pub circuit_open: bool,
    pub concurrency_limit: usize,
    pub in_flight: usize,
    pub skipped: u64,
    pub malformed_events: u64,
    pub events: u64,
    pub reconnects: u64,
    /// Posts per stored label.
    pub labels: std::collections::BTreeMap<String, u64>,
    /// Resume point per source key (instance and stream, or replay file): the last status id
    /// (or line) written with everything before it.
    pub positions: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_s: u64,
    /// Every pipeline's actors run (nothing restarting or failed); a standby is ready.
    pub ready: bool,
    /// Some pipeline of this process is the standby of another process.
    pub standby: bool,
    pub actors: BTreeMap<String, ActorStatus>,
    pub pipelines: Vec<PipelineStatus>,
    /// The scheduled verify's last run (`None`: `[verify] interval` is off).
    pub verify: Option<crate::runtime::registry::VerifyState>,
}

impl Observed {
    pub fn status(&self) -> Status {
        let actors = self.registry.actors();
        let ready = !self.pipelines.is_empty()
            && self.pipelines.iter().all(|(name, _)| {
                let prefix = format!("root/{name}");
                let mine: Vec<&ActorStatus> = actors
                    .iter()
                    .filter(|(p, _)| **p == prefix || p.starts_with(&format!("{prefix}/")))
                    .map(|(_, s)| s)
                    .collect();
                !mine.is_empty() && mine.iter().all(|s| s.state == ActorState::Running)
            })
            && self.pipelines.iter().all(|(name, _)| {
                let c = self.registry.pipeline(name);
                c.clickhouse_unreachable.load(Ordering::Relaxed) == 0
            });
        let pipelines = self
            .pipelines
            .iter()
            .map(|(name, h)| self.pipeline(name, h))
            .collect();
        let standby = self.pipelines.iter().any(|(name, _)| {
            self.registry.pipeline(name).role.load(Ordering::Relaxed)
                == crate::runtime::registry::ROLE_STANDBY
        });
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs(),
            ready,
            standby,
            actors,
            pipelines,
            verify: self.registry.verify(),
        }
    }

    fn pipeline(&self, name: &str, h: &PipelineHandles) -> PipelineStatus {
        let c = self.registry.pipeline(name);
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (kind, queues, llm, confirmed) = match h {
            PipelineHandles::Cdc(h) => {
                let edge = &h.edge;
                let lsn = get(&c.confirmed_lsn);
                (
                    "cdc",
                    vec![Queue {
                        name: "source->sink".into(),
                        depth: edge.depth(),
                        capacity: edge.capacity(),
                    }],
                    None,
                    (lsn > 0).then(|| crate::protocol::pgoutput::fmt_lsn(lsn)),
                )
            }
            PipelineHandles::Sentiment(s) => (
                "sentiment",
                vec![
                    Queue {
                        name: "source->llm".into(),
                        depth: s.queue.depth(),
                        capacity: s.queue.capacity(),
                    },
                    Queue {
                        name: "llm->sink".into(),
                        depth: s.sink_edge.depth(),
                        capacity: s.sink_edge.capacity(),
                    },
                ],
                Some(LlmStatus {
                    requests: get(&s.llm.requests),
                    errors: get(&s.llm.errors),
                    unknown: get(&s.llm.unknown),
                    classified: get(&s.llm.classified),
                    rejected: get(&s.llm.rejected),
                    scored: get(&s.llm.scored),
                    mean_confidence: {
                        let n = get(&s.llm.scored);
                        (n > 0).then(|| get(&s.llm.confidence_micros) as f64 / 1e6 / n as f64)
                    },
                    circuit_open: s.breaker.is_open(),
                    concurrency_limit: s.limiter.limit(),
                    in_flight: s.limiter.in_flight(),
                    skipped: get(&s.skipped),
                    malformed_events: get(&s.malformed),
                    events: get(&s.events),
                    reconnects: get(&s.reconnects),
                    labels: s
                        .llm
                        .labels
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                    positions: s.tracker.positions(),
                }),
                None,
            ),
        };
        PipelineStatus {
            name: name.to_string(),
            kind,
            role: crate::runtime::registry::role_name(get(&c.role)),
            rows_read: get(&c.rows_read),
            rows_written: get(&c.rows_written),
            bytes_written: get(&c.bytes_written),
            batches_written: get(&c.batches_written),
            insert_retries: get(&c.insert_retries),
            snapshot_rows: get(&c.snapshot_rows),
            values_clamped: get(&c.values_clamped),
            values_unrepresentable: get(&c.values_unrepresentable),
            toast_cache_hits: get(&c.toast_cache_hits),
            toast_lookups: get(&c.toast_lookups),
            truncate_fenced: get(&c.truncate_fenced),
            clickhouse_unreachable: get(&c.clickhouse_unreachable) > 0,
            confirmed_lsn: confirmed,
            lag_p50_ms: c.commit_lag.quantile_micros(0.5).map(|us| us / 1000),
            lag_p99_ms: c.commit_lag.quantile_micros(0.99).map(|us| us / 1000),
            queues,
            copies: {
                let mut v: Vec<CopyStatus> = c
                    .copies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(table, p)| CopyStatus {
                        table: table.clone(),
                        state: p.state,
                        rows_copied: p.rows,
                        rows_estimated: p.estimate,
                        rows_per_s: p.rate().round() as u64,
                        eta_s: p.eta_s(),
                        resumed: p.resumed,
                    })
                    .collect();
                v.sort_by_key(|c| c.state == crate::runtime::registry::CopyState::Done);
                v
            },
            stopped_tables: c
                .table_list()
                .into_iter()
                .filter_map(|(table, t)| {
                    let reason = t
                        .stopped
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()?;
                    Some(StoppedTable {
                        table,
                        reason,
                        rows_skipped: t.rows_skipped.load(Ordering::Relaxed),
                    })
                })
                .collect(),
            llm,
        }
    }
}

/// Label sets with their values, for one metric family.
type Samples<'a> = Vec<(Vec<(&'a str, String)>, f64)>;

/// One counter or gauge sample with its labels.
fn sample<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'a str, String)>, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in samples {
        let fam = m.encode_family(&labels)?;
        match ty {
            MetricType::Counter => Counter(v as u64).encode(fam)?,
            _ => Gauge(v).encode(fam)?,
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Counter(u64);
impl EncodeMetric for Counter {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        e.encode_counter::<NoLabelSet, _, u64>(&self.0, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}
#[derive(Debug)]
struct Gauge(f64);
impl EncodeMetric for Gauge {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        e.encode_gauge(&self.0)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// A metric family with one sample per pipeline, read from the pipeline's counters.
struct Family {
    name: &'static str,
    help: &'static str,
    ty: MetricType,
    /// Only CDC pipelines have it (a sentiment pipeline has no WAL position).
    cdc_only: bool,
    value: fn(&PipelineCounters) -> u64,
}

/// Every per-pipeline family, in one table: a new counter is one row here.
const PIPELINE_FAMILIES: &[Family] = &[
    Family {
        name: "tributary_rows_read",
        help: "Rows (changes, posts) read from the source.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.rows_read.load(Relaxed),
    },
    Family {
        name: "tributary_rows_written",
        help: "Rows written to ClickHouse.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.rows_written.load(Relaxed),
    },
    Family {
        name: "tributary_written_bytes",
        help: "Bytes of row data sent to ClickHouse.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.bytes_written.load(Relaxed),
    },
    Family {
        name: "tributary_batches",
        help: "Inserts into ClickHouse.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.batches_written.load(Relaxed),
    },
    Family {
        name: "tributary_insert_retries",
        help: "ClickHouse inserts retried.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.insert_retries.load(Relaxed),
    },
    Family {
        name: "tributary_snapshot_rows",
        help: "Rows copied by initial snapshots.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.snapshot_rows.load(Relaxed),
    },
    Family {
        name: "tributary_snapshot_rows_passthrough",
        help: "Of the rows copied by snapshots, those taken to ClickHouse without decoding them into values (passthrough or binary copies).",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.snapshot_rows_passthrough.load(Relaxed),
    },
    Family {
        name: "tributary_snapshot_rows_binary",
        help: "Of the passthrough rows, those of binary copies (Postgres's binary COPY written as ClickHouse's RowBinary).",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.snapshot_rows_binary.load(Relaxed),
    },
    Family {
        name: "tributary_values_clamped",
        help: "Values stored at the nearest bound of their ClickHouse type.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.values_clamped.load(Relaxed),
    },
    Family {
        name: "tributary_values_unrepresentable",
        help: "Values the column type cannot hold, stored as NULL or default.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.values_unrepresentable.load(Relaxed),
    },
    Family {
        name: "tributary_toast_cache_hits",
        help: "Unchanged TOAST values taken from the sink's memory of what it wrote.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.toast_cache_hits.load(Relaxed),
    },
    Family {
        name: "tributary_toast_lookups",
        help: "Rows whose unchanged TOAST values were read back from ClickHouse (planned per chunk: a flush and a query per table and batch of keys).",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.toast_lookups.load(Relaxed),
    },
    Family {
        name: "tributary_truncate_fenced",
        help: "Replayed changes older than their table's last TRUNCATE, skipped (the TRUNCATE removed them).",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.truncate_fenced.load(Relaxed),
    },
    Family {
        name: "tributary_clickhouse_unreachable",
        help: "1 while the sink waits for a ClickHouse it cannot reach (nothing is acknowledged).",
        ty: MetricType::Gauge,
        cdc_only: false,
        value: |c| (c.clickhouse_unreachable.load(Relaxed) > 0) as u64,
    },
    Family {
        name: "tributary_standby",
        help: "1 while this process is a standby: another process with the pipeline's config streams from its replication slot (or the consumer group gave this member no partition), and this one takes over when it stops.",
        ty: MetricType::Gauge,
        cdc_only: false,
        value: |c| (c.role.load(Relaxed) == crate::runtime::registry::ROLE_STANDBY) as u64,
    },
    Family {
        name: "tributary_confirmed_lsn",
        help: "Last WAL position confirmed to Postgres (bytes).",
        ty: MetricType::Gauge,
        cdc_only: true,
        value: |c| c.confirmed_lsn.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_messages_produced",
        help: "Messages acknowledged by the Kafka broker.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.kafka_produced.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_messages_consumed",
        help: "Messages taken from Kafka.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.kafka_consumed.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_dead_letters",
        help: "Unreadable messages sent to the dead-letter topic.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.kafka_dead_letters.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_tombstones",
        help: "Tombstones read (and skipped: the delete before them did the work).",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.kafka_tombstones.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_pauses",
        help: "Times the consumer paused its partitions because the sink was behind.",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.kafka_pauses.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_commits",
        help: "Offset commits (each after the ClickHouse insert holding the offsets).",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.kafka_commits.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_commit_errors",
        help: "Offset commits that failed (the next one repeats them).",
        ty: MetricType::Counter,
        cdc_only: false,
        value: |c| c.kafka_commit_errors.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_consumer_lag_messages",
        help: "Messages in the assigned partitions not yet committed.",
        ty: MetricType::Gauge,
        cdc_only: false,
        value: |c| c.kafka_consumer_lag.load(Relaxed),
    },
    Family {
        name: "tributary_kafka_in_flight_messages",
        help: "Messages handed to the producer, not yet acknowledged.",
        ty: MetricType::Gauge,
        cdc_only: false,
        value: |c| c.kafka_in_flight.load(Relaxed),
    },
    Family {
        name: "tributary_slot_lag_bytes",
        help: "WAL the replication slot holds back (bytes).",
        ty: MetricType::Gauge,
        cdc_only: true,
        value: |c| c.slot_lag_bytes.load(Relaxed),
    },
    Family {
        name: "tributary_slot_wal_status",
        help: "The replication slot's wal_status: 1 reserved, 2 extended, 3 unreserved (lost at the next checkpoint unless it catches up), 4 lost; 0 not known.",
        ty: MetricType::Gauge,
        cdc_only: true,
        value: |c| c.slot_wal_status.load(Relaxed),
    },
    Family {
        name: "tributary_slot_safe_wal_bytes",
        help: "WAL the replication slot may still fall behind before Postgres invalidates it (safe_wal_size; 9223372036854775807 while max_slot_wal_keep_size is unlimited).",
        ty: MetricType::Gauge,
        cdc_only: true,
        value: |c| c.slot_safe_wal_bytes.load(Relaxed),
    },
    Family {
        name: "tributary_slot_restart_bytes",
        help: "WAL between the replication slot's restart_lsn and its confirmed position: what Postgres decodes again, sending nothing, before the first new change after a restart or a standby's takeover (bytes).",
        ty: MetricType::Gauge,
        cdc_only: true,
        value: |c| c.slot_restart_bytes.load(Relaxed),
    },
];

impl Collector for Observed {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter as C, Gauge as G};
        let st = self.status();
        // Every family with one sample per pipeline, from the table.
        for f in PIPELINE_FAMILIES {
            let samples = self
                .pipelines
                .iter()
                .filter(|(_, h)| !f.cdc_only || matches!(h, PipelineHandles::Cdc(_)))
                .map(|(n, _)| {
                    let v = (f.value)(&self.registry.pipeline(n));
                    (vec![("pipeline", n.clone())], v as f64)
                });
            sample(&mut enc, f.name, f.help, f.ty, samples)?;
        }
        // Each bounded edge's depth and capacity, by pipeline and queue.
        for (name, help, value) in [
            (
                "tributary_queue_depth",
                "Messages waiting on a bounded edge.",
                (|q: &Queue| q.depth) as fn(&Queue) -> usize,
            ),
            (
                "tributary_queue_capacity",
                "Capacity of a bounded edge.",
                |q| q.capacity,
            ),
        ] {
            let samples = st.pipelines.iter().flat_map(|p| {
                p.queues.iter().map(move |q| {
                    let labels = vec![("pipeline", p.name.clone()), ("queue", q.name.clone())];
                    (labels, value(q) as f64)
                })
            });
            sample(&mut enc, name, help, G, samples)?;
        }
        let restarts: Vec<_> = st
            .actors
            .iter()
            .map(|(a, s)| (vec![("actor", a.clone())], s.restarts as f64))
            .collect();
        sample(
            &mut enc,
            "tributary_actor_restarts",
            "Restarts of an actor by its supervisor.",
            C,
            restarts,
        )?;
        let up: Vec<_> = st
            .actors
            .iter()
            .map(|(a, s)| {
                (
                    vec![("actor", a.clone())],
                    (s.state == ActorState::Running) as u8 as f64,
                )
            })
            .collect();
        sample(
            &mut enc,
            "tributary_actor_up",
            "1 while the actor runs.",
            G,
            up,
        )?;
        sample(
            &mut enc,
            "tributary_ready",
            "1 while every pipeline runs and reaches its ClickHouse.",
            G,
            vec![(vec![], st.ready as u8 as f64)],
        )?;
        let cdc: Vec<(String, Arc<PipelineCounters>)> = self
            .pipelines
            .iter()
            .filter(|(_, h)| matches!(h, PipelineHandles::Cdc(_)))
            .map(|(n, _)| (n.clone(), self.registry.pipeline(n)))
            .collect();
        let all: Vec<(String, Arc<PipelineCounters>)> = self
            .pipelines
            .iter()
            .map(|(n, _)| (n.clone(), self.registry.pipeline(n)))
            .collect();
        histogram(
            &mut enc,
            "tributary_commit_lag_seconds",
            "Time from a Postgres commit to its rows being in ClickHouse.",
            cdc.iter().map(|(n, c)| (n.as_str(), &c.commit_lag)),
        )?;
        histogram(
            &mut enc,
            "tributary_insert_duration_seconds",
            "Duration of one ClickHouse insert, retries included.",
            all.iter().map(|(n, c)| (n.as_str(), &c.insert_duration)),
        )?;
        let mut per_table: [Samples; 6] = Default::default();
        for (n, c) in &all {
            for (table, t) in c.table_list() {
                let labels = vec![("pipeline", n.clone()), ("table", table)];
                let stopped = t
                    .stopped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some();
                for (i, v) in [
                    &t.rows_read,
                    &t.bytes_read,
                    &t.rows_written,
                    &t.bytes_written,
                    &t.rows_skipped,
                ]
                .iter()
                .enumerate()
                {
                    per_table[i].push((labels.clone(), v.load(Ordering::Relaxed) as f64));
                }
                per_table[5].push((labels, if stopped { 1.0 } else { 0.0 }));
            }
        }
        let [tr, tb, tw, twb, tskip, tstop] = per_table;
        sample(
            &mut enc,
            "tributary_table_rows_read",
            "Row changes taken in, per source table.",
            C,
            tr,
        )?;
        sample(
            &mut enc,
            "tributary_table_read_bytes",
            "Bytes of values taken in, per source table.",
            C,
            tb,
        )?;
        sample(
            &mut enc,
            "tributary_table_rows_written",
            "Rows written to ClickHouse, per source table.",
            C,
            tw,
        )?;
        sample(
            &mut enc,
            "tributary_table_written_bytes",
            "Bytes sent to ClickHouse, per source table.",
            C,
            twb,
        )?;
        sample(
            &mut enc,
            "tributary_table_rows_skipped",
            "Changes of a stopped table skipped, per source table.",
            C,
            tskip,
        )?;
        sample(
            &mut enc,
            "tributary_table_stopped",
            "1 while the sink has stopped the table (a schema change ClickHouse cannot follow; see /status for why).",
            G,
            tstop,
        )?;
        let (mut copied, mut estimated, mut open) = (Vec::new(), Vec::new(), Vec::new());
        for (n, c) in &all {
            let copies = c.copies.lock().unwrap_or_else(|e| e.into_inner());
            for (table, p) in copies.iter() {
                let labels = vec![("pipeline", n.clone()), ("table", table.clone())];
                copied.push((labels.clone(), p.rows as f64));
                estimated.push((labels, p.estimate as f64));
            }
            let left = copies
                .values()
                .filter(|p| p.state != crate::runtime::registry::CopyState::Done)
                .count();
            open.push((vec![("pipeline", n.clone())], left as f64));
        }
        sample(
            &mut enc,
            "tributary_copy_rows",
            "Rows a table's copy has sent in this run (the first snapshot, a table added, a partition attached).",
            G,
            copied,
        )?;
        sample(
            &mut enc,
            "tributary_copy_rows_estimated",
            "Rows Postgres estimates a table being copied holds (pg_class.reltuples; 0: not known).",
            G,
            estimated,
        )?;
        sample(
            &mut enc,
            "tributary_copies_unfinished",
            "Tables' copies queued or running.",
            G,
            open,
        )?;
        let reasons: Vec<_> = self
            .registry
            .restart_reasons()
            .into_iter()
            .map(|(a, r, n)| (vec![("actor", a), ("reason", r.to_string())], n as f64))
            .collect();
        sample(
            &mut enc,
            "tributary_actor_restart_reasons",
            "Restarts by actor and reason (failed, killed, start_failed, sibling, outage: a server it needs is away).",
            C,
            reasons,
        )?;
        let labels: Vec<_> = st
            .pipelines
            .iter()
            .filter_map(|p| p.llm.as_ref().map(|l| (p, l)))
            .flat_map(|(p, l)| {
                l.labels.iter().map(move |(k, n)| {
                    (
                        vec![("pipeline", p.name.clone()), ("label", k.clone())],
                        *n as f64,
                    )
                })
            })
            .collect();
        sample(
            &mut enc,
            "tributary_llm_labels",
            "Posts stored per sentiment label.",
            C,
            labels,
        )?;
        // Counts by a name the registry keeps: faults by kind, escalations by supervisor.
        for (name, help, label, counts) in [
            (
                "tributary_faults_injected",
                "Faults injected on purpose (admin API, chaos), by kind.",
                "kind",
                self.registry.faults(),
            ),
            (
                "tributary_supervisor_escalations",
                "Supervisors that gave up after too many restarts.",
                "supervisor",
                self.registry.escalations(),
            ),
        ] {
            let samples = counts
                .into_iter()
                .map(|(k, n)| (vec![(label, k)], n as f64));
            sample(&mut enc, name, help, C, samples)?;
        }
        verify_families(&mut enc, st.verify.as_ref())?;
        let llm: Vec<&PipelineStatus> = st.pipelines.iter().filter(|p| p.llm.is_some()).collect();
        let l = |f: &dyn Fn(&LlmStatus) -> f64| -> Samples<'_> {
            llm.iter()
                .filter_map(|p| {
                    p.llm
                        .as_ref()
                        .map(|x| (vec![("pipeline", p.name.clone())], f(x)))
                })
                .collect()
        };
        sample(
            &mut enc,
            "tributary_llm_requests",
            "LLM requests sent.",
            C,
            l(&|x| x.requests as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_errors",
            "LLM requests that failed (retried).",
            C,
            l(&|x| x.errors as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_unknown",
            "Posts stored as `unknown`: two unparseable replies, or refused by the server (tributary_llm_rejected_total).",
            C,
            l(&|x| x.unknown as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_classified",
            "Posts classified.",
            C,
            l(&|x| x.classified as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_rejected",
            "Posts the LLM server refused for good (a 4xx other than 408/429), stored as `unknown` with the reason.",
            C,
            l(&|x| x.rejected as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_scored",
            "Posts classified by label scores (llm.mode = score).",
            C,
            l(&|x| x.scored as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_scored_confidence",
            "Sum of the confidences (label probabilities) of posts classified by label scores: divided by tributary_llm_scored_total, the mean confidence.",
            C,
            l(&|x| x.mean_confidence.unwrap_or(0.0) * x.scored as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_circuit_open",
            "1 while the LLM circuit breaker is open or half-open.",
            G,
            l(&|x| x.circuit_open as u8 as f64),
        )?;
        sample(
            &mut enc,
            "tributary_llm_concurrency_limit",
            "Requests the adaptive limit allows in flight.",
            G,
            l(&|x| x.concurrency_limit as f64),
        )?;
        sample(
            &mut enc,
            "tributary_posts_skipped",
            "Posts skipped by the filter or unreadable.",
            C,
            l(&|x| x.skipped as f64),
        )?;
        sample(
            &mut enc,
            "tributary_mastodon_malformed_events",
            "Stream events that could not be read.",
            C,
            l(&|x| x.malformed_events as f64),
        )?;
        sample(
            &mut enc,
            "tributary_mastodon_events",
            "Stream events received (update, edit, delete).",
            C,
            l(&|x| x.events as f64),
        )?;
        sample(
            &mut enc,
            "tributary_mastodon_reconnects",
            "Stream connections lost and opened again.",
            C,
            l(&|x| x.reconnects as f64),
        )?;
        let llm_h: Vec<(String, Arc<crate::clients::llm::LlmCounters>)> = self
            .pipelines
            .iter()
            .filter_map(|(n, h)| match h {
                PipelineHandles::Sentiment(s) => Some((n.clone(), s.llm.clone())),
                _ => None,
            })
            .collect();
        histogram(
            &mut enc,
            "tributary_llm_request_duration_seconds",
            "Duration of one LLM request.",
            llm_h.iter().map(|(n, c)| (n.as_str(), &c.duration)),
        )?;
        Ok(())
    }
}

/// The scheduled verify's families (`[verify] interval`; without samples when it is off).
fn verify_families(
    enc: &mut DescriptorEncoder,
    v: Option<&crate::runtime::registry::VerifyState>,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter as C, Gauge as G};
    let runs: Samples<'_> = v
        .map(|v| {
            v.runs
                .iter()
                .map(|(k, n)| (vec![("result", k.clone())], *n as f64))
                .collect()
        })
        .unwrap_or_default();
    sample(
        enc,
        "tributary_verify_runs",
        "Scheduled verify runs by result: equal, differences, error, skipped (nothing could be compared: a copy under way, a standby).",
        C,
        runs,
    )?;
    let rows: Samples<'_> = v
        .map(|v| {
            v.rows_checked
                .iter()
                .map(|((p, t), n)| {
                    (
                        vec![("pipeline", p.clone()), ("table", t.clone())],
                        *n as f64,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    sample(
        enc,
        "tributary_verify_rows_checked",
        "Postgres rows the scheduled verify compared with ClickHouse, over every run.",
        C,
        rows,
    )?;
    let diffs: Samples<'_> = v
        .map(|v| {
            v.tables
                .iter()
                .map(|t| {
                    (
                        vec![("pipeline", t.pipeline.clone()), ("table", t.table.clone())],
                        t.differences as f64,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    sample(
        enc,
        "tributary_verify_differences",
        "Keys that differ between ClickHouse and Postgres at the last scheduled verify (seen twice; at most [verify] limit).",
        G,
        diffs,
    )?;
    for (name, help, value) in [
        (
            "tributary_verify_last_run_timestamp_seconds",
            "Unix time at the end of the last scheduled verify.",
            (|v: &crate::runtime::registry::VerifyState| v.last_run)
                as fn(&crate::runtime::registry::VerifyState) -> f64,
        ),
        (
            "tributary_verify_last_success_timestamp_seconds",
            "Unix time at the end of the last scheduled verify without an error (the schedule's start until one).",
            |v| v.last_success,
        ),
        (
            "tributary_verify_duration_seconds",
            "How long the last scheduled verify took.",
            |v| v.duration_s,
        ),
        (
            "tributary_verify_interval_seconds",
            "The scheduled verify's interval ([verify] interval).",
            |v| v.interval_s,
        ),
    ] {
        // One sample without labels.
        let m = enc.encode_descriptor(name, help, None, G)?;
        if let Some(v) = v {
            Gauge(value(v)).encode(m)?;
        }
    }
    Ok(())
}

fn histogram<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'a str, &'a crate::runtime::registry::Log2Histogram)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (pipeline, h) in series {
        let (sum, count, buckets) = h.prometheus();
        let labels = [("pipeline", pipeline)];
        let mut fam = m.encode_family(&labels)?;
        fam.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// The metrics in the OpenMetrics text format.
pub fn render_metrics(o: &Observed) -> String {
    let mut reg = prometheus_client::registry::Registry::default();
    reg.register_collector(Box::new(o.clone()));
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}
