//! The sentiment pipeline against a real LLM server: llama.cpp's OpenAI-compatible server with
//! SmolLM2-135M (both from PyPI, started by scripts/services.sh), with output constrained to
//! the labels, or in score mode (one token, its logprobs, a calibration). Every post lands in
//! ClickHouse with a valid label, its latency and its model; in score mode with its confidence.

mod common;

use common::*;
use std::time::Duration;

async fn real_llm(target: Target) {
    real_llm_in(target, false).await
}

async fn real_llm_in(target: Target, score: bool) {
    let w = World::new(target).await;
    let llm_url = var("TRIBUTARY_TEST_LLM_URL");
    let model = var("TRIBUTARY_TEST_LLM_MODEL");
    let mut cfg = sentiment_config(&w, "http://127.0.0.1:9", &llm_url, "openai", &model);
    // A short replay: the model serves about 3 posts/s, one at a time.
    let dir = repo().join("target/test-configs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.jsonl", unique("replay")));
    let fixture = std::fs::read_to_string(repo().join("tests/fixtures/statuses.jsonl")).unwrap();
    let lines: Vec<&str> = fixture
        .lines()
        .filter(|l| !l.contains("\"reblog\":{"))
        .take(12)
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    use_replay(&mut cfg, file);
    let p = &mut cfg.pipelines[0];
    let l = p.llm.as_mut().unwrap();
    l.structured = tributary::protocol::llm::Structured::JsonObjectWithSchema;
    l.concurrency = 1;
    l.max_tokens = 32;
    l.timeout.0 = Duration::from_secs(60);
    if score {
        l.mode = tributary::config::LlmMode::Score;
        l.calibration = [("negative".to_string(), 1.5), ("neutral".to_string(), 2.5)]
            .into_iter()
            .collect();
    }
    let run = Running::start(&cfg).await;
    let rows = eventually(Duration::from_secs(240), "every post labelled by the real model", || async {
        let rows = w
            .try_ch_rows(&format!(
                "SELECT m_id, sentiment, model, llm_latency_ms, toString(confidence) FROM `{}`.mastodon_sentiment FINAL WHERE _is_deleted = 0",
                w.database
            ))
            .await?;
        if rows.len() == lines.len() { Ok(rows) } else { Err(format!("{} of {} rows", rows.len(), lines.len())) }
    })
    .await;
    for r in &rows {
        let f: Vec<&str> = r.split('\t').collect();
        assert!(
            ["positive", "negative", "neutral"].contains(&f[1]),
            "constrained output gives a label: {r}"
        );
        assert_eq!(f[2], model);
        assert!(f[3].parse::<u32>().unwrap() > 0, "latency recorded: {r}");
        if score {
            let c: f64 = f[4].parse().unwrap_or(-1.0);
            assert!(c > 0.0 && c <= 1.0, "a probability among the labels: {r}");
        } else {
            assert_eq!(f[4], "\\N", "no confidence when generating: {r}");
        }
    }
    if score {
        // Each post was one request for one token.
        let h = match &run.handles[0] {
            tributary::pipelines::PipelineHandles::Sentiment(h) => h.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            h.llm.requests.load(std::sync::atomic::Ordering::Relaxed),
            lines.len() as u64
        );
    }
    let h = match &run.handles[0] {
        tributary::pipelines::PipelineHandles::Sentiment(h) => h.clone(),
        _ => unreachable!(),
    };
    assert_eq!(
        h.llm.unknown.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no unparseable reply with constrained output"
    );
    assert_eq!(
        h.llm
            .unparsed_retries
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "parse failures are counted, and with constrained output there are none"
    );
    run.stop().await;
}
matrix!(real_llama_cpp_labels_every_post, real_llm);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llama_cpp_labels_every_post_by_label_scores() {
    real_llm_in(Target::Ch18, true).await
}
