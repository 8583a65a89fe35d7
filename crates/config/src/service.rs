//! The sections that configure the process rather than one pipeline: `[kafka]` (the
//! brokers every Kafka pipeline uses), `[telemetry]`, `[http]`, `[admin]`, `[chaos]` and
//! `[supervision]`.
//!
//! Must never: hold a default of its own (they are all in [`crate::defaults`]).

use crate::defaults;
use crate::value::{empty_path_is_none, HumanDuration, Secret};
use serde::Deserialize;
use std::path::PathBuf;

/// A Kafka cluster (any Kafka-protocol broker). Every librdkafka property can be set in
/// `properties` (SASL, TLS, timeouts); their values are secrets: never logged, and removed
/// from client errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    #[serde(default = "defaults::kafka_client_id")]
    pub client_id: String,
    /// librdkafka properties, passed through as they are (they override ours).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, Secret>,
    /// librdkafka properties whose value is read from a file (a Docker or Kubernetes
    /// secret), e.g. `{ "sasl.password" = "/run/secrets/kafka" }`: read into `properties` by
    /// [`crate::Config::load`], one trailing newline dropped.
    #[serde(default)]
    pub secret_files: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (human-readable) or `json` (one object per line, with trace and span ids).
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax; the `RUST_LOG` variable overrides it.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); empty = no span export.
    #[serde(default)]
    pub otlp_endpoint: String,
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: defaults::log_format(),
            log_level: defaults::log_level(),
            otlp_endpoint: String::new(),
            service_name: defaults::service_name(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The HTTP listener: `/health`, `/ready`, `/status`, `/metrics` and the status page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`; empty = no listener.
    #[serde(default = "defaults::http_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: defaults::http_listen(),
        }
    }
}

/// Fault controls on the HTTP listener (`/admin/actors`, `/admin/kill`, `/admin/stop`):
/// off by default, and refused without the bearer token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub token: Secret,
    /// A file holding the token instead (a Docker or Kubernetes secret): read by
    /// [`crate::Config::load`], one trailing newline dropped.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub token_file: Option<PathBuf>,
}

/// Chaos for your own deployment: kills a random running actor of the chosen kinds every
/// `interval` (off by default). Keep `interval` long enough for `supervision` not to escalate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "defaults::chaos_interval")]
    pub interval: HumanDuration,
    /// Actor kinds by the last part of their path: `sink`, `source`, `worker`, `pool`.
    #[serde(default = "defaults::chaos_kinds")]
    pub kinds: Vec<String>,
    /// Seed of the choice (0: from the clock).
    #[serde(default)]
    pub seed: u64,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            enabled: false,
            interval: defaults::chaos_interval(),
            kinds: defaults::chaos_kinds(),
            seed: 0,
        }
    }
}

/// `tributary verify` inside the service: every `interval` (off when zero, the default) each
/// CDC pipeline this process streams is compared with Postgres (the `tables` named, or every
/// table), and the result goes to `/metrics` (`tributary_verify_*`), `/status` and the status
/// page. It waits while a pipeline copies a table, and leaves alone a pipeline this process is
/// the standby of.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    #[serde(default = "defaults::verify_interval")]
    pub interval: HumanDuration,
    /// `schema.table` (or a table of `public`); empty: every table of the publications.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Differences kept per table (on `/status`; the metric counts up to this).
    #[serde(default = "defaults::verify_limit")]
    pub limit: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            interval: defaults::verify_interval(),
            tables: Vec::new(),
            limit: defaults::verify_limit(),
        }
    }
}

/// Restart policy of every supervisor (OTP's restart intensity plus exponential backoff).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// More than `max_restarts` restarts within `within` escalate: the pipeline stops.
    #[serde(default = "defaults::max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "defaults::within")]
    pub within: HumanDuration,
    #[serde(default = "defaults::backoff_initial")]
    pub backoff_initial: HumanDuration,
    #[serde(default = "defaults::backoff_max")]
    pub backoff_max: HumanDuration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: defaults::max_restarts(),
            within: defaults::within(),
            backoff_initial: defaults::backoff_initial(),
            backoff_max: defaults::backoff_max(),
        }
    }
}
