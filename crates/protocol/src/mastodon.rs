//! The Mastodon side of the sentiment pipeline, as pure functions: serde models of the
//! entities we read (`Status`, `Account`), a sans-IO Server-Sent Events parser for the
//! streaming API, the mapping from stream frames to [`StreamEvent`]s, HTML-to-text for
//! status content, the [`Post`] that flows through the pipeline, Mastodon's id order, `Link`
//! header pagination and rate-limit headers.
//!
//! Must never: do I/O or read a clock (the caller passes "now"), panic on anything a server
//! sends (every parser returns an error, `None` or a best-effort value), or buffer an
//! unbounded amount of memory for one stream event (see [`SseParser::with_max_event_bytes`]).

use std::cmp::Ordering;

use serde::{Deserialize, Deserializer, Serialize};

use crate::pgtext::days_from_civil;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MastodonError {
    #[error("malformed `{event}` event: {message} (data starts {excerpt:?})")]
    Json {
        event: String,
        message: String,
        excerpt: String,
    },
    #[error("`delete` event without a status id")]
    EmptyDelete,
    #[error("stream event {event:?} dropped: {bytes} bytes exceed the per-event cap")]
    EventTooLarge { event: Option<String>, bytes: usize },
}

// ---------------------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------------------

/// A status as the REST and streaming APIs send it. Only the fields the pipeline reads;
/// unknown fields are ignored, and absent or `null` fields take their default so that
/// other ActivityPub servers speaking the Mastodon API (Pleroma, GoToSocial…) still parse.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct Status {
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub created_at: String,
    #[serde(default)]
    pub edited_at: Option<String>,
    /// HTML; see [`html_to_text`].
    #[serde(default, deserialize_with = "null_default")]
    pub content: String,
    /// The content warning, plain text (empty when there is none).
    #[serde(default, deserialize_with = "null_default")]
    pub spoiler_text: String,
    #[serde(default)]
    pub language: Option<String>,
    /// The HTML page of the status; `null` for reblog wrappers.
    #[serde(default)]
    pub url: Option<String>,
    /// The ActivityPub id.
    #[serde(default, deserialize_with = "null_default")]
    pub uri: String,
    /// `public`, `unlisted`, `private` or `direct` (kept as text: servers add their own).
    #[serde(default, deserialize_with = "null_default")]
    pub visibility: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sensitive: bool,
    #[serde(default)]
    pub in_reply_to_id: Option<String>,
    /// The status this one reblogs (its own `content` is then empty).
    #[serde(default)]
    pub reblog: Option<Box<Status>>,
    #[serde(default, deserialize_with = "null_default")]
    pub account: Account,
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct Account {
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub username: String,
    /// `user` for accounts of the instance we read from, `user@domain` for remote ones.
    #[serde(default, deserialize_with = "null_default")]
    pub acct: String,
    #[serde(default, deserialize_with = "null_default")]
    pub display_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub bot: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct Tag {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Ids are strings in Mastodon, but some servers send numbers; both become a string.
fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        U(u64),
        I(i64),
    }
    Ok(match Option::<Id>::deserialize(d)? {
        Some(Id::S(s)) => s,
        Some(Id::U(n)) => n.to_string(),
        Some(Id::I(n)) => n.to_string(),
        None => String::new(),
    })
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------

/// Default cap on the bytes of one SSE event (all its field lines together).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen on this stream (it persists across events, as the spec says).
    pub id: Option<String>,
}

/// What [`SseParser::push`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseFrame {
    Event(SseEvent),
    /// A comment line (`:thump` from Mastodon, `:)` on connect): the connection is alive.
    /// Carries the text after the colon.
    Heartbeat(String),
    /// An event that grew beyond the cap and was discarded. `event` is its name if the
    /// `event:` line came before the cap was hit; `bytes` is how many bytes it had.
    Dropped {
        event: Option<String>,
        bytes: usize,
    },
}

/// A sans-IO parser of a `text/event-stream` body (WHATWG HTML §9.2): feed it chunks as
/// they arrive, at any boundary, and it returns the frames they complete.
///
/// Lines end in CR, LF or CRLF (a CRLF split across two chunks counts once). Bytes are
/// decoded as UTF-8 per complete line, so a chunk may end inside a character; invalid
/// sequences become U+FFFD, as the spec says. A leading BOM is skipped. `retry:` is kept
/// in [`SseParser::retry_ms`]. An event whose field lines exceed the cap is discarded
/// while it streams in (memory stays bounded) and reported as [`SseFrame::Dropped`] at its
/// blank line. Completed comment lines (heartbeats) do not count towards the cap of the
/// event around them; a single line longer than the cap still trips it.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes of the line being read (empty while dropping).
    line: Vec<u8>,
    /// How many bytes the current line has, even when they are not kept.
    line_len: usize,
    /// The previous chunk ended in CR: a leading LF of the next one belongs to it.
    skip_lf: bool,
    /// No line completed yet (the BOM may only appear on the first).
    first_line: bool,
    event: String,
    data: String,
    has_data: bool,
    /// Bytes of the completed field lines of the current event.
    event_bytes: usize,
    dropping: bool,
    dropped_name: Option<String>,
    last_id: Option<String>,
    retry_ms: Option<u64>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            line_len: 0,
            skip_lf: false,
            first_line: true,
            event: String::new(),
            data: String::new(),
            has_data: false,
            event_bytes: 0,
            dropping: false,
            dropped_name: None,
            last_id: None,
            retry_ms: None,
        }
    }

    /// The last `id:` received: send it as `Last-Event-ID` when reconnecting.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection delay the server asked for with `retry:`.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Bytes currently held for the incomplete event and line.
    pub fn buffered_bytes(&self) -> usize {
        self.line.len() + self.data.len() + self.event.len()
    }

    /// Forgets the incomplete event (the connection was lost: per the spec, an event not
    /// ended by a blank line is never dispatched). Keeps the last event id and retry.
    pub fn reset(&mut self) {
        let last_id = self.last_id.take();
        let retry_ms = self.retry_ms;
        *self = Self::with_max_event_bytes(self.max_event_bytes);
        self.last_id = last_id;
        self.retry_ms = retry_ms;
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
            self.skip_lf = false;
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.append(&rest[..i]);
            let cr = rest[i] == b'\r';
            rest = &rest[i + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            self.end_line(&mut frames);
        }
        self.append(rest);
        frames
    }

    fn append(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len();
        if self.dropping {
            self.event_bytes += bytes.len();
            return;
        }
        if self.event_bytes + self.line.len() + bytes.len() > self.max_event_bytes {
            self.start_dropping();
            self.event_bytes += bytes.len();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn start_dropping(&mut self) {
        self.dropping = true;
        self.dropped_name = (!self.event.is_empty()).then(|| std::mem::take(&mut self.event));
        self.event_bytes += self.line.len();
        self.line = Vec::new();
        self.data = String::new();
        self.event = String::new();
    }

    fn end_line(&mut self, frames: &mut Vec<SseFrame>) {
        let len = std::mem::take(&mut self.line_len);
        let first = std::mem::replace(&mut self.first_line, false);
        if len == 0 {
            self.dispatch(frames);
            return;
        }
        if self.dropping {
            return;
        }
        let line = std::mem::take(&mut self.line);
        let mut bytes = &line[..];
        if first {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            if bytes.is_empty() {
                return;
            }
        }
        let text = String::from_utf8_lossy(bytes);
        if let Some(comment) = text.strip_prefix(':') {
            frames.push(SseFrame::Heartbeat(comment.to_owned()));
            return;
        }
        self.event_bytes += bytes.len();
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, frames: &mut Vec<SseFrame>) {
        let bytes = std::mem::take(&mut self.event_bytes);
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let has_data = std::mem::take(&mut self.has_data);
        if std::mem::take(&mut self.dropping) {
            frames.push(SseFrame::Dropped {
                event: self.dropped_name.take(),
                bytes,
            });
        } else if has_data {
            let event = if event.is_empty() {
                "message".to_owned()
            } else {
                event
            };
            frames.push(SseFrame::Event(SseEvent {
                event,
                data,
                id: self.last_id.clone(),
            }));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stream events
// ---------------------------------------------------------------------------------------

/// A Mastodon streaming API event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `update`: a new status.
    Update(Box<Status>),
    /// `status.update`: a status was edited (the payload is the whole new version).
    Edit(Box<Status>),
    /// `delete`: the id of a deleted status.
    Delete(String),
    Heartbeat,
    /// Any other event (`notification`, `filters_changed`, `announcement`…), by name.
    Other(String),
}

/// Maps one SSE frame to a stream event. A [`SseFrame::Dropped`] becomes
/// [`MastodonError::EventTooLarge`] so that the caller reports it like any bad event.
pub fn parse_event(frame: &SseFrame) -> Result<StreamEvent, MastodonError> {
    match frame {
        SseFrame::Heartbeat(_) => Ok(StreamEvent::Heartbeat),
        SseFrame::Dropped { event, bytes } => Err(MastodonError::EventTooLarge {
            event: event.clone(),
            bytes: *bytes,
        }),
        SseFrame::Event(e) => parse_payload(&e.event, &e.data),
    }
}

/// Maps a message of the WebSocket flavour of the streaming API
/// (`{"stream":["public"],"event":"update","payload":"<status as a JSON string>"}`).
pub fn parse_websocket_message(text: &str) -> Result<StreamEvent, MastodonError> {
    #[derive(Deserialize)]
    struct Envelope {
        event: String,
        #[serde(default)]
        payload: Option<serde_json::Value>,
    }
    let env: Envelope =
        serde_json::from_str(text).map_err(|e| json_error("websocket", &e, text))?;
    let payload = match env.payload {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    };
    parse_payload(&env.event, &payload)
}

/// The payload of `update` is a status as JSON; it is accepted either as the object itself
/// (what the SSE endpoint sends) or as a JSON string holding that object (the WebSocket
/// form, and what some proxies re-encode to).
fn parse_payload(event: &str, data: &str) -> Result<StreamEvent, MastodonError> {
    match event {
        "update" => Ok(StreamEvent::Update(Box::new(parse_status_payload(
            event, data,
        )?))),
        "status.update" => Ok(StreamEvent::Edit(Box::new(parse_status_payload(
            event, data,
        )?))),
        "delete" => {
            let raw = data.trim();
            let id = if raw.starts_with('"') {
                serde_json::from_str::<String>(raw).map_err(|e| json_error(event, &e, data))?
            } else {
                raw.to_owned()
            };
            if id.is_empty() {
                return Err(MastodonError::EmptyDelete);
            }
            Ok(StreamEvent::Delete(id))
        }
        other => Ok(StreamEvent::Other(other.to_owned())),
    }
}

fn parse_status_payload(event: &str, data: &str) -> Result<Status, MastodonError> {
    let inner;
    let mut json = data.trim_start();
    if json.starts_with('"') {
        inner = serde_json::from_str::<String>(json).map_err(|e| json_error(event, &e, data))?;
        json = &inner;
    }
    serde_json::from_str(json).map_err(|e| json_error(event, &e, data))
}

fn json_error(event: &str, e: &serde_json::Error, data: &str) -> MastodonError {
    MastodonError::Json {
        event: event.to_owned(),
        message: e.to_string(),
        excerpt: data.chars().take(120).collect(),
    }
}

// ---------------------------------------------------------------------------------------
// HTML to text
// ---------------------------------------------------------------------------------------

/// The plain text of status HTML. Tags are removed and their text kept — including
/// Mastodon's `invisible` and `ellipsis` spans inside links, so a shortened link reads as
/// its full URL. `<br>` becomes a line break, paragraphs (`<p>`, and the block elements
/// remote servers may send: `div`, `blockquote`, headings, `pre`…) are separated by a
/// blank line, list items by a line break. Runs of whitespace collapse to one space as a browser shows them (except
/// inside `<pre>`); `script`/`style` content and comments are dropped. Entities are
/// decoded (named: the common set in [`named_entity`]; numeric: decimal and hex); an
/// unknown or invalid entity stays as written. A `<` that does not start a tag is text.
/// The result is trimmed.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    let mut pre = 0usize;
    let bytes = html.as_bytes();
    while i < html.len() {
        let rest = &html[i..];
        match bytes[i] {
            b'<' => {
                if let Some(skip) = rest.strip_prefix("<!--") {
                    i += 4 + skip.find("-->").map_or(skip.len(), |e| e + 3);
                    continue;
                }
                let Some((tag, len)) = parse_tag(rest) else {
                    push_text_char(&mut out, '<', pre > 0);
                    i += 1;
                    continue;
                };
                i += len;
                match (tag.name.as_str(), tag.closing) {
                    ("br", _) => {
                        trim_trailing_spaces(&mut out);
                        out.push('\n');
                    }
                    ("script" | "style", false) => {
                        let close = format!("</{}", tag.name);
                        let lower = html[i..].to_ascii_lowercase();
                        i += match lower.find(&close) {
                            Some(p) => {
                                p + html[i + p..]
                                    .find('>')
                                    .map_or(html.len() - i - p, |g| g + 1)
                            }
                            None => html.len() - i,
                        };
                    }
                    (name, closing) if is_block(name) => {
                        if name == "pre" {
                            pre = if closing {
                                pre.saturating_sub(1)
                            } else {
                                pre + 1
                            };
                        }
                        if name == "li" {
                            ensure_newlines(&mut out, 1);
                        } else {
                            ensure_newlines(&mut out, 2);
                        }
                    }
                    _ => {}
                }
            }
            b'&' => {
                let (c, len) = decode_entity(rest);
                match c {
                    Some(c) => out.push(c),
                    None => out.push_str(&rest[..len]),
                }
                i += len;
            }
            _ => {
                let c = rest.chars().next().unwrap_or('\u{FFFD}');
                push_text_char(&mut out, c, pre > 0);
                i += c.len_utf8();
            }
        }
    }
    out.trim().to_owned()
}

struct Tag0 {
    name: String,
    closing: bool,
}

/// Parses the tag at the start of `s` (which begins with `<`): its lower-cased name, whether
/// it closes, and its length including `>` (quoted attribute values may hold `>`).
fn parse_tag(s: &str) -> Option<(Tag0, usize)> {
    let b = s.as_bytes();
    let mut j = 1;
    let closing = b.get(j) == Some(&b'/');
    if closing {
        j += 1;
    }
    let bang = !closing && b.get(j) == Some(&b'!');
    if !bang && !b.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let start = j;
    while b
        .get(j)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'!' || *c == b'-')
    {
        j += 1;
    }
    let name = s[start..j].to_ascii_lowercase();
    let mut quote = None;
    let mut k = j;
    while k < b.len() {
        match (quote, b[k]) {
            (None, b'>') => return Some((Tag0 { name, closing }, k + 1)),
            (None, q @ (b'"' | b'\'')) => quote = Some(q),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        k += 1;
    }
    // An unterminated quote: fall back to the first `>`; no `>` at all: not a tag.
    let end = s[j..].find('>')? + j;
    Some((Tag0 { name, closing }, end + 1))
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "li"
            | "ul"
            | "ol"
            | "blockquote"
            | "pre"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "hr"
            | "table"
            | "tr"
    )
}

fn push_text_char(out: &mut String, c: char, pre: bool) {
    if pre || !c.is_ascii_whitespace() {
        out.push(c);
    } else if !(out.is_empty() || out.ends_with([' ', '\n'])) {
        out.push(' ');
    }
}

fn trim_trailing_spaces(out: &mut String) {
    let n = out.trim_end_matches(' ').len();
    out.truncate(n);
}

/// Makes `out` end with `n` line breaks (none at the very start).
fn ensure_newlines(out: &mut String, n: usize) {
    trim_trailing_spaces(out);
    if out.is_empty() {
        return;
    }
    let have = out.len() - out.trim_end_matches('\n').len();
    for _ in have..n {
        out.push('\n');
    }
}

/// Decodes the entity at the start of `s` (which begins with `&`). Returns the character,
/// or `None` when it is not a valid entity, and how many bytes to consume (just the `&`
/// when invalid, so the rest is read again as text).
fn decode_entity(s: &str) -> (Option<char>, usize) {
    let body = &s[1..];
    let Some(semi) = body.bytes().take(33).position(|b| b == b';') else {
        return (None, 1);
    };
    let name = &body[..semi];
    let c = match name.strip_prefix('#') {
        Some(num) => {
            let n = match num.strip_prefix(['x', 'X']) {
                Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u32::from_str_radix(hex, 16).ok()
                }
                None if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) => {
                    num.parse().ok()
                }
                _ => None,
            };
            n.filter(|&n| n != 0).and_then(char::from_u32)
        }
        None => named_entity(name),
    };
    match c {
        Some(c) => (Some(c), semi + 2),
        None => (None, 1),
    }
}

/// The named entities decoded by [`html_to_text`]: the XML five, `nbsp`, and the
/// typographic and Latin-1 ones that appear in posts. Others stay as written.
pub fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        "times" => '×',
        "divide" => '÷',
        "plusmn" => '±',
        "iexcl" => '¡',
        "iquest" => '¿',
        "shy" => '\u{ad}',
        "zwj" => '\u{200d}',
        "zwnj" => '\u{200c}',
        "agrave" => 'à',
        "aacute" => 'á',
        "acirc" => 'â',
        "auml" => 'ä',
        "ccedil" => 'ç',
        "egrave" => 'è',
        "eacute" => 'é',
        "ecirc" => 'ê',
        "euml" => 'ë',
        "iuml" => 'ï',
        "ntilde" => 'ñ',
        "ouml" => 'ö',
        "oacute" => 'ó',
        "uuml" => 'ü',
        "uacute" => 'ú',
        "szlig" => 'ß',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "Eacute" => 'É',
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Post
// ---------------------------------------------------------------------------------------

/// A status reduced to what the sentiment pipeline classifies and stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// The host we read the status from (`mastodon.social`), see [`instance_host`].
    pub instance: String,
    /// The status id on that instance.
    pub status_id: String,
    /// As the server sent it (RFC 3339, UTC).
    pub created_at: String,
    /// Always `user@domain`: Mastodon's `acct` is a bare `user` for local accounts, so the
    /// instance host is appended then. This keeps one author one name whichever instance
    /// the post was read from.
    pub username: String,
    pub bot: bool,
    pub language: Option<String>,
    /// Plain text: the content warning (if any), a blank line, then the body.
    pub text: String,
    /// The status page, falling back to its ActivityPub uri.
    pub url: Option<String>,
    pub edited_at: Option<String>,
    /// The status reached us as a reblog (boost).
    pub reblog: bool,
}

impl Post {
    /// The post of a status read from `instance` (a host or URL, normalised by
    /// [`instance_host`]).
    ///
    /// A reblog wrapper has no text of its own, so the post describes the reblogged
    /// (original) status — its id, author, time, text and url — with `reblog: true`. The
    /// same original reblogged many times thus keeps one `(instance, status_id)`, and a
    /// table deduplicating on that key classifies its text once. (Mastodon's public
    /// timelines do not carry reblogs; whether to skip them elsewhere is a config filter.)
    pub fn from_status(instance: &str, status: &Status) -> Post {
        let instance = instance_host(instance);
        let (s, reblog) = match &status.reblog {
            Some(inner) => (&**inner, true),
            None => (status, false),
        };
        let acct = s.account.acct.trim_start_matches('@');
        let username = if acct.contains('@') || instance.is_empty() {
            acct.to_owned()
        } else {
            format!("{acct}@{instance}")
        };
        let body = html_to_text(&s.content);
        let spoiler = s.spoiler_text.trim();
        let text = match (spoiler.is_empty(), body.is_empty()) {
            (true, _) => body,
            (false, true) => spoiler.to_owned(),
            (false, false) => format!("{spoiler}\n\n{body}"),
        };
        let url = s
            .url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| (!s.uri.is_empty()).then(|| s.uri.clone()));
        Post {
            instance,
            status_id: s.id.clone(),
            created_at: s.created_at.clone(),
            username,
            bot: s.account.bot,
            language: s.language.clone().filter(|l| !l.is_empty()),
            text,
            url,
            edited_at: s.edited_at.clone(),
            reblog,
        }
    }
}

/// The lower-case host of an instance given as `mastodon.social`, `https://mastodon.social/`
/// or `https://user@mastodon.social:443/path` (port kept, userinfo and path dropped).
pub fn instance_host(instance: &str) -> String {
    let s = instance.trim();
    let s = s.split_once("://").map_or(s, |(_, r)| r);
    let s = s.split(['/', '?', '#']).next().unwrap_or("");
    let s = s.rsplit_once('@').map_or(s, |(_, h)| h);
    s.to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------
// Ids and pagination
// ---------------------------------------------------------------------------------------

/// Orders Mastodon ids: numeric strings (snowflakes of varying length) by value — length
/// first, ignoring leading zeros, then digit by digit. This is a total order, safe for
/// sorting: numeric ids sort before non-numeric ones, non-numeric ids (other servers use
/// ULIDs or flake ids, which sort as text) in string order, and equal values written
/// differently (`007`, `7`) by their text.
pub fn compare_ids(a: &str, b: &str) -> Ordering {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (num(a), num(b)) {
        (true, true) => {
            let (x, y) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            x.len()
                .cmp(&y.len())
                .then_with(|| x.cmp(y))
                .then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// The greatest id by [`compare_ids`].
pub fn max_id<'a, I: IntoIterator<Item = &'a str>>(ids: I) -> Option<&'a str> {
    ids.into_iter().max_by(|a, b| compare_ids(a, b))
}

/// The links of a `Link` header as `(url, rel)` pairs, one per rel value (a link with
/// `rel="prev next"` gives two). Rel values are lower-cased. Links without `<url>` or rel
/// are skipped; commas inside `<…>` or quotes do not split.
pub fn parse_link_header(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let url = after[..close].trim();
        let params_start = &after[close + 1..];
        // Parameters run to the next comma outside quotes.
        let mut end = params_start.len();
        let mut in_quote = false;
        for (k, c) in params_start.char_indices() {
            match c {
                '"' => in_quote = !in_quote,
                ',' if !in_quote => {
                    end = k;
                    break;
                }
                _ => {}
            }
        }
        for param in params_start[..end].split(';') {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("rel") {
                for rel in v.trim().trim_matches('"').split_ascii_whitespace() {
                    out.push((url.to_owned(), rel.to_ascii_lowercase()));
                }
            }
        }
        rest = &params_start[end..];
    }
    out
}

/// The url of the first link with this rel (`"next"`: older statuses, `"prev"`: newer).
pub fn link_for_rel(header: &str, rel: &str) -> Option<String> {
    parse_link_header(header)
        .into_iter()
        .find(|(_, r)| r.eq_ignore_ascii_case(rel))
        .map(|(u, _)| u)
}

/// The value of a query parameter of a URL (`min_id` of a `prev` link), undecoded except
/// for `%XX` escapes and `+`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if let (Some(h), Some(l)) = (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------

/// What the rate-limit headers of a response say, relative to the caller's "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// `X-RateLimit-Limit`.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u64>,
    /// Seconds until `X-RateLimit-Reset` (an ISO 8601 time), 0 when it has passed.
    pub reset_in_secs: Option<u64>,
    /// `Retry-After` in seconds (given as seconds or as an HTTP date).
    pub retry_after_secs: Option<u64>,
}

impl RateLimit {
    /// Reads the headers through `header`, which is asked for lower-case names
    /// (`retry-after`, `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`)
    /// and returns the value if present. `now_unix` is the caller's clock, in seconds.
    /// Unparsable values are treated as absent.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>, now_unix: i64) -> RateLimit {
        let num = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        RateLimit {
            limit: num("x-ratelimit-limit"),
            remaining: num("x-ratelimit-remaining"),
            reset_in_secs: header("x-ratelimit-reset")
                .and_then(parse_rfc3339_unix)
                .map(|t| secs_until(t, now_unix)),
            retry_after_secs: header("retry-after").and_then(|v| parse_retry_after(v, now_unix)),
        }
    }

    /// How long to wait before the next request, if at all: `Retry-After` when given,
    /// else the time to the reset when no requests remain.
    pub fn wait_secs(&self) -> Option<u64> {
        self.retry_after_secs.or(match self.remaining {
            Some(0) => Some(self.reset_in_secs.unwrap_or(0)),
            _ => None,
        })
    }
}

fn secs_until(t: i64, now: i64) -> u64 {
    u64::try_from(t.saturating_sub(now)).unwrap_or(0)
}

/// `Retry-After` as seconds from now: delay-seconds, or an HTTP date (IMF-fixdate).
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse().unwrap_or(u64::MAX));
    }
    parse_http_date_unix(v).map(|t| secs_until(t, now_unix))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
pub fn parse_http_date_unix(s: &str) -> Option<i64> {
    let rest = s.trim().split_once(", ").map_or(s.trim(), |(_, r)| r);
    let mut it = rest.split_ascii_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()?.to_ascii_lowercase().as_str() {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        "dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let (h, m, sec) = parse_hms(it.next()?)?;
    if !matches!(it.next(), Some("GMT") | Some("UTC") | None) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// An RFC 3339 / ISO 8601 time (`2024-01-31T12:35:00.123Z`, `…+02:00`, space instead of
/// `T` accepted) as Unix seconds, fractions dropped.
pub fn parse_rfc3339_unix(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 19 || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
        return None;
    }
    let (date, time) = (&s[..10], &s[11..]);
    if !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return None;
    }
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let da: u32 = d.next()?.parse().ok()?;
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || time.len() < 8
        || !time.is_char_boundary(8)
    {
        return None;
    }
    let (h, mi, sec) = parse_hms(&time[..8])?;
    let mut tz = &time[8..];
    if let Some(frac) = tz.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        tz = &frac[n..];
    }
    let offset = match tz {
        "Z" | "z" | "" => 0,
        _ => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = tz[1..].split_once(':').unwrap_or((&tz[1..], "0"));
            let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

fn parse_hms(s: &str) -> Option<(i64, i64, i64)> {
    let mut it = s.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || h > 24 || m > 59 || sec > 60 || h < 0 || m < 0 || sec < 0 {
        return None;
    }
    Some((h, m, sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = r#"{
        "id": "113500000000000001",
        "created_at": "2024-11-20T10:00:00.000Z",
        "edited_at": null,
        "in_reply_to_id": null,
        "sensitive": false,
        "spoiler_text": "",
        "visibility": "public",
        "language": "en",
        "uri": "https://mastodon.social/users/alice/statuses/113500000000000001",
        "url": "https://mastodon.social/@alice/113500000000000001",
        "replies_count": 0,
        "content": "<p>Hello &amp; welcome!</p><p>Second<br>line</p>",
        "reblog": null,
        "application": {"name": "Web", "website": null},
        "account": {"id": "1", "username": "alice", "acct": "alice", "display_name": "Alice",
                    "bot": false, "url": "https://mastodon.social/@alice", "emojis": []},
        "media_attachments": [],
        "tags": [{"name": "rust", "url": "https://mastodon.social/tags/rust"}],
        "poll": null
    }"#;

    fn status() -> Status {
        serde_json::from_str(STATUS).expect("fixture parses")
    }

    fn events(frames: &[SseFrame]) -> Vec<(&str, &str)> {
        frames
            .iter()
            .filter_map(|f| match f {
                SseFrame::Event(e) => Some((e.event.as_str(), e.data.as_str())),
                _ => None,
            })
            .collect()
    }

    // -- entities --------------------------------------------------------------------

    #[test]
    fn status_parses_and_ignores_unknown_fields() {
        let s = status();
        assert_eq!(s.id, "113500000000000001");
        assert_eq!(s.account.acct, "alice");
        assert_eq!(s.language.as_deref(), Some("en"));
        assert_eq!(s.tags[0].name, "rust");
        assert!(s.reblog.is_none());
    }

    #[test]
    fn status_tolerates_nulls_missing_fields_and_numeric_ids() {
        let s: Status = serde_json::from_str(
            r#"{"id": 42, "spoiler_text": null, "content": null, "account": {"id": 7, "bot": null}}"#,
        )
        .expect("tolerant parse");
        assert_eq!(s.id, "42");
        assert_eq!(s.account.id, "7");
        assert_eq!(s.content, "");
        assert!(!s.account.bot);
        assert!(
            serde_json::from_str::<Status>(r#"{"content": "x"}"#).is_err(),
            "id is required"
        );
    }

    // -- SSE -------------------------------------------------------------------------

    #[test]
    fn sse_basic_event_and_heartbeat() {
        let mut p = SseParser::new();
        let f = p.push(b":)\n\nevent: update\ndata: {\"a\":1}\n\n:thump\n");
        assert_eq!(f[0], SseFrame::Heartbeat(")".into()));
        assert_eq!(events(&f), vec![("update", "{\"a\":1}")]);
        assert_eq!(f[2], SseFrame::Heartbeat("thump".into()));
    }

    #[test]
    fn sse_multiline_data_joined_with_newline() {
        let mut p = SseParser::new();
        let f = p.push(b"data: one\ndata:two\ndata\ndata:  three\n\n");
        assert_eq!(events(&f), vec![("message", "one\ntwo\n\n three")]);
    }

    #[test]
    fn sse_all_line_endings() {
        for sep in [&b"\n"[..], b"\r", b"\r\n"] {
            let mut input = Vec::new();
            for line in [&b"event: delete"[..], b"data: 5", b"", b"data: 6", b""] {
                input.extend_from_slice(line);
                input.extend_from_slice(sep);
            }
            let mut p = SseParser::new();
            let f = p.push(&input);
            assert_eq!(
                events(&f),
                vec![("delete", "5"), ("message", "6")],
                "sep {sep:?}"
            );
        }
    }

    #[test]
    fn sse_any_chunking_gives_the_same_frames() {
        let input = "\u{feff}:hi\r\nevent: update\r\ndata: caf\u{e9} \u{1f600}\r\nid: 9\r\n\r\n\
                     event:delete\rdata:12\r\r:thump\n\ndata: x\n\n"
            .as_bytes();
        let whole = SseParser::new().push(input);
        assert_eq!(
            events(&whole),
            vec![
                ("update", "caf\u{e9} \u{1f600}"),
                ("delete", "12"),
                ("message", "x")
            ]
        );
        for size in 1..input.len() {
            let mut p = SseParser::new();
            let mut got = Vec::new();
            for c in input.chunks(size) {
                got.extend(p.push(c));
            }
            assert_eq!(got, whole, "chunk size {size}");
        }
        // Every two-way split, including inside the emoji and between CR and LF.
        for cut in 0..=input.len() {
            let mut p = SseParser::new();
            let mut got = p.push(&input[..cut]);
            got.extend(p.push(&input[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn sse_crlf_split_counts_once() {
        let mut p = SseParser::new();
        let mut f = p.push(b"data: a\r");
        f.extend(p.push(b""));
        f.extend(p.push(b"\n\r"));
        f.extend(p.push(b"\ndata: b\n\n"));
        assert_eq!(events(&f), vec![("message", "a"), ("message", "b")]);
    }

    #[test]
    fn sse_id_persists_and_retry_is_kept() {
        let mut p = SseParser::new();
        let f = p.push(b"id: 7\ndata: a\n\ndata: b\n\nretry: 2500\nretry: x\n\n");
        let ids: Vec<_> = f
            .iter()
            .filter_map(|f| match f {
                SseFrame::Event(e) => Some(e.id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![Some("7".into()), Some("7".into())]);
        assert_eq!(p.last_event_id(), Some("7"));
        assert_eq!(p.retry_ms(), Some(2500));
    }

    #[test]
    fn sse_event_without_data_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.push(b"event: update\n\n\n\n").is_empty());
        // ...and its name does not leak into the next event.
        assert_eq!(events(&p.push(b"data: x\n\n")), vec![("message", "x")]);
    }

    #[test]
    fn sse_invalid_utf8_is_replaced_not_fatal() {
        let mut p = SseParser::new();
        let f = p.push(b"data: \xff\xfe ok\n\n");
        assert_eq!(events(&f), vec![("message", "\u{fffd}\u{fffd} ok")]);
    }

    #[test]
    fn sse_oversized_event_is_dropped_and_reported_with_bounded_memory() {
        let mut p = SseParser::with_max_event_bytes(64);
        let mut f = p.push(b"event: update\ndata: ");
        for _ in 0..1000 {
            f.extend(p.push(&[b'x'; 100]));
            assert!(
                p.buffered_bytes() <= 64,
                "buffer grew to {}",
                p.buffered_bytes()
            );
        }
        f.extend(p.push(b"\ndata: more\n\nevent: delete\ndata: 1\n\n"));
        match &f[0] {
            SseFrame::Dropped { event, bytes } => {
                assert_eq!(event.as_deref(), Some("update"));
                assert!(*bytes > 100_000);
            }
            other => panic!("expected Dropped, got {other:?}"),
        }
        assert_eq!(
            events(&f),
            vec![("delete", "1")],
            "the parser recovers after the blank line"
        );
        assert!(matches!(
            parse_event(&f[0]),
            Err(MastodonError::EventTooLarge { .. })
        ));
    }

    #[test]
    fn sse_heartbeats_do_not_count_towards_the_cap() {
        let mut p = SseParser::with_max_event_bytes(32);
        let mut f = Vec::new();
        for _ in 0..100 {
            f.extend(p.push(b":thump\n"));
        }
        f.extend(p.push(b"data: fits\n\n"));
        assert_eq!(events(&f), vec![("message", "fits")]);
    }

    #[test]
    fn sse_reset_discards_partial_event_and_keeps_id() {
        let mut p = SseParser::new();
        p.push(b"id: 3\ndata: a\n\ndata: half");
        p.reset();
        assert_eq!(p.last_event_id(), Some("3"));
        assert_eq!(events(&p.push(b"data: b\n\n")), vec![("message", "b")]);
    }

    // -- stream events ---------------------------------------------------------------

    fn frame(event: &str, data: &str) -> SseFrame {
        SseFrame::Event(SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
        })
    }

    #[test]
    fn parse_update_edit_delete_other() {
        let compact =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(STATUS).unwrap())
                .unwrap();
        match parse_event(&frame("update", &compact)) {
            Ok(StreamEvent::Update(s)) => assert_eq!(s.id, "113500000000000001"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_event(&frame("status.update", &compact)),
            Ok(StreamEvent::Edit(_))
        ));
        assert_eq!(
            parse_event(&frame("delete", "1234")),
            Ok(StreamEvent::Delete("1234".into()))
        );
        assert_eq!(
            parse_event(&frame("delete", "\"1234\"")),
            Ok(StreamEvent::Delete("1234".into()))
        );
        assert_eq!(
            parse_event(&frame("delete", " ")),
            Err(MastodonError::EmptyDelete)
        );
        assert_eq!(
            parse_event(&frame("notification", "{}")),
            Ok(StreamEvent::Other("notification".into()))
        );
        assert_eq!(
            parse_event(&SseFrame::Heartbeat("thump".into())),
            Ok(StreamEvent::Heartbeat)
        );
    }

    #[test]
    fn parse_update_given_as_json_string() {
        let compact =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(STATUS).unwrap())
                .unwrap();
        let as_string = serde_json::to_string(&compact).unwrap();
        assert!(matches!(
            parse_event(&frame("update", &as_string)),
            Ok(StreamEvent::Update(_))
        ));
    }

    #[test]
    fn malformed_update_names_the_event() {
        for (ev, data) in [
            ("update", "{not json"),
            ("status.update", "[]"),
            ("update", "\"{bad\""),
            ("update", ""),
        ] {
            match parse_event(&frame(ev, data)) {
                Err(e @ MastodonError::Json { .. }) => {
                    assert!(e.to_string().contains(&format!("`{ev}`")), "{e}");
                }
                other => panic!("{ev} {data:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn websocket_messages() {
        let compact =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(STATUS).unwrap())
                .unwrap();
        let msg = serde_json::json!({"stream": ["public"], "event": "update", "payload": compact})
            .to_string();
        assert!(matches!(
            parse_websocket_message(&msg),
            Ok(StreamEvent::Update(_))
        ));
        let del = r#"{"stream":["public"],"event":"delete","payload":"99"}"#;
        assert_eq!(
            parse_websocket_message(del),
            Ok(StreamEvent::Delete("99".into()))
        );
        assert!(parse_websocket_message("nope").is_err());
    }

    // -- HTML ------------------------------------------------------------------------

    #[test]
    fn html_paragraphs_and_breaks() {
        assert_eq!(html_to_text("<p>Hello</p><p>World</p>"), "Hello\n\nWorld");
        assert_eq!(html_to_text("<p>a<br>b<br/>c<br />d</p>"), "a\nb\nc\nd");
        assert_eq!(html_to_text("<p>  spaced \n  out  </p>"), "spaced out");
        assert_eq!(
            html_to_text("<ul><li>one</li><li>two</li></ul>"),
            "one\ntwo"
        );
    }

    #[test]
    fn html_mastodon_links_keep_full_url() {
        let html = r#"<p>see <a href="https://example.com/long" rel="nofollow noopener" target="_blank"><span class="invisible">https://</span><span class="ellipsis">example.com/lo</span><span class="invisible">ng</span></a> now</p>"#;
        assert_eq!(html_to_text(html), "see https://example.com/long now");
        let mention = r#"<p><span class="h-card"><a href="https://x.y/@bob" class="u-url mention">@<span>bob</span></a></span> hi <a href="https://x.y/tags/rust" class="mention hashtag" rel="tag">#<span>rust</span></a></p>"#;
        assert_eq!(html_to_text(mention), "@bob hi #rust");
    }

    #[test]
    fn html_entities() {
        assert_eq!(
            html_to_text("a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#39; &apos;f&apos;"),
            "a & b <c> \"d\" 'e' 'f'"
        );
        assert_eq!(
            html_to_text("it&#8217;s &#x1F600; &#X1f600;"),
            "it\u{2019}s \u{1f600} \u{1f600}"
        );
        assert_eq!(
            html_to_text("x&nbsp;y &hellip; &mdash; &eacute;"),
            "x\u{a0}y … — é"
        );
        // Invalid or unknown entities stay as written.
        for s in [
            "&bogus;",
            "&amp",
            "& b",
            "&#;",
            "&#x;",
            "&#xZZ;",
            "&#0;",
            "&#xD800;",
            "&#99999999999;",
            "&;",
            "&#-1;",
        ] {
            assert_eq!(html_to_text(s), s, "{s}");
        }
        assert_eq!(html_to_text("&&amp;"), "&&");
    }

    #[test]
    fn html_broken_and_odd_markup() {
        assert_eq!(html_to_text("a < b and c > d"), "a < b and c > d");
        assert_eq!(html_to_text("<p>unclosed <b>bold"), "unclosed bold");
        assert_eq!(html_to_text("trailing <a href=\"x"), "trailing <a href=\"x");
        assert_eq!(html_to_text("<a title=\"1 > 0\">yes</a>"), "yes");
        assert_eq!(html_to_text("x<!-- hidden -->y<!-- open"), "xy");
        assert_eq!(
            html_to_text("<script>alert(1)</script>ok<style>p{}</style>"),
            "ok"
        );
        assert_eq!(html_to_text("<SCRIPT>x</Script>ok"), "ok");
        assert_eq!(html_to_text("<script>never closed"), "");
        assert_eq!(html_to_text("<pre>  keep\n  this</pre>"), "keep\n  this");
        assert_eq!(html_to_text(""), "");
        assert_eq!(html_to_text("<p></p><br>"), "");
        assert_eq!(html_to_text("日本語 <b>テキスト</b>"), "日本語 テキスト");
    }

    // -- Post ------------------------------------------------------------------------

    #[test]
    fn post_from_local_status() {
        let p = Post::from_status("https://Mastodon.Social/", &status());
        assert_eq!(p.instance, "mastodon.social");
        assert_eq!(p.username, "alice@mastodon.social");
        assert_eq!(p.text, "Hello & welcome!\n\nSecond\nline");
        assert_eq!(
            p.url.as_deref(),
            Some("https://mastodon.social/@alice/113500000000000001")
        );
        assert!(!p.reblog && !p.bot);
        assert_eq!(p.created_at, "2024-11-20T10:00:00.000Z");
    }

    #[test]
    fn post_remote_account_keeps_its_domain_and_spoiler_leads() {
        let mut s = status();
        s.account.acct = "bob@other.example".into();
        s.spoiler_text = "politics".into();
        s.url = None;
        let p = Post::from_status("mastodon.social", &s);
        assert_eq!(p.username, "bob@other.example");
        assert_eq!(p.text, "politics\n\nHello & welcome!\n\nSecond\nline");
        assert_eq!(p.url.as_deref(), Some(s.uri.as_str()));
    }

    #[test]
    fn post_of_a_reblog_describes_the_original() {
        let original = status();
        let wrapper = Status {
            id: "999".into(),
            created_at: "2024-11-21T00:00:00Z".into(),
            content: String::new(),
            account: Account {
                acct: "carol".into(),
                bot: true,
                ..Account::default()
            },
            reblog: Some(Box::new(original.clone())),
            ..Status::default()
        };
        let p = Post::from_status("mastodon.social", &wrapper);
        assert!(p.reblog);
        assert_eq!(p.status_id, original.id);
        assert_eq!(p.username, "alice@mastodon.social");
        assert!(!p.bot);
        assert_eq!(p.text, "Hello & welcome!\n\nSecond\nline");
    }

    #[test]
    fn instance_host_normalises() {
        assert_eq!(instance_host("mastodon.social"), "mastodon.social");
        assert_eq!(
            instance_host(" https://u@Fosstodon.org:8443/api?x#y "),
            "fosstodon.org:8443"
        );
        assert_eq!(instance_host(""), "");
    }

    // -- ids and links ---------------------------------------------------------------

    #[test]
    fn ids_compare_numerically() {
        assert_eq!(compare_ids("9", "10"), Ordering::Less);
        assert_eq!(
            compare_ids("113500000000000002", "113500000000000001"),
            Ordering::Greater
        );
        assert_eq!(compare_ids("100", "100"), Ordering::Equal);
        assert_eq!(compare_ids("007", "8"), Ordering::Less);
        assert_eq!(compare_ids("abc", "abd"), Ordering::Less);
        assert_eq!(compare_ids("10", "1a"), Ordering::Less);
        assert_eq!(max_id(["5", "1000", "999", "20"]), Some("1000"));
        assert_eq!(max_id(std::iter::empty()), None);
    }

    #[test]
    fn id_order_is_total_so_sorting_never_panics() {
        let mut ids: Vec<&str> = vec![
            "10", "9", "1a", "", "007", "7", "a", "Z", "100", "0", "9a", "-1",
        ];
        ids.sort_by(|a, b| compare_ids(a, b));
        for w in ids.windows(2) {
            assert_ne!(compare_ids(w[0], w[1]), Ordering::Greater, "{w:?}");
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(compare_ids(a, b), compare_ids(b, a).reverse());
                for c in &ids {
                    if compare_ids(a, b).is_le() && compare_ids(b, c).is_le() {
                        assert!(compare_ids(a, c).is_le(), "{a} {b} {c}");
                    }
                }
            }
        }
    }

    #[test]
    fn link_header_prev_next() {
        let h = r#"<https://x/api/v1/timelines/public?min_id=123>; rel="prev", <https://x/api/v1/timelines/public?max_id=100>; rel="next""#;
        assert_eq!(
            parse_link_header(h),
            vec![
                (
                    "https://x/api/v1/timelines/public?min_id=123".into(),
                    "prev".into()
                ),
                (
                    "https://x/api/v1/timelines/public?max_id=100".into(),
                    "next".into()
                ),
            ]
        );
        let next = link_for_rel(h, "next").unwrap();
        assert_eq!(query_param(&next, "max_id").as_deref(), Some("100"));
        let prev = link_for_rel(h, "PREV").unwrap();
        assert_eq!(query_param(&prev, "min_id").as_deref(), Some("123"));
        assert_eq!(query_param(&prev, "max_id"), None);
    }

    #[test]
    fn link_header_odd_forms() {
        assert_eq!(
            parse_link_header("<https://a/?x=1,2>; title=\"a, b\"; REL=next, <b>;rel=prev"),
            vec![
                ("https://a/?x=1,2".into(), "next".into()),
                ("b".into(), "prev".into())
            ]
        );
        assert_eq!(parse_link_header("<u>; rel=\"prev next\"").len(), 2);
        assert!(parse_link_header("").is_empty());
        assert!(parse_link_header("garbage, <unclosed; rel=next").is_empty());
        assert!(parse_link_header("<u>").is_empty());
        assert_eq!(
            query_param("https://x/?tag=caf%C3%A9+au+lait&a", "tag").as_deref(),
            Some("café au lait")
        );
        assert_eq!(
            query_param("https://x/?a=%zz%4", "a").as_deref(),
            Some("%zz%4")
        );
    }

    // -- rate limits -----------------------------------------------------------------

    #[test]
    fn rate_limit_from_headers() {
        let now = parse_rfc3339_unix("2024-01-31T12:30:00Z").unwrap();
        let headers = [
            ("x-ratelimit-limit", "300"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "2024-01-31T12:35:00.123456Z"),
        ];
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let rl = RateLimit::from_headers(get, now);
        assert_eq!(
            rl,
            RateLimit {
                limit: Some(300),
                remaining: Some(0),
                reset_in_secs: Some(300),
                retry_after_secs: None
            }
        );
        assert_eq!(rl.wait_secs(), Some(300));
        let rl = RateLimit::from_headers(|n| (n == "retry-after").then_some("12"), now);
        assert_eq!(rl.wait_secs(), Some(12));
        let rl = RateLimit::from_headers(|n| (n == "x-ratelimit-remaining").then_some("5"), now);
        assert_eq!(rl.wait_secs(), None);
        let rl = RateLimit::from_headers(|_| Some("garbage"), now);
        assert_eq!(rl, RateLimit::default());
    }

    #[test]
    fn retry_after_forms() {
        let now = parse_http_date_unix("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(now, 784_111_777);
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(60)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(0),
            "past dates wait 0"
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(u64::MAX)
        );
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_rfc3339_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_unix("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(
            parse_rfc3339_unix("1970-01-01 00:00:01.5-00:30"),
            Some(1801)
        );
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01X00:00:00Z",
            "2024-01-01T00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+ab",
            "2024-01-01T00:00:00é",
            "2024-01-01é0:00:00",
        ] {
            assert_eq!(parse_rfc3339_unix(bad), None, "{bad}");
        }
    }

    // -- no panics -------------------------------------------------------------------

    /// xorshift: deterministic pseudo-random bytes without a dependency.
    pub(crate) fn noise(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn random_and_truncated_input_never_panics() {
        let all: Vec<u8> = (0..=255).collect();
        let markup = b"<>/&;#x:\"'=\r\n pab!-event:data:id:retry:\xc3\xa9\xf0\x9f\x98\x80";
        let compact =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(STATUS).unwrap())
                .unwrap();
        let mut inputs: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                noise(
                    i,
                    (i as usize * 7) % 400,
                    if i % 2 == 0 { &all } else { markup },
                )
            })
            .collect();
        let sample = format!("event: update\ndata: {compact}\n\n");
        inputs.extend((0..sample.len()).map(|cut| sample.as_bytes()[..cut].to_vec()));
        for input in &inputs {
            let text = String::from_utf8_lossy(input);
            let _ = html_to_text(&text);
            let _ = parse_link_header(&text);
            let _ = parse_rfc3339_unix(&text);
            let _ = parse_http_date_unix(&text);
            let _ = parse_retry_after(&text, 0);
            let _ = query_param(&text, "a");
            let _ = instance_host(&text);
            let _ = compare_ids(&text, "123");
            let _ = parse_websocket_message(&text);
            for ev in ["update", "status.update", "delete", "x"] {
                let _ = parse_event(&frame(ev, &text));
            }
            let mut p = SseParser::with_max_event_bytes(256);
            for c in input.chunks(3) {
                for f in p.push(c) {
                    let _ = parse_event(&f);
                }
            }
        }
        for cut in 0..compact.len() {
            assert!(
                parse_event(&frame("update", &compact[..cut])).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn escaped_markers_stay_text() {
        // Entities are decoded after tags are stripped: escaped markers are text, not tags.
        assert_eq!(
            html_to_text("<p>&lt;&lt;&lt;POST hi &lt;/post&gt; POST&gt;&gt;&gt;</p>"),
            "<<<POST hi </post> POST>>>"
        );
    }
}
