//! A fake Mastodon server on 127.0.0.1 that speaks the real HTTP protocols: the streaming API
//! (server-sent events framed exactly as Mastodon's node streaming server writes them) and the
//! timeline REST API (newest first, Mastodon's `Link` pagination, 429 with rate-limit headers).
//! Tests publish, edit and delete statuses, cut or refuse streams, inject malformed events and
//! read counters. The server stops when the `FakeMastodon` is dropped.
//!
//! It also misbehaves on demand, as a broken or hostile instance would: requests never
//! answered (`stall_rest_next`, `stall_streams_next`), 429s without any header that says how
//! long to wait (`rate_limit_bare_next`), endless response bodies (`huge_body_next`) and `Link`
//! headers that point at another origin (`set_link_base`).
//!
//! Which statuses a stream or timeline carries follows Mastodon: public timelines and streams
//! carry `visibility: public` statuses that are not reblogs (unless `public_reblogs`); `local`
//! means an `account.acct` without `@`; hashtag ones match `tags[].name` case-insensitively;
//! list streams carry everything (the fake has no follow graph).

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// The fixture: 66 Mastodon statuses as the REST API returns them, in id order.
pub fn load_fixture() -> Vec<Value> {
    let path = crate::repo().join("tests/fixtures/statuses.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

/// A realistic public status of the local account `tester`: `text` is plain text, escaped into
/// Mastodon HTML (`<p>`, `<br>`, `&amp;`, `&#39;`…).
pub fn make_status(id: u64, text: &str) -> Value {
    let html: String = text
        .split("\n\n")
        .map(|p| format!("<p>{}</p>", html_escape(p).replace('\n', "<br>")))
        .collect();
    let account = json!({
        "id": "109300000000999999",
        "username": "tester",
        "acct": "tester",
        "display_name": "Test Account",
        "locked": false,
        "bot": false,
        "discoverable": true,
        "indexable": true,
        "group": false,
        "created_at": "2022-11-05T00:00:00.000Z",
        "note": "",
        "url": "https://mastodon.example/@tester",
        "uri": "https://mastodon.example/users/tester",
        "avatar": "https://mastodon.example/avatars/original/missing.png",
        "avatar_static": "https://mastodon.example/avatars/original/missing.png",
        "header": "https://mastodon.example/headers/original/missing.png",
        "header_static": "https://mastodon.example/headers/original/missing.png",
        "followers_count": 1,
        "following_count": 1,
        "statuses_count": 1,
        "last_status_at": "2024-11-21",
        "hide_collections": false,
        "noindex": false,
        "emojis": [],
        "roles": [],
        "fields": []
    });
    json!({
        "id": id.to_string(),
        "created_at": iso_now(0, 3),
        "in_reply_to_id": null,
        "in_reply_to_account_id": null,
        "sensitive": false,
        "spoiler_text": "",
        "visibility": "public",
        "language": "en",
        "uri": format!("https://mastodon.example/users/tester/statuses/{id}"),
        "url": format!("https://mastodon.example/@tester/{id}"),
        "replies_count": 0,
        "reblogs_count": 0,
        "favourites_count": 0,
        "edited_at": null,
        "content": html,
        "reblog": null,
        "account": account,
        "media_attachments": [],
        "mentions": [],
        "tags": [],
        "emojis": [],
        "card": null,
        "poll": null
    })
}

#[derive(Clone, Debug)]
pub struct MastodonConfig {
    /// Interval of the `:thump` heartbeat comments; zero sends none. Mastodon: 15 s.
    pub heartbeat: Duration,
    /// When set, streams answer 401 and timelines 422/401 without this bearer token (header
    /// `Authorization: Bearer …` or query `access_token=…`).
    pub token: Option<String>,
    /// Reblogs on public streams and timelines (Mastodon never puts them there).
    pub public_reblogs: bool,
}

impl Default for MastodonConfig {
    fn default() -> Self {
        MastodonConfig {
            heartbeat: Duration::from_secs(15),
            token: None,
            public_reblogs: false,
        }
    }
}

/// Which timeline a stream follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    Public,
    PublicLocal,
    PublicRemote,
    Hashtag { tag: String, local: bool },
    List(String),
}

impl Channel {
    fn matches(&self, s: &Value, public_reblogs: bool) -> bool {
        if let Channel::List(_) = self {
            return true;
        }
        let reblog = !s["reblog"].is_null();
        if s["visibility"].as_str().unwrap_or("public") != "public" || (reblog && !public_reblogs) {
            return false;
        }
        let local = !s["account"]["acct"].as_str().unwrap_or("").contains('@');
        match self {
            Channel::Public => true,
            Channel::PublicLocal => local,
            Channel::PublicRemote => !local,
            Channel::Hashtag {
                tag,
                local: only_local,
            } => (!only_local || local) && has_tag(s, tag),
            Channel::List(_) => true,
        }
    }
}

fn has_tag(s: &Value, tag: &str) -> bool {
    let proper = if s["reblog"].is_object() {
        &s["reblog"]
    } else {
        s
    };
    proper["tags"].as_array().is_some_and(|a| {
        a.iter().any(|t| {
            t["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(tag))
        })
    })
}

/// One request the fake answered (or refused).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query as sent.
    pub uri: String,
    pub authorization: Option<String>,
    pub stream: bool,
}

enum Msg {
    Data(Bytes),
    /// Abort the connection (no terminating chunk).
    Cut,
    /// End the response cleanly.
    End,
}

struct Sub {
    channel: Channel,
    tx: mpsc::UnboundedSender<Msg>,
}

struct Shared {
    cfg: Mutex<MastodonConfig>,
    statuses: Mutex<BTreeMap<u64, Value>>,
    deleted: Mutex<Vec<String>>,
    edits: Mutex<Vec<Value>>,
    subs: Mutex<Vec<Sub>>,
    stream_down: AtomicBool,
    /// Requests left to answer 429, and the `Retry-After` they carry (`None`: no header at all).
    rate_limit: Mutex<(u64, Option<u64>)>,
    stall_rest: AtomicU64,
    stall_streams: AtomicU64,
    stalled: AtomicU64,
    /// REST requests left to answer with a huge body, and its size.
    huge_body: Mutex<(u64, usize)>,
    huge_bytes_sent: AtomicU64,
    link_base: Mutex<Option<String>>,
    stream_connections: AtomicU64,
    stream_refused: AtomicU64,
    rest_requests: AtomicU64,
    rate_limited: AtomicU64,
    log: Mutex<Vec<Recorded>>,
}

/// The controls and counters of a running fake; cheap to clone and move into tasks.
#[derive(Clone)]
pub struct MastodonHandle {
    shared: Arc<Shared>,
}

pub struct FakeMastodon {
    pub port: u16,
    handle: MastodonHandle,
    task: JoinHandle<()>,
}

impl Deref for FakeMastodon {
    type Target = MastodonHandle;
    fn deref(&self) -> &MastodonHandle {
        &self.handle
    }
}

impl Drop for FakeMastodon {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

impl FakeMastodon {
    /// Default config (15 s heartbeat, no token).
    pub async fn start() -> FakeMastodon {
        Self::start_with(MastodonConfig::default()).await
    }

    pub async fn start_with(cfg: MastodonConfig) -> FakeMastodon {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            cfg: Mutex::new(cfg),
            statuses: Mutex::new(BTreeMap::new()),
            deleted: Mutex::new(Vec::new()),
            edits: Mutex::new(Vec::new()),
            subs: Mutex::new(Vec::new()),
            stream_down: AtomicBool::new(false),
            rate_limit: Mutex::new((0, None)),
            stall_rest: AtomicU64::new(0),
            stall_streams: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            huge_body: Mutex::new((0, 0)),
            huge_bytes_sent: AtomicU64::new(0),
            link_base: Mutex::new(None),
            stream_connections: AtomicU64::new(0),
            stream_refused: AtomicU64::new(0),
            rest_requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        });
        let st = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                while conns.try_join_next().is_some() {}
                let _ = sock.set_nodelay(true);
                let st = st.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), port, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        FakeMastodon {
            port,
            handle: MastodonHandle { shared },
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn handle(&self) -> MastodonHandle {
        self.handle.clone()
    }
}

impl MastodonHandle {
    /// Adds the status to the timeline and sends `update` to every open stream it matches.
    /// A status without `id` gets the next one. Returns the id.
    pub fn publish(&self, status: Value) -> String {
        let (id, status) = self.insert(status);
        self.broadcast(&status, "update", &status.to_string());
        id
    }

    /// Adds the status to the timeline only, as if published while no stream was connected.
    pub fn publish_silently(&self, status: Value) -> String {
        self.insert(status).0
    }

    /// `publish_silently` for each.
    pub fn seed(&self, statuses: &[Value]) {
        for s in statuses {
            self.publish_silently(s.clone());
        }
    }

    /// Replaces a published status (same id; `edited_at` set to now if null) and sends
    /// `status.update` to the streams it matches. Panics for an unknown id.
    pub fn edit(&self, mut status: Value) {
        let id = id_of(&status).expect("edit: status needs a numeric id");
        if status["edited_at"].is_null() {
            status["edited_at"] = json!(iso_now(0, 3));
        }
        {
            let mut map = self.shared.statuses.lock().unwrap();
            assert!(map.contains_key(&id), "edit: no status {id}");
            map.insert(id, status.clone());
        }
        self.shared.edits.lock().unwrap().push(status.clone());
        self.broadcast(&status, "status.update", &status.to_string());
    }

    /// Removes the status from the timeline and sends `delete` (payload: the bare id) to the
    /// streams it matched (every stream when the id is unknown).
    pub fn delete(&self, id: &str) {
        let removed = id
            .parse::<u64>()
            .ok()
            .and_then(|n| self.shared.statuses.lock().unwrap().remove(&n));
        self.shared.deleted.lock().unwrap().push(id.to_string());
        let frames = [
            Bytes::from_static(b"event: delete\n"),
            Bytes::from(format!("data: {id}\n\n")),
        ];
        let public_reblogs = self.shared.cfg.lock().unwrap().public_reblogs;
        let mut subs = self.shared.subs.lock().unwrap();
        subs.retain(|s| !s.tx.is_closed());
        for s in subs.iter() {
            if removed
                .as_ref()
                .is_none_or(|st| s.channel.matches(st, public_reblogs))
            {
                for f in &frames {
                    let _ = s.tx.send(Msg::Data(f.clone()));
                }
            }
        }
    }

    /// Sends to every open stream `event: <event>\ndata: <data>\n\n` (no event line for `None`),
    /// `data` written as is (newlines in it are not split into several data lines).
    pub fn inject_raw(&self, event: Option<&str>, data: &str) {
        let mut text = String::new();
        if let Some(e) = event {
            text.push_str(&format!("event: {e}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
        self.inject_bytes(text.as_bytes());
    }

    /// Sends these bytes, verbatim, to every open stream.
    pub fn inject_bytes(&self, raw: &[u8]) {
        let b = Bytes::copy_from_slice(raw);
        for s in self.live_subs().iter() {
            let _ = s.tx.send(Msg::Data(b.clone()));
        }
    }

    /// Aborts every open stream connection now (the client sees the body fail mid-stream).
    pub fn drop_streams(&self) {
        for s in self.shared.subs.lock().unwrap().drain(..) {
            let _ = s.tx.send(Msg::Cut);
        }
    }

    /// Ends every open stream cleanly (terminating chunk), as a server restart behind a proxy might.
    pub fn close_streams(&self) {
        for s in self.shared.subs.lock().unwrap().drain(..) {
            let _ = s.tx.send(Msg::End);
        }
    }

    /// While down, new stream requests get their connection closed without an answer. Open
    /// streams are left alone (call `drop_streams` too for an outage).
    pub fn set_stream_down(&self, down: bool) {
        self.shared.stream_down.store(down, Ordering::SeqCst);
    }

    /// The next `n` REST requests get 429 with `Retry-After` and `X-RateLimit-*` headers.
    pub fn rate_limit_next(&self, n: u64, retry_after_secs: u64) {
        *self.shared.rate_limit.lock().unwrap() = (n, Some(retry_after_secs));
    }

    /// The next `n` REST requests get 429 without any header that says how long to wait (no
    /// `Retry-After`, no `X-RateLimit-*`), as some proxies answer. Zero ends what is left.
    pub fn rate_limit_bare_next(&self, n: u64) {
        *self.shared.rate_limit.lock().unwrap() = (n, None);
    }

    /// The next `n` REST requests are read and never answered: the connection stays open,
    /// silent, until the client gives up (or the fake is dropped).
    pub fn stall_rest_next(&self, n: u64) {
        self.shared.stall_rest.store(n, Ordering::SeqCst);
    }

    /// The next `n` stream requests never get their response headers.
    pub fn stall_streams_next(&self, n: u64) {
        self.shared.stall_streams.store(n, Ordering::SeqCst);
    }

    /// Requests held unanswered so far (REST and stream).
    pub fn stalled(&self) -> u64 {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// The next `n` REST requests are answered 200 with a JSON array `bytes` long (an empty
    /// one, padded with spaces: valid JSON, so only a size limit refuses it), streamed in
    /// chunks without a `Content-Length`.
    pub fn huge_body_next(&self, n: u64, bytes: usize) {
        *self.shared.huge_body.lock().unwrap() = (n, bytes.max(2));
    }

    /// Bytes of huge bodies handed to connections so far (what the client read, plus what
    /// the socket buffers took before it hung up).
    pub fn huge_bytes_sent(&self) -> u64 {
        self.shared.huge_bytes_sent.load(Ordering::SeqCst)
    }

    /// Timeline `Link` headers point at this origin (e.g. `http://127.0.0.1:1234`) instead of
    /// the fake's own; `None` restores them.
    pub fn set_link_base(&self, base: Option<&str>) {
        *self.shared.link_base.lock().unwrap() = base.map(|b| b.trim_end_matches('/').to_string());
    }

    /// Heartbeat interval of streams opened from now on (zero: none).
    pub fn set_heartbeat(&self, every: Duration) {
        self.shared.cfg.lock().unwrap().heartbeat = every;
    }

    pub fn set_token(&self, token: Option<&str>) {
        self.shared.cfg.lock().unwrap().token = token.map(str::to_string);
    }

    /// Published statuses in id order (deleted ones removed, edits applied).
    pub fn statuses(&self) -> Vec<Value> {
        self.shared
            .statuses
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }
    pub fn deleted(&self) -> Vec<String> {
        self.shared.deleted.lock().unwrap().clone()
    }
    pub fn edits(&self) -> Vec<Value> {
        self.shared.edits.lock().unwrap().clone()
    }
    /// Stream requests answered 200 (each one a connection).
    pub fn stream_connections(&self) -> u64 {
        self.shared.stream_connections.load(Ordering::SeqCst)
    }
    /// Stream requests refused (down, 401, unknown stream).
    pub fn stream_refused(&self) -> u64 {
        self.shared.stream_refused.load(Ordering::SeqCst)
    }
    /// Streams open now (a client that went away is noticed at the next write, e.g. a heartbeat).
    pub fn open_streams(&self) -> usize {
        self.live_subs().len()
    }
    /// Non-stream requests, 429s included.
    pub fn rest_requests(&self) -> u64 {
        self.shared.rest_requests.load(Ordering::SeqCst)
    }
    pub fn rate_limited(&self) -> u64 {
        self.shared.rate_limited.load(Ordering::SeqCst)
    }
    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Waits until at least `n` streams are open; false on timeout.
    pub async fn wait_streams(&self, n: usize, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if self.open_streams() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn live_subs(&self) -> std::sync::MutexGuard<'_, Vec<Sub>> {
        let mut subs = self.shared.subs.lock().unwrap();
        subs.retain(|s| !s.tx.is_closed());
        subs
    }

    fn insert(&self, mut status: Value) -> (String, Value) {
        let mut map = self.shared.statuses.lock().unwrap();
        let id = match id_of(&status) {
            Some(id) => id,
            None => {
                let id = map
                    .keys()
                    .next_back()
                    .map_or(113_512_000_000_000_000, |m| m + 1);
                status["id"] = json!(id.to_string());
                id
            }
        };
        map.insert(id, status.clone());
        (id.to_string(), status)
    }

    fn broadcast(&self, status: &Value, event: &str, payload: &str) {
        let public_reblogs = self.shared.cfg.lock().unwrap().public_reblogs;
        // Two writes, as Mastodon's streaming server does: the event line, then the data.
        let ev = Bytes::from(format!("event: {event}\n"));
        let data = Bytes::from(format!("data: {payload}\n\n"));
        for s in self.live_subs().iter() {
            if s.channel.matches(status, public_reblogs) {
                let _ = s.tx.send(Msg::Data(ev.clone()));
                let _ = s.tx.send(Msg::Data(data.clone()));
            }
        }
    }
}

fn id_of(s: &Value) -> Option<u64> {
    match &s["id"] {
        Value::String(t) => t.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

async fn handle(
    st: Arc<Shared>,
    port: u16,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_stream = path.starts_with("/api/v1/streaming");
    st.log.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        uri: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authorization: auth.clone(),
        stream: is_stream,
    });
    let token =
        bearer(auth.as_deref()).or_else(|| q_get(&query, "access_token").map(str::to_string));
    if is_stream {
        if take_one(&st.stall_streams) {
            st.stalled.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        return stream(st, &path, &query, token);
    }
    st.rest_requests.fetch_add(1, Ordering::SeqCst);
    if take_one(&st.stall_rest) {
        st.stalled.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    {
        let mut rl = st.rate_limit.lock().unwrap();
        if rl.0 > 0 {
            rl.0 -= 1;
            st.rate_limited.fetch_add(1, Ordering::SeqCst);
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": "Too many requests"}),
            );
            if let Some(secs) = rl.1 {
                let h = r.headers_mut();
                h.insert("Retry-After", HeaderValue::from(secs));
                h.insert("X-RateLimit-Limit", HeaderValue::from_static("300"));
                h.insert("X-RateLimit-Remaining", HeaderValue::from_static("0"));
                h.insert(
                    "X-RateLimit-Reset",
                    HeaderValue::from_str(&iso_now(secs as i64, 6)).unwrap(),
                );
            }
            return Ok(r);
        }
    }
    let huge = {
        let mut h = st.huge_body.lock().unwrap();
        (h.0 > 0).then(|| {
            h.0 -= 1;
            h.1
        })
    };
    if let Some(bytes) = huge {
        return Ok(huge_response(st.clone(), bytes));
    }
    if req.method() != Method::GET {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "Record not found"}),
        ));
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("127.0.0.1:{port}"));
    let cfg = st.cfg.lock().unwrap().clone();
    let link_base = st
        .link_base
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| format!("http://{host}"));
    let timeline = if path == "/api/v1/timelines/public" {
        let channel = if q_true(&query, "local") {
            Channel::PublicLocal
        } else if q_true(&query, "remote") {
            Channel::PublicRemote
        } else {
            Channel::Public
        };
        Some((channel, &["limit", "local", "only_media", "remote"][..]))
    } else {
        path.strip_prefix("/api/v1/timelines/tag/").map(|tag| {
            (
                Channel::Hashtag {
                    tag: pct_decode(tag),
                    local: q_true(&query, "local"),
                },
                &["limit", "local", "only_media"][..],
            )
        })
    };
    if let Some((channel, permitted)) = timeline {
        if let Some(want) = &cfg.token {
            match &token {
                None => {
                    return Ok(json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({"error": "This method requires an authenticated user"}),
                    ))
                }
                Some(t) if t != want => {
                    return Ok(json_response(
                        StatusCode::UNAUTHORIZED,
                        &json!({"error": "The access token is invalid"}),
                    ))
                }
                _ => {}
            }
        }
        return Ok(timeline_page(
            &st,
            &cfg,
            &channel,
            &query,
            permitted,
            &format!("{link_base}{path}"),
        ));
    }
    if let Some(id) = path.strip_prefix("/api/v1/statuses/") {
        let found = id
            .parse::<u64>()
            .ok()
            .and_then(|n| st.statuses.lock().unwrap().get(&n).cloned());
        return Ok(match found {
            Some(s) => json_response(StatusCode::OK, &s),
            None => json_response(StatusCode::NOT_FOUND, &json!({"error": "Record not found"})),
        });
    }
    match path.as_str() {
        "/api/v1/instance" => Ok(json_response(
            StatusCode::OK,
            &json!({"uri": "mastodon.example", "title": "Fake Mastodon", "version": "4.3.2",
                    "urls": {"streaming_api": format!("ws://{host}")}, "languages": ["en"]}),
        )),
        "/api/v2/instance" => Ok(json_response(
            StatusCode::OK,
            &json!({"domain": "mastodon.example", "title": "Fake Mastodon", "version": "4.3.2",
                    "configuration": {"urls": {"streaming": format!("ws://{host}")}}}),
        )),
        _ => Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "Record not found"}),
        )),
    }
}

fn stream(
    st: Arc<Shared>,
    path: &str,
    query: &[(String, String)],
    token: Option<String>,
) -> Result<Response<Body>, io::Error> {
    if st.stream_down.load(Ordering::SeqCst) {
        st.stream_refused.fetch_add(1, Ordering::SeqCst);
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "stream down",
        ));
    }
    let refuse = |code: StatusCode, msg: &str| {
        st.stream_refused.fetch_add(1, Ordering::SeqCst);
        Ok(json_response(code, &json!({ "error": msg })))
    };
    if path == "/api/v1/streaming/health" {
        return Ok(Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .body(full("OK"))
            .unwrap());
    }
    let cfg = st.cfg.lock().unwrap().clone();
    if let Some(want) = &cfg.token {
        match &token {
            None => return refuse(StatusCode::UNAUTHORIZED, "Missing access token"),
            Some(t) if t != want => {
                return refuse(StatusCode::UNAUTHORIZED, "Invalid access token")
            }
            _ => {}
        }
    }
    let name = match path.trim_end_matches('/') {
        "/api/v1/streaming" => q_get(query, "stream").unwrap_or("").to_string(),
        p => p.trim_start_matches("/api/v1/streaming/").replace('/', ":"),
    };
    let tag = q_get(query, "tag").map(str::to_string);
    let channel = match name.as_str() {
        "public" => Channel::Public,
        "public:local" => Channel::PublicLocal,
        "public:remote" => Channel::PublicRemote,
        "hashtag" | "hashtag:local" => match tag {
            Some(tag) if !tag.is_empty() => Channel::Hashtag {
                tag,
                local: name.ends_with(":local"),
            },
            _ => return refuse(StatusCode::BAD_REQUEST, "No tag for stream provided"),
        },
        "list" => match q_get(query, "list") {
            Some(l) if !l.is_empty() => Channel::List(l.to_string()),
            _ => return refuse(StatusCode::BAD_REQUEST, "Missing list name parameter"),
        },
        _ => return refuse(StatusCode::NOT_FOUND, "Unknown stream type"),
    };
    st.stream_connections.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = mpsc::unbounded_channel();
    st.subs.lock().unwrap().push(Sub { channel, tx });
    let hb = (!cfg.heartbeat.is_zero()).then(|| {
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.heartbeat, cfg.heartbeat)
    });
    let body = futures_util::stream::unfold(
        (rx, hb, Some(Bytes::from_static(b":)\n")), false),
        |(mut rx, mut hb, mut first, done)| async move {
            if done {
                return None;
            }
            if let Some(b) = first.take() {
                return Some((Ok(Frame::data(b)), (rx, hb, first, false)));
            }
            enum Next {
                Msg(Option<Msg>),
                Beat,
            }
            let next = tokio::select! {
                m = rx.recv() => Next::Msg(m),
                _ = tick(&mut hb) => Next::Beat,
            };
            let item = match next {
                Next::Msg(Some(Msg::Data(b))) => Ok(Frame::data(b)),
                Next::Msg(Some(Msg::Cut)) => {
                    return Some((
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "stream cut by the test",
                        )),
                        (rx, hb, first, true),
                    ));
                }
                Next::Msg(Some(Msg::End) | None) => return None,
                Next::Beat => Ok(Frame::data(Bytes::from_static(b":thump\n"))),
            };
            Some((item, (rx, hb, first, false)))
        },
    );
    Ok(Response::builder()
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-store")
        .body(BodyExt::boxed_unsync(StreamBody::new(body)))
        .unwrap())
}

/// Takes one from a "next n requests" counter; false when it is zero.
fn take_one(n: &AtomicU64) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// `[`, spaces, `]`: `bytes` long in all, in 64 KiB chunks produced as the connection takes
/// them (a client that hangs up stops it), chunked (no `Content-Length`).
fn huge_response(st: Arc<Shared>, bytes: usize) -> Response<Body> {
    const CHUNK: usize = 64 << 10;
    let spaces = Bytes::from(vec![b' '; CHUNK]);
    let body = futures_util::stream::unfold(0usize, move |sent| {
        let (st, spaces) = (st.clone(), spaces.clone());
        async move {
            if sent >= bytes {
                return None;
            }
            let n = CHUNK.min(bytes - sent);
            let chunk = if sent == 0 {
                let mut v = spaces[..n].to_vec();
                v[0] = b'[';
                if n == bytes {
                    v[n - 1] = b']';
                }
                Bytes::from(v)
            } else if sent + n == bytes {
                let mut v = spaces[..n].to_vec();
                v[n - 1] = b']';
                Bytes::from(v)
            } else {
                spaces.slice(..n)
            };
            st.huge_bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
            Some((Ok::<_, io::Error>(Frame::data(chunk)), sent + n))
        }
    });
    Response::builder()
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(BodyExt::boxed_unsync(StreamBody::new(body)))
        .unwrap()
}

async fn tick(hb: &mut Option<tokio::time::Interval>) {
    match hb {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Mastodon's `paginate_by_id`: with `min_id`, the `limit` oldest newer than it (returned newest
/// first); otherwise the `limit` newest below `max_id` and above `since_id`.
fn timeline_page(
    st: &Shared,
    cfg: &MastodonConfig,
    channel: &Channel,
    q: &[(String, String)],
    permitted: &[&str],
    base: &str,
) -> Response<Body> {
    let limit = match q_get(q, "limit") {
        None => 20,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(|n| n.unsigned_abs().min(40) as usize)
            .unwrap_or(0),
    };
    let id_param = |k: &str| q_get(q, k).and_then(|v| v.parse::<u64>().ok());
    let (max_id, since_id, min_id) = (id_param("max_id"), id_param("since_id"), id_param("min_id"));
    let only_media = q_true(q, "only_media");
    let map = st.statuses.lock().unwrap();
    let keep = |s: &&Value| {
        channel.matches(s, cfg.public_reblogs)
            && (!only_media
                || s["media_attachments"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty()))
    };
    let page: Vec<Value> = if let Some(min) = min_id {
        let upper = max_id.unwrap_or(u64::MAX);
        let mut v: Vec<Value> = map
            .range(min.saturating_add(1)..upper)
            .map(|(_, s)| s)
            .filter(keep)
            .take(limit)
            .cloned()
            .collect();
        v.reverse();
        v
    } else {
        let lower = since_id.map_or(0, |s| s.saturating_add(1));
        let upper = max_id.unwrap_or(u64::MAX);
        if lower >= upper {
            Vec::new()
        } else {
            map.range(lower..upper)
                .rev()
                .map(|(_, s)| s)
                .filter(keep)
                .take(limit)
                .cloned()
                .collect()
        }
    };
    drop(map);
    let mut r = json_response(StatusCode::OK, &Value::Array(page.clone()));
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        let kept: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| permitted.contains(&k.as_str()))
            .cloned()
            .collect();
        let link = |k: &str, v: &str| {
            let mut params = kept.clone();
            params.push((k.to_string(), v.to_string()));
            params.sort_by(|a, b| a.0.cmp(&b.0));
            let qs: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("{}={}", pct_encode(k), pct_encode(v)))
                .collect();
            format!("{base}?{}", qs.join("&"))
        };
        let header = format!(
            "<{}>; rel=\"next\", <{}>; rel=\"prev\"",
            link("max_id", last["id"].as_str().unwrap_or_default()),
            link("min_id", first["id"].as_str().unwrap_or_default())
        );
        r.headers_mut()
            .insert("Link", HeaderValue::from_str(&header).unwrap());
    }
    r
}

fn full(b: impl Into<Bytes>) -> Body {
    BodyExt::boxed_unsync(Full::new(b.into()).map_err(|never| match never {}))
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(full(v.to_string()))
        .unwrap()
}

fn bearer(auth: Option<&str>) -> Option<String> {
    let a = auth?.trim();
    let (scheme, tok) = a.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| tok.trim().to_string())
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(p), String::new()),
        })
        .collect()
}

fn q_get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

/// Rails' boolean params: anything but false/0/off/no/empty is true.
fn q_true(q: &[(String, String)], k: &str) -> bool {
    q_get(q, k).is_some_and(|v| {
        !matches!(
            v.to_ascii_lowercase().as_str(),
            "" | "false" | "0" | "f" | "off" | "no"
        )
    })
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// CGI.escape, as Rails' `to_query` writes parameters.
fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(c as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Now plus `offset_secs`, ISO 8601 UTC with `frac` fractional digits (3 for created_at, 6 as
/// in Mastodon's X-RateLimit-Reset).
pub fn iso_now(offset_secs: i64, frac: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = now.as_secs() as i64 + offset_secs;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = tributary_protocol::pgtext::civil_from_days(days);
    let nanos = format!("{:09}", now.subsec_nanos());
    let frac = if frac == 0 {
        String::new()
    } else {
        format!(".{}", &nanos[..frac.min(9)])
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
