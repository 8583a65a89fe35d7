//! The configuration file: one TOML document, parsed with unknown keys rejected, `${ENV}`
//! interpolation inside strings (`interpolate.rs`), defaults in one place ([`defaults`]), a
//! validation pass that runs before anything connects (`validate.rs`), secrets read from
//! files (`secret_files.rs`), and the typed plan of each pipeline ([`plan`]). The sections are
//! in `service.rs` (the process), `sources.rs` (with libpq connection strings in [`pgconn`]),
//! `sinks.rs` and `llm.rs` (a pipeline's parts) and `pipeline.rs`.
//!
//! Must never: print a secret (passwords are [`Secret`], whose `Debug` is redacted, and a
//! TOML error shows where it is, not the line), or accept a config that would only fail later
//! at run time when a check here could catch it.

use serde::Deserialize;
use std::path::Path;
pub mod defaults;
#[doc(hidden)]
pub mod fuzz;
mod interpolate;
pub mod llm;
pub mod pgconn;
pub mod pipeline;
pub mod plan;
mod secret_files;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod tables;
#[cfg(test)]
mod tests;
mod validate;
pub mod value;

pub use llm::*;
pub use pipeline::*;
pub use plan::*;
pub use service::*;
pub use sinks::*;
pub use sources::*;
pub use tables::*;
pub use tributary_protocol::chtypes::JsonAs;
pub use tributary_protocol::chtypes::TableEngine;
pub use value::*;

use interpolate::interpolate;

/// Why a config could not be used. Every variant names the file; parse and validation
/// errors name the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: line {line}: environment variable `{var}` is not set (write `${{{var}:-default}}` for a default)")]
    MissingEnv {
        file: String,
        line: usize,
        var: String,
    },
    #[error("{file}: line {line}: unterminated `${{` in an interpolation")]
    BadInterpolation { file: String, line: usize },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub supervision: SupervisionConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub chaos: ChaosConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    /// How long SIGINT/SIGTERM may take to drain what is in flight before the process exits.
    #[serde(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
    /// The Kafka cluster of the pipelines that have a `kafka_sink` or `kafka_source`.
    pub kafka: Option<KafkaConfig>,
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
}

impl Config {
    /// Reads, interpolates, parses and validates `path`, then reads the secrets it names
    /// (`*_file`, [`Config::read_secret_files`]) and validates again. Nothing connects.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut cfg = Self::from_str_named(&raw, &file, &|k| std::env::var(k).ok())?;
        cfg.read_secret_files(&file, &|p| std::fs::read_to_string(p))?;
        Ok(cfg)
    }

    /// As [`Config::load`], for text already read, and without I/O: `env` looks variables
    /// up, and the `*_file` secrets are left unread (a check on a secret given by file waits
    /// for [`Config::read_secret_files`]).
    pub fn from_str_named(
        raw: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = interpolate(raw, file, env)?;
        let cfg: Config = toml::from_str(&text).map_err(|e| parse_error(&text, file, &e))?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks a config built or edited in code (tests) as a loaded file is checked.
    pub fn validate_for_tests(&self) -> Result<(), ConfigError> {
        self.validate("<in code>")
    }

    /// The plan of `p`, one of this config's pipelines (a validated config has one for each).
    pub fn plan_of(&self, p: &PipelineConfig) -> Result<PipelinePlan, ConfigError> {
        p.plan(self.kafka.as_ref())
            .map_err(|e| ConfigError::Invalid {
                file: "<config>".into(),
                key: format!("pipeline `{}`.{}", p.name, e.key),
                message: e.message.into(),
            })
    }
}

/// A TOML error that says where (line, column, and the key or table header there) but does
/// not quote the line, as toml's own rendering does: the line may hold a secret.
fn parse_error(text: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim_end();
    let message = match e.span().and_then(|s| text.get(..s.start)) {
        Some(before) => {
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            let line = before.matches('\n').count() + 1;
            let column = before[start..].chars().count() + 1;
            let source = text[start..].lines().next().unwrap_or("");
            format!(
                "line {line}, column {column}{}: {message}",
                what_is_at(source)
            )
        }
        None => message.to_string(),
    };
    ConfigError::Parse {
        file: file.to_string(),
        message,
    }
}

/// ` (`key`)` for a `key = value` line, ` (`[table]`)` for a header, or nothing: never a value.
fn what_is_at(line: &str) -> String {
    let line = line.trim();
    let name = if line.starts_with('[') {
        line.find(']').map(|end| {
            let end = end + usize::from(line[end + 1..].starts_with(']'));
            &line[..=end]
        })
    } else {
        line.split_once('=').map(|(key, _)| key.trim())
    };
    match name {
        Some(n)
            if !n.is_empty()
                && n.len() <= 100
                && n.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '_' | '-' | '.' | '"' | ' ' | '[' | ']')
                }) =>
        {
            format!(" (`{n}`)")
        }
        _ => String::new(),
    }
}
