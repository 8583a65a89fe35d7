//! The Mastodon streaming API as it reaches us: SSE bytes in arbitrary chunks, each event
//! parsed (statuses, deletes, edits), every status's HTML turned into text; the same bytes
//! as a WebSocket message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tributary::protocol::mastodon::{html_to_text, parse_event, parse_websocket_message, SseParser};

fuzz_target!(|data: &[u8]| {
    let mut sse = SseParser::with_max_event_bytes(64 * 1024);
    // Chunk boundaries come from the data itself, so the fuzzer explores them too.
    let step = data.first().map_or(1, |b| (*b as usize % 17) + 1);
    for chunk in data.chunks(step) {
        for frame in sse.push(chunk) {
            let _ = parse_event(&frame);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_websocket_message(text);
        let _ = html_to_text(text);
    }
});
