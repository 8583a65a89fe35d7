//! The test servers' addresses and names no other test uses.
//!
//! Must never: skip a test because a server is missing: a server that cannot start is an
//! error that names it.

use crate::Res;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The repository's root.
pub fn repo() -> PathBuf {
    let kit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = kit.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Where [`services`] takes the addresses from first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The environment, when scripts/test.sh exported every required name (the tests).
    Environment,
    /// Always `scripts/services.sh start` (which checks and reuses the servers that run)
    /// and `scripts/services.sh env` (the benches: nothing stale from a shell).
    Script,
}

/// The test servers' addresses (`TRIBUTARY_TEST_*`): from the environment when `from` allows
/// and scripts/test.sh exported them, else from `scripts/services.sh env` after
/// `scripts/services.sh start` (which reuses the servers that run). Every name in `required`
/// must be there.
pub fn services(required: &[&str], from: Lookup) -> Res<HashMap<String, String>> {
    let mut vars: HashMap<String, String> = match from {
        Lookup::Environment => std::env::vars()
            .filter(|(k, _)| k.starts_with("TRIBUTARY_TEST_") || k == "TRIBUTARY_SERVICES_SCRIPT")
            .collect(),
        Lookup::Script => HashMap::new(),
    };
    if !required.iter().all(|k| vars.contains_key(*k)) {
        let script = repo().join("scripts/services.sh");
        let run = |arg: &str| {
            let out = Command::new(&script)
                .arg(arg)
                .output()
                .map_err(|e| format!("running {} {arg}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/services.sh {arg} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        run("start")?;
        for line in run("env")?.lines() {
            if let Some((k, v)) = line.split_once('=') {
                vars.insert(k.to_string(), v.to_string());
            }
        }
    }
    match required.iter().find(|k| !vars.contains_key(**k)) {
        Some(k) => Err(format!("{k} is not set: the test servers are not running")),
        None => Ok(vars),
    }
}

/// A name no other test (or earlier run) uses: lower case, for slots and tables.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{t}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_names_differ() {
        assert_ne!(super::unique("t"), super::unique("t"));
        assert!(super::repo().join("scripts/services.sh").exists());
    }
}
