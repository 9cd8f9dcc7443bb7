//! The running service, assembled top-down: client → pollers → store → delivery workers →
//! sinks, plus the housekeeping tasks; and its lifecycle (start, run, graceful stop).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, ClusterError, Handover, Membership, Polling, Sharding};
use crate::config::{Config, SinkConfig};
use crate::mxc::{Client, MxcError, Resource};
use crate::poll::{
    rate_limiter, BackfillProgress, BackfillRequest, Bases, Fleet, MerchantControls, PollConfig,
    PollError, Pollers, RosterWatch,
};
use crate::route::Route;
use crate::secret::Secret;
use crate::sink::{self, Sink, WebhookSink, WorkerConfig};
use crate::store::{Store, StoreError};
use crate::health::Health;
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

/// What joining the cluster starts.
struct Joined {
    sharding: Sharding,
    membership: Membership,
    handover: Handover,
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
    let handover = tokio::task::spawn_blocking(move || Handover::start(&c, s))
        .await
        .map_err(|e| PipelineError::Config(format!("cluster: {e}")))??;
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
        handover_within: config.delivery.shutdown_timeout,
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
        Pipeline::start_on(config, metrics, provided, store, true).await
    }

    /// Applies a new configuration without leaving the process: this pipeline stops
    /// gracefully (polling at once, in-flight deliveries finished: the outboxes, cursors and
    /// retry states are in the store) and one built from `new` starts on the same store. If
    /// `new` cannot start (a sink its client library refuses, say), `current` starts again
    /// and the error is returned beside it; `Err` only if neither can start.
    pub async fn reload(
        self,
        current: &Config,
        new: &Config,
    ) -> Result<(Pipeline, Result<(), PipelineError>), PipelineError> {
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        if let Err(e) = self.shutdown().await {
            tracing::error!(error = %e, "stopping for the reload did not flush the store");
        }
        let started = match store.reconfigure(new) {
            Ok(view) => Pipeline::start_on(new, metrics.clone(), BTreeMap::new(), view, true).await,
            Err(e) => Err(e.into()),
        };
        match started {
            Ok(pipeline) => {
                forget_dropped_series(&pipeline.metrics, current, new);
                Ok((pipeline, Ok(())))
            }
            Err(error) => {
                let restarted = match store.reconfigure(current) {
                    // Refused credentials do not stop it: delivery needs no MXC, and the
                    // pollers retry.
                    Ok(view) => {
                        Pipeline::start_on(current, metrics, BTreeMap::new(), view, false).await
                    }
                    Err(e) => Err(e.into()),
                };
                match restarted {
                    Ok(pipeline) => Ok((pipeline, Err(error))),
                    Err(again) => Err(PipelineError::Config(format!(
                        "the new configuration failed to start ({error}), and the previous one could not start again: {again}"
                    ))),
                }
            }
        }
    }

    async fn start_on(
        config: &Config,
        metrics: Metrics,
        mut provided: BTreeMap<String, Arc<dyn Sink>>,
        store: Store,
        refused_credentials_fail: bool,
    ) -> Result<Pipeline, PipelineError> {
        let mut client_config = config.mxc.client_config();
        client_config.metrics = Some(metrics.clone());
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
            .collect::<Result<Vec<_>, _>>()
            .map_err(PipelineError::Config)?;
        match client.authenticate().await {
            Ok(()) => tracing::info!(base_url = client.base_url(), "authenticated with MXC"),
            Err(e @ MxcError::AuthRejected { .. }) if refused_credentials_fail => {
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
            crate::schema::Catalog::for_config(config, crate::schema::Enums::Open)
                .map_err(PipelineError::Config)?
                .ids()
        } else {
            Default::default()
        };
        for (name, sink_config) in &config.sinks {
            match (provided.remove(name), sink_config) {
                (Some(sink), _) => probed.push((name.clone(), sink)),
                (None, SinkConfig::Webhook(webhook)) => {
                    webhooks.push(WebhookSink::new(name, webhook).map_err(PipelineError::Config)?)
                }
                (None, _) => probed.push((
                    name.clone(),
                    sink::build(name, sink_config, &schema_ids).map_err(PipelineError::Config)?,
                )),
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
            limiter: rate_limiter(config.pollers.requests_per_second, config.pollers.burst),
            config: PollConfig {
                interval: config.pollers.interval,
                settle: config.pollers.settle,
                overlap: config.pollers.overlap,
                look_back: config.pollers.look_back,
                reconcile_every: config.pollers.reconcile_every,
                reconcile_window: config.pollers.reconcile_window,
                requests_per_second: config.pollers.requests_per_second,
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
            merchants: MerchantControls::load(&store)?,
        };
        // Said from the start (0), so a dashboard or alert sees the series before any fallback
        // or sweep.
        for outcome in ["ok", "error"] {
            metrics.sweeps.with_label_values(&[outcome]).inc_by(0);
        }
        for resource in &pollers.config.resources {
            if resource.ingestion_field.is_some() {
                metrics
                    .cursor_fallback
                    .with_label_values(&[resource.name])
                    .set(0);
            }
        }
        // `now` is MXC's (from the authentication's answer): on `created`, a start on our
        // clock ahead of MXC's would skip what MXC ingests until its clock gets there.
        let start = config
            .pollers
            .start_instant()
            .map_err(|e| PipelineError::Config(format!("pollers.start: {e}")))?
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
        let telemetry_addr = match config.telemetry.listen_addr() {
            Some(addr) => {
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
                let bound = crate::health::serve(addr, health, stop_telemetry.clone())
                    .await
                    .map_err(|e| {
                        PipelineError::Config(format!(
                            "telemetry.listen: cannot listen on {addr}: {e}"
                        ))
                    })?;
                tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
                Some(bound)
            }
            None => None,
        };
        let backfills = crate::admin::Backfills::default();
        let (admin_addr, admin_generated_token, admin_task) = match config.admin.listen_addr() {
            Some(addr) => {
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
                let (bound, task) =
                    crate::admin::serve(addr, token, context, stop_telemetry.clone())
                        .await
                        .map_err(|e| {
                            PipelineError::Config(format!(
                                "admin.listen: cannot listen on {addr}: {e}"
                            ))
                        })?;
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

    /// Resolves when the store can no longer write (see [`Store::failure`]), with sled's error.
    pub async fn store_failed(&self) -> String {
        loop {
            if let Some(failure) = self.store.failure() {
                return failure;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Replays history into the sinks (see [`Pollers::backfill`]), beside whatever polls.
    pub async fn backfill(
        &self,
        request: &BackfillRequest,
        stop: &CancellationToken,
        on_page: impl FnMut(&BackfillProgress),
    ) -> Result<BackfillProgress, PollError> {
        self.polling.backfill(request, stop, on_page).await
    }

    /// Stops polling at once: an interrupted cycle is redone after a restart (its pages were
    /// admitted atomically or not at all).
    async fn stop_pollers(&mut self) {
        self.stop_polling.cancel();
        if let Some(cluster) = self.cluster.take() {
            // The sharding task hands its merchants over (deliveries finished, states
            // published) before the group is left, so the others resume where it stopped.
            let within = self.shutdown_timeout + Duration::from_secs(15);
            let pollers = &mut self.pollers;
            let _ = tokio::time::timeout(within, async {
                while pollers.join_next().await.is_some() {}
            })
            .await;
            cluster.handover.stop();
            let mut membership = cluster.membership;
            let _ = tokio::task::spawn_blocking(move || membership.leave()).await;
        }
        self.pollers.abort_all();
        while self.pollers.join_next().await.is_some() {}
    }

    /// Stops polling and waits (up to `within`) until every outbox is empty: for a demo or a
    /// test that wants what it admitted delivered before [`Pipeline::shutdown`]. Returns
    /// whether they emptied.
    pub async fn drain(&mut self, within: Duration) -> bool {
        self.stop_pollers().await;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let waiting: usize = self
                .store
                .sinks()
                .map(|s| self.store.outbox_len(s).unwrap_or(0))
                .sum();
            if waiting == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop: polling stops at once (an interrupted cycle is redone after a restart:
    /// its pages were admitted atomically or not at all); in-flight deliveries get up to
    /// `delivery.shutdown_timeout` to finish; the store is flushed.
    pub async fn shutdown(mut self) -> Result<(), StoreError> {
        self.stop_pollers().await;
        self.housekeeping.abort_all();
        while self.housekeeping.join_next().await.is_some() {}
        self.stop_delivering.cancel();
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = %humantime::format_duration(self.shutdown_timeout),
                "deliveries still in flight at the deadline; they are redelivered after a restart");
            self.workers.abort_all();
        }
        self.backfills.finish().await;
        self.store.flush().await?;
        self.stop_telemetry.cancel();
        if let Some(task) = self.admin_task.take() {
            // Its requests in flight finish (a few seconds at most); then the store is free
            // for the next pipeline (a reload, a restart in the same process).
            let _ = task.await;
        }
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Series of the sinks and listed XMIDs a reload dropped would otherwise keep their last value
/// (an alert on a sink that no longer exists).
fn forget_dropped_series(metrics: &Metrics, current: &Config, new: &Config) {
    for sink in current.sinks.keys().filter(|s| !new.sinks.contains_key(*s)) {
        let _ = metrics.sink_unreachable.remove_label_values(&[sink]);
        let _ = metrics.webhook_disabled.remove_label_values(&[sink]);
        let _ = metrics.outbox_events.remove_label_values(&[sink]);
        let _ = metrics.dead_letters.remove_label_values(&[sink]);
    }
    let listed = new.pollers.listed_xmids();
    for xmid in current.pollers.listed_xmids() {
        if !listed.contains(&xmid) {
            let _ = metrics.poll_lag.remove_label_values(&[&xmid]);
        }
    }
}

/// Probes each sink's destination every 10 s (Kafka: the brokers' metadata), for `/readyz` and
/// `mxc_relay_sink_unreachable`; logs each change.
async fn probe_sinks(
    sinks: Vec<(String, Arc<dyn Sink>)>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    loop {
        for (name, sink) in &sinks {
            let result = sink.probe().await;
            let gauge = metrics.sink_unreachable.with_label_values(&[name]);
            match (&result, gauge.get()) {
                (Err(e), 0) => tracing::warn!(sink = %name, error = %e, "sink unreachable"),
                (Ok(()), 1) => tracing::info!(sink = %name, "sink reachable again"),
                _ => {}
            }
            gauge.set(result.is_err() as i64);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Forgets record ids older than the retention, regularly — but never ids that a poll could
/// still re-read: those admitted after the earliest configured cursor less the look-back
/// (a poller stuck for days keeps its ids until it catches up).
async fn prune_seen(
    store: Store,
    fleet: Fleet,
    resources: Vec<&'static Resource>,
    retention: Duration,
    look_back: Duration,
    stop: CancellationToken,
) {
    let every = (retention / 10).clamp(Duration::from_secs(10), Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let (store, resources) = (store.clone(), resources.clone());
        let xmids = fleet.xmids();
        let pruned = tokio::task::spawn_blocking(move || {
            let now = Utc::now();
            let mut before = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|r| now.checked_sub_signed(r))
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let look_back = chrono::Duration::from_std(look_back).unwrap_or_default();
            for xmid in xmids.iter() {
                if let Some(position) = oldest_position(&store, &resources, xmid)? {
                    before = before.min(position - look_back);
                }
            }
            store.prune_seen(before)
        })
        .await;
        match pruned {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(pruned = n, "forgot record ids past the retention"),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot prune seen ids"),
            Err(e) => tracing::error!(error = %e, "prune task failed"),
        }
    }
}

/// The position of the XMID's cursor that lags most, over the resources polled.
fn oldest_position(
    store: &Store,
    resources: &[&'static Resource],
    xmid: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut oldest = None;
    for resource in resources {
        if let Some(cursor) = store.cursor(&resource.cursor_key(xmid))? {
            oldest =
                Some(oldest.map_or(cursor.position, |o: DateTime<Utc>| o.min(cursor.position)));
        }
    }
    Ok(oldest)
}

/// Counts the record ids remembered (`mxc_relay_seen_ids`) a minute after start, then every
/// five minutes, on a blocking thread. Counting reads the whole set — at a million ids about a
/// second of CPU, and every page of it through sled's cache — so it is kept out of the start
/// (it delayed the first polls) and off the runtime's workers.
async fn count_seen(store: Store, metrics: Metrics, stop: CancellationToken) {
    let mut wait = SEEN_COUNT_FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = SEEN_COUNT_EVERY;
        let counting = store.clone();
        match tokio::task::spawn_blocking(move || counting.seen_len()).await {
            Ok(n) => metrics.seen_ids.set(n as i64),
            Err(e) => tracing::error!(error = %e, "counting the seen ids failed"),
        }
    }
}

/// When the seen ids are first counted, and how often after that.
const SEEN_COUNT_FIRST: Duration = Duration::from_secs(60);
const SEEN_COUNT_EVERY: Duration = Duration::from_secs(300);

/// Samples the gauges: poll lag (MXC's now − the end of the XMID's last completed poll, its
/// most lagging cursor) every second, per XMID when `per_xmid`, and its fleet-wide max and
/// percentiles; the token's expiry; the disk's free space; every 10 s, the outboxes' and dead
/// letters' sizes (counting them reads whole trees; they are small when the sinks keep up) and
/// the store's disk use. The seen ids are counted apart (`count_seen`).
async fn sample_gauges(
    store: Store,
    fleet: Fleet,
    resources: Vec<&'static Resource>,
    client: Client,
    metrics: Metrics,
    per_xmid: bool,
    stop: CancellationToken,
) {
    let mut previous = fleet.xmids();
    for tick in 0u64.. {
        // Cursors are on MXC's clock: the lag is measured on it too.
        let now = client.mxc_now();
        let xmids = fleet.xmids();
        if per_xmid && !Arc::ptr_eq(&previous, &xmids) {
            // A merchant no longer polled leaves no stale lag behind.
            let now_polled: std::collections::HashSet<&String> = xmids.iter().collect();
            for gone in previous.iter().filter(|x| !now_polled.contains(x)) {
                let _ = metrics.poll_lag.remove_label_values(&[gone]);
            }
            previous = xmids.clone();
        }
        let mut lags = Vec::with_capacity(xmids.len());
        for xmid in xmids.iter() {
            if let Ok(Some(position)) = oldest_position(&store, &resources, xmid) {
                let lag = (now - position).num_milliseconds().max(0) as f64 / 1000.0;
                if per_xmid {
                    metrics.poll_lag.with_label_values(&[xmid]).set(lag);
                }
                lags.push(lag);
            }
        }
        lags.sort_by(f64::total_cmp);
        metrics
            .poll_lag_max
            .set(lags.last().copied().unwrap_or(0.0));
        for (label, q) in [("50", 0.5), ("90", 0.9), ("99", 0.99)] {
            let at = ((lags.len() as f64 * q).ceil() as usize).saturating_sub(1);
            metrics
                .poll_lag_percentiles
                .with_label_values(&[label])
                .set(lags.get(at).copied().unwrap_or(0.0));
        }
        metrics
            .token_expiry
            .set(client.token_expires_in().map_or(0.0, |d| d.as_secs_f64()));
        if tick % 10 == 0 {
            for sink in store.sinks() {
                let gauge = |v: Result<usize, _>| v.map_or(0, |n| n as i64);
                metrics
                    .outbox_events
                    .with_label_values(&[sink])
                    .set(gauge(store.outbox_len(sink)));
                metrics
                    .dead_letters
                    .with_label_values(&[sink])
                    .set(gauge(store.dead_len(sink)));
            }
            if let Ok(used) = store.disk_bytes() {
                metrics.store_disk_bytes.set(used as i64);
            }
        }
        if let Ok(free) = store.free_bytes() {
            metrics.store_free_bytes.set(free as i64);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
