//! The `[pipeline.llm]` section of a sentiment pipeline: backend, model, prompt and limits.
//!
//! Must never: hold a default of its own (they are all in [`crate::defaults`]).

use crate::defaults;
use crate::value::{empty_path_is_none, HumanDuration, Secret};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    /// Ollama's `/api/generate` or `/api/chat`.
    Ollama,
    /// Any OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp, ...).
    Openai,
}

/// How a post gets its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmMode {
    /// The model writes its answer, which is parsed (every backend).
    #[default]
    Generate,
    /// One token with its `top_logprobs`: the label with the highest (calibrated) score wins
    /// and its probability is the confidence. Needs a server that returns logprobs on
    /// `/v1/chat/completions` (`backend = "openai"`: vLLM, llama.cpp, …).
    Score,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OllamaEndpoint {
    Generate,
    Chat,
}

/// The LLM classifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub backend: LlmBackend,
    /// Base URL: `http://127.0.0.1:11434` (Ollama), `http://127.0.0.1:8000` (vLLM).
    pub url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Secret,
    /// A file holding the key instead (a Docker or Kubernetes secret): read by
    /// [`crate::Config::load`], one trailing newline dropped.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub api_key_file: Option<PathBuf>,
    #[serde(default = "defaults::ollama_endpoint")]
    pub endpoint: OllamaEndpoint,
    /// Prompt template with `{labels}` and `{text}`; empty = the built-in one.
    #[serde(default)]
    pub prompt: String,
    /// The system message of the chat APIs (and Ollama generate's `system`), where `{labels}`
    /// becomes the labels; empty = the built-in one.
    #[serde(default)]
    pub system_prompt: String,
    #[serde(default = "defaults::labels")]
    pub labels: Vec<String>,
    /// Output constrained to the labels: `off`, `json_schema` (OpenAI, vLLM, Ollama) or
    /// `json_object_with_schema` (llama.cpp's server). Ollama uses its `format` either way.
    #[serde(default = "defaults::structured")]
    pub structured: tributary_protocol::llm::Structured,
    /// Token budget of a reply (room for a reasoning model's `<think>` block).
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: u32,
    /// Requests in flight at most (the worker pool's size).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Adapt the requests in flight (1..=concurrency) to what the server sustains: a serial
    /// server (llama.cpp) gets one at a time, a batching one (vLLM) up to `concurrency`.
    #[serde(default = "defaults::yes")]
    pub adaptive_concurrency: bool,
    /// Posts waiting for a worker (the bounded queue in front of the pool).
    #[serde(default = "defaults::llm_queue")]
    pub queue: usize,
    #[serde(default = "defaults::llm_timeout")]
    pub timeout: HumanDuration,
    /// First retry delay after an LLM error (doubling, capped at `circuit_cooldown`). Errors
    /// are retried until the post is classified: a post is never dropped.
    #[serde(default = "defaults::backoff_initial")]
    pub backoff_initial: HumanDuration,
    /// Consecutive failures that open the circuit (intake pauses).
    #[serde(default = "defaults::circuit_failures")]
    pub circuit_failures: u32,
    /// How long an open circuit waits before one trial request.
    #[serde(default = "defaults::circuit_cooldown")]
    pub circuit_cooldown: HumanDuration,
    #[serde(default = "defaults::max_text_chars")]
    pub max_text_chars: usize,
    /// `generate` (default) or `score`.
    #[serde(default)]
    pub mode: LlmMode,
    /// Score mode: an offset per label added to its log-probability, as printed by
    /// `tributary eval --calibrate` (labels left out: 0).
    #[serde(default)]
    pub calibration: std::collections::BTreeMap<String, f64>,
    /// Few-shot examples: a JSON Lines file of `{"text": …, "label": …}`, sent as earlier
    /// turns of the chat before each post. Read by [`crate::Config::load`]'s caller.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub examples: Option<PathBuf>,
}
