//! Serving a port that pods in tenant namespaces may reach (metrics, the usage-trigger
//! endpoint, health) within bounds: at most so many connections at once (more wait in the
//! kernel's backlog until one ends), request headers within [`HEADER_TIMEOUT`], and no connection longer than
//! [`CONNECTION_LIFETIME`]. Slow or idle clients are dropped, so whatever a pod does to these
//! ports costs the process bounded memory and tasks, and the controllers go on.

use crate::controller::until;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once on the metrics or the usage-trigger port.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once on the health port: more, so kubelet probes still find room
/// while slow clients wait out the header timeout.
pub const MAX_HEALTH_CONNECTIONS: usize = 512;
/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection is served at most, requests and bodies included; a scraper simply
/// connects again.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Serves `app` on `listener`, at most `connections` at once and within the timeouts, until
/// `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    connections: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(connections));
    let stopped = until(stop);
    tokio::pin!(stopped);
    loop {
        // At the bound, nothing more is accepted until a connection ends: newcomers wait in the
        // kernel's backlog (costing this process nothing) instead of being refused.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = &mut stopped => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, for example: the next accept may work.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}
