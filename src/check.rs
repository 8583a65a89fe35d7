//! `tributary check`: validates the config, connects to every server, and prints what a run
//! would do (publication and slot, tables, the ClickHouse DDL). It changes nothing.

use crate::config::{Config, PipelinePlan};
use std::fmt::Write;

pub async fn run(cfg: &Config) -> Result<String, String> {
    let mut out = String::new();
    for p in &cfg.pipelines {
        let plan = cfg.plan_of(p).map_err(|e| e.to_string())?;
        let kafka = match (
            &cfg.kafka,
            p.kafka_sink.is_some() || p.kafka_source.is_some(),
        ) {
            (Some(k), true) => Some(kafka_line(k, p).await?),
            _ => None,
        };
        match plan {
            PipelinePlan::Sentiment(plan) => {
                out.push_str(&crate::sentiment::check::check(p, &plan).await?);
                out.push_str(kafka.as_deref().unwrap_or(""));
            }
            PipelinePlan::Cdc(plan) => {
                out.push_str(&crate::cdc::check::check(p, &plan, kafka).await?)
            }
        }
    }
    Ok(out)
}

/// Reaches the Kafka cluster and says which topics a pipeline writes or reads.
async fn kafka_line(
    k: &crate::config::KafkaConfig,
    p: &crate::config::PipelineConfig,
) -> Result<String, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let k2 = k.clone();
    let topics = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let c: BaseConsumer = crate::clients::kafka::client_config(&k2, &[])
            .create()
            .map_err(|e| crate::clients::kafka::scrub(&k2, e))?;
        let md = c
            .fetch_metadata(None, std::time::Duration::from_secs(10))
            .map_err(|e| {
                format!(
                    "kafka {}: {}",
                    k2.brokers,
                    crate::clients::kafka::scrub(&k2, e)
                )
            })?;
        Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
    })
    .await
    .map_err(|e| e.to_string())??;
    let mut out = format!(
        "  kafka {}: connected, {} topics\n",
        k.brokers,
        topics.len()
    );
    if let Some(s) = &p.kafka_source {
        let matching = topics
            .iter()
            .filter(|t| {
                s.topics.iter().any(|want| match want.strip_prefix('^') {
                    // A plain prefix check: librdkafka matches the full expression at run time.
                    Some(re) => t.starts_with(&re.replace("\\.", ".").replace(".*", "")),
                    None => *t == want,
                })
            })
            .count();
        let _ = writeln!(
            out,
            "    group `{}` reads {:?}: {matching} topics match now; dead letters to `{}`",
            s.group, s.topics, s.dead_letter_topic
        );
    }
    if let Some(s) = &p.kafka_sink {
        let _ = writeln!(
            out,
            "    writes Debezium events under `{}.*` (schemas {}), state in `{}`",
            s.topic_prefix, s.schemas, s.state_topic
        );
    }
    Ok(out)
}
