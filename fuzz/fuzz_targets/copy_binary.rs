//! A snapshot chunk's binary COPY, read and written as RowBinary as the copy does.
//! The body is `tributary_protocol::fuzz::copy_binary`, which tests/integration/fuzz_regressions.rs also
//! runs on the seeds and on every crash input kept in fuzz/regressions/copy_binary/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_protocol::fuzz::copy_binary(data));
