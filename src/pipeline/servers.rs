//! The pipeline's two HTTP servers: telemetry (`/metrics`, `/healthz`, `/readyz`) and the
//! admin API. Their ports are bound before anything else starts, so a port taken stops the
//! start at once, naming its key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::assemble::Start;
use super::PipelineError;
use crate::config::Config;
use crate::health::Health;
use crate::poll::{Fleet, Pollers};
use crate::store::Store;
use crate::telemetry::Metrics;
use mxc::{Client, Resource, Secret};

/// The ports of `telemetry.listen` and `admin.listen`, with the addresses bound.
pub(super) struct Listeners {
    telemetry: Option<(SocketAddr, TcpListener)>,
    admin: Option<(SocketAddr, TcpListener)>,
}

/// What the servers read of the running pipeline.
pub(super) struct Served {
    pub store: Store,
    pub client: Client,
    pub pollers: Pollers,
    pub fleet: Fleet,
    pub metrics: Metrics,
    /// Each webhook sink's wake-up (an endpoint switched on again).
    pub webhooks: BTreeMap<String, Arc<tokio::sync::Notify>>,
    pub backfills: crate::admin::Backfills,
    /// Polling's stop: the admin API's backfills end with it.
    pub stop_polling: CancellationToken,
}

/// The servers started: where they listen, and the admin server's task.
pub(super) struct Servers {
    pub telemetry_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// The token this run made up when none is configured.
    pub admin_generated_token: Option<Secret>,
    pub admin_task: Option<tokio::task::JoinHandle<()>>,
}

impl Listeners {
    /// Binds both ports, or fails naming the key whose port is taken. Within a reload the
    /// previous pipeline's servers may hold them a moment longer: that is waited for.
    pub async fn bind(config: &Config, start: Start) -> Result<Listeners, PipelineError> {
        let wait = match start {
            Start::First => Duration::ZERO,
            Start::Reload | Start::Restore => Duration::from_secs(5),
        };
        Ok(Listeners {
            telemetry: bind("telemetry.listen", config.telemetry.listen_addr(), wait).await?,
            admin: bind("admin.listen", config.admin.listen_addr(), wait).await?,
        })
    }

    /// Serves on the ports bound, until `stop` (cancelled after the deliveries, so operators
    /// see the stop).
    pub fn serve(self, config: &Config, served: Served, stop: &CancellationToken) -> Servers {
        let telemetry_addr = self.telemetry.map(|(bound, listener)| {
            let health = Health {
                metrics: served.metrics.clone(),
                store: served.store.clone(),
                client: served.client.clone(),
                fleet: served.fleet.clone(),
                roster_refresh: config
                    .pollers
                    .uses_roster()
                    .then_some(config.pollers.roster.refresh),
                // Three missed polls, plus time for a long one.
                stuck_after: config.pollers.interval * 3 + Duration::from_secs(60),
            };
            crate::health::serve(listener, health, stop.clone());
            tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
            bound
        });
        let (admin_addr, admin_generated_token, admin_task) = match self.admin {
            Some((bound, listener)) => {
                let (generated, task) = serve_admin(config, (bound, listener), served, stop);
                (Some(bound), generated, Some(task))
            }
            None => (None, None, None),
        };
        Servers {
            telemetry_addr,
            admin_addr,
            admin_generated_token,
            admin_task,
        }
    }
}

/// The admin API on `listener`, with the configured token or one made up for this run.
fn serve_admin(
    config: &Config,
    (bound, listener): (SocketAddr, TcpListener),
    served: Served,
    stop: &CancellationToken,
) -> (Option<Secret>, tokio::task::JoinHandle<()>) {
    let generated = config
        .admin
        .token
        .is_empty()
        .then(crate::admin::generate_token);
    let token = generated.as_ref().unwrap_or(&config.admin.token);
    let context = crate::admin::Context {
        store: served.store,
        sinks: config.sinks.keys().cloned().collect(),
        webhooks: served.webhooks,
        pollers: served.pollers,
        fleet: served.fleet,
        listed: config.pollers.listed_xmids(),
        routed: config
            .routes
            .iter()
            .filter_map(|r| Resource::named(&r.resource).map(|r| r.name))
            .collect(),
        metrics: served.metrics,
        backfills: served.backfills,
        stop: served.stop_polling,
        cluster: config.cluster.enabled(),
        roster: config.pollers.uses_roster(),
    };
    let task = crate::admin::serve(listener, token, context, stop.clone());
    tracing::info!(address = %bound, token = if generated.is_some() { "generated for this run (in admin.json beside the store)" } else { "configured" },
        "serving the admin API");
    (generated, task)
}

/// `addr` (the value of `key`) bound, with the address it got; nothing if not configured.
async fn bind(
    key: &'static str,
    addr: Option<SocketAddr>,
    wait: Duration,
) -> Result<Option<(SocketAddr, TcpListener)>, PipelineError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listen_error = |error| PipelineError::Listen { key, addr, error };
    let listener = http_kit::bind(addr, wait).await.map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    Ok(Some((bound, listener)))
}
