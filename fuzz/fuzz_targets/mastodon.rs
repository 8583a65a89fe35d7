//! The Mastodon streaming API as it reaches us: SSE bytes in arbitrary chunks, each event
//! parsed (statuses, deletes, edits), every status's HTML turned into text; the same bytes
//! as a WebSocket message.
//! The body is `tributary_protocol::fuzz::mastodon`, which tests/integration/fuzz_regressions.rs also runs on
//! the seeds and on every crash input kept in fuzz/regressions/mastodon/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_protocol::fuzz::mastodon(data));
