//! The fuzz targets' inputs worth keeping, replayed on every `cargo test`: each file of
//! fuzz/seeds/<target>/ and fuzz/regressions/<target>/ (crash inputs that scripts/fuzz.sh copied
//! there from fuzz/artifacts/<target>/) goes through the target's body,
//! `tributary::protocol::fuzz::<target>`, and none may panic. No server needed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use tributary::protocol::fuzz;

/// The input files of a target, sorted: its seeds (there must be some) and its regressions.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut all = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz.join(kind).join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut files: Vec<PathBuf> = entries
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .filter(|p| p.is_file())
            .filter(|p| {
                !matches!(
                    p.file_name().and_then(|n| n.to_str()),
                    Some("README.md" | ".gitkeep")
                )
            })
            .collect();
        if kind == "seeds" {
            assert!(!files.is_empty(), "{}: no seed files", dir.display());
        }
        files.sort();
        all.extend(files);
    }
    all
}

/// Runs every input of `target` through `body`; fails naming each file that panicked.
fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    let mut panicked = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body(&data))) {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            panicked.push(format!("{}: {message}", file.display()));
        }
    }
    assert!(
        panicked.is_empty(),
        "fuzz target {target}: {} of {} inputs panicked:\n{}",
        panicked.len(),
        files.len(),
        panicked.join("\n")
    );
}

#[test]
fn pgoutput() {
    replay("pgoutput", fuzz::pgoutput);
}

#[test]
fn copy_binary() {
    replay("copy_binary", fuzz::copy_binary);
}

#[test]
fn pgframe() {
    replay("pgframe", fuzz::pgframe);
}

#[test]
fn debezium() {
    replay("debezium", fuzz::debezium);
}

#[test]
fn mastodon() {
    replay("mastodon", fuzz::mastodon);
}

#[test]
fn llm_reply() {
    replay("llm_reply", fuzz::llm_reply);
}

#[test]
fn x509() {
    replay("x509", fuzz::x509);
}

#[test]
fn config() {
    replay("config", tributary::config::fuzz::config);
}
