//! Mastodon streaming API events: SSE frames and WebSocket messages mapped to
//! [`StreamEvent`]s (new statuses, edits, deletes, heartbeats), and [`MastodonError`], what a
//! bad event is.
//!
//! Must never: panic on a payload a server sends (a malformed event is an error naming the
//! event), or let an event dropped for its size pass unreported (it becomes
//! [`MastodonError::EventTooLarge`]).

use serde::Deserialize;

use super::sse::SseFrame;
use super::status::Status;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mastodon::tests::{frame, STATUS};

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
}
