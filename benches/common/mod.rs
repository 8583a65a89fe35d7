//! What the benchmarks share: the test servers' addresses, unique names, and /proc readings.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub type Res<T> = Result<T, String>;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test servers' addresses: target/services/env, after `scripts/services.sh start` when
/// the file is missing or a server does not answer.
pub fn services() -> Res<HashMap<String, String>> {
    let script = repo().join("scripts/services.sh");
    let dir = std::env::var("TRIBUTARY_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/services"));
    let env_file = dir.join("env");
    let healthy = env_file.exists()
        && Command::new(&script)
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !healthy {
        eprintln!("bench: starting the test servers (scripts/services.sh start) ...");
        let out = Command::new(&script)
            .arg("start")
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/services.sh start failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let text =
        std::fs::read_to_string(&env_file).map_err(|e| format!("{}: {e}", env_file.display()))?;
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for k in [
        "TRIBUTARY_TEST_PG_PORT",
        "TRIBUTARY_TEST_CH18_URL",
        "TRIBUTARY_TEST_CH26_URL",
        "TRIBUTARY_TEST_LLM_URL",
    ] {
        if !vars.contains_key(k) {
            return Err(format!("{k} missing from {}", env_file.display()));
        }
    }
    Ok(vars)
}

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

/// A `/proc/<pid>/status` value in KiB (`pid` may be `self`), e.g. `VmHWM:`.
pub fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process in seconds (`pid` may be `self`).
pub fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Command-line flags of a bench: `--key value` or `--key=value`; numbers may hold `_`.
pub struct Flags {
    args: std::iter::Skip<std::env::Args>,
    inline: Option<String>,
}

impl Flags {
    pub fn new() -> Flags {
        Flags {
            args: std::env::args().skip(1),
            inline: None,
        }
    }

    /// The next flag (`cargo bench` passes `--bench`: callers ignore it).
    pub fn next_flag(&mut self) -> Option<String> {
        let arg = self.args.next()?;
        match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => {
                self.inline = Some(v.to_string());
                Some(k.to_string())
            }
            _ => {
                self.inline = None;
                Some(arg)
            }
        }
    }

    pub fn value(&mut self, name: &str) -> Res<String> {
        self.inline
            .take()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{name} needs a value"))
    }

    pub fn number<T: std::str::FromStr>(&mut self, name: &str) -> Res<T>
    where
        T::Err: std::fmt::Display,
    {
        self.value(name)?
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{name}: {e}"))
    }
}
