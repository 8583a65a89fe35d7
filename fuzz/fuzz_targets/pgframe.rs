//! The replication connection's bytes, split into frames as its reader does.
//! The body is `tributary_protocol::fuzz::pgframe`, which tests/integration/fuzz_regressions.rs also runs on
//! the seeds and on every crash input kept in fuzz/regressions/pgframe/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_protocol::fuzz::pgframe(data));
