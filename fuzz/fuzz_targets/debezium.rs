//! Debezium envelopes as a Kafka source reads them: key and value split at the first 0xFF
//! byte (no 0xFF: no key); an empty value is a tombstone. The key is also offered as the
//! `__debezium.oldkey` header of a key change.
//! The body is `tributary_protocol::fuzz::debezium`, which tests/integration/fuzz_regressions.rs also runs on
//! the seeds and on every crash input kept in fuzz/regressions/debezium/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_protocol::fuzz::debezium(data));
