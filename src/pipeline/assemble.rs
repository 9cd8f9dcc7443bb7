//! Building the running service from a configuration, in named steps, top-down: the MXC
//! client, the routes, the sinks and their delivery ([`Delivery`]), the pollers (alone or in a
//! cluster: [`start_polling`]), the housekeeping tasks, and the telemetry and admin servers
//! (`servers`). Each component builds its own settings from its own section.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::housekeeping::{count_seen, probe_sinks, prune_seen, sample_gauges};
use super::servers::{Listeners, Served};
use super::{ClusterMember, Pipeline, PipelineError};
use crate::cluster::{self, Handover, Membership, Polling as ClusterPolling, Sharding};
use crate::config::{Config, SinkConfig};
use crate::poll::{Fleet, Pollers, RosterWatch};
use crate::route::Route;
use crate::sink::{self, Sink, WebhookSink, WorkerConfig};
use crate::store::Store;
use crate::telemetry::Metrics;
use mxc::{Client, MxcError};

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

    /// Starts every task on an open store, top-down: servers' ports, the MXC client, the
    /// routes, delivery, polling, housekeeping, then the servers.
    pub(super) async fn start_on(
        config: &Config,
        metrics: Metrics,
        provided: BTreeMap<String, Arc<dyn Sink>>,
        store: Store,
        start: Start,
    ) -> Result<Pipeline, PipelineError> {
        // Before anything else: a port taken (a second instance on this host, say) stops this
        // one at once, before it joins a cluster or polls.
        let listeners = Listeners::bind(config, start).await?;
        let client = mxc_client(config, &metrics, &store)?;
        for (sink, entries) in store.orphan_outboxes() {
            if entries > 0 {
                tracing::warn!(%sink, entries, "an outbox remains for a sink no longer configured; its events wait there");
            }
        }
        let routes = crate::route::compile_all(&config.routes)?;
        authenticate(&client, start).await?;

        let (stop_polling, stop_delivering) = (CancellationToken::new(), CancellationToken::new());
        let delivery = Delivery::start(
            config,
            provided,
            &routes,
            &store,
            &metrics,
            &stop_delivering,
        )?;
        let pollers = Pollers::new(
            config,
            client.clone(),
            store.clone(),
            routes,
            metrics.clone(),
        )?;
        let polling = start_polling(config, &pollers, &store, &client, &stop_polling).await?;
        let housekeeping = start_housekeeping(
            config,
            &store,
            &polling.fleet,
            &pollers,
            &client,
            delivery.probed,
            &metrics,
            &stop_polling,
        );

        let stop_telemetry = CancellationToken::new();
        let backfills = crate::admin::Backfills::default();
        let served = Served {
            store: store.clone(),
            client,
            pollers: pollers.clone(),
            fleet: polling.fleet,
            metrics: metrics.clone(),
            webhooks: delivery.webhooks,
            backfills: backfills.clone(),
            stop_polling: stop_polling.clone(),
        };
        let servers = listeners.serve(config, served, &stop_telemetry);
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
            telemetry_addr: servers.telemetry_addr,
            admin_addr: servers.admin_addr,
            admin_generated_token: servers.admin_generated_token,
            admin_task: servers.admin_task,
            backfills,
            stop_telemetry,
            polling: pollers,
            pollers: polling.tasks,
            workers: delivery.workers,
            housekeeping,
            stop_polling,
            stop_delivering,
            shutdown_timeout: config.delivery.shutdown_timeout,
            cluster: polling.membership,
        })
    }
}

/// The MXC client of `[mxc]`, reporting to `metrics`, on the store's clock.
fn mxc_client(config: &Config, metrics: &Metrics, store: &Store) -> Result<Client, MxcError> {
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
    Client::new(client_config)
}

/// Checks the credentials: refused ones stop the start (except when restoring the previous
/// configuration); an MXC out of reach does not (the pollers retry).
async fn authenticate(client: &Client, start: Start) -> Result<(), MxcError> {
    match client.authenticate().await {
        Ok(()) => tracing::info!(base_url = client.base_url(), "authenticated with MXC"),
        Err(e @ MxcError::AuthRejected { .. }) if start != Start::Restore => return Err(e),
        Err(e) => tracing::warn!(error = %e, "cannot reach MXC yet; pollers will retry"),
    }
    Ok(())
}

/// The sinks, each with its delivery task running.
struct Delivery {
    workers: JoinSet<()>,
    /// The sinks the generic worker delivers to, which housekeeping probes.
    probed: Vec<(String, Arc<dyn Sink>)>,
    /// Each webhook sink's wake-up, for the admin API.
    webhooks: BTreeMap<String, Arc<tokio::sync::Notify>>,
}

impl Delivery {
    /// Builds every sink (the `provided` ones as they are), then starts their delivery: a
    /// sink that cannot be built leaves nothing half-started behind (a reload falls back
    /// cleanly).
    fn start(
        config: &Config,
        mut provided: BTreeMap<String, Arc<dyn Sink>>,
        routes: &[Route],
        store: &Store,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) -> Result<Delivery, PipelineError> {
        let mut webhook_sinks = Vec::new();
        let mut probed: Vec<(String, Arc<dyn Sink>)> = Vec::new();
        let schema_ids = schema_ids(config, routes);
        for (name, sink_config) in &config.sinks {
            match (provided.remove(name), sink_config) {
                (Some(sink), _) => probed.push((name.clone(), sink)),
                (None, SinkConfig::Webhook(webhook)) => {
                    webhook_sinks.push(WebhookSink::new(name, webhook)?)
                }
                (None, _) => {
                    probed.push((name.clone(), sink::build(name, sink_config, &schema_ids)?))
                }
            }
        }
        let webhooks = webhook_sinks
            .iter()
            .map(|w| (w.name().to_string(), w.control()))
            .collect();
        let mut workers = JoinSet::new();
        for webhook in webhook_sinks {
            workers.spawn(webhook.run(store.clone(), metrics.clone(), stop.clone()));
        }
        let worker_config = WorkerConfig {
            batch_size: config.delivery.batch_size,
            retry_min: config.delivery.retry_min,
            retry_max: config.delivery.retry_max,
        };
        for (name, sink) in &probed {
            workers.spawn(sink::run_worker(
                name.clone(),
                sink.clone(),
                store.clone(),
                worker_config.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
        Ok(Delivery {
            workers,
            probed,
            webhooks,
        })
    }
}

/// The schema id of each event type the routes make, for Kafka sinks with CloudEvents
/// (`ce_dataschema`); none when no sink needs them.
fn schema_ids(config: &Config, routes: &[Route]) -> HashMap<String, String> {
    let cloudevents = config.sinks.values().any(|s| {
        matches!(
            s,
            SinkConfig::Kafka {
                cloudevents: true,
                ..
            }
        )
    });
    if !cloudevents {
        return HashMap::new();
    }
    crate::schema::Catalog::for_routes(routes, crate::schema::Enums::Open).ids()
}

/// Polling started: its tasks, the merchants it covers, and in a cluster the membership.
struct Polling {
    tasks: JoinSet<()>,
    fleet: Fleet,
    membership: Option<ClusterMember>,
}

/// Starts polling: the listed merchants (and the roster's) on this instance alone, or in a
/// cluster the shards the group gives it.
async fn start_polling(
    config: &Config,
    pollers: &Pollers,
    store: &Store,
    client: &Client,
    stop: &CancellationToken,
) -> Result<Polling, PipelineError> {
    // `now` is MXC's (from the authentication's answer): on `created`, a start on our
    // clock ahead of MXC's would skip what MXC ingests until its clock gets there.
    let start = config
        .pollers
        .start_instant()
        .map_err(PipelineError::Start)?
        .unwrap_or_else(|| client.mxc_now());
    let listed = config.pollers.listed_xmids();
    let roster = config
        .pollers
        .uses_roster()
        .then(|| config.pollers.roster.clone());
    let mut tasks = JoinSet::new();
    if config.cluster.enabled() {
        // The group decides which merchants this instance polls (see `cluster`).
        let (pollers, joined) = join_cluster(config, pollers.clone(), store).await?;
        let membership = Some(ClusterMember {
            membership: joined.membership,
            handover: joined.handover,
            // Polled until claimed, then delivered and handed over, with a margin.
            stop_within: release_within(&config.cluster)
                + config.delivery.shutdown_timeout
                + Duration::from_secs(15),
        });
        let fleet = Fleet::new(Vec::new());
        let polling = ClusterPolling {
            pollers,
            listed,
            roster,
            start,
            fleet: fleet.clone(),
        };
        tasks.spawn(joined.sharding.run(polling, stop.clone()));
        return Ok(Polling {
            tasks,
            fleet,
            membership,
        });
    }
    pollers.init_cursors(&listed, start).await?;
    pollers.spawn(&listed, &mut tasks, stop);
    let fleet = Fleet::new(listed.clone());
    if let Some(roster) = roster {
        let watch = RosterWatch {
            pollers: pollers.clone(),
            config: roster,
            listed,
            start,
            fleet: fleet.clone(),
            owns: None,
            reassigned: None,
        };
        tasks.spawn(watch.run(stop.clone()));
    }
    Ok(Polling {
        tasks,
        fleet,
        membership: None,
    })
}

/// The background tasks beside polling and delivery: sink probes, pruning and counting the
/// seen ids, the gauges.
#[allow(clippy::too_many_arguments)]
fn start_housekeeping(
    config: &Config,
    store: &Store,
    fleet: &Fleet,
    pollers: &Pollers,
    client: &Client,
    probed: Vec<(String, Arc<dyn Sink>)>,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let mut housekeeping = JoinSet::new();
    housekeeping.spawn(probe_sinks(probed, metrics.clone(), stop.clone()));
    let resources = &pollers.config.resources;
    // Pruning protects the ids the fleet's cursors could re-read; without pollers (a
    // backfill) the fleet is unknown here, so nothing is pruned.
    if !config.pollers.xmids.is_empty() {
        housekeeping.spawn(prune_seen(
            store.clone(),
            fleet.clone(),
            resources.clone(),
            config.store.seen_retention,
            config.pollers.look_back,
            stop.clone(),
        ));
    }
    housekeeping.spawn(count_seen(store.clone(), metrics.clone(), stop.clone()));
    housekeeping.spawn(sample_gauges(
        store.clone(),
        fleet.clone(),
        resources.clone(),
        client.clone(),
        metrics.clone(),
        config.telemetry.per_xmid_metrics,
        stop.clone(),
    ));
    housekeeping
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
