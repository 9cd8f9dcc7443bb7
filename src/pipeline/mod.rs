//! The running service, assembled top-down: client → pollers → store → delivery workers →
//! sinks, plus the housekeeping tasks; and its lifecycle (start, run, reload, graceful stop).
//!
//! - `assemble`: building and starting every task from a configuration ([`Pipeline::start`]);
//! - `lifecycle`: what a started pipeline does until it ends (reload, backfill, drain,
//!   shutdown);
//! - `servers`: the telemetry and admin servers, their ports bound first;
//! - `housekeeping`: the background tasks beside polling and delivery (sink probes, pruning
//!   and counting the seen ids, sampling the gauges).

mod assemble;
mod housekeeping;
mod lifecycle;
mod servers;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterError, Handover, Membership};
use crate::config::ValueError;
use crate::poll::Pollers;
use crate::route::RouteError;
use crate::sink::SinkError;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use mxc::{MxcError, Secret};

/// Why a pipeline did not start (or a reload could start neither configuration).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The store cannot be opened, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// MXC refused the credentials, or its client cannot be built.
    #[error(transparent)]
    Mxc(#[from] MxcError),
    /// Joining the cluster failed: its topics, the state handover or the group.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The task that starts the cluster's state handover panicked or was cancelled.
    #[error("cluster: {0}")]
    ClusterTask(tokio::task::JoinError),
    /// A route does not compile (a configuration that skipped validation).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A sink cannot be built (a property librdkafka refuses, a webhook's settings …).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// `pollers.start` is not an instant this run can start from.
    #[error("pollers.start: {0}")]
    Start(ValueError),
    /// The telemetry or admin server cannot listen; `key` is its setting
    /// (`telemetry.listen`, `admin.listen`).
    #[error("{key}: cannot listen on {addr}: {error}")]
    Listen {
        key: &'static str,
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    /// A reload: the new configuration failed to start (`error`), and so did the previous one
    /// when started again (`again`). Nothing runs.
    #[error("the new configuration failed to start ({error}), and the previous one could not start again: {again}")]
    Reload {
        error: Box<PipelineError>,
        again: Box<PipelineError>,
    },
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
    /// The longest the sharding task may take to hand everything over when polling stops.
    stop_within: Duration,
}
