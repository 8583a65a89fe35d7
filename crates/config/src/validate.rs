//! The validation pass over a parsed file: every check that can run before anything connects,
//! each failure naming the file and the key.
//!
//! Must never: accept a config that would only fail later at run time when a check here could
//! catch it, or quote a secret in its message.

use crate::*;
use std::collections::HashSet;

impl Config {
    /// Every check: how secrets are given, then the values.
    pub(crate) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.check_secret_sources(file)?;
        self.validate_values(file)
    }

    /// The checks on values. A secret given by a file not read yet (an empty value beside its
    /// `*_file`) is checked once [`Config::read_secret_files`] has read it.
    pub(crate) fn validate_values(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            message,
        };
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen".into(),
                format!(
                    "`{}` is not host:port (an IP address and a port)",
                    self.http.listen
                ),
            ));
        }
        let token_unread = self.admin.token.is_empty() && self.admin.token_file.is_some();
        if self.admin.enabled && !token_unread && self.admin.token.expose().len() < 16 {
            let key = if self.admin.token_file.is_some() {
                "admin.token_file"
            } else {
                "admin.token"
            };
            return Err(invalid(
                key.into(),
                "the admin API needs a token of at least 16 characters".into(),
            ));
        }
        if self.admin.enabled && self.http.listen.is_empty() {
            return Err(invalid(
                "admin.enabled".into(),
                "the admin API is served on http.listen, which is off".into(),
            ));
        }
        if self.chaos.enabled && (self.chaos.interval.0.is_zero() || self.chaos.kinds.is_empty()) {
            return Err(invalid(
                "chaos".into(),
                "an enabled chaos needs an interval above zero and at least one kind".into(),
            ));
        }
        let v = &self.verify;
        if !v.interval.0.is_zero() {
            if v.interval.0 < std::time::Duration::from_secs(1) || v.limit == 0 {
                return Err(invalid(
                    "verify".into(),
                    "a scheduled verify needs an interval of at least 1s and a limit above zero"
                        .into(),
                ));
            }
            let verifiable = self.pipelines.iter().any(|p| {
                p.kind == PipelineKind::Cdc && p.postgres.is_some() && p.kafka_sink.is_none()
            });
            if !verifiable {
                return Err(invalid(
                    "verify.interval".into(),
                    "no pipeline writes ClickHouse from Postgres: there is nothing to verify"
                        .into(),
                ));
            }
        }
        if self.pipelines.is_empty() {
            return Err(invalid(
                "pipeline".into(),
                "at least one [[pipeline]] is required".into(),
            ));
        }
        let s = &self.supervision;
        if s.backoff_initial.0.is_zero() || s.backoff_initial.0 > s.backoff_max.0 {
            return Err(invalid(
                "supervision.backoff_initial".into(),
                "must be above zero and at most supervision.backoff_max".into(),
            ));
        }
        if s.within.0.is_zero() {
            return Err(invalid(
                "supervision.within".into(),
                "must be above zero".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = |k: &str| format!("pipeline[{i}].{k}");
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    at("name"),
                    "use letters, digits, `_` and `-` only".into(),
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(at("name"), format!("`{}` is used twice", p.name)));
            }
            p.plan(self.kafka.as_ref())
                .map_err(|e| invalid(at(e.key), e.message.into()))?;
            if let Some(k) = &p.kafka_source {
                if k.group.is_empty()
                    || k.topics.is_empty()
                    || k.topics.iter().any(|t| t.is_empty())
                {
                    return Err(invalid(
                        at("kafka_source"),
                        "needs a `group` and at least one non-empty topic".into(),
                    ));
                }
                if !matches!(k.start.as_str(), "earliest" | "latest") {
                    return Err(invalid(
                        at("kafka_source.start"),
                        format!("`{}` is not `earliest` or `latest`", k.start),
                    ));
                }
                if k.commit_interval.0.is_zero() {
                    return Err(invalid(
                        at("kafka_source.commit_interval"),
                        "must be above zero".into(),
                    ));
                }
                if k.chunk_messages == 0 {
                    return Err(invalid(
                        at("kafka_source.chunk_messages"),
                        "must be at least 1".into(),
                    ));
                }
            }
            if let Some(k) = &p.kafka_sink {
                if k.topic_prefix.is_empty() || k.partitions < 1 || k.replication_factor < 1 {
                    return Err(invalid(at("kafka_sink"), "topic_prefix must not be empty; partitions and replication_factor must be at least 1".into()));
                }
            }
            if let Some(m) = &p.mastodon {
                validate_mastodon(m)
                    .map_err(|(k, msg)| invalid(at(&format!("mastodon.{k}")), msg))?;
            }
            if let Some(l) = &p.llm {
                validate_llm(l).map_err(|(k, msg)| invalid(at(&format!("llm.{k}")), msg))?;
            }
            if let Some(pg) = &p.postgres {
                validate_postgres(pg)
                    .map_err(|(k, msg)| invalid(at(&format!("postgres.{k}")), msg))?;
            }
            let mut mapped = HashSet::new();
            for (j, m) in p.tables.iter().enumerate() {
                let at_t = |k: &str| at(&format!("table[{j}].{k}"));
                if p.kind != PipelineKind::Cdc {
                    return Err(invalid(
                        at_t("name"),
                        "table mappings belong to cdc pipelines".into(),
                    ));
                }
                if let Some((k, msg)) = m.problem() {
                    return Err(invalid(at_t(k), msg));
                }
                if !mapped.insert(m.source()) {
                    return Err(invalid(
                        at_t("name"),
                        format!("`{}` has two mappings", m.name),
                    ));
                }
                if m.selects() && p.postgres.is_none() {
                    return Err(invalid(
                        at_t("columns"),
                        "columns, exclude_columns and filter are publication settings: they need a postgres source".into(),
                    ));
                }
            }
            let ch = &p.clickhouse;
            if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
                return Err(invalid(
                    at("clickhouse.url"),
                    format!("`{}` must start with http:// or https://", ch.url),
                ));
            }
            for (i, r) in ch.replicas.iter().enumerate() {
                let scheme = |u: &str| u.split("://").next().unwrap_or("").to_string();
                if !(r.starts_with("http://") || r.starts_with("https://")) {
                    return Err(invalid(
                        at(&format!("clickhouse.replicas[{i}]")),
                        format!("`{r}` must start with http:// or https://"),
                    ));
                }
                if scheme(r) != scheme(&ch.url) {
                    return Err(invalid(
                        at(&format!("clickhouse.replicas[{i}]")),
                        format!("`{r}`: every replica takes the TLS settings of `url`, so it must use the same scheme"),
                    ));
                }
            }
            let path = &ch.replication_path;
            let unique = path.contains("{table}") && path.contains("{database}");
            if !ch.cluster.is_empty() && !unique {
                return Err(invalid(
                    at("clickhouse.replication_path"),
                    "must contain `{database}` and `{table}` (each table needs a ZooKeeper path of its own)".into(),
                ));
            }
            if ch.distributed && ch.cluster.is_empty() {
                return Err(invalid(
                    at("clickhouse.distributed"),
                    "needs `cluster`: a Distributed table reads over a cluster's shards".into(),
                ));
            }
            validate_clickhouse_tls(ch)
                .map_err(|(k, msg)| invalid(at(&format!("clickhouse.{k}")), msg))?;
            if !ch.table_template.contains("{table}") {
                return Err(invalid(
                    at("clickhouse.table_template"),
                    "must contain `{table}`".into(),
                ));
            }
            if ch.insert_attempts == 0 {
                return Err(invalid(
                    at("clickhouse.insert_attempts"),
                    "must be at least 1".into(),
                ));
            }
            let b = &p.batch;
            if b.max_rows == 0 || b.max_bytes == 0 || b.edge_capacity == 0 {
                return Err(invalid(
                    at("batch"),
                    "max_rows, max_bytes and edge_capacity must be at least 1".into(),
                ));
            }
            if b.max_age.0.is_zero() {
                return Err(invalid(at("batch.max_age"), "must be above zero".into()));
            }
        }
        Ok(())
    }
}

fn validate_postgres(pg: &PostgresConfig) -> Result<(), (String, String)> {
    if let Some((key, message)) = pg.problem() {
        return Err((key.into(), message.into()));
    }
    for (k, v) in [("publication", &pg.publication), ("slot", &pg.slot)] {
        if v.is_empty() || v.len() > 63 {
            return Err((k.into(), "must be 1 to 63 characters".into()));
        }
    }
    // Slot names are restricted by Postgres itself: lower case, digits, underscore.
    if !pg
        .slot
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err((
            "slot".into(),
            "Postgres allows only lower-case letters, digits and `_` in slot names".into(),
        ));
    }
    for (j, t) in pg.tables.iter().enumerate() {
        if tributary_protocol::schema::split_table_name(t).is_none() {
            return Err((
                format!("tables[{j}]"),
                format!("`{t}` is not `schema.table` or `table`"),
            ));
        }
    }
    if pg.chunk_rows == 0 {
        return Err(("chunk_rows".into(), "must be at least 1".into()));
    }
    if pg.snapshot_chunk_rows == 0 {
        return Err(("snapshot_chunk_rows".into(), "must be at least 1".into()));
    }
    if !(1..=64).contains(&pg.snapshot_workers) {
        return Err((
            "snapshot_workers".into(),
            "must be between 1 and 64 (each is a Postgres connection)".into(),
        ));
    }
    if pg.chunk_bytes == 0 {
        return Err(("chunk_bytes".into(), "must be at least 1".into()));
    }
    Ok(())
}

fn validate_clickhouse_tls(ch: &ClickHouseConfig) -> Result<(), (String, String)> {
    match (&ch.client_cert, &ch.client_key) {
        (Some(_), None) => {
            return Err((
                "client_cert".into(),
                "needs `client_key` too (the client certificate's private key)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "client_key".into(),
                "needs `client_cert` too (the client certificate)".into(),
            ))
        }
        _ => {}
    }
    if !ch.url.starts_with("https://") {
        for (key, set) in [
            ("ca_cert", ch.ca_cert.is_some()),
            ("client_cert", ch.client_cert.is_some()),
        ] {
            if set {
                return Err((
                    key.into(),
                    "is for TLS, and needs an https:// url (`url` is http://)".into(),
                ));
            }
        }
    }
    Ok(())
}

fn validate_mastodon(m: &MastodonConfig) -> Result<(), (String, String)> {
    if m.instances.is_empty() {
        return Err((
            "instance".into(),
            "at least one [[pipeline.mastodon.instance]] is required".into(),
        ));
    }
    for (i, inst) in m.instances.iter().enumerate() {
        if !(inst.url.starts_with("http://") || inst.url.starts_with("https://")) {
            return Err((
                format!("instance[{i}].url"),
                format!("`{}` must start with https:// (or http://)", inst.url),
            ));
        }
        // The token goes only to this origin: it must be one every URL parser reads alike.
        if tributary_protocol::mastodon::origin(&inst.url).is_none() {
            return Err((
                format!("instance[{i}].url"),
                "must be https://host[:port] with a plain host name (an international one in its xn-- form), without a user or password".into(),
            ));
        }
    }
    if m.streams.is_empty() {
        return Err(("streams".into(), "at least one stream is required".into()));
    }
    for (i, st) in m.streams.iter().enumerate() {
        let ok = matches!(st.as_str(), "public" | "public:local" | "public:remote")
            || st
                .strip_prefix("hashtag:local:")
                .or(st.strip_prefix("hashtag:"))
                .is_some_and(|t| !t.is_empty())
            || st.strip_prefix("list:").is_some_and(|t| !t.is_empty());
        if !ok {
            return Err((
                format!("streams[{i}]"),
                format!("`{st}`: use public, public:local, public:remote, hashtag:<tag>, hashtag:local:<tag> or list:<id>"),
            ));
        }
    }
    if m.reconnect_initial.0.is_zero() || m.reconnect_initial.0 > m.reconnect_max.0 {
        return Err((
            "reconnect_initial".into(),
            "must be above zero and at most reconnect_max".into(),
        ));
    }
    if m.request_timeout.0.is_zero() {
        return Err(("request_timeout".into(), "must be above zero".into()));
    }
    if m.max_response_bytes == 0 {
        return Err(("max_response_bytes".into(), "must be above zero".into()));
    }
    Ok(())
}

fn validate_llm(l: &LlmConfig) -> Result<(), (String, String)> {
    if !(l.url.starts_with("http://") || l.url.starts_with("https://")) {
        return Err((
            "url".into(),
            format!("`{}` must start with http:// or https://", l.url),
        ));
    }
    if l.model.is_empty() {
        return Err(("model".into(), "is required".into()));
    }
    let mut seen = HashSet::new();
    if l.labels.is_empty()
        || l.labels
            .iter()
            .any(|x| x.trim().is_empty() || !seen.insert(x.to_lowercase()))
    {
        return Err((
            "labels".into(),
            "need at least one label, all distinct and non-empty".into(),
        ));
    }
    if !l.prompt.is_empty() && !l.prompt.contains("{text}") {
        return Err(("prompt".into(), "must contain `{text}`".into()));
    }
    if l.mode == crate::llm::LlmMode::Score && l.backend != crate::llm::LlmBackend::Openai {
        return Err((
            "mode".into(),
            "`score` reads logprobs from /v1/chat/completions: it needs backend = \"openai\" (for Ollama, its OpenAI-compatible endpoint)".into(),
        ));
    }
    if let Some(k) = l.calibration.keys().find(|k| !l.labels.contains(k)) {
        return Err((
            "calibration".into(),
            format!("`{k}` is not one of the labels {:?}", l.labels),
        ));
    }
    if let Some((k, _)) = l.calibration.iter().find(|(_, v)| !v.is_finite()) {
        return Err((
            "calibration".into(),
            format!("`{k}` must be a finite number"),
        ));
    }
    if l.concurrency == 0 || l.queue == 0 || l.circuit_failures == 0 || l.max_text_chars == 0 {
        return Err((
            "concurrency".into(),
            "concurrency, queue, circuit_failures and max_text_chars must be at least 1".into(),
        ));
    }
    Ok(())
}
