//! The Mastodon source: follows the streaming API (SSE) of each configured instance and
//! stream, and after every (re)connect backfills what it missed through the timeline REST
//! API (`min_id` and `Link` pagination), so a dropped connection or a restart loses no post.
//! Posts go to the LLM pool's bounded queue: when it is full the source stops reading its
//! streams (the server buffers or drops the connection; the backfill covers the gap).
//!
//! The resume point of each (instance, stream) is the id of the last post written to
//! ClickHouse with everything before it, kept in ClickHouse's `_tributary_state`.
//!
//! Requests go through [`MastodonClient`] (timeouts, body limit, rate-limit waits); a failed
//! one ends the connection, which reconnects with backoff.
//!
//! Must never: log the access token, follow a `Link` to another origin than the instance's
//! (the next page's request would carry the token there), stop on a malformed event (it is
//! counted and skipped), or move a resume point backwards.

use crate::clients::clickhouse::ChClient;
use crate::clients::mastodon::{http_client, MastodonClient, MastodonHttpError};
use crate::config::{ClickHouseConfig, MastodonConfig, MastodonInstance};
use crate::flow::ack::AckTracker;
use crate::flow::edge::WorkQueue;
use crate::protocol::mastodon::{self as m, Post, SseParser, Status, StreamEvent};
use crate::sentiment::job::{Job, JobKind};
use crate::sentiment::replay_source::accept;
use futures_util::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::cmp::Ordering as Cmp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MastodonSourceError {
    #[error(transparent)]
    Http(#[from] MastodonHttpError),
    #[error(transparent)]
    ClickHouse(#[from] crate::clients::clickhouse::ChError),
    #[error("the LLM queue is closed")]
    QueueClosed,
}

pub struct MastodonArgs {
    pub pipeline: String,
    pub mastodon: MastodonConfig,
    pub clickhouse: ClickHouseConfig,
    pub queue: WorkQueue<Job>,
    pub tracker: Arc<AckTracker>,
    pub skipped: Arc<AtomicU64>,
    pub malformed: Arc<AtomicU64>,
    pub events: Arc<AtomicU64>,
    pub reconnects: Arc<AtomicU64>,
}

pub enum MastodonMsg {
    Failed(String),
}

pub struct MastodonState {
    tasks: Vec<crate::runtime::task::TaskGuard>,
}

pub struct MastodonSource;

impl Actor for MastodonSource {
    type Msg = MastodonMsg;
    type State = MastodonState;
    type Arguments = MastodonArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MastodonMsg>,
        a: MastodonArgs,
    ) -> Result<MastodonState, ActorProcessingErr> {
        a.tracker.reset();
        let ch = ChClient::connect(&a.clickhouse).await?;
        ch.ensure_state_table().await?;
        let http = http_client()?;
        let a = Arc::new(a);
        let mut tasks = Vec::new();
        for inst in &a.mastodon.instances {
            for stream in &a.mastodon.streams {
                let key = resume_key(&inst.url, stream);
                let resume = ch.read_state(&a.pipeline, &key).await?;
                let follower = Follower {
                    a: a.clone(),
                    inst: inst.clone(),
                    stream: stream.clone(),
                    key,
                    client: MastodonClient::new(http.clone(), inst, &a.mastodon),
                    ch: ch.clone(),
                    high: resume,
                    connected: false,
                };
                let (me, me2) = (myself.clone(), myself.clone());
                tasks.push(crate::runtime::task::TaskGuard::spawn_watched(
                    async move {
                        let e = follower.run().await;
                        let _ = me.cast(MastodonMsg::Failed(e.to_string()));
                    },
                    move |why| {
                        let _ = me2.cast(MastodonMsg::Failed(why));
                    },
                ));
            }
        }
        Ok(MastodonState { tasks })
    }

    async fn handle(
        &self,
        _me: ActorRef<MastodonMsg>,
        msg: MastodonMsg,
        _st: &mut MastodonState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MastodonMsg::Failed(e) => Err(e.into()),
        }
    }

    async fn post_stop(
        &self,
        _me: ActorRef<MastodonMsg>,
        st: &mut MastodonState,
    ) -> Result<(), ActorProcessingErr> {
        for t in &st.tasks {
            t.0.abort();
        }
        Ok(())
    }
}

pub fn resume_key(instance_url: &str, stream: &str) -> String {
    format!("mastodon:{}:{}", m::instance_host(instance_url), stream)
}

/// The streaming path and the timeline path (with query) of a stream name.
pub fn stream_paths(stream: &str) -> (String, String) {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    match stream {
        "public" => (
            "/api/v1/streaming/public".into(),
            "/api/v1/timelines/public?".into(),
        ),
        "public:local" => (
            "/api/v1/streaming/public/local".into(),
            "/api/v1/timelines/public?local=true&".into(),
        ),
        "public:remote" => (
            "/api/v1/streaming/public/remote".into(),
            "/api/v1/timelines/public?remote=true&".into(),
        ),
        s => {
            if let Some(tag) = s.strip_prefix("hashtag:local:") {
                (
                    format!("/api/v1/streaming/hashtag/local?tag={}", enc(tag)),
                    format!("/api/v1/timelines/tag/{}?local=true&", enc(tag)),
                )
            } else if let Some(tag) = s.strip_prefix("hashtag:") {
                (
                    format!("/api/v1/streaming/hashtag?tag={}", enc(tag)),
                    format!("/api/v1/timelines/tag/{}?", enc(tag)),
                )
            } else {
                let list = s.strip_prefix("list:").unwrap_or(s);
                (
                    format!("/api/v1/streaming/list?list={}", enc(list)),
                    format!("/api/v1/timelines/list/{}?", enc(list)),
                )
            }
        }
    }
}

struct Follower {
    a: Arc<MastodonArgs>,
    inst: MastodonInstance,
    stream: String,
    key: String,
    client: MastodonClient,
    ch: ChClient,
    /// Highest status id handed to the pool (or the resume point at start). `None` only
    /// before the very first session of this stream ever: see `start_point`.
    high: Option<String>,
    /// The last session got its stream (the reconnect backoff starts over after it).
    connected: bool,
}

/// The wait before the next reconnect: doubling from `initial` up to `max` while sessions
/// fail before their stream connects; back to `initial` after one that connected (hours of
/// streaming are not a failure streak).
struct Reconnect {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Reconnect {
    fn new(initial: Duration, max: Duration) -> Reconnect {
        Reconnect {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait after a session that ended (`connected`: it got its stream first).
    fn after(&mut self, connected: bool) -> Duration {
        if connected {
            self.next = self.initial;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

impl Follower {
    /// Follows the stream for ever; returns only when the queue is closed (or ClickHouse
    /// fails), which fails the actor.
    async fn run(mut self) -> MastodonSourceError {
        let a = self.a.clone();
        let m = &a.mastodon;
        let mut backoff = Reconnect::new(m.reconnect_initial.0, m.reconnect_max.0);
        loop {
            self.connected = false;
            let ended = self.session().await;
            let delay = backoff.after(self.connected);
            match ended {
                Ok(()) => {}
                Err(MastodonSourceError::QueueClosed) => return MastodonSourceError::QueueClosed,
                Err(e) => {
                    self.a.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(instance = %self.inst.url, stream = %self.stream, error = %e, retry_in = ?delay, "stream interrupted")
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: open the stream, backfill the gap, then read events until it ends.
    async fn session(&mut self) -> Result<(), MastodonSourceError> {
        let base = self.client.base().to_string();
        if self.high.is_none() {
            self.start_point(&base).await?;
        }
        let (stream_path, _) = stream_paths(&self.stream);
        let resp = self
            .client
            .open_stream(&format!("{base}{stream_path}"), &stream_path)
            .await?;
        tracing::info!(instance = %self.inst.url, stream = %self.stream, resume_after = ?self.high, "stream connected");
        self.connected = true;
        // Events published from now on wait in the connection while we backfill the gap.
        self.backfill(&base).await?;
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::new();
        let idle = self.a.mastodon.idle_timeout.0;
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => return Err(self.client.error(format!("no data for {idle:?}")).into()),
                Ok(None) => return Err(self.client.error("stream closed by the server").into()),
                Ok(Some(Err(e))) => {
                    return Err(self.client.error(e.without_url().to_string()).into())
                }
                Ok(Some(Ok(c))) => c,
            };
            for frame in parser.push(&chunk) {
                let event = m::parse_event(&frame);
                if matches!(
                    event,
                    Ok(StreamEvent::Update(_) | StreamEvent::Edit(_) | StreamEvent::Delete(_))
                ) {
                    self.a.events.fetch_add(1, Ordering::Relaxed);
                }
                match event {
                    Ok(StreamEvent::Update(s)) => {
                        if self
                            .high
                            .as_deref()
                            .is_none_or(|h| m::compare_ids(&s.id, h) == Cmp::Greater)
                        {
                            self.emit_status(&s).await?;
                        }
                    }
                    Ok(StreamEvent::Edit(s)) => self.emit_status(&s).await?,
                    Ok(StreamEvent::Delete(id)) => self.emit_delete(id).await?,
                    Ok(StreamEvent::Heartbeat | StreamEvent::Other(_)) => {}
                    Err(e) => {
                        self.a.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(instance = %self.inst.url, stream = %self.stream, error = %e, "malformed stream event skipped");
                    }
                }
            }
        }
    }

    /// The very first session of a stream starts from the newest post of its timeline (or
    /// from the beginning of an empty one), and records that point as the resume point at
    /// once, before the stream is opened: every post published after it is then either
    /// streamed or backfilled, even when the source restarts before its first post is written.
    async fn start_point(&mut self, base: &str) -> Result<(), MastodonSourceError> {
        let (_, timeline) = stream_paths(&self.stream);
        let (page, _): (Vec<Status>, _) = self
            .client
            .get_json(
                &format!("{base}{timeline}limit=1"),
                "timeline (start point)",
            )
            .await?;
        let start = page
            .first()
            .map_or_else(|| "0".to_string(), |s| s.id.clone());
        self.ch
            .write_state(&self.a.pipeline, &[(self.key.clone(), start.clone())])
            .await
            .map_err(MastodonSourceError::ClickHouse)?;
        tracing::info!(instance = %self.inst.url, stream = %self.stream, after = %start, "first run: starting after the newest post");
        self.high = Some(start);
        Ok(())
    }

    /// Fetches every status newer than the last one handed over, oldest first. Pages follow
    /// the `prev` link while it stays on the instance's origin, else `min_id` of the newest.
    async fn backfill(&mut self, base: &str) -> Result<(), MastodonSourceError> {
        let Some(since) = self.high.clone() else {
            return Ok(());
        };
        let (_, timeline) = stream_paths(&self.stream);
        let mut url = format!("{base}{timeline}min_id={since}&limit=40");
        let mut fetched = 0usize;
        loop {
            let (page, headers): (Vec<Status>, _) =
                match self.client.get_json(&url, "timeline backfill").await {
                    // Waited out (at least the backoff): ask again.
                    Err(e) if e.status() == Some(429) => continue,
                    r => r?,
                };
            let prev = headers
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| m::link_for_rel(l, "prev"))
                .and_then(|p| self.on_own_origin(p, base));
            if page.is_empty() {
                break;
            }
            let mut page = page;
            page.sort_by(|a, b| m::compare_ids(&a.id, &b.id));
            let newest = page.last().map(|s| s.id.clone());
            for s in &page {
                if self
                    .high
                    .as_deref()
                    .is_none_or(|h| m::compare_ids(&s.id, h) == Cmp::Greater)
                {
                    self.emit_status(s).await?;
                }
            }
            fetched += page.len();
            if fetched >= self.a.mastodon.backfill_limit {
                tracing::warn!(instance = %self.inst.url, stream = %self.stream, fetched, "backfill limit reached; older posts of the gap are skipped");
                break;
            }
            url = match (prev, newest) {
                (Some(p), _) => p,
                (None, Some(n)) => format!("{base}{timeline}min_id={n}&limit=40"),
                (None, None) => break,
            };
        }
        if fetched > 0 {
            tracing::info!(instance = %self.inst.url, stream = %self.stream, fetched, "backfilled");
        }
        Ok(())
    }

    /// `link` when it has the instance's origin. A link elsewhere is not followed (its
    /// request would carry the token there): the next page is asked for by `min_id`.
    fn on_own_origin(&self, link: String, base: &str) -> Option<String> {
        if m::same_origin(&link, base) {
            return Some(link);
        }
        let to = m::origin(&link).map(|o| format!("{}://{}:{}", o.scheme, o.host, o.port));
        tracing::warn!(instance = %self.inst.url, stream = %self.stream, link_to = ?to, "a Link to another origin is not followed");
        None
    }

    fn position(&self, id: &str) -> String {
        match &self.high {
            Some(h) if m::compare_ids(h, id) == Cmp::Greater => h.clone(),
            _ => id.to_string(),
        }
    }

    async fn emit_status(&mut self, s: &Status) -> Result<(), MastodonSourceError> {
        let post = Post::from_status(&self.inst.url, s);
        let pos = self.position(&s.id);
        if !accept(&self.a.mastodon.filter, &post, s.reblog.is_some()) {
            self.a.skipped.fetch_add(1, Ordering::Relaxed);
            self.high = Some(pos);
            return Ok(());
        }
        let ticket = self.a.tracker.register(&self.key, &pos);
        self.a
            .queue
            .send(Job::classify(post, ticket, &self.a.pipeline))
            .await
            .map_err(|_| MastodonSourceError::QueueClosed)?;
        self.high = Some(pos);
        Ok(())
    }

    async fn emit_delete(&mut self, id: String) -> Result<(), MastodonSourceError> {
        let pos = self.position(&id);
        let ticket = self.a.tracker.register(&self.key, &pos);
        let instance = m::instance_host(&self.inst.url);
        let trace = tracing::info_span!(parent: None, "sentiment.delete", pipeline = %self.a.pipeline, instance = %instance, status = %id);
        self.a
            .queue
            .send(Job {
                kind: JobKind::Delete {
                    instance,
                    status_id: id,
                },
                ticket: Some(ticket),
                trace,
                queued: None,
            })
            .await
            .map_err(|_| MastodonSourceError::QueueClosed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconnect_wait_starts_over_after_a_session_that_connected() {
        let s = Duration::from_secs;
        let mut r = Reconnect::new(s(1), s(60));
        let failing: Vec<u64> = (0..8).map(|_| r.after(false).as_secs()).collect();
        assert_eq!(failing, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        // A stream that connected (and streamed for hours) then dropped: back to the start.
        assert_eq!(r.after(true), s(1));
        assert_eq!(r.after(false), s(2));
    }
}
