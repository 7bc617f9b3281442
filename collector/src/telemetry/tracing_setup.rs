//! Logs and traces: `tracing` events to stderr (text or JSON), and — when an OTLP
//! endpoint is configured — spans exported as OpenTelemetry traces over OTLP/HTTP.
//!
//! Each ingest request is one span (`ingest`) with the route, the source, the per-event
//! outcome counts and the HTTP status; no event content, so no PII, is ever attached.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryConfig;

/// Logging or trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("installing the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The name of the span each ingest request gets (see `http::routes`).
pub const REQUEST_SPAN: &str = "ingest";

/// Keeps the trace exporter alive; [`Tracing::shutdown`] flushes it.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Exports the spans still buffered (call once, before exit).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("tollgate: flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), stderr in text
/// or JSON, and the OTLP trace exporter when `telemetry.otlp_endpoint` is set.
///
/// # Errors
/// An OTLP endpoint the exporter cannot use.
pub fn install(
    json: bool,
    ansi: bool,
    telemetry: &TelemetryConfig,
) -> Result<Tracing, InstallError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let provider = match &telemetry.otlp_endpoint {
        Some(endpoint) => {
            let url = if endpoint.ends_with("/v1/traces") {
                endpoint.clone()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        telemetry.trace_sample_ratio,
                    ))))
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("tollgate-collector")
                            .build(),
                    )
                    .build(),
            )
        }
        None => None,
    };
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed()
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("tollgate-collector")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Tracing { provider })
}
