//! The operator's HTTP endpoints: `/metrics` on the metrics address; `/healthz` and `/readyz`
//! on the health address.
//!
//! Contract: `/healthz` answers 200 while the process runs; `/readyz` answers 200 once the
//! operator has started (as leader or as a standby ready to take over), 503 before.

use crate::controller::until;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the operator is ready, shared with `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(now),
    )
}

async fn ready(State(readiness): State<Readiness>) -> StatusCode {
    if readiness.0.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Binds both listeners; the returned future serves them until `stop` turns true.
pub async fn serve(
    metrics_address: SocketAddr,
    health_address: SocketAddr,
    metrics_state: Arc<Metrics>,
    readiness: Readiness,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let metrics_app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(metrics_state);
    let health_app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(readiness);
    let metrics_listener = tokio::net::TcpListener::bind(metrics_address).await?;
    let health_listener = tokio::net::TcpListener::bind(health_address).await?;
    tracing::info!(metrics = %metrics_listener.local_addr()?, health = %health_listener.local_addr()?, "serving HTTP");
    let a = axum::serve(metrics_listener, metrics_app).with_graceful_shutdown(until(stop.clone()));
    let b = axum::serve(health_listener, health_app).with_graceful_shutdown(until(stop));
    Ok(async move {
        let (a, b) = tokio::join!(a.into_future(), b.into_future());
        a.and(b)
    })
}
