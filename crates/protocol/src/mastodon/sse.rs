//! A sans-IO parser of Server-Sent Events (`text/event-stream`, WHATWG HTML §9.2): the
//! transport of Mastodon's streaming API, but nothing in it is Mastodon-specific. Bytes go in
//! as chunks split at any boundary, [`SseFrame`]s come out.
//!
//! Must never: do I/O, panic on any bytes, or buffer an unbounded amount of memory for one
//! event (see [`SseParser::with_max_event_bytes`]).

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mastodon::{parse_event, MastodonError};

    fn events(frames: &[SseFrame]) -> Vec<(&str, &str)> {
        frames
            .iter()
            .filter_map(|f| match f {
                SseFrame::Event(e) => Some((e.event.as_str(), e.data.as_str())),
                _ => None,
            })
            .collect()
    }

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
}
