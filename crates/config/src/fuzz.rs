//! The body of the config fuzz target (fuzz/fuzz_targets/config.rs), shared with
//! tests/integration/fuzz_regressions.rs. Must never: do I/O.

use crate::Config;

/// The config loader: `${VAR:-default}` interpolation, TOML, validation. Variables resolve to
/// a fixed value, so the fuzzer reaches validation with every shape of file. The same input
/// also goes to the libpq connection-string parser, which a whole file rarely reaches.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_str_named(text, "fuzz.toml", &|_| Some("1".to_string()));
        let _ = crate::pgconn::parse(text);
    }
}
