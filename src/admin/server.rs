//! The admin API's listener: `http_kit`'s, as every listener of mxc-relay, with a small cap on
//! connections. At the cap a new connection closes one that waits on its client (half-open,
//! or idle), so someone holding the port cannot lock an operator out; a request's headers must
//! arrive in time; a stop lets requests in flight finish (up to a few seconds).

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connections open at once; an operator's tools need few.
pub const MAX_CONNECTIONS: usize = 32;
/// A client has this long to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at a stop get this long to finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop`; the task ends once the server has stopped.
pub(super) fn serve(
    listener: TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let limits = http_kit::Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        ..http_kit::Limits::standard(MAX_CONNECTIONS)
    };
    let server = http_kit::serve(listener, app, limits, stop.clone());
    tokio::spawn(async move {
        stop.cancelled().await;
        let _ = tokio::time::timeout(STOP_GRACE, server.stopped()).await;
    })
}
