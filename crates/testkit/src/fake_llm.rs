//! A fake LLM server on 127.0.0.1 speaking the Ollama API (`/api/generate`, `/api/chat`,
//! `/api/tags`, NDJSON streaming when `stream` is not false, as Ollama defaults) and the
//! OpenAI-compatible API (`/v1/chat/completions`, SSE when `stream: true`, `/v1/models`).
//!
//! It labels the post found in the prompt (the last user message, or `prompt`) by keyword rules
//! (`rule_label`), unless an override, a fixed reply or a map says otherwise, and writes the label
//! in the configured reply style. Faults: latency, a concurrency limit (extra requests queue, as on
//! a serial Ollama), deterministic or seeded errors (HTTP 500), hung requests, a server that is
//! down (connections refused). Counters and every request received are kept for assertions.
//! The server stops when the `FakeLlm` is dropped.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// How a label is written in the reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Style {
    /// `positive`
    #[default]
    Word,
    /// `<think>\n…reasoning…\n</think>\n\nPositive` (deepseek-r1); with Ollama's `think: true` the
    /// reasoning goes to `thinking` and the content is `Positive`.
    Think,
    /// `{"sentiment":"positive"}`
    Json,
    /// `The sentiment of this post is positive.`
    Sentence,
    /// `I cannot help with that.` whatever the post.
    Garbage,
    /// An empty string.
    Empty,
}

/// What to answer for a post.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// This label, written in the configured style.
    Label(String),
    /// This content, verbatim (no style, no JSON even when a format is requested).
    Raw(String),
    /// `I cannot help with that.`
    Garbage,
    /// An empty content.
    Empty,
    /// This HTTP status with the API's error body (Ollama `{"error":msg}`, OpenAI
    /// `{"error":{"message":msg,…}}`).
    Error(u16, String),
    /// Accept and never answer.
    Hang,
}

#[derive(Clone, Debug)]
pub struct LlmConfig {
    pub style: Style,
    /// Every reply (overrides and the map still win).
    pub fixed: Option<Reply>,
    /// First needle found in the post text (case-sensitive substring) decides the reply.
    pub map: Vec<(String, Reply)>,
    /// Added to each answered request, while holding a concurrency slot.
    pub latency: Duration,
    /// Requests processed at once; more wait (0: unlimited).
    pub concurrency: usize,
    /// Every k-th generation request (1-based count) gets HTTP 500 (0: never).
    pub error_every: u64,
    /// Probability of HTTP 500 per generation request, from a PRNG seeded with `seed`.
    pub error_rate: f64,
    pub seed: u64,
    /// Listed by /api/tags and /v1/models.
    pub models: Vec<String>,
    /// Unknown models get 404 (Ollama: `model "x" not found, try pulling it first`).
    pub strict_models: bool,
    /// Required `Authorization: Bearer` on /v1 (401 otherwise).
    pub api_key: Option<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            style: Style::Word,
            fixed: None,
            map: Vec::new(),
            latency: Duration::ZERO,
            concurrency: 0,
            error_every: 0,
            error_rate: 0.0,
            seed: 42,
            models: vec![
                "llama3.2:1b".into(),
                "qwen2.5:0.5b".into(),
                "deepseek-r1:1.5b".into(),
            ],
            strict_models: false,
            api_key: None,
        }
    }
}

/// One generation request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `/api/generate`, `/api/chat` or `/v1/chat/completions`.
    pub endpoint: String,
    pub model: String,
    /// `/api/generate`'s prompt.
    pub prompt: Option<String>,
    /// `/api/generate`'s system.
    pub system: Option<String>,
    /// (role, content) of the chat endpoints; array contents are joined text parts.
    pub messages: Vec<(String, String)>,
    /// Ollama `options.temperature`, OpenAI `temperature`.
    pub temperature: Option<f64>,
    /// Ollama `format`, OpenAI `response_format`.
    pub format: Option<Value>,
    pub stream: Option<bool>,
    /// The text the fake classified (`extract_post` of the prompt / last user message).
    pub post: String,
    pub body: Value,
}

/// The post inside a prompt: between the first `<post>` and the last `</post>` if present (else
/// `<<<`…`>>>`, `"""`…`"""`, then ```…```), otherwise the whole text, trimmed.
pub fn extract_post(text: &str) -> String {
    for (open, close) in [
        ("<post>", "</post>"),
        ("<<<", ">>>"),
        ("\"\"\"", "\"\"\""),
        ("```", "```"),
    ] {
        if let Some(a) = text.find(open) {
            let from = a + open.len();
            if let Some(b) = text[from..].rfind(close) {
                return text[from..from + b].trim().to_string();
            }
        }
    }
    text.trim().to_string()
}

const POSITIVE: [&str; 6] = ["love", "great", "wonderful", "happy", "😀", "❤"];
const NEGATIVE: [&str; 5] = ["hate", "awful", "terrible", "angry", "😡"];

/// The fake's rule: a positive keyword (love, great, wonderful, happy, 😀, ❤) → positive, else a
/// negative one (hate, awful, terrible, angry, 😡) → negative, else neutral. Case-insensitive;
/// a word keyword counts only at the start of a word ("loved" yes, "glove"/"whatever" no).
pub fn rule_label(post: &str) -> &'static str {
    let lower = post.to_lowercase();
    if POSITIVE.iter().any(|k| contains_word(&lower, k)) {
        "positive"
    } else if NEGATIVE.iter().any(|k| contains_word(&lower, k)) {
        "negative"
    } else {
        "neutral"
    }
}

fn contains_word(hay: &str, kw: &str) -> bool {
    let alpha = kw.chars().next().is_some_and(char::is_alphanumeric);
    hay.match_indices(kw).any(|(i, _)| {
        !alpha
            || !hay[..i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
    })
}

/// Reply content for `label` in `style` (no format requested).
pub fn styled(style: Style, label: &str) -> String {
    match style {
        Style::Word => label.to_string(),
        Style::Think => format!(
            "<think>\n{}\n</think>\n\n{}",
            reasoning(label),
            capitalize(label)
        ),
        Style::Json => json!({ "sentiment": label }).to_string(),
        Style::Sentence => format!("The sentiment of this post is {label}."),
        Style::Garbage => GARBAGE.to_string(),
        Style::Empty => String::new(),
    }
}

const GARBAGE: &str = "I cannot help with that.";

fn reasoning(label: &str) -> String {
    format!("Okay, the user wants the sentiment of a social media post. Let me read it carefully. The tone and the words used suggest it is {label}. I should answer with one word.")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

struct Faults {
    fail_next: u64,
    hang_next: u64,
    rng: u64,
}

struct Shared {
    cfg: Mutex<LlmConfig>,
    overrides: Mutex<Vec<(String, Reply)>>,
    faults: Mutex<Faults>,
    down: AtomicBool,
    down_tx: watch::Sender<bool>,
    release: watch::Sender<u64>,
    // concurrency gate
    active: Mutex<usize>,
    gate: Notify,
    // counters
    by_endpoint: Mutex<HashMap<String, u64>>,
    generation_seq: AtomicU64,
    errors: AtomicU64,
    hangs: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    max_active: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

/// The controls and counters of a running fake; cheap to clone and move into tasks.
#[derive(Clone)]
pub struct LlmHandle {
    shared: Arc<Shared>,
}

pub struct FakeLlm {
    pub port: u16,
    handle: LlmHandle,
    task: JoinHandle<()>,
}

impl Deref for FakeLlm {
    type Target = LlmHandle;
    fn deref(&self) -> &LlmHandle {
        &self.handle
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLlm {
    pub async fn start(cfg: LlmConfig) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seed = cfg.seed;
        let shared = Arc::new(Shared {
            cfg: Mutex::new(cfg),
            overrides: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults {
                fail_next: 0,
                hang_next: 0,
                rng: seed_rng(seed),
            }),
            down: AtomicBool::new(false),
            down_tx: watch::channel(false).0,
            release: watch::channel(0).0,
            active: Mutex::new(0),
            gate: Notify::new(),
            by_endpoint: Mutex::new(HashMap::new()),
            generation_seq: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hangs: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
        });
        let st = shared.clone();
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            let mut down_rx = st.down_tx.subscribe();
            loop {
                let l = match listener.take() {
                    Some(l) => l,
                    None => loop {
                        // Back up: the same port again (SO_REUSEADDR is set by tokio on Unix).
                        match TcpListener::bind(("127.0.0.1", port)).await {
                            Ok(l) => break l,
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    },
                };
                let mut conns = JoinSet::new();
                loop {
                    tokio::select! {
                        acc = l.accept() => {
                            let Ok((sock, _)) = acc else { continue };
                            while conns.try_join_next().is_some() {}
                            if st.down.load(Ordering::SeqCst) {
                                drop(sock);
                                continue;
                            }
                            let _ = sock.set_nodelay(true);
                            let st = st.clone();
                            conns.spawn(async move {
                                let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .keep_alive(true)
                                    .serve_connection(TokioIo::new(sock), svc)
                                    .await;
                            });
                        }
                        _ = down_rx.wait_for(|d| *d) => break,
                    }
                }
                // Down: refuse connections (listener closed) and cut the open ones.
                drop(l);
                conns.abort_all();
                while conns.join_next().await.is_some() {}
                if down_rx.wait_for(|d| !*d).await.is_err() {
                    return;
                }
            }
        });
        FakeLlm {
            port,
            handle: LlmHandle { shared },
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn handle(&self) -> LlmHandle {
        self.handle.clone()
    }
}

impl LlmHandle {
    pub fn set_style(&self, style: Style) {
        self.shared.cfg.lock().unwrap().style = style;
    }
    pub fn set_fixed(&self, reply: Option<Reply>) {
        self.shared.cfg.lock().unwrap().fixed = reply;
    }
    /// A post containing `needle` always gets `reply` (before the config's map and fixed reply).
    pub fn set_override(&self, needle: &str, reply: Reply) {
        self.shared
            .overrides
            .lock()
            .unwrap()
            .push((needle.to_string(), reply));
    }
    pub fn clear_overrides(&self) {
        self.shared.overrides.lock().unwrap().clear();
    }
    pub fn set_latency(&self, d: Duration) {
        self.shared.cfg.lock().unwrap().latency = d;
    }
    /// 0: unlimited. Raising it lets waiting requests in at once.
    pub fn set_concurrency(&self, n: usize) {
        self.shared.cfg.lock().unwrap().concurrency = n;
        self.shared.gate.notify_waiters();
    }
    pub fn set_error_every(&self, k: u64) {
        self.shared.cfg.lock().unwrap().error_every = k;
    }
    pub fn set_error_rate(&self, p: f64, seed: u64) {
        self.shared.cfg.lock().unwrap().error_rate = p;
        self.shared.faults.lock().unwrap().rng = seed_rng(seed);
    }
    /// The next `n` generation requests get HTTP 500.
    pub fn fail_next(&self, n: u64) {
        self.shared.faults.lock().unwrap().fail_next = n;
    }
    /// The next `n` generation requests are accepted and never answered (until `release_hangs`,
    /// `set_down(true)` or drop, which close their connections). They hold no concurrency slot.
    pub fn hang_next(&self, n: u64) {
        self.shared.faults.lock().unwrap().hang_next = n;
    }
    /// Closes the connections of hung requests.
    pub fn release_hangs(&self) {
        self.shared.release.send_modify(|g| *g += 1);
    }
    /// Down: new connections are closed at once, then refused (listener closed), and open ones
    /// cut. Up: the same port listens again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        self.shared.down_tx.send_replace(down);
    }

    /// Requests on this path (`/api/generate`, `/api/chat`, `/api/tags`, `/v1/chat/completions`,
    /// `/v1/models`, …), whatever their outcome.
    pub fn requests(&self, path: &str) -> u64 {
        self.shared
            .by_endpoint
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
    /// Generation requests (generate, chat, chat completions).
    pub fn generations(&self) -> u64 {
        self.shared.generation_seq.load(Ordering::SeqCst)
    }
    /// Injected errors served (fail_next, error_every, error_rate, Reply::Error).
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::SeqCst)
    }
    pub fn hangs(&self) -> u64 {
        self.shared.hangs.load(Ordering::SeqCst)
    }
    /// Peak of generation requests received and not yet answered (waiting ones included): the
    /// concurrency the client used.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
    /// Peak of requests processed at once (at most the concurrency limit).
    pub fn max_active(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
    /// The reply the fake gives for this post text now (ignoring faults).
    pub fn reply_for(&self, post: &str) -> Reply {
        decide(&self.shared, post)
    }
}

fn seed_rng(seed: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn next_f64(state: &mut u64) -> f64 {
    // xorshift64*
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

fn decide(st: &Shared, post: &str) -> Reply {
    if let Some((_, r)) = st
        .overrides
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| post.contains(n.as_str()))
    {
        return r.clone();
    }
    let cfg = st.cfg.lock().unwrap();
    if let Some((_, r)) = cfg.map.iter().find(|(n, _)| post.contains(n.as_str())) {
        return r.clone();
    }
    if let Some(r) = &cfg.fixed {
        return r.clone();
    }
    Reply::Label(rule_label(post).to_string())
}

struct InFlight<'a>(&'a Shared);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Slot<'a>(&'a Shared);
impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.active.lock().unwrap() -= 1;
        self.0.gate.notify_waiters();
    }
}

async fn acquire(st: &Shared) -> Slot<'_> {
    loop {
        let notified = st.gate.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let limit = st.cfg.lock().unwrap().concurrency;
            let mut a = st.active.lock().unwrap();
            if limit == 0 || *a < limit {
                *a += 1;
                st.max_active.fetch_max(*a, Ordering::SeqCst);
                return Slot(st);
            }
        }
        notified.await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Generate,
    Chat,
    OpenAi,
}

async fn handle(st: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, io::Error> {
    if st.down.load(Ordering::SeqCst) {
        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "down"));
    }
    let path = req.uri().path().to_string();
    *st.by_endpoint
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let method = req.method().clone();
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let api = match (&method, path.as_str()) {
        (&Method::POST, "/api/generate") => Api::Generate,
        (&Method::POST, "/api/chat") => Api::Chat,
        (&Method::POST, "/v1/chat/completions") => Api::OpenAi,
        (&Method::GET, "/api/tags") => return Ok(json_response(StatusCode::OK, &tags(&st))),
        (&Method::GET, "/v1/models") => {
            if let Some(r) = check_key(&st, auth.as_deref()) {
                return Ok(r);
            }
            let data: Vec<Value> = st.cfg.lock().unwrap().models.iter().map(|m| json!({"id": m, "object": "model", "created": unix_now(), "owned_by": "library"})).collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": data}),
            ));
        }
        (&Method::GET, "/api/version") => {
            return Ok(json_response(StatusCode::OK, &json!({"version": "0.6.2"})))
        }
        (&Method::GET, "/") | (&Method::HEAD, "/") => {
            return Ok(Response::builder()
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(full("Ollama is running"))
                .unwrap())
        }
        _ => {
            return Ok(Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header(CONTENT_TYPE, "text/plain")
                .body(full("404 page not found"))
                .unwrap())
        }
    };
    let seq = st.generation_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(&st);

    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => return Ok(error(api, 400, "invalid JSON body")),
    };
    if api == Api::OpenAi {
        if let Some(r) = check_key(&st, auth.as_deref()) {
            return Ok(r);
        }
    }
    let rec = record(&path, &body, api);
    st.received.lock().unwrap().push(rec.clone());
    if rec.model.is_empty() {
        return Ok(error(api, 400, "model is required"));
    }
    let (strict, models) = {
        let c = st.cfg.lock().unwrap();
        (c.strict_models, c.models.clone())
    };
    if strict
        && !models.iter().any(|m| {
            *m == rec.model
                || m.strip_suffix(":latest") == Some(&rec.model)
                || rec.model.strip_suffix(":latest") == Some(m)
        })
    {
        return Ok(error(
            api,
            404,
            &format!("model \"{}\" not found, try pulling it first", rec.model),
        ));
    }
    let reply = decide(&st, &rec.post);
    let hang = reply == Reply::Hang || {
        let mut f = st.faults.lock().unwrap();
        let h = f.hang_next > 0;
        if h {
            f.hang_next -= 1;
        }
        h
    };
    if hang {
        st.hangs.fetch_add(1, Ordering::SeqCst);
        let mut rel = st.release.subscribe();
        let _ = rel.changed().await;
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "hung request released",
        ));
    }
    let injected = {
        let cfg = st.cfg.lock().unwrap();
        let mut f = st.faults.lock().unwrap();
        if f.fail_next > 0 {
            f.fail_next -= 1;
            true
        } else if cfg.error_every > 0 && seq % cfg.error_every == 0 {
            true
        } else {
            cfg.error_rate > 0.0 && next_f64(&mut f.rng) < cfg.error_rate
        }
    };
    if injected {
        st.errors.fetch_add(1, Ordering::SeqCst);
        return Ok(error(
            api,
            500,
            "llama runner process has terminated: exit status 2",
        ));
    }
    if let Reply::Error(code, msg) = &reply {
        st.errors.fetch_add(1, Ordering::SeqCst);
        return Ok(error(api, *code, msg));
    }

    let _slot = acquire(&st).await;
    let (latency, style) = {
        let c = st.cfg.lock().unwrap();
        (c.latency, c.style)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let think_param = body.get("think").and_then(Value::as_bool);
    let (content, thinking) = render(&reply, style, rec.format.as_ref(), think_param);
    Ok(answer(api, &rec, content, thinking, latency))
}

fn check_key(st: &Shared, auth: Option<&str>) -> Option<Response<Body>> {
    let want = st.cfg.lock().unwrap().api_key.clone()?;
    let got = auth.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
    (got != Some(want.as_str())).then(|| {
        json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        )
    })
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn record(path: &str, body: &Value, api: Api) -> Received {
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let messages: Vec<(String, String)> = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap_or("").to_string(),
                        text_of(&m["content"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let prompt = s("prompt");
    let source = match api {
        Api::Generate => prompt.clone().unwrap_or_default(),
        _ => messages
            .iter()
            .rev()
            .find(|(r, _)| r == "user")
            .map(|(_, c)| c.clone())
            .unwrap_or_default(),
    };
    let temperature = match api {
        Api::OpenAi => body.get("temperature").and_then(Value::as_f64),
        _ => body
            .get("options")
            .and_then(|o| o.get("temperature"))
            .and_then(Value::as_f64),
    };
    let format = match api {
        Api::OpenAi => body
            .get("response_format")
            .filter(|f| f["type"] != "text")
            .cloned(),
        _ => body
            .get("format")
            .filter(|f| !f.is_null() && **f != json!(""))
            .cloned(),
    };
    Received {
        endpoint: path.to_string(),
        model: s("model").unwrap_or_default(),
        prompt,
        system: s("system"),
        messages,
        temperature,
        format,
        stream: body.get("stream").and_then(Value::as_bool),
        post: extract_post(&source),
        body: body.clone(),
    }
}

/// The JSON key a format asks for: the first `required` (else first property) of a schema
/// (Ollama's `format` or OpenAI's `json_schema.schema`), else `sentiment`.
fn format_key(format: &Value) -> String {
    let schema = if format.get("json_schema").is_some() {
        &format["json_schema"]["schema"]
    } else {
        format
    };
    schema["required"][0]
        .as_str()
        .or_else(|| {
            schema["properties"]
                .as_object()
                .and_then(|p| p.keys().next())
                .map(String::as_str)
        })
        .unwrap_or("sentiment")
        .to_string()
}

/// (content, thinking)
fn render(
    reply: &Reply,
    style: Style,
    format: Option<&Value>,
    think: Option<bool>,
) -> (String, Option<String>) {
    match reply {
        Reply::Raw(s) => (s.clone(), None),
        Reply::Garbage => (GARBAGE.to_string(), None),
        Reply::Empty => (String::new(), None),
        Reply::Error(..) | Reply::Hang => unreachable!(),
        Reply::Label(label) => match (style, format) {
            (Style::Garbage | Style::Empty, _) => (styled(style, label), None),
            (_, Some(f)) => (json!({ format_key(f): label }).to_string(), None),
            (Style::Think, _) if think == Some(true) => (capitalize(label), Some(reasoning(label))),
            (Style::Think, _) if think == Some(false) => (capitalize(label), None),
            _ => (styled(style, label), None),
        },
    }
}

fn tokens(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4).max(1)
}

fn answer(
    api: Api,
    rec: &Received,
    content: String,
    thinking: Option<String>,
    latency: Duration,
) -> Response<Body> {
    let prompt_text = rec.prompt.clone().unwrap_or_default()
        + &rec
            .messages
            .iter()
            .map(|(_, c)| c.as_str())
            .collect::<String>();
    let (p_tok, c_tok) = (tokens(&prompt_text), tokens(&content));
    let total_ns = latency.as_nanos() as u64 + 1_000_000;
    let stats = json!({
        "total_duration": total_ns,
        "load_duration": 200_000u64,
        "prompt_eval_count": p_tok,
        "prompt_eval_duration": total_ns / 4,
        "eval_count": c_tok,
        "eval_duration": total_ns / 2,
    });
    let model = rec.model.clone();
    // Ollama streams unless told `stream: false`; the OpenAI API only with `stream: true`.
    let stream = match api {
        Api::OpenAi => rec.stream == Some(true),
        _ => rec.stream != Some(false),
    };
    let pieces: Vec<String> = {
        let chars: Vec<char> = content.chars().collect();
        chars.chunks(4).map(|c| c.iter().collect()).collect()
    };
    match api {
        Api::Generate | Api::Chat => {
            let msg = |text: &str, thinking: Option<&str>| {
                let mut m = json!({"role": "assistant", "content": text});
                if let Some(t) = thinking {
                    m["thinking"] = json!(t);
                }
                m
            };
            let mut last = json!({"model": model, "created_at": iso_nanos(), "done": true, "done_reason": "stop"});
            for (k, v) in stats.as_object().unwrap() {
                last[k] = v.clone();
            }
            if !stream {
                if api == Api::Generate {
                    last["response"] = json!(content);
                    if let Some(t) = &thinking {
                        last["thinking"] = json!(t);
                    }
                    last["context"] = json!([128006, 882, 128007, 271]);
                } else {
                    last["message"] = msg(&content, thinking.as_deref());
                }
                return json_response(StatusCode::OK, &last);
            }
            let mut lines: Vec<Bytes> = Vec::new();
            if let Some(t) = &thinking {
                let mut c = json!({"model": model, "created_at": iso_nanos(), "done": false});
                if api == Api::Generate {
                    c["response"] = json!("");
                    c["thinking"] = json!(t);
                } else {
                    c["message"] = json!({"role": "assistant", "content": "", "thinking": t});
                }
                lines.push(Bytes::from(c.to_string() + "\n"));
            }
            for p in &pieces {
                let mut c = json!({"model": model, "created_at": iso_nanos(), "done": false});
                if api == Api::Generate {
                    c["response"] = json!(p);
                } else {
                    c["message"] = msg(p, None);
                }
                lines.push(Bytes::from(c.to_string() + "\n"));
            }
            if api == Api::Generate {
                last["response"] = json!("");
                last["context"] = json!([128006, 882, 128007, 271]);
            } else {
                last["message"] = msg("", None);
            }
            lines.push(Bytes::from(last.to_string() + "\n"));
            streaming(lines, "application/x-ndjson")
        }
        Api::OpenAi => {
            let id = format!("chatcmpl-{}", rand_id());
            let created = unix_now();
            let usage = json!({"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok});
            if !stream {
                return json_response(
                    StatusCode::OK,
                    &json!({
                        "id": id, "object": "chat.completion", "created": created, "model": model,
                        "system_fingerprint": "fp_ollama",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                        "usage": usage,
                    }),
                );
            }
            let chunk = |delta: Value, finish: Value| {
                let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": "fp_ollama",
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                Bytes::from(format!("data: {c}\n\n"))
            };
            let mut events: Vec<Bytes> = pieces
                .iter()
                .map(|p| chunk(json!({"role": "assistant", "content": p}), Value::Null))
                .collect();
            events.push(chunk(
                json!({"role": "assistant", "content": ""}),
                json!("stop"),
            ));
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            streaming(events, "text/event-stream")
        }
    }
}

fn streaming(chunks: Vec<Bytes>, content_type: &str) -> Response<Body> {
    let s = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|b| Ok::<_, io::Error>(Frame::data(b))),
    );
    Response::builder()
        .header(CONTENT_TYPE, content_type)
        .body(BodyExt::boxed_unsync(StreamBody::new(s)))
        .unwrap()
}

fn error(api: Api, code: u16, msg: &str) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match api {
        Api::OpenAi => {
            json!({"error": {"message": msg, "type": "api_error", "param": null, "code": null}})
        }
        _ => json!({ "error": msg }),
    };
    json_response(code, &body)
}

fn tags(st: &Shared) -> Value {
    let models: Vec<Value> = st
        .cfg
        .lock()
        .unwrap()
        .models
        .iter()
        .map(|m| {
            json!({"name": m, "model": m, "modified_at": "2024-11-20T10:00:00.000000000Z", "size": 1_321_098_329u64,
                   "digest": "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
                   "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                               "parameter_size": "1.2B", "quantization_level": "Q8_0"}})
        })
        .collect();
    json!({ "models": models })
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rand_id() -> u64 {
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) * 7919 % 1000
}

/// Ollama's created_at: RFC 3339 with nanoseconds.
fn iso_nanos() -> String {
    crate::fake_mastodon::iso_now(0, 9)
}
