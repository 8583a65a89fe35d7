//! Every default of the file, in one place.
use crate::*;
use std::time::Duration;
pub fn kafka_client_id() -> String {
    "tributary".into()
}
pub fn topic_prefix() -> String {
    "tributary".into()
}
pub fn one() -> i32 {
    1
}
pub fn decimal_handling() -> tributary_protocol::debezium::DecimalMode {
    tributary_protocol::debezium::DecimalMode::Precise
}
pub fn kafka_state_topic() -> String {
    "tributary.state".into()
}
pub fn statuses_topic() -> String {
    "mastodon.statuses".into()
}
pub fn delivery_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
pub fn dead_letter_topic() -> String {
    "tributary.dlq".into()
}
pub fn auto_offset_reset() -> String {
    "earliest".into()
}
pub fn kafka_chunk() -> usize {
    1000
}
pub fn commit_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
/// The LLM settings of a pipeline without an LLM (a publishing one): only the queue and
/// pool sizes are read.
pub fn llm() -> LlmConfig {
    toml::from_str("backend = \"openai\"\nurl = \"http://127.0.0.1:1\"\nmodel = \"none\"")
        .expect("a constant, valid [llm] section")
}
pub fn clickhouse() -> ClickHouseConfig {
    ClickHouseConfig {
        url: ch_url(),
        database: ch_database(),
        user: ch_user(),
        password: Secret::default(),
        password_file: None,
        ca_cert: None,
        client_cert: None,
        client_key: None,
        table_template: table_template(),
        json_as: json_as(),
        compression: compression(),
        sentiment_table: sentiment_table(),
        on_truncate: on_truncate(),
        insert_attempts: insert_attempts(),
        request_timeout: request_timeout(),
        replicas: Vec::new(),
        cluster: String::new(),
        replication_path: replication_path(),
        distributed: false,
    }
}
pub fn shutdown_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
pub fn log_format() -> LogFormat {
    LogFormat::Text
}
pub fn log_level() -> String {
    "info".into()
}
pub fn service_name() -> String {
    "tributary".into()
}
pub fn max_restarts() -> u32 {
    5
}
pub fn within() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub fn backoff_initial() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
pub fn backoff_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
pub fn kind() -> PipelineKind {
    PipelineKind::Cdc
}
pub fn chaos_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub fn verify_interval() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}
pub fn verify_limit() -> usize {
    100
}
pub fn chaos_kinds() -> Vec<String> {
    vec!["sink".into(), "source".into(), "worker".into()]
}
pub fn http_listen() -> String {
    "127.0.0.1:9464".into()
}
pub fn yes() -> bool {
    true
}
pub fn streams() -> Vec<String> {
    vec!["public:local".into()]
}
pub fn backfill_limit() -> usize {
    2000
}
pub fn reconnect_initial() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
pub fn reconnect_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub fn idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(90))
}
pub fn mastodon_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
pub fn mastodon_max_response_bytes() -> usize {
    16 << 20
}
pub fn replay_instance() -> String {
    "replay".into()
}
pub fn ollama_endpoint() -> OllamaEndpoint {
    OllamaEndpoint::Generate
}
pub fn labels() -> Vec<String> {
    vec!["positive".into(), "negative".into(), "neutral".into()]
}
pub fn structured() -> tributary_protocol::llm::Structured {
    tributary_protocol::llm::Structured::JsonSchema
}
pub fn max_tokens() -> u32 {
    512
}
pub fn concurrency() -> usize {
    4
}
pub fn llm_queue() -> usize {
    64
}
pub fn llm_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub fn circuit_failures() -> u32 {
    5
}
pub fn circuit_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
pub fn max_text_chars() -> usize {
    2000
}
pub fn sentiment_table() -> String {
    "mastodon_sentiment".into()
}
pub fn pg_host() -> String {
    "127.0.0.1".into()
}
pub fn pg_port() -> u16 {
    5432
}
/// libpq's default.
pub fn pg_sslmode() -> SslMode {
    SslMode::Prefer
}
/// libpq's default.
pub fn pg_channel_binding() -> ChannelBinding {
    ChannelBinding::Prefer
}
pub fn status_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
/// Long enough for a busy active to be late with a reply or two; short enough for a
/// takeover within 5 s of the active's machine going away.
pub fn takeover_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}
pub fn connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
pub fn chunk_rows() -> usize {
    2000
}
pub fn snapshot_chunk_rows() -> usize {
    50_000
}
/// Tables copied at once: one per core and one more (a copy's statement waits while its rows
/// are written: another reads meanwhile), 3 to 4 (measured: README, "The first snapshot").
pub fn snapshot_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() + 1)
        .unwrap_or(3)
        .clamp(3, 4)
}
pub fn chunk_bytes() -> usize {
    1 << 20
}
pub fn ch_url() -> String {
    "http://127.0.0.1:8123".into()
}
pub fn replication_path() -> String {
    "/clickhouse/tables/{shard}/{database}/{table}".into()
}
pub fn ch_database() -> String {
    "default".into()
}
pub fn ch_user() -> String {
    "default".into()
}
pub fn table_template() -> String {
    "{table}".into()
}
pub fn json_as() -> JsonAs {
    JsonAs::String
}
pub fn compression() -> Compression {
    Compression::Auto
}
pub fn on_truncate() -> OnTruncate {
    OnTruncate::Truncate
}
pub fn insert_attempts() -> u32 {
    5
}
pub fn request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub fn max_rows() -> usize {
    200_000
}
pub fn max_bytes() -> usize {
    32 << 20
}
pub fn max_age() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}
pub fn edge_capacity() -> usize {
    32
}
pub fn toast_cache_bytes() -> usize {
    64 << 20
}
