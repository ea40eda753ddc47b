//! The operator endpoints every orderflow service serves, with one shape everywhere:
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | 200 `{"status":"ok"}` while the process serves HTTP |
//! | `GET /readyz` | 200 `{"ready":true,"detail":"..."}`, or 503 `{"ready":false,"detail":"..."}` |
//! | `GET /metrics` | the Prometheus text format |
//!
//! What "ready" means is each service's own ([`Probe`]); `detail` says why, in words for an
//! operator. [`router`] builds the three routes; a service merges its own API into it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The body of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why, for an operator: what was checked and what it found.
    pub detail: String,
}

impl Readiness {
    pub fn ready(detail: impl Into<String>) -> Self {
        Readiness { ready: true, detail: detail.into() }
    }

    pub fn not_ready(detail: impl Into<String>) -> Self {
        Readiness { ready: false, detail: detail.into() }
    }

    fn status(&self) -> StatusCode {
        if self.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
    }
}

/// What a service tells the operator endpoints.
pub trait Probe: Send + Sync + 'static {
    /// Whether the service can do its work now (`/readyz`).
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;

    /// Called before `/metrics` renders: set the gauges that are read rather than counted
    /// (a queue's depth).
    fn before_scrape(&self) {}
}

impl<P: Probe> Probe for Arc<P> {
    fn readiness(&self) -> impl Future<Output = Readiness> + Send {
        P::readiness(self)
    }

    fn before_scrape(&self) {
        P::before_scrape(self);
    }
}

/// `/healthz`, `/readyz` and `/metrics` for `probe`. Installs the Prometheus recorder
/// ([`crate::prometheus`]) if nothing did yet, so metrics recorded from now on are served.
pub fn router<P: Probe>(probe: P) -> Router {
    crate::prometheus();
    let probe = Arc::new(probe);
    let ready = probe.clone();
    let ops = Ops {
        readiness: Arc::new(move || {
            let probe = ready.clone();
            Box::pin(async move { probe.readiness().await })
        }),
        before_scrape: Arc::new(move || probe.before_scrape()),
    };
    api().with_state(ops).split_for_parts().0
}

/// The operator endpoints' description (part of every service's `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

fn api() -> OpenApiRouter<Ops> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// What the operator endpoints ask of the service's [`Probe`], with its type erased.
#[derive(Clone)]
struct Ops {
    readiness: Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Readiness> + Send>> + Send + Sync>,
    before_scrape: Arc<dyn Fn() + Send + Sync>,
}

/// The body of `/healthz`.
#[derive(Debug, Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process serves HTTP (liveness).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "The process serves HTTP", body = Alive),
))]
async fn healthz() -> axum::Json<Alive> {
    axum::Json(Alive { status: "ok" })
}

/// Whether the service can do its work now (readiness); `detail` says why.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Not ready; `detail` says what is missing", body = Readiness),
))]
async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let readiness = (ops.readiness)().await;
    (readiness.status(), axum::Json(readiness))
}

/// The service's metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
))]
async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    (ops.before_scrape)();
    crate::prometheus().render().into_response()
}

/// A probe whose answer is reused for `ttl`: for checks that ask another system (a broker, a
/// database), so that frequent `/readyz` calls do not become load on it. Concurrent calls
/// wait for the one check in progress.
pub struct Cached<P> {
    inner: P,
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
}

impl<P> Cached<P> {
    pub fn new(inner: P, ttl: Duration) -> Self {
        Cached { inner, ttl, last: tokio::sync::Mutex::new(None) }
    }
}

impl<P: Probe> Probe for Cached<P> {
    async fn readiness(&self) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, readiness)) = &*last
            && at.elapsed() < self.ttl
        {
            return readiness.clone();
        }
        let readiness = self.inner.readiness().await;
        *last = Some((Instant::now(), readiness.clone()));
        readiness
    }

    fn before_scrape(&self) {
        self.inner.before_scrape();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use serde_json::{Value, json};

    use super::*;

    /// Ready when its flag says so; counts checks and scrapes.
    #[derive(Clone, Default)]
    struct Flag {
        ready: Arc<AtomicBool>,
        checks: Arc<AtomicUsize>,
        scrapes: Arc<AtomicUsize>,
    }

    impl Probe for Flag {
        async fn readiness(&self) -> Readiness {
            self.checks.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                Readiness::ready("flag up")
            } else {
                Readiness::not_ready("flag down")
            }
        }

        fn before_scrape(&self) {
            self.scrapes.fetch_add(1, Ordering::SeqCst);
            metrics::gauge!("orderflow_service_test_scrapes").set(self.scrapes.load(Ordering::SeqCst) as f64);
        }
    }

    /// Serve `router` on port 0; the server ends with the test's runtime.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    async fn get(url: &str) -> (u16, String) {
        let response = reqwest::get(url).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn healthz_readyz_and_metrics_answer_the_shared_shape() {
        let flag = Flag::default();
        let url = serve(router(flag.clone())).await;

        let (status, body) = get(&format!("{url}/healthz")).await;
        assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (200, json!({"status": "ok"})));

        let (status, body) = get(&format!("{url}/readyz")).await;
        assert_eq!(
            (status, serde_json::from_str::<Value>(&body).unwrap()),
            (503, json!({"ready": false, "detail": "flag down"}))
        );
        flag.ready.store(true, Ordering::SeqCst);
        let (status, body) = get(&format!("{url}/readyz")).await;
        assert_eq!(
            (status, serde_json::from_str::<Value>(&body).unwrap()),
            (200, json!({"ready": true, "detail": "flag up"}))
        );

        let (status, body) = get(&format!("{url}/metrics")).await;
        assert_eq!(status, 200);
        assert!(body.contains("orderflow_service_test_scrapes 1"), "{body}");
    }

    #[tokio::test]
    async fn a_cached_probe_asks_once_per_ttl() {
        let flag = Flag::default();
        let cached = Cached::new(flag.clone(), Duration::from_secs(3600));
        assert!(!cached.readiness().await.ready);
        flag.ready.store(true, Ordering::SeqCst);
        assert!(!cached.readiness().await.ready, "the first answer is reused within the ttl");
        assert_eq!(flag.checks.load(Ordering::SeqCst), 1);

        let fresh = Cached::new(flag.clone(), Duration::ZERO);
        assert!(fresh.readiness().await.ready);
        assert!(fresh.readiness().await.ready);
        assert_eq!(flag.checks.load(Ordering::SeqCst), 3);
    }
}
