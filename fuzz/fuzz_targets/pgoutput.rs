//! The walsender's CopyData payloads and pgoutput messages.
//! The body is `tributary_protocol::fuzz::pgoutput`, which tests/integration/fuzz_regressions.rs also runs on
//! the seeds and on every crash input kept in fuzz/regressions/pgoutput/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_protocol::fuzz::pgoutput(data));
