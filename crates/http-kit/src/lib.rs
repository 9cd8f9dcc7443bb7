//! Serving an axum router over TCP so that slow or idle clients cannot starve the others: a
//! request must arrive whole in time, idle keep-alive connections are closed, and at the
//! connection cap — or when the process runs out of descriptors — a connection that waits on
//! its client is closed to make room: a slow request first, then an idle connection. Every
//! listener of mxc-relay (`webhook listen`, `/metrics`, the simulator) serves through it.
//! HTTP/1.1 only, as `axum::serve` did with axum's default features.

pub mod client;
mod conn;
mod watch;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use conn::{Conn, Registry};
use watch::{WatchedBody, WatchedIo};

/// How long clients may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must be in this long after its first byte, and its body this long
    /// after the handler begins to read it; otherwise the connection is closed.
    pub header_read_timeout: Duration,
    /// A connection with no request begun for this long is closed (`None`: kept).
    pub idle_timeout: Option<Duration>,
    /// Connections at once. At the cap, each new one closes a connection that waits on its
    /// client (see `Conn::shed_rank`); while every one runs a request, new ones wait in the
    /// kernel's queue.
    pub max_connections: usize,
}

impl Limits {
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

    /// The header-read timeout and cap of every listener, without an idle timeout.
    pub const fn standard(max_connections: usize) -> Limits {
        Limits {
            header_read_timeout: Limits::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: None,
            max_connections,
        }
    }
}

/// What a server did with its connections, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub accepted: u64,
    /// Closed to make room (at the cap, or out of descriptors).
    pub shed: u64,
    /// Closed for a request, body or idle time past its limit.
    pub timed_out: u64,
    /// Accepts that failed for want of a resource (descriptors, memory).
    pub accept_errors: u64,
    /// Open now (not counting those being shed).
    pub open: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    shed: AtomicU64,
    timed_out: AtomicU64,
    accept_errors: AtomicU64,
}

/// A server running in the background.
pub struct Server {
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    /// Cancelled once the server has stopped and its last connection closed.
    done: CancellationToken,
}

impl Server {
    pub fn stats(&self) -> ServerStats {
        stats(&self.registry, &self.counters)
    }

    /// Waits until it has stopped (after `stop`) and every connection has closed.
    pub async fn stopped(&self) {
        self.done.cancelled().await
    }
}

fn stats(registry: &Registry, counters: &Counters) -> ServerStats {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    ServerStats {
        accepted: get(&counters.accepted),
        shed: get(&counters.shed),
        timed_out: get(&counters.timed_out),
        accept_errors: get(&counters.accept_errors),
        open: registry.live() as u64,
    }
}

/// Resolves on Ctrl-C or SIGTERM: what ends a server's run, for the relay and the simulator.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Binds `addr`. A port in use is retried for up to `wait` (after a reload, the previous
/// server may hold it a moment longer); with no wait, it fails at once.
pub async fn bind(addr: std::net::SocketAddr, wait: Duration) -> io::Result<TcpListener> {
    let until = Instant::now() + wait;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Serves `app` on `listener` until `stop`: then no new connection is accepted, idle ones
/// close at once and requests in progress are answered first. Each request carries its
/// connection's peer as `axum::extract::ConnectInfo<SocketAddr>`.
pub fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) -> Server {
    let registry = Arc::new(Registry::default());
    let counters = Arc::new(Counters::default());
    let done = CancellationToken::new();
    let finished = done.clone().drop_guard();
    let (r, c) = (registry.clone(), counters.clone());
    tokio::spawn(async move {
        accept_loop(listener, app, limits, stop, r, c).await;
        drop(finished);
    });
    Server {
        registry,
        counters,
        done,
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
) {
    let max = limits.max_connections.max(1);
    let mut failures = Throttled::default();
    let mut backoff = Duration::from_millis(10);
    loop {
        // Every connection runs a request (or is yet to be read): new ones wait in the
        // kernel's queue.
        while registry.live() >= max && !registry.has_victim() {
            tokio::select! {
                _ = stop.cancelled() => return drain(listener, &registry).await,
                _ = registry.closed.notified() => {}
                // A request ending, or a first read, makes a connection sheddable.
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
        let accepted = tokio::select! {
            _ = stop.cancelled() => return drain(listener, &registry).await,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                if registry.live() >= max && registry.shed_one() {
                    counters.shed.fetch_add(1, Ordering::Relaxed);
                }
                let (conn, registered) = registry.add();
                let (app, stop, counters) = (app.clone(), stop.clone(), counters.clone());
                tokio::spawn(async move {
                    serve_connection(stream, conn, app, limits, stop, &counters).await;
                    drop(registered);
                });
            }
            // The client gave up before it was accepted: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(failed) = failures.due() {
                    tracing::warn!(
                        addr = ?listener.local_addr().ok(),
                        error = %e,
                        failed,
                        "cannot accept connections (out of descriptors?): closing the slowest clients to make room"
                    );
                }
                // Out of descriptors or memory: free some by closing the clients first in the
                // order of shedding, rather than spin on the error or give up serving. A few
                // at once (1 in 16), so that the next accepts find room without failing.
                let closed = registry.closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                let batch = (registry.live() / 16).max(1);
                let shed = (0..batch).take_while(|_| registry.shed_one()).count();
                if shed > 0 {
                    counters.shed.fetch_add(shed as u64, Ordering::Relaxed);
                    let _ = tokio::time::timeout(Duration::from_millis(100), closed).await;
                } else if registry.len() > 0 {
                    // Each one runs a request or is yet to be read: soon one can go.
                    let _ = tokio::time::timeout(RECHECK, closed).await;
                } else {
                    // None of ours holds the descriptors: wait for the rest of the process.
                    let _ = tokio::time::timeout(backoff, closed).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// A warning at most once a minute, with how many times it was due.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    /// Counts one occurrence; `Some(count since the last warning)` when one is due.
    fn due(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// How often the accept loop looks again for a connection it could shed, while none can be.
const RECHECK: Duration = Duration::from_millis(10);

/// After `stop`: the port is released at once; the connections end on their own (see
/// [`serve_connection`]) and are waited for.
async fn drain(listener: TcpListener, registry: &Registry) {
    drop(listener);
    loop {
        let closed = registry.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if registry.len() == 0 {
            return;
        }
        closed.await;
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    counters: &Counters,
) {
    let peer = stream.peer_addr().ok();
    let io = TokioIo::new(WatchedIo::new(stream, conn.clone()));
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let (conn, app) = (conn.clone(), app.clone());
            if let Some(peer) = peer {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            async move {
                conn.begin(request.body().is_end_stream());
                let body_conn = conn.clone();
                let request =
                    request.map(|body| axum::body::Body::new(WatchedBody::new(body, body_conn)));
                let response = app.oneshot(request).await;
                conn.end();
                response
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // The deadlines are ours (see `Conn::deadline`): hyper's would also cut keep-alive short.
    http.header_read_timeout(None);
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = conn.deadline(&limits);
        let changed = conn.changed.notified();
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = conn.shed.cancelled() => return,
            _ = changed => {}
            _ = stop.cancelled(), if !stopping => {
                if !conn.in_service() {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
