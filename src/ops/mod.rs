//! Operations: the HTTP listener (health, readiness, `/status` and its page, `/metrics`, the
//! admin API), the Prometheus metrics, OTLP telemetry, and the chaos schedule.
//! Must never: change a pipeline's data; only read its state or, on request, kill actors.

pub mod chaos;
pub mod http;
pub mod metrics;
pub mod telemetry;
