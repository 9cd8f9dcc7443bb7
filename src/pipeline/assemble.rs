//! Building the running service from a configuration: the MXC client, the sinks and their
//! delivery workers, the pollers (alone or in a cluster), the housekeeping tasks, and the
//! telemetry and admin servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::housekeeping::{count_seen, probe_sinks, prune_seen, sample_gauges};
use super::{ClusterMember, Pipeline, PipelineError};
use crate::cluster::{self, Handover, Membership, Polling, Sharding};
use crate::config::{Config, SinkConfig};
use crate::health::Health;
use crate::poll::{Bases, Budget, Fleet, MerchantControls, PollConfig, Pollers, RosterWatch};
use crate::route::Route;
use crate::sink::{self, Sink, WebhookSink, WorkerConfig};
use crate::store::Store;
use crate::telemetry::Metrics;
use mxc::{Client, MxcError, Resource};

/// What joining the cluster starts.
struct Joined {
    sharding: Sharding,
    membership: Membership,
    handover: Handover,
}

/// How long a revoked shard is polled while no other instance claims it (and a claimed one
/// waits for its last owner): a rebalance's rounds take a few heartbeats, or a session.
fn release_within(cluster: &crate::config::ClusterConfig) -> Duration {
    2 * cluster.session_timeout
}

/// Creates the cluster's topics if needed, starts the state handover and joins the group;
/// returns the pollers that publish their state.
async fn join_cluster(
    config: &Config,
    mut pollers: Pollers,
    store: &Store,
) -> Result<(Pollers, Joined), PipelineError> {
    let cluster = &config.cluster;
    let shards = cluster::ensure_topics(cluster).await?;
    let (c, s) = (cluster.clone(), store.clone());
    let handover = tokio::task::spawn_blocking(move || Handover::start(&c, s, shards))
        .await
        .map_err(PipelineError::ClusterTask)??;
    pollers.handover = Some(Arc::new(handover.clone()));
    let (changes, receiver) = tokio::sync::mpsc::unbounded_channel();
    // A revocation holds the group's rebalance while deliveries finish, and a little longer.
    let revoke_within = config.delivery.shutdown_timeout + Duration::from_secs(30);
    let membership = Membership::join(cluster, changes, revoke_within)?;
    tracing::info!(instance = handover.instance(), group = %cluster.group, shards,
        "joined the cluster; waiting for shards");
    let sharding = Sharding {
        changes: receiver,
        handover: handover.clone(),
        shards,
        state_interval: cluster.state_interval,
        session_timeout: cluster.session_timeout,
        handover_within: config.delivery.shutdown_timeout,
        release_within: release_within(cluster),
        leaver: membership.leaver(),
    };
    Ok((
        pollers,
        Joined {
            sharding,
            membership,
            handover,
        },
    ))
}

impl Pipeline {
    /// Opens the store, checks the credentials, and starts every task. A refused credential
    /// fails here; an unreachable MXC does not (the pollers retry).
    pub async fn start(config: &Config, metrics: Metrics) -> Result<Pipeline, PipelineError> {
        Pipeline::start_with_sinks(config, metrics, BTreeMap::new()).await
    }

    /// Like [`Pipeline::start`], with some sinks provided by the caller instead of built from
    /// the configuration (the demo's instrumented sinks, tests).
    pub async fn start_with_sinks(
        config: &Config,
        metrics: Metrics,
        provided: BTreeMap<String, Arc<dyn Sink>>,
    ) -> Result<Pipeline, PipelineError> {
        let store = Store::open_for(config)?;
        Pipeline::start_on(config, metrics, provided, store, Start::First).await
    }

    pub(super) async fn start_on(
        config: &Config,
        metrics: Metrics,
        mut provided: BTreeMap<String, Arc<dyn Sink>>,
        store: Store,
        start: Start,
    ) -> Result<Pipeline, PipelineError> {
        // Before anything else: a port taken (a second instance on this host, say) stops this
        // one at once, before it joins a cluster or polls.
        let mut listeners = Listeners::bind(config, start).await?;
        let mut client_config = config.mxc.client_config();
        client_config.observer = Some(Arc::new(metrics.clone()));
        client_config.clock = store.clock().clone();
        if config.cluster.enabled() {
            // MXC (and the simulator's counts) can tell the instances apart.
            client_config.user_agent = format!(
                "{} (instance {})",
                client_config.user_agent,
                config.cluster.instance_name()
            );
        }
        let client = Client::new(client_config)?;
        for (sink, entries) in store.orphan_outboxes() {
            if entries > 0 {
                tracing::warn!(%sink, entries, "an outbox remains for a sink no longer configured; its events wait there");
            }
        }
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::compile(r, i))
            .collect::<Result<Vec<_>, _>>()?;
        match client.authenticate().await {
            Ok(()) => tracing::info!(base_url = client.base_url(), "authenticated with MXC"),
            Err(e @ MxcError::AuthRejected { .. }) if start != Start::Restore => {
                return Err(e.into())
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach MXC yet; pollers will retry"),
        }

        let stop_polling = CancellationToken::new();
        let stop_delivering = CancellationToken::new();
        let mut workers = JoinSet::new();
        let worker_config = WorkerConfig {
            batch_size: config.delivery.batch_size,
            retry_min: config.delivery.retry_min,
            retry_max: config.delivery.retry_max,
        };
        // Every sink is built before any delivery starts: a sink that cannot be built leaves
        // nothing half-started behind (a reload falls back cleanly).
        let mut webhooks = Vec::new();
        let mut probed: Vec<(String, Arc<dyn Sink>)> = Vec::new();
        // Kafka sinks with CloudEvents name each event's schema (`ce_dataschema`).
        let schema_ids = if config.sinks.values().any(|s| {
            matches!(
                s,
                SinkConfig::Kafka {
                    cloudevents: true,
                    ..
                }
            )
        }) {
            crate::schema::Catalog::for_config(config, crate::schema::Enums::Open)?.ids()
        } else {
            Default::default()
        };
        for (name, sink_config) in &config.sinks {
            match (provided.remove(name), sink_config) {
                (Some(sink), _) => probed.push((name.clone(), sink)),
                (None, SinkConfig::Webhook(webhook)) => {
                    webhooks.push(WebhookSink::new(name, webhook)?)
                }
                (None, _) => {
                    probed.push((name.clone(), sink::build(name, sink_config, &schema_ids)?))
                }
            }
        }
        let webhook_controls: BTreeMap<String, Arc<tokio::sync::Notify>> = webhooks
            .iter()
            .map(|w| (w.name().to_string(), w.control()))
            .collect();
        for webhook in webhooks {
            workers.spawn(webhook.run(store.clone(), metrics.clone(), stop_delivering.clone()));
        }
        for (name, sink) in &probed {
            workers.spawn(sink::run_worker(
                name.clone(),
                sink.clone(),
                store.clone(),
                worker_config.clone(),
                metrics.clone(),
                stop_delivering.clone(),
            ));
        }

        let pollers = Pollers {
            client: client.clone(),
            store: store.clone(),
            routes: Arc::new(routes),
            budget: Arc::new(Budget::new(
                config.pollers.requests_per_second,
                config.pollers.burst,
            )),
            config: PollConfig {
                interval: config.pollers.interval,
                settle: config.pollers.settle,
                overlap: config.pollers.overlap,
                look_back: config.pollers.look_back,
                reconcile_every: config.pollers.reconcile_every,
                reconcile_window: config.pollers.reconcile_window,
                group_size: config.pollers.group_size.max_xmids(),
                page_size: config.mxc.page_size,
                max_result_window: config.mxc.max_result_window,
                max_backoff: Duration::from_secs(300),
                seen_retention: config.store.seen_retention,
                resources: config.pollers.polled_resources(),
                first_poll_within: config.pollers.interval,
            },
            metrics: metrics.clone(),
            handover: None,
            bases: Arc::new(Bases::new(config.pollers.cursor)),
            polls_waiting: Arc::default(),
            sweeps: Arc::default(),
            merchants: MerchantControls::load(&store)?,
        };
        // Said from the start (0), so a dashboard or alert sees the series before any fallback
        // or sweep.
        for outcome in ["ok", "partial", "error"] {
            metrics.sweeps.with_label_values(&[outcome]).inc_by(0);
        }
        for resource in &pollers.config.resources {
            if resource.ingestion_field.is_some() {
                metrics
                    .cursor_fallback
                    .with_label_values(&[resource.name])
                    .set(0);
                metrics
                    .created_filter_ignored
                    .with_label_values(&[resource.name])
                    .set(0);
            }
        }
        // `now` is MXC's (from the authentication's answer): on `created`, a start on our
        // clock ahead of MXC's would skip what MXC ingests until its clock gets there.
        let start = config
            .pollers
            .start_instant()
            .map_err(PipelineError::Start)?
            .unwrap_or_else(|| client.mxc_now());
        let listed = config.pollers.listed_xmids();
        let mut poller_tasks = JoinSet::new();
        let mut membership = None;
        let fleet;
        if config.cluster.enabled() {
            // The group decides which merchants this instance polls (see `cluster`).
            let (pollers, joined) = join_cluster(config, pollers.clone(), &store).await?;
            membership = Some(ClusterMember {
                membership: joined.membership,
                handover: joined.handover,
                // Polled until claimed, then delivered and handed over, with a margin.
                stop_within: release_within(&config.cluster)
                    + config.delivery.shutdown_timeout
                    + Duration::from_secs(15),
            });
            fleet = Fleet::new(Vec::new());
            let polling = Polling {
                pollers,
                listed,
                roster: config
                    .pollers
                    .uses_roster()
                    .then(|| config.pollers.roster.clone()),
                start,
                fleet: fleet.clone(),
            };
            poller_tasks.spawn(joined.sharding.run(polling, stop_polling.clone()));
        } else {
            pollers.init_cursors(&listed, start).await?;
            pollers.spawn(&listed, &mut poller_tasks, &stop_polling);
            fleet = Fleet::new(listed.clone());
            if config.pollers.uses_roster() {
                let watch = RosterWatch {
                    pollers: pollers.clone(),
                    config: config.pollers.roster.clone(),
                    listed,
                    start,
                    fleet: fleet.clone(),
                    owns: None,
                    reassigned: None,
                };
                poller_tasks.spawn(watch.run(stop_polling.clone()));
            }
        }

        let mut housekeeping = JoinSet::new();
        housekeeping.spawn(probe_sinks(probed, metrics.clone(), stop_polling.clone()));
        // Pruning protects the ids the fleet's cursors could re-read; without pollers (a
        // backfill) the fleet is unknown here, so nothing is pruned.
        if !config.pollers.xmids.is_empty() {
            housekeeping.spawn(prune_seen(
                store.clone(),
                fleet.clone(),
                pollers.config.resources.clone(),
                config.store.seen_retention,
                config.pollers.look_back,
                stop_polling.clone(),
            ));
        }
        housekeeping.spawn(count_seen(
            store.clone(),
            metrics.clone(),
            stop_polling.clone(),
        ));
        housekeeping.spawn(sample_gauges(
            store.clone(),
            fleet.clone(),
            pollers.config.resources.clone(),
            client.clone(),
            metrics.clone(),
            config.telemetry.per_xmid_metrics,
            stop_polling.clone(),
        ));
        let stop_telemetry = CancellationToken::new();
        let admin_fleet = fleet.clone();
        let telemetry_addr = match listeners.telemetry.take() {
            Some((bound, listener)) => {
                let health = Health {
                    metrics: metrics.clone(),
                    store: store.clone(),
                    client,
                    fleet,
                    roster_refresh: config
                        .pollers
                        .uses_roster()
                        .then_some(config.pollers.roster.refresh),
                    // Three missed polls, plus time for a long one.
                    stuck_after: config.pollers.interval * 3 + Duration::from_secs(60),
                };
                crate::health::serve(listener, health, stop_telemetry.clone());
                tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
                Some(bound)
            }
            None => None,
        };
        let backfills = crate::admin::Backfills::default();
        let (admin_addr, admin_generated_token, admin_task) = match listeners.admin.take() {
            Some((bound, listener)) => {
                let generated = config
                    .admin
                    .token
                    .is_empty()
                    .then(crate::admin::generate_token);
                let token = generated.as_ref().unwrap_or(&config.admin.token);
                let context = crate::admin::Context {
                    store: store.clone(),
                    sinks: config.sinks.keys().cloned().collect(),
                    webhooks: webhook_controls,
                    pollers: pollers.clone(),
                    fleet: admin_fleet,
                    listed: config.pollers.listed_xmids(),
                    routed: config
                        .routes
                        .iter()
                        .filter_map(|r| Resource::named(&r.resource).map(|r| r.name))
                        .collect(),
                    metrics: metrics.clone(),
                    backfills: backfills.clone(),
                    stop: stop_polling.clone(),
                    cluster: config.cluster.enabled(),
                    roster: config.pollers.uses_roster(),
                };
                // With telemetry: stopped after the deliveries, so operators see the stop.
                let task = crate::admin::serve(listener, token, context, stop_telemetry.clone());
                tracing::info!(address = %bound, token = if generated.is_some() { "generated for this run (in admin.json beside the store)" } else { "configured" },
                    "serving the admin API");
                (Some(bound), generated, Some(task))
            }
            None => (None, None, None),
        };
        tracing::info!(
            xmids = config.pollers.listed_xmids().len(),
            roster = config.pollers.uses_roster(),
            sinks = config.sinks.len(),
            routes = config.routes.len(),
            store = %store.path().display(),
            "mxc-relay running"
        );
        Ok(Pipeline {
            store,
            metrics,
            telemetry_addr,
            admin_addr,
            admin_generated_token,
            admin_task,
            backfills,
            stop_telemetry,
            polling: pollers,
            pollers: poller_tasks,
            workers,
            housekeeping,
            stop_polling,
            stop_delivering,
            shutdown_timeout: config.delivery.shutdown_timeout,
            cluster: membership,
        })
    }
}

/// How a pipeline starts: with the process, or within a reload (with the new configuration,
/// or the previous one again when the new one failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    First,
    Reload,
    /// Refused credentials do not stop it: delivery needs no MXC, and the pollers retry.
    Restore,
}

/// The ports of `telemetry.listen` and `admin.listen`, with the addresses bound.
struct Listeners {
    telemetry: Option<(SocketAddr, TcpListener)>,
    admin: Option<(SocketAddr, TcpListener)>,
}

impl Listeners {
    /// Binds both ports, or fails naming the key whose port is taken. Within a reload the
    /// previous pipeline's servers may hold them a moment longer: that is waited for.
    async fn bind(config: &Config, start: Start) -> Result<Listeners, PipelineError> {
        let wait = match start {
            Start::First => Duration::ZERO,
            Start::Reload | Start::Restore => Duration::from_secs(5),
        };
        Ok(Listeners {
            telemetry: bind("telemetry.listen", config.telemetry.listen_addr(), wait).await?,
            admin: bind("admin.listen", config.admin.listen_addr(), wait).await?,
        })
    }
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
