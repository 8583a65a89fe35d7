//! The admin API of a running tributary (`[admin]`, behind its bearer token), as the command
//! line calls it: `tributary resync` and `tributary verify --repair` ask the process that
//! streams the table to copy it, because only that process can order the copy with the
//! stream (versions, TRUNCATE fences, unchanged TOAST values).
//!
//! Must never: put the token in an error or a log line, or follow a redirect with it.

use crate::config::Config;

/// POSTs `body` (JSON, or none) to `path` (`/admin/…`) with `query` (name, value pairs,
/// percent-encoded here) on the running tributary of `cfg`; its answer on success, its answer
/// or why there is none otherwise.
pub async fn post(
    cfg: &Config,
    path: &str,
    query: &[(&str, &str)],
    body: Option<String>,
) -> Result<String, String> {
    if !cfg.admin.enabled || cfg.admin.token.is_empty() {
        return Err(
            "this goes through the running tributary's admin API: set [admin] enabled = true and a token in the config, and restart it"
                .into(),
        );
    }
    if cfg.http.listen.is_empty() {
        return Err(
            "this goes through the running tributary's HTTP listener: http.listen is empty".into(),
        );
    }
    crate::clients::tls::install_default_provider();
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let url = format!("http://{}{path}?{}", cfg.http.listen, q.join("&"));
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?
        .post(&url)
        .bearer_auth(cfg.admin.token.expose())
        .timeout(std::time::Duration::from_secs(900));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.map_err(|e| {
        format!(
            "no running tributary answers at {}: {}",
            cfg.http.listen,
            e.without_url()
        )
    })?;
    let ok = r.status().is_success();
    let text = r.text().await.unwrap_or_default();
    if ok {
        Ok(text)
    } else {
        Err(text.trim_end().to_string())
    }
}

/// `s` percent-encoded for a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(super::encode("public.t"), "public.t");
        assert_eq!(super::encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
