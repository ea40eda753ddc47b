//! The OTLP/HTTP span exporter and the HTTP client it sends with.
//!
//! The SDK's batch processor runs on its own thread and drives exports with a plain
//! `block_on`, so the HTTP request cannot run there (reqwest needs a tokio reactor). It runs on
//! a one-thread tokio runtime owned by the exporter instead, through the workspace's reqwest
//! (rustls), so no second HTTP client is compiled and `https://` collectors work.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// How long the exit flush may take before the last spans are given up.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// OTLP's default per-request timeout (`OTEL_EXPORTER_OTLP_TIMEOUT` overrides, in ms).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Exporter {
    provider: SdkTracerProvider,
    _runtime: ExportRuntime,
    endpoint: String,
}

/// The export thread's runtime. Dropping a tokio runtime inside async code panics, and this
/// one is dropped from `main`'s async body (or on an early error return), so it is always shut
/// down in the background instead.
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Exporter {
    /// An exporter if `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only variable) is set.
    pub(crate) fn from_env(service: &str) -> anyhow::Result<Option<Exporter>> {
        let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
        let Some(endpoint) = endpoint else { return Ok(None) };
        let timeout = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
            .iter()
            .find_map(|name| std::env::var(name).ok())
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let runtime = ExportRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-export")
                .enable_all()
                .build()
                .context("Failed to start the OTLP export thread")?,
        ));
        let handle = runtime.0.as_ref().map(|r| r.handle().clone()).expect("just built");
        let client = reqwest::Client::builder().timeout(timeout).build().context("Failed to build the OTLP client")?;
        let client = RuntimeClient { client, runtime: handle };
        // The builder reads the OTEL_EXPORTER_OTLP_* variables itself (endpoint, headers,
        // compression) and rejects an endpoint that is not a URI.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(client)
            .build()
            .with_context(|| format!("Failed to set up the OTLP span exporter for {endpoint:?}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.to_owned());
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        Ok(Some(Exporter { provider, _runtime: runtime, endpoint }))
    }

    pub(crate) fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Flush what is buffered (bounded by [`SHUTDOWN_TIMEOUT`]), then stop the export thread.
    /// Callable from async code: it blocks only on the SDK's thread, never on a tokio worker's
    /// own runtime.
    pub(crate) fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %error, "flushing spans at exit failed; the last spans may be lost");
        }
    }
}

/// reqwest on the exporter's own runtime, callable from any thread or executor.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut builder = Response::builder().status(response.status());
            if let Some(headers) = builder.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(builder.body(body)?)
        });
        task.await?
    }
}
