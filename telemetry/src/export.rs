//! Logs and OTLP span export for a server process.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the span pipeline alive; flushes on [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    /// The OTLP pipeline, when exporting.
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flush buffered spans (bounded) and stop exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            // Export happens on the batch thread; shutting down from another
            // thread keeps it off any async worker.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// Install logging (filtered by `RUST_LOG`, default `info`; text, coloured only
/// on a terminal, or JSON lines) and, when an OTLP endpoint is given (or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set), span export to it as `service`. Export
/// is batched on its own thread with a bounded queue: a collector that is down or
/// slow costs dropped spans, never a blocked request.
pub fn init(service: &str, format: LogFormat, otlp_endpoint: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let endpoint = otlp_endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty());
    let provider = endpoint
        .as_deref()
        .and_then(|endpoint| match pipeline(service, endpoint) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("{service}: tracing export to {endpoint} disabled: {error}");
                None
            }
        });
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(colour_logs()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_target(false)
                    .with_ansi(false),
            )
            .try_init(),
    };
    if let Some(endpoint) = &endpoint
        && provider.is_some()
    {
        tracing::info!(%endpoint, service, "exporting traces over OTLP/gRPC");
    }
    Telemetry { provider }
}

/// Colour only for a person at a terminal: logs written to a file or a pipe (a
/// service manager, `make dev`'s log files) are plain text. `NO_COLOR` turns it
/// off everywhere (<https://no-color.org>).
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A tracer provider exporting to `endpoint` as `service`.
pub fn pipeline(
    service: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, Box<dyn std::error::Error + Send + Sync>> {
    let exporter = OnOwnRuntime::new(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(3))
            .build()
    })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// Runs an exporter on a small runtime of its own. The SDK's batch processor
/// exports from a plain thread, but the OTLP gRPC exporter needs a Tokio reactor;
/// without this, spans are silently dropped (opentelemetry-rust#2673).
#[derive(Debug)]
struct OnOwnRuntime<E> {
    /// The exporter.
    inner: E,
    /// One worker thread that drives the exporter's connection (`None` once
    /// dropped).
    runtime: Option<tokio::runtime::Runtime>,
}

impl<E> Drop for OnOwnRuntime<E> {
    fn drop(&mut self) {
        // May run on an async worker (a provider dropped in async code): never
        // block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl<E> OnOwnRuntime<E> {
    fn new<Err>(
        build: impl FnOnce() -> Result<E, Err>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>>
    where
        Err: std::error::Error + Send + Sync + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let built = {
            let _context = runtime.enter();
            build()
        };
        let inner = match built {
            Ok(inner) => inner,
            Err(error) => {
                runtime.shutdown_background();
                return Err(error.into());
            }
        };
        Ok(Self {
            inner,
            runtime: Some(runtime),
        })
    }
}

impl<E: SpanExporter> SpanExporter for OnOwnRuntime<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let result = match &self.runtime {
            Some(runtime) => runtime.block_on(self.inner.export(batch)),
            None => Ok(()),
        };
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _context = self.runtime.as_ref().map(tokio::runtime::Runtime::enter);
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _context = self.runtime.as_ref().map(tokio::runtime::Runtime::enter);
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
