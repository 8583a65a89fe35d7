//! The Mastodon side of the sentiment pipeline, as pure functions: serde models of the
//! entities we read (`Status`, `Account`), a sans-IO Server-Sent Events parser for the
//! streaming API, the mapping from stream frames to [`StreamEvent`]s, HTML-to-text for
//! status content, the [`Post`] that flows through the pipeline, Mastodon's id order, `Link`
//! header pagination, origins and rate-limit headers (with the backoff after a 429).
//!
//! The generic web parsing, nothing Mastodon-specific, has its own files: `sse` (Server-Sent
//! Events), `link` (`Link` header pagination, query parameters, origins) and `dates` (HTTP and
//! RFC 3339 dates). The Mastodon parts are `status` (entities), `events` (stream events and
//! their errors), `html` (HTML to text), `post`, `ids` and `rate_limit`. All public items are
//! re-exported here: their paths are `mastodon::SseParser`, `mastodon::parse_event`, ….
//!
//! Must never: do I/O or read a clock (the caller passes "now"), panic on anything a server
//! sends (every parser returns an error, `None` or a best-effort value), or buffer an
//! unbounded amount of memory for one stream event (see [`SseParser::with_max_event_bytes`]).

mod dates;
mod events;
mod html;
mod ids;
mod link;
mod post;
mod rate_limit;
mod sse;
mod status;

pub use dates::{parse_http_date_unix, parse_rfc3339_unix};
pub use events::{parse_event, parse_websocket_message, MastodonError, StreamEvent};
pub use html::{html_to_text, named_entity};
pub use ids::{compare_ids, max_id};
pub use link::{link_for_rel, origin, parse_link_header, query_param, same_origin, Origin};
pub use post::{instance_host, Post};
pub use rate_limit::{
    backoff_secs, parse_retry_after, RateLimit, BACKOFF_INITIAL_SECS, BACKOFF_MAX_SECS,
};
pub use sse::{SseEvent, SseFrame, SseParser, DEFAULT_MAX_EVENT_BYTES};
pub use status::{Account, Status, Tag};

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const STATUS: &str = r#"{
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

    pub(super) fn status() -> Status {
        serde_json::from_str(STATUS).expect("fixture parses")
    }

    pub(super) fn frame(event: &str, data: &str) -> SseFrame {
        SseFrame::Event(SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
        })
    }

    // -- no panics -------------------------------------------------------------------

    pub(crate) use crate::testing::noise;

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
            let _ = same_origin(&text, "https://a.example/");
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
}
