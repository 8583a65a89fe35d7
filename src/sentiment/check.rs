//! `tributary check` for a sentiment pipeline: reaches ClickHouse, the LLM and every
//! Mastodon instance, and prints what a run would use. Must never: change anything.

use crate::clients::llm::LlmClient;
use crate::clients::mastodon;
use crate::config::{PipelineConfig, PostSink, PostSource, SentimentPlan};
use std::fmt::Write;

/// `tributary check` for a sentiment pipeline: reaches ClickHouse, the LLM and every
/// Mastodon instance, and prints what it would use.
pub async fn check(p: &PipelineConfig, plan: &SentimentPlan) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "pipeline `{}` (sentiment)", p.name);
    let (ch, line) = crate::clients::clickhouse::ChClient::connect_described(&p.clickhouse).await?;
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "    {}",
        crate::sentiment::clickhouse_sink::create_table_sql(
            &ch.database,
            &p.clickhouse.sentiment_table,
            &ch.caps
        )
    );
    if let PostSink::Classify { llm: l, .. } = &plan.sink {
        let client = LlmClient::new(l).map_err(|e| e.to_string())?;
        let models = client.probe().await.map_err(|e| e.to_string())?;
        let _ = writeln!(
            out,
            "  llm {:?} {}: reachable; model `{}`{}",
            l.backend, l.url, l.model, models
        );
        // Score mode needs logprobs: one real request says whether the server gives them.
        if client.mode() == crate::config::LlmMode::Score {
            let reply = client
                .complete("What a lovely morning, thank you all!")
                .await
                .map_err(|e| format!("llm.mode = \"score\": {e}"))?;
            let verdict = client
                .parse(&reply)
                .map(|v| format!("`{}` ({:.2})", v.label, v.confidence.unwrap_or(0.0)))
                .unwrap_or_else(|e| format!("no label ({e}): check the prompt asks for one word"));
            let _ = writeln!(
                out,
                "  llm score mode: logprobs returned; a test post scored {verdict}"
            );
        }
    }
    if let PostSource::Mastodon(m) = &plan.source {
        for inst in &m.instances {
            let http = mastodon::http_client().map_err(|e| e.to_string())?;
            let title = mastodon::MastodonClient::new(http, inst, m)
                .instance_title()
                .await
                .map_err(|e| e.to_string())?;
            let _ = writeln!(
                out,
                "  mastodon {}: {title}; streams {:?}",
                inst.url, m.streams
            );
        }
    }
    if let PostSource::Replay(r) = &plan.source {
        let meta = std::fs::metadata(&r.file)
            .map_err(|e| format!("replay file {}: {e}", r.file.display()))?;
        let _ = writeln!(
            out,
            "  replay {} ({} bytes, rate {})",
            r.file.display(),
            meta.len(),
            if r.rate > 0.0 {
                format!("{}/s", r.rate)
            } else {
                "full speed".into()
            }
        );
    }
    Ok(out)
}
