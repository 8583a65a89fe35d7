//! Logs and traces: a tracing subscriber (human-readable or JSON lines) and, when an OTLP
//! endpoint is configured, an OpenTelemetry layer exporting spans over OTLP/HTTP.
//!
//! Must never: block the async runtime on export (the batch exporter runs on its own thread
//! with the blocking HTTP client), or lose the last spans at exit (call [`Telemetry::shutdown`]).

use crate::config::{LogFormat, TelemetryConfig};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("tributary: span export shutdown: {e}");
            }
        }
    }
}

/// Builds an OTLP/HTTP tracer provider for `endpoint` (e.g. `http://127.0.0.1:4318`).
pub fn otlp_provider(
    endpoint: &str,
    service_name: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    // The exporter's HTTP client is reqwest with rustls: its crypto provider must be in place.
    crate::clients::tls::install_default_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint `{endpoint}`: {e}"))?;
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build())
}

/// The JSON log line, plus `trace_id` and `span_id` when the event happens inside a span that
/// is exported (so a log line leads to its trace in Jaeger).
struct JsonWithTrace(
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonWithTrace
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            if let Some(end) = line.trim_end().rfind('}') {
                line.insert_str(
                    end,
                    &format!(
                        ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                        sc.trace_id(),
                        sc.span_id()
                    ),
                );
            }
        }
        writer.write_str(&line)
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(cfg: &TelemetryConfig) -> Result<Telemetry, String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let fmt = match cfg.log_format {
        // Colour only for a terminal: a log file or a collector gets plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(JsonWithTrace(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true),
            ))
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let (otel, provider) = if cfg.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let provider = otlp_provider(&cfg.otlp_endpoint, &cfg.service_name)?;
        let tracer = provider.tracer("tributary");
        // Our own spans only: the log level does not thin out traces, and the actor
        // runtime's life-long spans stay out of them.
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target("tributary", tracing::Level::INFO);
        (
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(spans),
            ),
            Some(provider),
        )
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Telemetry { provider })
}
