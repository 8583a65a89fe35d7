//! The config loader: `${VAR:-default}` interpolation, TOML, validation. Variables resolve to
//! a fixed value, so the fuzzer reaches validation with every shape of file.
//! The body is `tributary_config::fuzz::config`, which tests/integration/fuzz_regressions.rs also runs on
//! the seeds and on every crash input kept in fuzz/regressions/config/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_config::fuzz::config(data));
