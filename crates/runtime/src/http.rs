//! The operator endpoints every consumer serves next to its read API: the shared ones
//! (`orderflow_service::ops`), ready when [`Health::ready`] says so.

use std::sync::Arc;

use axum::Router;
use orderflow_service::ops::{self, Probe, Readiness};

use crate::consumer::Health;

impl Probe for Health {
    async fn readiness(&self) -> Readiness {
        let (ready, detail) = self.ready();
        Readiness { ready, detail }
    }
}

/// `/healthz` (the process runs), `/readyz` (joined and caught up), `/metrics` (Prometheus),
/// merged with `api`.
pub fn router(api: Router, health: Arc<Health>) -> Router {
    ops::router(health).merge(api)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Router,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(api, health)).with_graceful_shutdown(shutdown).await
}
