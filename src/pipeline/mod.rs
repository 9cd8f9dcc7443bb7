//! The running service, assembled top-down: client → pollers → store → delivery workers →
//! sinks, plus the housekeeping tasks; and its lifecycle (start, run, reload, graceful stop).
//!
//! - `assemble`: building and starting every task from a configuration ([`Pipeline::start`]);
//! - `lifecycle`: what a started pipeline does until it ends (reload, backfill, drain,
//!   shutdown);
//! - `housekeeping`: the background tasks beside polling and delivery (sink probes, pruning
//!   and counting the seen ids, sampling the gauges).

mod assemble;
mod housekeeping;
mod lifecycle;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterError, Handover, Membership};
use crate::mxc::MxcError;
use crate::poll::Pollers;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mxc(#[from] MxcError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A pipeline that has been started.
pub struct Pipeline {
    pub store: Store,
    pub metrics: Metrics,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub telemetry_addr: Option<std::net::SocketAddr>,
    /// Where the admin API is served, if anywhere, and the token this run made up when none
    /// is configured (loopback only; see `admin::discovery`).
    pub admin_addr: Option<std::net::SocketAddr>,
    pub admin_generated_token: Option<Secret>,
    /// The admin server's task and the backfills it started: both hold the store.
    admin_task: Option<tokio::task::JoinHandle<()>>,
    backfills: crate::admin::Backfills,
    stop_telemetry: CancellationToken,
    /// What the poller tasks share (client, store, routes, budget): also what a backfill uses.
    polling: Pollers,
    pollers: JoinSet<()>,
    workers: JoinSet<()>,
    housekeeping: JoinSet<()>,
    stop_polling: CancellationToken,
    stop_delivering: CancellationToken,
    shutdown_timeout: Duration,
    /// In a cluster: this instance's membership and state handover.
    cluster: Option<ClusterMember>,
}

struct ClusterMember {
    membership: Membership,
    handover: Handover,
}
