//! Kafka helpers of the tests: config/kafka.toml pointed at the test broker (tansu), with
//! unique topic names per test, and a plain librdkafka client to produce and read topics.

use super::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn brokers() -> String {
    var("TRIBUTARY_TEST_KAFKA_BROKERS")
}

/// Unique names of one Kafka test.
pub struct KafkaNames {
    pub prefix: String,
    pub group: String,
    pub dlq: String,
    pub state: String,
}

impl KafkaNames {
    pub fn new() -> Self {
        let u = unique("k");
        KafkaNames {
            prefix: format!("{u}_cdc"),
            group: format!("{u}_group"),
            dlq: format!("{u}_dlq"),
            state: format!("{u}_state"),
        }
    }
    /// The topic of a Postgres table.
    pub fn topic(&self, schema: &str, table: &str) -> String {
        format!("{}.{schema}.{table}", self.prefix)
    }
}

/// config/kafka.toml for this world: pipeline 0 is Postgres → Kafka, pipeline 1 is
/// Kafka → ClickHouse (both with unique names).
pub fn kafka_config(w: &World, n: &KafkaNames, tables: &[&str]) -> Config {
    let text =
        std::fs::read_to_string(repo().join("config/kafka.toml")).expect("config/kafka.toml");
    let mut env: HashMap<&str, String> = HashMap::new();
    pg_env(&mut env);
    env.insert("TRIBUTARY_SLOT", w.slot.clone());
    env.insert("TRIBUTARY_PUBLICATION", w.publication.clone());
    env.insert("CLICKHOUSE_URL", w.target.url());
    env.insert("CLICKHOUSE_DATABASE", w.database.clone());
    env.insert("KAFKA_BROKERS", brokers());
    env.insert("TRIBUTARY_TOPIC_PREFIX", n.prefix.clone());
    env.insert("TRIBUTARY_GROUP", n.group.clone());
    env.insert("TRIBUTARY_DLQ", n.dlq.clone());
    env.insert("TRIBUTARY_STATE_TOPIC", n.state.clone());
    env.insert("TRIBUTARY_HTTP", String::new());
    let mut cfg = Config::from_str_named(&text, "config/kafka.toml", &|k| env.get(k).cloned())
        .expect("config/kafka.toml loads");
    cfg.pipelines[0].name = format!("pg_{}", w.slot);
    cfg.pipelines[1].name = format!("ch_{}", w.slot);
    let pg = cfg.pipelines[0]
        .postgres
        .as_mut()
        .expect("[pipeline.postgres]");
    pg.tables = tables.iter().map(|s| s.to_string()).collect();
    pg.status_interval.0 = Duration::from_secs(1);
    fast_restarts(&mut cfg);
    cfg
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer")
}

/// Produces one message and waits for the broker.
pub async fn produce(p: &FutureProducer, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) {
    let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).partition(0);
    if let Some(k) = key {
        r = r.key(k);
    }
    if let Some(v) = value {
        r = r.payload(v);
    }
    p.send(r, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

/// Every message of partition 0 of `topic`, from the beginning to the end as it is now.
pub fn read_topic(topic: &str) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let (low, high) = match c.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
        Ok(w) => w,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let last = m.offset() >= high - 1;
            out.push(m.detach());
            if last {
                break;
            }
        }
    }
    out
}

/// The value of header `key` of a message, as text.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Waits until `topic` holds at least `n` messages; returns them.
pub async fn await_messages(topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let topic = topic.to_string();
    eventually(timeout, &format!("{n} messages in {topic}"), || {
        let topic = topic.clone();
        async move {
            let got = tokio::task::spawn_blocking(move || read_topic(&topic))
                .await
                .unwrap();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("{} messages", got.len()))
            }
        }
    })
    .await
}

/// The test broker as a [`tributary::config::KafkaConfig`].
pub fn kafka_cluster() -> tributary::config::KafkaConfig {
    tributary::config::KafkaConfig {
        brokers: brokers(),
        client_id: "tributary-test".into(),
        properties: Default::default(),
        secret_files: Default::default(),
    }
}

/// Creates a one-partition topic (the broker does not create topics on first use).
pub async fn create_topic(topic: &str) {
    tributary::clients::kafka::ensure_topics(&kafka_cluster(), &[topic.to_string()], 1, 1)
        .await
        .expect("create topic");
}

/// A Debezium `c` event of `public.<table> (id, v)` without schemas, as (key, value): what a
/// real Debezium writes with `schemas.enable=false`.
pub fn create_event(table: &str, id: i64, v: &str, lsn: i64) -> (String, String) {
    (
        format!(r#"{{"id":{id}}}"#),
        format!(
            r#"{{"before":null,"after":{{"id":{id},"v":"{v}"}},"source":{{"version":"2.7.4.Final","connector":"postgresql","name":"x","ts_ms":1700000000000,"snapshot":"false","db":"d","schema":"public","table":"{table}","txId":7,"lsn":{lsn},"xmin":null}},"op":"c","ts_ms":1700000000001}}"#
        ),
    )
}

/// A broker of one test's own: tansu with SQLite storage in its own directory, listening on
/// `port` and advertising `advertised`, the port of a fault proxy in front of it, so that every
/// client connection (bootstrap and after metadata) goes through the proxy. Killed when
/// dropped.
pub struct OwnBroker {
    pub port: u16,
    advertised: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
    /// Where the broker's log is copied when it is dropped (its group coordinator's
    /// decisions, for a failure's diagnosis).
    pub keep_log_at: Option<PathBuf>,
}

impl OwnBroker {
    pub async fn start(port: u16, advertised: u16) -> OwnBroker {
        let dir = repo().join("target/test-brokers").join(unique("tansu"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = OwnBroker {
            port,
            advertised,
            dir,
            child: None,
            keep_log_at: None,
        };
        b.spawn().await;
        b
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        // The sqlite path is taken relative to the working directory.
        let child = std::process::Command::new(var("TRIBUTARY_TEST_TANSU"))
            .current_dir(&self.dir)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{}", self.advertised))
            .args(["--storage-engine", "sqlite://tansu.db"])
            // Errors, and the group coordinator's decisions (members joined, expired).
            .env("RUST_LOG", "error,tansu_broker::coordinator=info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(
            Duration::from_secs(60),
            "the test's own broker answers",
            || async {
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        )
        .await;
    }

    /// SIGKILL, then the same broker again on its storage.
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        if let Some(to) = &self.keep_log_at {
            let _ = std::fs::copy(self.dir.join("broker.log"), to);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
