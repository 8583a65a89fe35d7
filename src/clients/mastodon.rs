//! The HTTP client of one Mastodon instance: its REST requests (timeline pages, the instance
//! description) and the opening of its streams, each bounded. A REST request has
//! `request_timeout` until its body is read, and `max_response_bytes` of body at most; a stream
//! has `request_timeout` until its response headers arrive (its body is the caller's, with its
//! own idle timeout). After a 429 it waits what the rate-limit headers announce, but at least a
//! backoff that doubles with every 429 in a row (reset by a success), so an instance that
//! refuses is never asked again at once.
//!
//! Must never: send the access token to another origin than the instance's (a URL elsewhere
//! is asked for without it), put the token or a URL's query in a log or an error, read more of
//! a body than the limit, or wait for an answer longer than the timeout.

use crate::config::{MastodonConfig, MastodonInstance, Secret};
use crate::protocol::mastodon::{same_origin, RateLimit};
use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::StatusCode;
use std::time::Duration;

/// The longest wait a rate limit's headers are taken at.
const MAX_ANNOUNCED_WAIT: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum MastodonHttpError {
    #[error("Mastodon {instance}: {message}")]
    Http { instance: String, message: String },
    #[error("Mastodon {instance}: HTTP {status} for {what}")]
    Status {
        instance: String,
        status: u16,
        what: String,
    },
    #[error(
        "Mastodon {instance}: no answer to the {what} request within {after:?} (request_timeout)"
    )]
    Timeout {
        instance: String,
        what: String,
        after: Duration,
    },
    #[error("Mastodon {instance}: the {what} response is larger than {limit} bytes (max_response_bytes); not read further")]
    TooLarge {
        instance: String,
        what: String,
        limit: usize,
    },
}

impl MastodonHttpError {
    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match self {
            MastodonHttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The reqwest client Mastodon requests share (one connection pool).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::clients::tls::install_default_provider();
    reqwest::Client::builder()
        .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// One instance's requests, with its token, limits and rate-limit backoff.
pub struct MastodonClient {
    http: reqwest::Client,
    instance: String,
    token: Secret,
    timeout: Duration,
    max_body: usize,
    /// 429s since the last successful response: the backoff's exponent.
    throttled: u32,
}

impl MastodonClient {
    pub fn new(http: reqwest::Client, inst: &MastodonInstance, m: &MastodonConfig) -> Self {
        MastodonClient {
            http,
            instance: inst.url.clone(),
            token: inst.token.clone(),
            timeout: m.request_timeout.0,
            max_body: m.max_response_bytes,
            throttled: 0,
        }
    }

    /// The instance URL without a trailing slash, to put paths after.
    pub fn base(&self) -> &str {
        self.instance.trim_end_matches('/')
    }

    /// A GET of `url`, with the token only if `url` has the instance's origin.
    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        if self.token.is_empty() || !same_origin(url, &self.instance) {
            r
        } else {
            r.bearer_auth(self.token.expose())
        }
    }

    fn err(&self, e: reqwest::Error) -> MastodonHttpError {
        // Without the URL: its query may be long or odd; the instance is named.
        MastodonHttpError::Http {
            instance: self.instance.clone(),
            message: e.without_url().to_string(),
        }
    }

    /// An error of this instance with `message`.
    pub fn error(&self, message: impl Into<String>) -> MastodonHttpError {
        MastodonHttpError::Http {
            instance: self.instance.clone(),
            message: message.into(),
        }
    }

    fn timed_out(&self, what: &str) -> MastodonHttpError {
        MastodonHttpError::Timeout {
            instance: self.instance.clone(),
            what: what.into(),
            after: self.timeout,
        }
    }

    /// GETs `url` and reads its JSON body (`what` names it in errors), with the response's
    /// headers. A refusal is an error with its status, returned after waiting out the rate
    /// limit it announces (and after a 429, the backoff).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &mut self,
        url: &str,
        what: &str,
    ) -> Result<(T, HeaderMap), MastodonHttpError> {
        let read = async {
            let mut resp = self.request(url).send().await.map_err(|e| self.err(e))?;
            let headers = resp.headers().clone();
            if !resp.status().is_success() {
                return Ok(Err((resp.status(), headers)));
            }
            let body = self.read_capped(&mut resp, what).await?;
            Ok(Ok((body, headers)))
        };
        let (body, headers) = match tokio::time::timeout(self.timeout, read).await {
            Err(_) => return Err(self.timed_out(what)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Err((status, headers)))) => {
                return Err(self.refused(status, &headers, what).await)
            }
            Ok(Ok(Ok(read))) => read,
        };
        self.throttled = 0;
        let value = serde_json::from_slice(&body).map_err(|e| {
            self.error(format!("the {what} response is not what was expected: {e}"))
        })?;
        Ok((value, headers))
    }

    /// The body, refused as soon as it is larger than the limit (announced or read so far).
    async fn read_capped(
        &self,
        resp: &mut reqwest::Response,
        what: &str,
    ) -> Result<Vec<u8>, MastodonHttpError> {
        let too_large = || MastodonHttpError::TooLarge {
            instance: self.instance.clone(),
            what: what.into(),
            limit: self.max_body,
        };
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.err(e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Opens the event stream at `url`: the response once its headers have arrived. A refusal
    /// is an error, returned after waiting out the rate limit it announces.
    pub async fn open_stream(
        &mut self,
        url: &str,
        what: &str,
    ) -> Result<reqwest::Response, MastodonHttpError> {
        let send = self.request(url).header(ACCEPT, "text/event-stream").send();
        let resp = match tokio::time::timeout(self.timeout, send).await {
            Err(_) => return Err(self.timed_out(what)),
            Ok(r) => r.map_err(|e| self.err(e))?,
        };
        if !resp.status().is_success() {
            return Err(self.refused(resp.status(), resp.headers(), what).await);
        }
        self.throttled = 0;
        Ok(resp)
    }

    /// Waits what a refusal's rate-limit headers announce (after a 429: at least the
    /// backoff), then names it as an error.
    async fn refused(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        what: &str,
    ) -> MastodonHttpError {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let rl = RateLimit::from_headers(|n| headers.get(n).and_then(|v| v.to_str().ok()), now);
        let secs = if status == StatusCode::TOO_MANY_REQUESTS {
            self.throttled = self.throttled.saturating_add(1);
            Some(rl.wait_after_429_secs(self.throttled))
        } else {
            rl.wait_secs()
        };
        if let Some(secs) = secs.filter(|&s| s > 0) {
            let wait = Duration::from_secs(secs).min(MAX_ANNOUNCED_WAIT);
            tracing::warn!(instance = %self.instance, status = status.as_u16(), ?wait, in_a_row = self.throttled, "rate limited");
            tokio::time::sleep(wait).await;
        }
        MastodonHttpError::Status {
            instance: self.instance.clone(),
            status: status.as_u16(),
            what: what.into(),
        }
    }

    /// `GET /api/v1/instance` → the instance's title, for `tributary check`.
    pub async fn instance_title(&mut self) -> Result<String, MastodonHttpError> {
        let url = format!("{}/api/v1/instance", self.base());
        let (v, _): (serde_json::Value, _) = self.get_json(&url, "/api/v1/instance").await?;
        Ok(v.get("title")
            .and_then(|t| t.as_str())
            .unwrap_or("reachable")
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str, token: &str) -> MastodonClient {
        let m: MastodonConfig = toml::from_str(&format!(
            "[[instance]]\nurl = \"{url}\"\ntoken = \"{token}\"\n"
        ))
        .unwrap();
        MastodonClient::new(http_client().unwrap(), &m.instances[0], &m)
    }

    fn authorization(c: &MastodonClient, url: &str) -> Option<String> {
        let req = c.request(url).build().unwrap();
        req.headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn the_token_goes_only_to_the_instance_origin() {
        let c = client("https://mastodon.example/", "t0ken");
        let own = "https://Mastodon.example:443/api/v1/timelines/public?min_id=1";
        assert_eq!(authorization(&c, own).as_deref(), Some("Bearer t0ken"));
        for elsewhere in [
            "https://evil.example/api/v1/timelines/public?min_id=1",
            "http://mastodon.example/api/v1/timelines/public",
            "https://mastodon.example:8443/api/v1/timelines/public",
            "https://mastodon.example@evil.example/",
        ] {
            // (reqwest turns a URL's own userinfo into Basic auth: not our token.)
            let auth = authorization(&c, elsewhere).unwrap_or_default();
            assert!(!auth.contains("t0ken"), "{elsewhere}: {auth}");
        }
        let public = client("https://mastodon.example", "");
        assert_eq!(authorization(&public, own), None);
    }

    #[test]
    fn errors_name_the_instance_and_the_key() {
        let e = MastodonHttpError::TooLarge {
            instance: "https://mastodon.example".into(),
            what: "timeline backfill".into(),
            limit: 16 << 20,
        };
        assert_eq!(e.to_string(), "Mastodon https://mastodon.example: the timeline backfill response is larger than 16777216 bytes (max_response_bytes); not read further");
        let e = MastodonHttpError::Timeout {
            instance: "https://mastodon.example".into(),
            what: "stream".into(),
            after: Duration::from_secs(30),
        };
        assert!(
            e.to_string().contains("within 30s (request_timeout)"),
            "{e}"
        );
    }
}
