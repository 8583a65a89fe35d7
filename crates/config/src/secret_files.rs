//! Secrets read from files (Docker and Kubernetes secrets): every password and token key has
//! a `*_file` sibling (`postgres.password_file`, `clickhouse.password_file`,
//! `mastodon.instance[].token_file`, `llm.api_key_file`, `admin.token_file`), and
//! `kafka.secret_files` maps librdkafka properties to files. [`Config::load`] reads them with
//! [`Config::read_secret_files`] once the file is parsed, so that [`Config::from_str_named`]
//! stays free of I/O. A file's text lands in the secret it stands for, one trailing newline
//! dropped; the `*_file` path stays in the config.
//!
//! Must never: put a file's content in an error (only the key and the path), accept a secret
//! given both as a value and as a file, or accept an empty one.

use crate::*;

impl Config {
    /// Reads every `*_file` into its secret with `read` (`std::fs::read_to_string` in
    /// [`Config::load`]), then validates again, so that the checks on a secret (the admin
    /// token's length) see what the file holds. Call it once, on a config from
    /// [`Config::from_str_named`]. An unreadable or empty file is an error naming the key and
    /// the path.
    pub fn read_secret_files(
        &mut self,
        file: &str,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<(), ConfigError> {
        self.check_secret_sources(file)?;
        let load = |key: String, path: &Path| secret_from_file(file, key, path, read);
        if let Some(path) = &self.admin.token_file {
            self.admin.token = load("admin.token_file".into(), path)?;
        }
        if let Some(k) = &mut self.kafka {
            for (property, path) in &k.secret_files {
                let value = load(format!("kafka.secret_files.\"{property}\""), path)?;
                k.properties.insert(property.clone(), value);
            }
        }
        for (i, p) in self.pipelines.iter_mut().enumerate() {
            let at = |k: &str| format!("pipeline[{i}].{k}");
            if let Some(pg) = &mut p.postgres {
                if let Some(path) = &pg.password_file {
                    pg.password = load(at("postgres.password_file"), path)?;
                }
            }
            let ch = &mut p.clickhouse;
            if let Some(path) = &ch.password_file {
                ch.password = load(at("clickhouse.password_file"), path)?;
            }
            if let Some(m) = &mut p.mastodon {
                for (j, inst) in m.instances.iter_mut().enumerate() {
                    if let Some(path) = &inst.token_file {
                        inst.token = load(at(&format!("mastodon.instance[{j}].token_file")), path)?;
                    }
                }
            }
            if let Some(l) = &mut p.llm {
                if let Some(path) = &l.api_key_file {
                    l.api_key = load(at("llm.api_key_file"), path)?;
                }
            }
        }
        self.validate_values(file)
    }

    /// Refuses a secret given both as a value and as a file (an empty value, as
    /// `"${VAR:-}"` gives, counts as not given). `[pipeline.postgres]` checks its own, the
    /// password in `url` included ([`PostgresConfig`]).
    pub(crate) fn check_secret_sources(&self, file: &str) -> Result<(), ConfigError> {
        let both = |key: String, other: String, what: &str| ConfigError::Invalid {
            file: file.to_string(),
            key,
            message: format!("`{other}` is set too: give the {what} in one of the two"),
        };
        if self.admin.token_file.is_some() && !self.admin.token.is_empty() {
            return Err(both(
                "admin.token_file".into(),
                "admin.token".into(),
                "token",
            ));
        }
        if let Some(k) = &self.kafka {
            for property in k.secret_files.keys() {
                let key = format!("kafka.secret_files.\"{property}\"");
                if property.is_empty() {
                    return Err(ConfigError::Invalid {
                        file: file.to_string(),
                        key,
                        message: "must name a librdkafka property (e.g. \"sasl.password\")".into(),
                    });
                }
                if k.properties.get(property).is_some_and(|v| !v.is_empty()) {
                    return Err(both(
                        key,
                        format!("kafka.properties.\"{property}\""),
                        "value",
                    ));
                }
            }
        }
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = |k: &str| format!("pipeline[{i}].{k}");
            let ch = &p.clickhouse;
            if ch.password_file.is_some() && !ch.password.is_empty() {
                return Err(both(
                    at("clickhouse.password_file"),
                    at("clickhouse.password"),
                    "password",
                ));
            }
            for (j, inst) in p
                .mastodon
                .iter()
                .flat_map(|m| m.instances.iter().enumerate())
            {
                if inst.token_file.is_some() && !inst.token.is_empty() {
                    return Err(both(
                        at(&format!("mastodon.instance[{j}].token_file")),
                        at(&format!("mastodon.instance[{j}].token")),
                        "token",
                    ));
                }
            }
            if let Some(l) = &p.llm {
                if l.api_key_file.is_some() && !l.api_key.is_empty() {
                    return Err(both(at("llm.api_key_file"), at("llm.api_key"), "key"));
                }
            }
        }
        Ok(())
    }
}

/// The secret in `path`, less one trailing newline (`\n` or `\r\n`).
fn secret_from_file(
    file: &str,
    key: String,
    path: &Path,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Secret, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        file: file.to_string(),
        key: key.clone(),
        message,
    };
    // The error's kind only: its text is the reader's, which a test double could fill with
    // anything.
    let text = read(path)
        .map_err(|e| invalid(format!("cannot read `{}`: {}", path.display(), e.kind())))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(invalid(format!("`{}` is empty", path.display())));
    }
    Ok(Secret::new(text))
}
