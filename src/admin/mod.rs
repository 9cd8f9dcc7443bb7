//! The admin API: operates the running service — its state, dead letters, webhook endpoints,
//! merchants and backfills — over HTTP with JSON, on its own listener (`[admin]`). Every request
//! carries a bearer token (`auth`); the CLI finds the service through `discovery` and talks to
//! it with `client`, and reads a stopped service's store through the same `ops`.

pub mod api;
mod auth;
pub mod client;
pub mod discovery;
mod jobs;
mod openapi;
pub mod ops;
mod routes;
mod server;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use jobs::{backfill_request, BackfillError, BackfillRunning, Backfills};
pub use openapi::document as openapi_document;
pub use server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};

use crate::poll::{Fleet, Pollers};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use mxc::Secret;

/// What the routes act on: the running pipeline's parts.
pub struct Context {
    pub store: Store,
    /// Every configured sink.
    pub sinks: Vec<String>,
    /// Webhook sinks, each with what wakes its dispatcher after a change in the store.
    pub webhooks: BTreeMap<String, Arc<Notify>>,
    /// The pipeline's pollers: merchant controls, and what a backfill runs on.
    pub pollers: Pollers,
    /// The merchants polled (listed and from the roster).
    pub fleet: Fleet,
    /// XMIDs listed in `pollers.xmids` (a backfill's default).
    pub listed: Vec<String>,
    /// Resources some route takes.
    pub routed: Vec<&'static str>,
    pub metrics: Metrics,
    pub backfills: Backfills,
    /// The pipeline's stop: a backfill stops with it.
    pub stop: CancellationToken,
    pub cluster: bool,
    pub roster: bool,
}

impl Context {
    /// The store's state and what only the running service knows.
    pub fn state(&self, page: &api::CursorPage) -> Result<api::StateView, StoreError> {
        let webhooks: Vec<String> = self.webhooks.keys().cloned().collect();
        let mut view = ops::state(&self.store, &self.sinks, &webhooks, page)?;
        view.live = true;
        for cursor in &mut view.cursors {
            cursor.last_error = self
                .pollers
                .merchants
                .last_error(&cursor.resource, &cursor.xmid)
                .map(|(at, error)| api::LastError { at, error });
        }
        view.roster_merchants = self.roster.then(|| self.metrics.roster_merchants.get());
        view.cluster_shards = self.cluster.then(|| self.metrics.cluster_shards.get());
        view.backfill = self.backfills.status();
        Ok(view)
    }

    /// Whether this instance polls `xmid` (listed, from the roster, or its shard's).
    fn polls(&self, xmid: &str) -> bool {
        self.fleet.xmids().iter().any(|x| x == xmid) || self.listed.iter().any(|x| x == xmid)
    }
}

/// Serves the API on `listener` until `stop`; the server's task (done once
/// its last connection closed: then it holds nothing of the pipeline). Requests need `token`.
pub fn serve(
    listener: tokio::net::TcpListener,
    token: &Secret,
    context: Context,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let token = Arc::new(auth::Token::new(token));
    let app = routes::router(Arc::new(context))
        .route("/v1/openapi.json", axum::routing::get(openapi::openapi))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::authorize_and_audit,
        ));
    server::serve(listener, app, stop)
}

/// A fresh random token, for a loopback listener with none configured.
pub fn generate_token() -> Secret {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
