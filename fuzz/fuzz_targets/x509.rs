//! A TLS server's certificate (DER) through the X.509 reader.
//! The body is `tributary_protocol::fuzz::x509`, which tests/integration/fuzz_regressions.rs also runs on
//! the seeds and on every crash input kept in fuzz/regressions/x509/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_protocol::fuzz::x509(data));
