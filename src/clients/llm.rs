//! The LLM client of the sentiment workers: one HTTP request per post to Ollama
//! (`/api/generate`, `/api/chat`) or an OpenAI-compatible server (`/v1/chat/completions`),
//! built and read by the pure core in [`crate::protocol::llm`]; in score mode one token's
//! log-probabilities, read by [`crate::protocol::llm_score`].
//!
//! Must never: put the API key in a log or an error, or wait longer than the configured
//! timeout.

use crate::config::{LlmBackend, LlmConfig, LlmMode, OllamaEndpoint};
use crate::flow::circuit::CircuitBreaker;
use crate::protocol::llm::{self as core, Api, Labels, Request};
use crate::protocol::llm_score::{self, LabelScores};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{Instrument, Span};

/// Counters of the LLM stage.
#[derive(Default)]
pub struct LlmCounters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub unparsed_retries: AtomicU64,
    pub unknown: AtomicU64,
    pub classified: AtomicU64,
    /// Posts the server refused for good (a 4xx other than 408/429), stored as `unknown`.
    pub rejected: AtomicU64,
    /// The server has answered a request of this pipeline with success: from then on a 400
    /// or 422 is about the post, not the config.
    pub answered: std::sync::atomic::AtomicBool,
    /// Sum of the confidences of posts classified in score mode, in millionths, and their
    /// number: the mean confidence.
    pub confidence_micros: AtomicU64,
    pub scored: AtomicU64,
    pub redelivered: AtomicU64,
    pub latency_ms_total: AtomicU64,
    /// Duration of each request.
    pub duration: crate::runtime::registry::Log2Histogram,
    /// Posts per stored label (`unknown` included).
    pub labels: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// How errors are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// The result of classifying one text.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One of the labels, or `unknown` after two unparseable replies.
    pub label: String,
    pub attempts: u32,
    pub latency_ms: u32,
    /// Replies that gave no label.
    pub unparsed: u32,
    /// Score mode: the label's probability among the labels.
    pub confidence: Option<f32>,
    /// Why the label is `unknown`, when the server refused the post or never named a label.
    pub error: Option<String>,
    /// Score mode: the label scores of the last reply (for `tributary eval --calibrate`).
    pub scores: Option<LabelScores>,
}

/// A reply of the server.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Generated text (generate mode).
    Text(String),
    /// The labels' log-probabilities (score mode).
    Scores(LabelScores),
    /// Score mode: no label among the likely first tokens (why).
    NoLabel(String),
}

/// The label a reply gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub label: String,
    pub confidence: Option<f32>,
}

/// Classifies `text` the way the pipeline does: errors are retried with backoff behind the
/// circuit breaker until a reply comes (nothing is dropped); an unparseable reply is asked
/// once more, then the result is `unknown` (counted). Each request is an `llm.call` span
/// under `trace`.
pub async fn classify(
    client: &LlmClient,
    breaker: &CircuitBreaker,
    limiter: &crate::flow::limiter::Limiter,
    counters: &LlmCounters,
    policy: &RetryPolicy,
    text: &str,
    trace: &Span,
) -> Outcome {
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut unparsed = 0u32;
    let mut delay = policy.backoff_initial;
    let mut confidence = None;
    let mut error = None;
    let mut scores = None;
    let label = loop {
        breaker.ready().await;
        let slot = limiter.acquire().await;
        attempts += 1;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(parent: trace, "llm.call", model = %client.model(), attempt = attempts, outcome = tracing::field::Empty);
        let sent = Instant::now();
        let reply = client.complete(text).instrument(span.clone()).await;
        counters.duration.record(sent.elapsed());
        drop(slot);
        match reply {
            Ok(reply) => {
                breaker.success();
                limiter.completed();
                counters.answered.store(true, Ordering::Relaxed);
                if let Reply::Scores(s) = &reply {
                    scores = Some(s.clone());
                }
                match client.parse(&reply) {
                    Ok(v) => {
                        span.record("outcome", "label");
                        if let Some(c) = v.confidence {
                            confidence = Some(c);
                            counters.scored.fetch_add(1, Ordering::Relaxed);
                            counters
                                .confidence_micros
                                .fetch_add((c as f64 * 1e6) as u64, Ordering::Relaxed);
                        }
                        break v.label;
                    }
                    Err(why) if unparsed == 0 => {
                        span.record("outcome", "unparsed");
                        unparsed += 1;
                        counters.unparsed_retries.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(reason = %why, "unparseable reply; asking once more");
                    }
                    Err(why) => {
                        span.record("outcome", "unknown");
                        unparsed += 1;
                        counters.unknown.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(reason = %why, "unparseable reply twice: stored as `unknown`");
                        error = Some(format!("no label: {why}"));
                        break "unknown".to_string();
                    }
                }
            }
            // The server refuses this post for good (a content filter, too large): asking
            // again cannot help, and the server itself is fine.
            Err(LlmClientError::Status {
                status, excerpt, ..
            }) if permanent(status)
                && (matches!(status, 413 | 451) || counters.answered.load(Ordering::Relaxed)) =>
            {
                span.record("outcome", "rejected");
                breaker.success();
                limiter.completed();
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                counters.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    status,
                    "the LLM server refused the post: stored as `unknown`"
                );
                error = Some(format!("HTTP {status}: {excerpt}"));
                break "unknown".to_string();
            }
            Err(e) => {
                span.record("outcome", "error");
                breaker.failure();
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(attempt = attempts, error = %e, retry_in = ?delay, "LLM request failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.backoff_max);
            }
        }
    };
    let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    counters.classified.fetch_add(1, Ordering::Relaxed);
    *counters
        .labels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(label.clone())
        .or_default() += 1;
    counters
        .latency_ms_total
        .fetch_add(latency_ms as u64, Ordering::Relaxed);
    Outcome {
        label,
        attempts,
        latency_ms,
        unparsed,
        confidence,
        error,
        scores,
    }
}

/// A status that says this one request will never succeed as it is: a 4xx other than 408
/// (timeout) and 429 (rate limit). Not those that refuse every request alike (401, 403, 404,
/// 405, 407: a key, a model name or a URL that is wrong): storing every post as `unknown`
/// would lose them all, so those are retried behind the circuit until the config is fixed.
/// A 400 or 422 can also be a config the server refuses (an unknown parameter, no logprobs):
/// the caller takes it for this post alone only once the server has answered a request of
/// this pipeline (413 and 451 name the post itself).
fn permanent(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 405 | 407 | 408 | 429)
}

#[derive(Debug, thiserror::Error)]
pub enum LlmClientError {
    #[error("LLM at {url}: {message}")]
    Http { url: String, message: String },
    #[error("LLM at {url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("LLM at {url}: HTTP {status}: {excerpt}")]
    Status {
        url: String,
        status: u16,
        excerpt: String,
    },
    #[error("LLM at {url}: {source}")]
    Reply { url: String, source: core::LlmError },
    #[error("LLM config: {0}")]
    Config(String),
}

pub struct LlmClient {
    http: reqwest::Client,
    api: Api,
    base: String,
    model: String,
    api_key: crate::config::Secret,
    template: String,
    system: String,
    labels: Labels,
    structured: core::Structured,
    max_tokens: u32,
    max_text_chars: usize,
    timeout: Duration,
    prompt_id: String,
    mode: LlmMode,
    /// Score mode: the calibration offset of each label, in label order.
    offsets: Vec<f64>,
    /// Few-shot turns: each example's prompt and its answer.
    examples: Vec<(String, String)>,
}

impl LlmClient {
    pub fn new(cfg: &LlmConfig) -> Result<LlmClient, LlmClientError> {
        crate::clients::tls::install_default_provider();
        let labels = Labels::new(cfg.labels.iter().cloned())
            .map_err(|e| LlmClientError::Config(e.to_string()))?;
        // The built-in prompts: a short one where the reply is held to the labels' JSON
        // schema, an explicit one-word one where the first token must be a label (score
        // mode) or nothing holds the reply.
        let json = cfg.mode == LlmMode::Generate && cfg.structured != core::Structured::Off;
        let (default_prompt, default_system) = if json {
            (core::DEFAULT_JSON_PROMPT, core::DEFAULT_JSON_SYSTEM_PROMPT)
        } else {
            (core::DEFAULT_PROMPT, core::DEFAULT_SYSTEM_PROMPT)
        };
        let template = if cfg.prompt.is_empty() {
            default_prompt.to_string()
        } else {
            cfg.prompt.clone()
        };
        let system_template = if cfg.system_prompt.is_empty() {
            default_system
        } else {
            &cfg.system_prompt
        };
        // The model learns the labels from `{labels}` in either prompt, or from the JSON
        // schema when the reply is constrained to it; otherwise it could not know them.
        match core::validate_template(&template) {
            Err(core::PromptError::NoLabels) if system_template.contains("{labels}") || json => {}
            r => r.map_err(|e| LlmClientError::Config(e.to_string()))?,
        }
        let system = system_template.replace("{labels}", &labels.joined());
        let api = match (cfg.backend, cfg.endpoint) {
            (LlmBackend::Ollama, OllamaEndpoint::Generate) => Api::OllamaGenerate,
            (LlmBackend::Ollama, OllamaEndpoint::Chat) => Api::OllamaChat,
            (LlmBackend::Openai, _) => Api::OpenAiChat,
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(cfg.timeout.0)
            .build()
            .map_err(|e| LlmClientError::Config(e.to_string()))?;
        let examples = match &cfg.examples {
            None => Vec::new(),
            Some(path) => load_examples(path, &labels)?
                .into_iter()
                .map(|(text, label)| {
                    let prompt = core::build_prompt(&template, &text, &labels, cfg.max_text_chars);
                    let answer = if cfg.mode == LlmMode::Generate
                        && cfg.structured != core::Structured::Off
                    {
                        serde_json::json!({ "sentiment": label }).to_string()
                    } else {
                        label
                    };
                    (prompt, answer)
                })
                .collect(),
        };
        let offsets: Vec<f64> = labels
            .iter()
            .map(|l| cfg.calibration.get(l).copied().unwrap_or(0.0))
            .collect();
        // Stored with every row so that prompts can be compared later (see `prompt_id_of`).
        let score = (cfg.mode == LlmMode::Score).then_some(offsets.as_slice());
        let prompt_id = prompt_id_of(&template, &labels, &system, score, &examples);
        Ok(LlmClient {
            http,
            api,
            base: cfg.url.trim_end_matches('/').to_string(),
            model: cfg.model.clone(),
            api_key: cfg.api_key.clone(),
            template,
            system,
            labels,
            structured: cfg.structured,
            max_tokens: cfg.max_tokens,
            max_text_chars: cfg.max_text_chars,
            timeout: cfg.timeout.0,
            prompt_id,
            mode: cfg.mode,
            offsets,
            examples,
        })
    }

    pub fn mode(&self) -> LlmMode {
        self.mode
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn prompt_id(&self) -> &str {
        &self.prompt_id
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Asks the model about `text`; returns its reply: the text, or in score mode the label
    /// scores.
    pub async fn complete(&self, text: &str) -> Result<Reply, LlmClientError> {
        let prompt = core::build_prompt(&self.template, text, &self.labels, self.max_text_chars);
        let body = core::request_body(
            self.api,
            &Request {
                model: &self.model,
                system: Some(&self.system),
                prompt: &prompt,
                labels: &self.labels,
                structured: self.structured,
                max_tokens: Some(self.max_tokens),
                examples: &self.examples,
                top_logprobs: (self.mode == LlmMode::Score).then_some(llm_score::TOP_LOGPROBS),
            },
        );
        let url = format!("{}{}", self.base, self.api.path());
        let mut req = self.http.post(&url).json(&body);
        if !self.api_key.is_empty() {
            req = req.bearer_auth(self.api_key.expose());
        }
        let resp = req.send().await.map_err(|e| self.err(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.err(e))?;
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&bytes)
                .chars()
                .take(core::EXCERPT_CHARS)
                .collect();
            return Err(LlmClientError::Status {
                url: self.base.clone(),
                status: status.as_u16(),
                excerpt,
            });
        }
        if self.mode == LlmMode::Score {
            return match llm_score::label_scores(&bytes, &self.labels) {
                Ok(s) => Ok(Reply::Scores(s)),
                // No label among the likely tokens: an answer, just not a usable one.
                Err(llm_score::ScoreError::NoLabelToken(n)) => Ok(Reply::NoLabel(format!(
                    "none of the {n} most likely first tokens begins a label"
                ))),
                Err(e) => {
                    // The server's own error message, when it sent one.
                    core::extract_reply(self.api, &bytes).map_err(|source| {
                        LlmClientError::Reply {
                            url: self.base.clone(),
                            source,
                        }
                    })?;
                    Err(LlmClientError::Config(e.to_string()))
                }
            };
        }
        core::extract_reply(self.api, &bytes)
            .map(Reply::Text)
            .map_err(|source| LlmClientError::Reply {
                url: self.base.clone(),
                source,
            })
    }

    /// The label in a reply, or why there is none.
    pub fn parse(&self, reply: &Reply) -> Result<Verdict, core::Unparsed> {
        match reply {
            Reply::Text(t) => core::parse_label(t, &self.labels).map(|label| Verdict {
                label,
                confidence: None,
            }),
            Reply::NoLabel(why) => Err(core::Unparsed::NoLabel(why.clone())),
            Reply::Scores(s) => {
                let (i, p) = llm_score::decide(s, &self.offsets);
                Ok(Verdict {
                    label: self.labels.as_slice()[i].clone(),
                    confidence: Some(p as f32),
                })
            }
        }
    }

    /// Reaches the server's model list (`/api/tags` or `/v1/models`), for `tributary check`;
    /// returns a note when the configured model is not listed.
    pub async fn probe(&self) -> Result<String, LlmClientError> {
        let path = match self.api {
            Api::OpenAiChat => "/v1/models",
            _ => "/api/tags",
        };
        let mut req = self.http.get(format!("{}{path}", self.base));
        if !self.api_key.is_empty() {
            req = req.bearer_auth(self.api_key.expose());
        }
        let resp = req.send().await.map_err(|e| self.err(e))?;
        if !resp.status().is_success() {
            return Err(LlmClientError::Status {
                url: self.base.clone(),
                status: resp.status().as_u16(),
                excerpt: path.into(),
            });
        }
        let text = resp.text().await.map_err(|e| self.err(e))?;
        Ok(if text.contains(&self.model) {
            String::new()
        } else {
            " (not in the server's model list)".into()
        })
    }

    fn err(&self, e: reqwest::Error) -> LlmClientError {
        if e.is_timeout() {
            LlmClientError::Timeout {
                url: self.base.clone(),
                after: self.timeout,
            }
        } else {
            LlmClientError::Http {
                url: self.base.clone(),
                message: e.without_url().to_string(),
            }
        }
    }
}

/// Reads a few-shot file: JSON Lines of `{"text": …, "label": …}`, each label one of
/// `labels`.
pub fn load_examples(
    path: &std::path::Path,
    labels: &Labels,
) -> Result<Vec<(String, String)>, LlmClientError> {
    let bad = |line: usize, why: &str| {
        LlmClientError::Config(format!("llm.examples {}:{line}: {why}", path.display()))
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| LlmClientError::Config(format!("llm.examples {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|_| bad(i + 1, "not a JSON object"))?;
        let (Some(t), Some(l)) = (
            v.get("text").and_then(|t| t.as_str()),
            v.get("label").and_then(|l| l.as_str()),
        ) else {
            return Err(bad(i + 1, "needs string fields `text` and `label`"));
        };
        let Some(label) = labels.find(l) else {
            return Err(bad(i + 1, &format!("`{l}` is not one of the labels")));
        };
        out.push((t.to_string(), label.to_string()));
    }
    Ok(out)
}

/// A short, stable id of the prompt as sent: the template, the labels, the system message
/// (a built-in one too: a new built-in is a new prompt), score mode's offsets and the
/// few-shot turns.
fn prompt_id_of(
    template: &str,
    labels: &Labels,
    system: &str,
    score: Option<&[f64]>,
    examples: &[(String, String)],
) -> String {
    let mut what = format!("{template}\u{0}{}\u{0}system\u{0}{system}", labels.joined());
    if let Some(offsets) = score {
        what.push_str(&format!("\u{0}score{offsets:?}"));
    }
    for (p, a) in examples {
        what.push_str(&format!("\u{0}{p}\u{0}{a}"));
    }
    format!("{:016x}", fnv1a(what.as_bytes()))
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_this_one_post_is_permanent() {
        for s in [400, 413, 422, 451] {
            assert!(permanent(s), "{s}");
        }
        // Wrong key, model or URL refuse every post alike; timeouts and limits pass.
        for s in [401, 403, 404, 405, 407, 408, 429, 500, 503, 200] {
            assert!(!permanent(s), "{s}");
        }
    }

    #[test]
    fn the_prompt_id_changes_with_any_system_message_the_built_in_one_too() {
        let l = Labels::default();
        let t = core::DEFAULT_PROMPT;
        let builtin = prompt_id_of(t, &l, core::DEFAULT_SYSTEM_PROMPT, None, &[]);
        assert_ne!(builtin, prompt_id_of(t, &l, "", None, &[]));
        assert_ne!(
            builtin,
            prompt_id_of(t, &l, "You classify posts.", None, &[])
        );
        assert_eq!(
            builtin,
            prompt_id_of(t, &l, core::DEFAULT_SYSTEM_PROMPT, None, &[])
        );
        assert_ne!(
            builtin,
            prompt_id_of(t, &l, core::DEFAULT_SYSTEM_PROMPT, Some(&[]), &[])
        );
    }

    /// The id of the built-in score-mode prompt, pinned: a change of a built-in text must
    /// change the id stored with every row (a new built-in is a new prompt). The last
    /// release's one-word system message gave 046b661d85347c17; hashing the prompt without its
    /// built-in system message (the rule before) would still give that id for the new message.
    #[test]
    fn the_built_in_score_prompt_has_its_own_id() {
        let id = prompt_id_of(
            core::DEFAULT_PROMPT,
            &Labels::default(),
            core::DEFAULT_SYSTEM_PROMPT,
            Some(&[0.0, 0.0, 0.0]),
            &[],
        );
        assert_eq!(id, "8d50a062621b49e4");
    }

    #[test]
    fn few_shot_examples_are_read_strictly() {
        let dir = std::env::temp_dir().join(format!("tributary-shots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let labels = Labels::default();
        let good = dir.join("good.jsonl");
        std::fs::write(
            &good,
            "{\"text\": \"Great day!\", \"label\": \"Positive\"}\n\n{\"text\": \"meh\", \"label\": \"neutral\"}\n",
        )
        .unwrap();
        assert_eq!(
            load_examples(&good, &labels).unwrap(),
            vec![
                ("Great day!".to_string(), "positive".to_string()),
                ("meh".to_string(), "neutral".to_string())
            ]
        );
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, "{\"text\": \"x\", \"label\": \"happy\"}\n").unwrap();
        let e = load_examples(&bad, &labels).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:1") && e.contains("`happy`"), "{e}");
        std::fs::write(&bad, "{\"text\": 1}\n").unwrap();
        assert!(load_examples(&bad, &labels).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
