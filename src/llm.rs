//! The LLM client of the sentiment workers: one HTTP request per post to Ollama
//! (`/api/generate`, `/api/chat`) or an OpenAI-compatible server (`/v1/chat/completions`),
//! built and read by the pure core in [`crate::protocol::llm`].
//!
//! Must never: put the API key in a log or an error, or wait longer than the configured
//! timeout.

use crate::config::{LlmBackend, LlmConfig, OllamaEndpoint};
use crate::protocol::llm::{self as core, Api, Labels, Request};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LlmClientError {
    #[error("LLM at {url}: {message}")]
    Http { url: String, message: String },
    #[error("LLM at {url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("LLM at {url}: HTTP {status}: {excerpt}")]
    Status { url: String, status: u16, excerpt: String },
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
        crate::tls::install_default_provider();
        let labels = Labels::new(cfg.labels.iter().cloned()).map_err(|e| LlmClientError::Config(e.to_string()))?;
        let template = if cfg.prompt.is_empty() { core::DEFAULT_PROMPT.to_string() } else { cfg.prompt.clone() };
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
        let prompt_id = format!("{:016x}", fnv1a(format!("{template}\u{0}{}", labels.joined()).as_bytes()));
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
            let excerpt: String = String::from_utf8_lossy(&bytes).chars().take(core::EXCERPT_CHARS).collect();
            return Err(LlmClientError::Status { url: self.base.clone(), status: status.as_u16(), excerpt });
        }
        core::extract_reply(self.api, &bytes).map_err(|source| LlmClientError::Reply { url: self.base.clone(), source })
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
            return Err(LlmClientError::Status { url: self.base.clone(), status: resp.status().as_u16(), excerpt: path.into() });
        }
        let text = resp.text().await.map_err(|e| self.err(e))?;
        Ok(if text.contains(&self.model) { String::new() } else { " (not in the server's model list)".into() })
    }

    fn err(&self, e: reqwest::Error) -> LlmClientError {
        if e.is_timeout() {
            LlmClientError::Timeout { url: self.base.clone(), after: self.timeout }
        } else {
            LlmClientError::Http { url: self.base.clone(), message: e.without_url().to_string() }
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
}
