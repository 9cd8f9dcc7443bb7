//! The admin API's listener, self-contained: a cap on open connections (more are closed at
//! once), a deadline for a request's headers, a small body limit, and a graceful stop that lets
//! requests in flight finish (up to a few seconds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::auth::Remote;

/// Connections open at once; an operator's tools need few.
pub const MAX_CONNECTIONS: usize = 32;
/// A client has this long to send a request's headers (slow clients hold no slot for long).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at a stop get this long to finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Binds `addr` (retrying briefly: after a reload the previous server may hold it a moment
/// longer) and serves `app` until `stop`; returns the bound address.
pub(super) async fn serve(
    addr: SocketAddr,
    app: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    let bound = listener.local_addr()?;
    Ok((bound, tokio::spawn(accept(listener, app, stop))))
}

async fn accept(listener: tokio::net::TcpListener, app: axum::Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "admin API: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, max = MAX_CONNECTIONS, "admin API: too many connections open; this one is closed");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(Remote(remote));
            hyper::service::Service::call(&service, request)
        });
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(STOP_GRACE, connection).await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}
