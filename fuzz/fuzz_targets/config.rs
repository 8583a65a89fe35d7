//! The config loader: `${VAR:-default}` interpolation, TOML, validation. Variables resolve to
//! a fixed value, so the fuzzer reaches validation with every shape of file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tributary::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_str_named(text, "fuzz.toml", &|_| Some("1".to_string()));
    }
});
