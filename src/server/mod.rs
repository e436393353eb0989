//! The operator's HTTP endpoints: `/metrics` on the metrics address; `/healthz` and `/readyz`
//! on the health address.
//!
//! Contract: `/healthz` answers 200 while the process runs; `/readyz` answers 200 once the
//! operator has started (as leader or as a standby ready to take over), 503 before. `/metrics`
//! answers only a caller [`access`] allows: 401 without a token the apiserver authenticates,
//! 403 for a user RBAC does not allow `get` on `/metrics`, 503 while reviews are throttled. Both
//! ports are served within [`listener`]'s bounds, the health port with room to spare for kubelet
//! probes.

pub mod access;
pub mod listener;

use crate::metrics::Metrics;
use access::{MetricsAccess, Verdict};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
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

/// What `/metrics` serves, and to whom.
#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    access: Arc<MetricsAccess>,
}

async fn metrics(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match scrape.access.check(authorization).await {
        Verdict::Allowed => render(&scrape.metrics).into_response(),
        Verdict::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token the Kubernetes API authenticates is required\n",
        )
            .into_response(),
        Verdict::Forbidden => (
            StatusCode::FORBIDDEN,
            "this user may not get the non-resource URL /metrics\n",
        )
            .into_response(),
        Verdict::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

fn render(metrics: &Metrics) -> impl IntoResponse {
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

/// Binds both listeners; the returned future serves them until `stop` turns true. `client`
/// reviews the tokens of metrics callers.
pub async fn serve(
    metrics_address: SocketAddr,
    health_address: SocketAddr,
    metrics_state: Arc<Metrics>,
    client: kube::Client,
    readiness: Readiness,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let scrape = Scrape {
        metrics: metrics_state,
        access: Arc::new(MetricsAccess::new(client)),
    };
    let metrics_app = Router::new().route("/metrics", get(metrics)).with_state(scrape);
    let health_app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(readiness);
    let metrics_listener = tokio::net::TcpListener::bind(metrics_address).await?;
    let health_listener = tokio::net::TcpListener::bind(health_address).await?;
    tracing::info!(metrics = %metrics_listener.local_addr()?, health = %health_listener.local_addr()?, "serving HTTP");
    let a = listener::serve(
        metrics_listener,
        metrics_app,
        listener::MAX_CONNECTIONS,
        stop.clone(),
    );
    let b = listener::serve(
        health_listener,
        health_app,
        listener::MAX_HEALTH_CONNECTIONS,
        stop,
    );
    Ok(async move {
        tokio::join!(a, b);
        Ok(())
    })
}
