//! The `tributary` binary as a child process of a test: started with the test servers in its
//! environment, its stderr drained as it comes (a full pipe would block it), killed when
//! dropped (a failing test leaves nothing behind), stopped with SIGTERM or SIGKILL.

use super::*;
use std::process::{Child, Command, Stdio};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running tributary. Its stderr is drained into a buffer as it comes (a full pipe would
/// block the process), and it is killed when dropped, so a failing test leaves nothing behind.
pub struct Spawned {
    pub child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    pub reader: Option<std::thread::JoinHandle<()>>,
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment config/*.toml reads for `w`'s servers, slot, publication and database.
pub fn world_env(w: &World, ch_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", var("TRIBUTARY_TEST_PG_PORT")),
        ("PGUSER", var("TRIBUTARY_TEST_PG_USER")),
        ("PGPASSWORD", var("TRIBUTARY_TEST_PG_PASSWORD")),
        ("PGDATABASE", var("TRIBUTARY_TEST_PG_DATABASE")),
        ("TRIBUTARY_SLOT", w.slot.clone()),
        ("TRIBUTARY_PUBLICATION", w.publication.clone()),
        ("CLICKHOUSE_URL", ch_url.to_string()),
        ("CLICKHOUSE_DATABASE", w.database.clone()),
    ]
}

pub fn spawn_env(
    w: &World,
    config: &std::path::Path,
    ch_url: &str,
    extra: &[(&str, &str)],
) -> Spawned {
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .envs(world_env(w, ch_url))
        .env("RUST_LOG", "info")
        .env(
            "TRIBUTARY_HTTP",
            std::env::var("TEST_HTTP").unwrap_or_default(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .envs(extra.iter().copied())
        .spawn()
        .expect("start tributary");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take().expect("piped stderr");
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    Spawned {
        child,
        log,
        reader: Some(reader),
    }
}

pub fn sigterm(child: &Spawned) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

pub async fn wait_exit(
    mut child: Spawned,
    timeout: Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            if let Some(r) = child.reader.take() {
                let _ = r.join();
            }
            let err = String::from_utf8_lossy(&child.log.lock().unwrap()).into_owned();
            return (status, err);
        }
        if std::time::Instant::now() >= deadline {
            // What it was doing: its last lines (librdkafka's own left out).
            let log = String::from_utf8_lossy(&child.log.lock().unwrap()).into_owned();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("librdkafka")).collect();
            panic!(
                "tributary did not exit within {timeout:?}; its last log lines:\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prints a child's log when the test panics while it is alive.
pub struct PrintLogOnPanic(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Drop for PrintLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- tributary log ---\n{}",
                String::from_utf8_lossy(&self.0.lock().unwrap())
            );
        }
    }
}

/// SIGTERM, then the process must drain and exit 0; returns its log.
pub async fn stop_clean(child: Spawned) -> String {
    sigterm(&child);
    let (status, err) = wait_exit(child, Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "SIGTERM must drain and exit 0: {status:?}\n{err}"
    );
    err
}

/// An example config with its tables line replaced and `extra` appended, written under
/// target/test-configs.
pub fn write_config_from(example: &str, tables: &[&str], extra: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join(example)).unwrap();
    let list: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    let text = text.replace(
        r#"tables = ["public.demo_table1", "public.demo_table2"]"#,
        &format!("tables = [{}]", list.join(", ")),
    );
    let dir = repo().join("target/test-configs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", unique("cfg")));
    std::fs::write(&path, text + extra).unwrap();
    path
}

/// Replaces each `(from, to)` in a config file; every `from` must be there.
pub fn edit_config(path: &std::path::Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{} has no {from:?}", path.display());
        text = text.replace(from, to);
    }
    std::fs::write(path, text).unwrap();
}

/// The sum of a metric family's samples (whose labels contain `labels`) at a live /metrics.
pub async fn metric(listen: &str, name: &str, labels: &str) -> Option<f64> {
    tributary::clients::tls::install_default_provider();
    let body = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut sum = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ')?;
        let family = key.split('{').next().unwrap_or(key);
        if family == name && key.contains(labels) {
            *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    sum
}

/// The environment that points config/sentiment.toml at the Mastodon at `mastodon` and the
/// real LLM server (llama.cpp, at `llm`): structured output, two requests at once.
pub fn real_llm_env(mastodon: &str, llm: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MASTODON_URL", mastodon.to_string()),
        ("MASTODON_STREAM", "public".into()),
        ("LLM_URL", llm.to_string()),
        ("LLM_BACKEND", "openai".into()),
        ("LLM_MODEL", var("TRIBUTARY_TEST_LLM_MODEL")),
        ("LLM_STRUCTURED", "json_object_with_schema".into()),
        ("LLM_CONCURRENCY", "2".into()),
    ]
}

/// Borrows an owned environment for `spawn_env`.
pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
