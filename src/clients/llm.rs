//! The LLM client of the sentiment workers: one HTTP request per post to Ollama
//! (`/api/generate`, `/api/chat`) or an OpenAI-compatible server (`/v1/chat/completions`),
//! built and read by the pure core in [`crate::protocol::llm`].
//!
//! Must never: put the API key in a log or an error, or wait longer than the configured
//! timeout.

use crate::config::{LlmBackend, LlmConfig, OllamaEndpoint};
use crate::flow::circuit::CircuitBreaker;
use crate::protocol::llm::{self as core, Api, Labels, Request};
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
                match client.parse(&reply) {
                    Ok(label) => {
                        span.record("outcome", "label");
                        break label;
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
                        break "unknown".to_string();
                    }
                }
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
    }
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
    labels: Labels,
    structured: core::Structured,
    max_tokens: u32,
    max_text_chars: usize,
    timeout: Duration,
    prompt_id: String,
}

impl LlmClient {
    pub fn new(cfg: &LlmConfig) -> Result<LlmClient, LlmClientError> {
        crate::clients::tls::install_default_provider();
        let labels = Labels::new(cfg.labels.iter().cloned())
            .map_err(|e| LlmClientError::Config(e.to_string()))?;
        let template = if cfg.prompt.is_empty() {
            core::DEFAULT_PROMPT.to_string()
        } else {
            cfg.prompt.clone()
        };
        core::validate_template(&template).map_err(|e| LlmClientError::Config(e.to_string()))?;
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
        // A short, stable id of the prompt as sent (template and labels), stored with every
        // row so that prompts can be compared later.
        let prompt_id = format!(
            "{:016x}",
            fnv1a(format!("{template}\u{0}{}", labels.joined()).as_bytes())
        );
        Ok(LlmClient {
            http,
            api,
            base: cfg.url.trim_end_matches('/').to_string(),
            model: cfg.model.clone(),
            api_key: cfg.api_key.clone(),
            template,
            labels,
            structured: cfg.structured,
            max_tokens: cfg.max_tokens,
            max_text_chars: cfg.max_text_chars,
            timeout: cfg.timeout.0,
            prompt_id,
        })
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

    /// Asks the model about `text`; returns its raw reply.
    pub async fn complete(&self, text: &str) -> Result<String, LlmClientError> {
        let prompt = core::build_prompt(&self.template, text, &self.labels, self.max_text_chars);
        let body = core::request_body(
            self.api,
            &Request {
                model: &self.model,
                system: Some(core::DEFAULT_SYSTEM_PROMPT),
                prompt: &prompt,
                labels: &self.labels,
                structured: self.structured,
                max_tokens: Some(self.max_tokens),
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
        core::extract_reply(self.api, &bytes).map_err(|source| LlmClientError::Reply {
            url: self.base.clone(),
            source,
        })
    }

    /// The label in a reply, or why there is none.
    pub fn parse(&self, reply: &str) -> Result<String, core::Unparsed> {
        core::parse_label(reply, &self.labels)
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

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}
