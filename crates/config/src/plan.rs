//! The typed plan of a pipeline: which source and which sink run, decided once from the
//! sections the file has. The trees and `check` match on a plan instead of re-checking the
//! optional sections; a combination the file may not hold has no plan (validation is
//! [`PipelineConfig::plan`]).
//!
//! ```text
//! cdc:       Postgres ──┬──> ClickHouse        sentiment:  Mastodon ─┬─> LLM ─> ClickHouse
//!            Kafka ─────┘    (Postgres ──> Kafka)            Replay ───┤   (or, with no LLM:
//!                                                            Kafka ────┘    Mastodon|Replay ─> Kafka)
//! ```
//!
//! Must never: plan a pipeline that validation rejects, or drop a section the file set.

use crate::llm::LlmConfig;
use crate::pipeline::{PipelineConfig, PipelineKind};
use crate::service::KafkaConfig;
use crate::sinks::{ClickHouseConfig, KafkaSinkConfig};
use crate::sources::{KafkaSourceConfig, MastodonConfig, PostgresConfig, ReplayConfig};

/// What one pipeline runs.
#[derive(Debug, Clone)]
pub enum PipelinePlan {
    Cdc(CdcPlan),
    Sentiment(SentimentPlan),
}

/// A CDC pipeline: changes from `source` to `sink`.
#[derive(Debug, Clone)]
pub struct CdcPlan {
    pub source: CdcSource,
    pub sink: CdcSink,
}

#[derive(Debug, Clone)]
pub enum CdcSource {
    /// Logical replication from PostgreSQL.
    Postgres(PostgresConfig),
    /// Debezium topics.
    Kafka {
        kafka: KafkaConfig,
        source: KafkaSourceConfig,
    },
}

#[derive(Debug, Clone)]
pub enum CdcSink {
    ClickHouse(ClickHouseConfig),
    /// Debezium topics (the source is then Postgres, whose database names the topics).
    Kafka {
        kafka: KafkaConfig,
        sink: KafkaSinkConfig,
        database: String,
    },
}

/// A sentiment pipeline: posts from `source` to `sink`.
#[derive(Debug, Clone)]
pub struct SentimentPlan {
    pub source: PostSource,
    pub sink: PostSink,
}

#[derive(Debug, Clone)]
pub enum PostSource {
    /// The Mastodon streaming API.
    Mastodon(MastodonConfig),
    /// A recorded file of statuses.
    Replay(ReplayConfig),
    /// A statuses topic (published by another sentiment pipeline).
    Kafka {
        kafka: KafkaConfig,
        source: KafkaSourceConfig,
    },
}

// One per pipeline, built once at start: boxing the larger variant would save nothing and
// make every match on it clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum PostSink {
    /// Classified by the LLM into ClickHouse.
    Classify {
        llm: LlmConfig,
        clickhouse: ClickHouseConfig,
    },
    /// Published unclassified to a statuses topic (the source is Mastodon or a replay).
    Publish {
        kafka: KafkaConfig,
        sink: KafkaSinkConfig,
    },
}

/// Why a pipeline has no plan: the key (relative to the pipeline) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub key: &'static str,
    pub message: &'static str,
}

fn no(key: &'static str, message: &'static str) -> PlanError {
    PlanError { key, message }
}

impl PipelineConfig {
    /// The plan of this pipeline, with `kafka` the file's `[kafka]` section.
    pub fn plan(&self, kafka: Option<&KafkaConfig>) -> Result<PipelinePlan, PlanError> {
        let p = self;
        let n_sources = [
            p.postgres.is_some(),
            p.mastodon.is_some(),
            p.replay.is_some(),
            p.kafka_source.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        let publishes = p.kafka_sink.is_some();
        match p.kind {
            PipelineKind::Cdc if p.postgres.is_none() && p.kafka_source.is_none() => {
                return Err(no("postgres", "a cdc pipeline needs a [pipeline.postgres] or a [pipeline.kafka_source] section"))
            }
            PipelineKind::Cdc if n_sources > 1 || p.llm.is_some() || p.mastodon.is_some() || p.replay.is_some() => {
                return Err(no("kind", "a cdc pipeline takes one of [pipeline.postgres] or [pipeline.kafka_source] (no mastodon, replay or llm)"))
            }
            PipelineKind::Cdc if publishes && p.postgres.is_none() => {
                return Err(no("kafka_sink", "a [pipeline.kafka_sink] of a cdc pipeline needs [pipeline.postgres] as its source"))
            }
            PipelineKind::Sentiment if p.postgres.is_some() || n_sources != 1 => {
                return Err(no("kind", "a sentiment pipeline needs exactly one of [pipeline.mastodon], [pipeline.replay] or [pipeline.kafka_source]"))
            }
            PipelineKind::Sentiment if publishes && (p.llm.is_some() || p.kafka_source.is_some()) => {
                return Err(no("kafka_sink", "a sentiment pipeline with [pipeline.kafka_sink] publishes statuses from mastodon or replay: it has no llm and no kafka_source"))
            }
            PipelineKind::Sentiment if !publishes && p.llm.is_none() => {
                return Err(no("llm", "a sentiment pipeline needs a [pipeline.llm] section"))
            }
            _ => {}
        }
        let kafka = match (kafka, publishes || p.kafka_source.is_some()) {
            (None, true) => {
                return Err(no(
                    "kafka_sink",
                    "Kafka pipelines need a top-level [kafka] section with `brokers`",
                ))
            }
            (k, _) => k.cloned(),
        };
        // The checks above leave exactly one shape per kind; `unplannable` is unreachable.
        let unplannable = || no("kind", "no source and sink of this kind");
        let kafka_source = || {
            Some(p.kafka_source.clone()?)
                .zip(kafka.clone())
                .map(|(source, kafka)| (kafka, source))
        };
        Ok(match p.kind {
            PipelineKind::Cdc => PipelinePlan::Cdc(CdcPlan {
                source: match (&p.postgres, kafka_source()) {
                    (Some(pg), _) => CdcSource::Postgres(pg.clone()),
                    (None, Some((kafka, source))) => CdcSource::Kafka { kafka, source },
                    (None, None) => return Err(unplannable()),
                },
                sink: match (&p.kafka_sink, &kafka, &p.postgres) {
                    (Some(sink), Some(kafka), Some(pg)) => CdcSink::Kafka {
                        kafka: kafka.clone(),
                        sink: sink.clone(),
                        database: pg.database.clone(),
                    },
                    (Some(_), _, _) => return Err(unplannable()),
                    (None, _, _) => CdcSink::ClickHouse(p.clickhouse.clone()),
                },
            }),
            PipelineKind::Sentiment => PipelinePlan::Sentiment(SentimentPlan {
                source: match (&p.mastodon, &p.replay, kafka_source()) {
                    (Some(m), _, _) => PostSource::Mastodon(m.clone()),
                    (None, Some(r), _) => PostSource::Replay(r.clone()),
                    (None, None, Some((kafka, source))) => PostSource::Kafka { kafka, source },
                    (None, None, None) => return Err(unplannable()),
                },
                sink: match (&p.kafka_sink, &kafka, &p.llm) {
                    (Some(sink), Some(kafka), _) => PostSink::Publish {
                        kafka: kafka.clone(),
                        sink: sink.clone(),
                    },
                    (None, _, Some(llm)) => PostSink::Classify {
                        llm: llm.clone(),
                        clickhouse: p.clickhouse.clone(),
                    },
                    _ => return Err(unplannable()),
                },
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn plans(file: &str, edit: impl Fn(String) -> String) -> Vec<PipelinePlan> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file);
        let text = edit(std::fs::read_to_string(path).unwrap());
        let env = |k: &str| (k == "PGPASSWORD").then(|| "x".to_string());
        let cfg = Config::from_str_named(&text, file, &env).unwrap_or_else(|e| panic!("{e}"));
        cfg.pipelines
            .iter()
            .map(|p| cfg.plan_of(p).unwrap())
            .collect()
    }

    #[test]
    fn each_example_config_has_its_plan() {
        let cdc = plans("config/cdc.toml", |t| t);
        assert!(matches!(
            &cdc[..],
            [PipelinePlan::Cdc(CdcPlan {
                source: CdcSource::Postgres(_),
                sink: CdcSink::ClickHouse(_)
            })]
        ));
        let kafka = plans("config/kafka.toml", |t| t);
        assert!(matches!(
            &kafka[..],
            [
                PipelinePlan::Cdc(CdcPlan {
                    source: CdcSource::Postgres(_),
                    sink: CdcSink::Kafka { .. }
                }),
                PipelinePlan::Cdc(CdcPlan {
                    source: CdcSource::Kafka { .. },
                    sink: CdcSink::ClickHouse(_)
                })
            ]
        ));
        let s = plans("config/sentiment.toml", |t| t);
        assert!(matches!(
            &s[..],
            [PipelinePlan::Sentiment(SentimentPlan {
                source: PostSource::Mastodon(_),
                sink: PostSink::Classify { .. }
            })]
        ));
    }

    #[test]
    fn a_pipeline_without_a_valid_shape_has_no_plan() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/kafka.toml"),
        )
        .unwrap();
        let env = |k: &str| (k == "PGPASSWORD").then(|| "x".to_string());
        let mut cfg = Config::from_str_named(&text, "kafka.toml", &env).unwrap();
        // Kafka to Kafka is not a CDC pipeline.
        let mut p = cfg.pipelines[1].clone();
        p.kafka_sink = cfg.pipelines[0].kafka_sink.clone();
        assert_eq!(p.plan(cfg.kafka.as_ref()).unwrap_err().key, "kafka_sink");
        // Kafka sections need [kafka].
        cfg.kafka = None;
        assert!(cfg.plan_of(&cfg.pipelines[0]).is_err());
    }
}
