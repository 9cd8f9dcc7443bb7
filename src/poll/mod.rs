//! Pollers: one task per XMID (or group of XMIDs) and one loop in it per resource polled
//! (authorizations, disputes …), each cycling window → pages in time order → admit → cursor,
//! under the API key's request budget (in a cluster, a share of it: see `Budget`), with
//! exponential backoff (honouring Retry-After) on errors.
//! Polls of one group and resource never overlap, and the failures of one never delay another.
//!
//! The window is on MXC's ingestion time (`created`) where the resource has one: from the
//! cursor (less `overlap`) to MXC's now (less `settle`), so a record is read once whatever its
//! lateness, and a poll costs the pages of what is new. Without one (or when MXC refuses such
//! queries) it is on the record's own time, re-reading `look_back`. A periodic sweep over
//! transaction time (`sweep`) is the safety net.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod backfill;
mod basis;
mod budget;
mod control;
mod cycle;
mod groups;
mod roster;
mod sweep;

pub use backfill::{BackfillProgress, BackfillRequest};
pub use basis::Bases;
pub use budget::Budget;
pub use control::MerchantControls;
pub(crate) use cycle::Window;
pub use cycle::{OutsideRange, OVERSIZE_BYTES};
pub use roster::{Fleet, Ownership, Reassign, RosterWatch};
pub use sweep::{SweepOutcome, Sweeps};

use crate::config::Config;
use crate::route::Route;
use crate::store::{Cursor, Store, StoreError};
use crate::telemetry::events::{InternalEvent, PollFailed, PollSucceeded};
use crate::telemetry::{traces, Metrics};
use mxc::{Client, MxcError, Resource};

/// Cursors written in one transaction when many XMIDs start at once.
const CURSORS_PER_TRANSACTION: usize = 500;

/// How pollers behave (from `[pollers]` and `[mxc]`).
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub interval: Duration,
    /// How far short of MXC's now a poll on `created` stops.
    pub settle: Duration,
    /// How far below its cursor a poll on `created` re-reads.
    pub overlap: Duration,
    /// How far below its cursor a poll on transaction time re-reads.
    pub look_back: Duration,
    /// How often the sweep runs (zero: never), and how far back it reads.
    pub reconcile_every: Duration,
    pub reconcile_window: Duration,
    /// The most XMIDs in one group (`pollers.group_size`, resolved).
    pub group_size: usize,
    pub page_size: u32,
    pub max_result_window: u32,
    /// Longest wait after repeated failures.
    pub max_backoff: Duration,
    /// How long record ids are remembered (`store.seen_retention`).
    pub seen_retention: Duration,
    /// What is polled for each XMID (`pollers.resources`).
    pub resources: Vec<&'static Resource>,
    /// New pollers spread their first polls over this much (usually one interval), so
    /// thousands of them do not fire at once.
    pub first_poll_within: Duration,
}

/// The longest wait after repeated failures, and after a refusal that will not fix itself.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl PollConfig {
    /// From `[pollers]`, `[mxc]` (paging) and `[store]` (how long ids are remembered).
    pub fn from_config(config: &Config) -> PollConfig {
        let pollers = &config.pollers;
        PollConfig {
            interval: pollers.interval,
            settle: pollers.settle,
            overlap: pollers.overlap,
            look_back: pollers.look_back,
            reconcile_every: pollers.reconcile_every,
            reconcile_window: pollers.reconcile_window,
            group_size: pollers.group_size.max_xmids(),
            page_size: config.mxc.page_size,
            max_result_window: config.mxc.max_result_window,
            max_backoff: MAX_BACKOFF,
            seen_retention: config.store.seen_retention,
            resources: pollers.polled_resources(),
            first_poll_within: pollers.interval,
        }
    }
}

/// When a group's first poll comes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FirstPoll {
    /// At a random instant within `first_poll_within`: a fleet starting does not fire at once.
    Spread,
    /// After exactly this long: merchants taken over, queued in order of their wait.
    After(Duration),
}

/// Why a poll cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Mxc(#[from] MxcError),
    #[error("cannot write to the store, polling paused so the cursor does not move (it resumes by itself): {0}")]
    Store(#[from] StoreError),
    /// A query on the ingestion time answered with a record outside its range.
    #[error(transparent)]
    FilterIgnored(Box<OutsideRange>),
}

/// One merchant's state after a poll: its cursor and the seen-set keys of the records its
/// window admitted.
#[derive(Debug, Clone)]
pub struct PolledState {
    pub xmid: String,
    /// The store's cursor key (`XMID`, `disputes/XMID` …).
    pub key: String,
    pub position: DateTime<Utc>,
    pub floor: DateTime<Utc>,
    pub seen: Vec<String>,
}

/// Where each completed poll's state goes. Polling owns this seam and the cluster plugs into
/// it (its handover publishes the state once the poll's events are delivered).
pub trait Handoff: Send + Sync {
    /// The most seen ids one merchant's state carries (its newest); while a long window is
    /// read the poller keeps fewer than twice as many.
    fn max_ids(&self) -> usize;
    /// A poll completed with these states.
    fn polled(&self, states: Vec<PolledState>);
}

/// Everything a poller needs, shared.
#[derive(Clone)]
pub struct Pollers {
    pub client: Client,
    pub store: Store,
    pub routes: Arc<Vec<Route>>,
    /// The request budget (see [`Budget`]).
    pub budget: Arc<Budget>,
    pub config: PollConfig,
    pub metrics: Metrics,
    /// In a cluster: where each poll's state goes once its events are delivered.
    pub handover: Option<Arc<dyn Handoff>>,
    /// What each resource's polls follow (shared: a fallback is learnt once).
    pub bases: Arc<Bases>,
    /// Polls waiting for the request budget: the sweep takes budget only when none is.
    pub polls_waiting: Arc<AtomicUsize>,
    /// The groups' sweeps, which share the budget's spare half.
    pub sweeps: Arc<Sweeps>,
    /// Merchants paused by an operator, and "poll now".
    pub merchants: MerchantControls,
}

impl Pollers {
    /// The pollers of `config` over `client` and `store`, with the compiled `routes`; alone
    /// (a cluster adds its handoff).
    pub fn new(
        config: &Config,
        client: Client,
        store: Store,
        routes: Vec<Route>,
        metrics: Metrics,
    ) -> Result<Pollers, StoreError> {
        let resources = config.pollers.polled_resources();
        // Said from the start (0), so a dashboard or alert sees the series before any
        // fallback or sweep.
        for outcome in ["ok", "partial", "error"] {
            metrics.sweeps.with_label_values(&[outcome]).inc_by(0);
        }
        for resource in resources.iter().filter(|r| r.ingestion_field.is_some()) {
            let name = [resource.name];
            metrics.cursor_fallback.with_label_values(&name).set(0);
            metrics
                .created_filter_ignored
                .with_label_values(&name)
                .set(0);
        }
        Ok(Pollers {
            client,
            merchants: MerchantControls::load(&store)?,
            store,
            routes: Arc::new(routes),
            budget: Arc::new(Budget::new(
                config.pollers.requests_per_second,
                config.pollers.burst,
            )),
            config: PollConfig::from_config(config),
            metrics,
            handover: None,
            bases: Arc::new(Bases::new(config.pollers.cursor)),
            polls_waiting: Arc::default(),
            sweeps: Arc::default(),
        })
    }

    /// The store keys of an XMID's cursors, one per resource polled.
    pub fn cursor_keys<'a>(&'a self, xmid: &'a str) -> impl Iterator<Item = String> + 'a {
        self.config
            .resources
            .iter()
            .map(move |r| r.cursor_key(xmid))
    }

    /// Whether any resource of the XMID has been polled (has a cursor).
    pub fn has_cursor(&self, xmid: &str) -> Result<bool, StoreError> {
        for key in self.cursor_keys(xmid) {
            if self.store.cursor(&key)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Gives every XMID and resource without a cursor one at `start` (its floor: nothing
    /// earlier is fetched), so a restart does not move the starting line.
    pub async fn init_cursors(
        &self,
        xmids: &[String],
        start: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut fresh = Vec::new();
        for xmid in xmids {
            for key in self.cursor_keys(xmid) {
                if self.store.cursor(&key)?.is_none() {
                    fresh.push((
                        key,
                        Cursor {
                            position: start,
                            floor: start,
                        },
                    ));
                }
            }
        }
        // In transactions of a few hundred: a transaction holds its writes in memory until it
        // commits, and one of 10,000 cursors took 40 MB at start-up that the allocator kept.
        for chunk in fresh.chunks(CURSORS_PER_TRANSACTION) {
            self.store.admit(&[], chunk).await?;
        }
        if !fresh.is_empty() {
            tracing::info!(cursors = fresh.len(), start = %start, "new XMIDs (or resources) start polling");
        }
        Ok(())
    }

    /// Spawns one task per group of XMIDs (even groups of at most `group_size`) on `tasks`;
    /// they stop when `stop` is cancelled.
    pub fn spawn(&self, xmids: &[String], tasks: &mut JoinSet<()>, stop: &CancellationToken) {
        for group in groups::even(xmids, self.config.group_size) {
            let poller = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move { poller.run_group(group, stop, FirstPoll::Spread).await });
        }
    }

    /// Starts polling merchants another instance polled until now (see [`Pollers::takeover`]).
    pub fn spawn_takeover(
        &self,
        xmids: &[String],
        tasks: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) -> Result<(), StoreError> {
        for (group, first) in self.takeover(xmids)? {
            let poller = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move { poller.run_group(group, stop, first).await });
        }
        Ok(())
    }

    /// Groups for merchants that another poller or instance polled until now, in order of how
    /// long each has waited (its oldest cursor first, so a group's window is short), each
    /// group's first poll queued at the pace of the request budget: the longest waiting go
    /// first, and the last go as soon as the budget allows.
    pub fn takeover(&self, xmids: &[String]) -> Result<Vec<(Vec<String>, FirstPoll)>, StoreError> {
        let per_xmid = self.config.resources.len().max(1);
        let keys: Vec<String> = xmids.iter().flat_map(|x| self.cursor_keys(x)).collect();
        let cursors = self.store.cursors_of(&keys)?;
        let mut waited: Vec<(Option<DateTime<Utc>>, &String)> = xmids
            .iter()
            .zip(cursors.chunks(per_xmid))
            .map(|(xmid, cursors)| {
                let oldest = cursors.iter().flatten().map(|c| c.position).min();
                (oldest, xmid)
            })
            .collect();
        // No cursor (never polled) sorts first: it has waited longest.
        waited.sort();
        let ordered: Vec<String> = waited.into_iter().map(|(_, x)| x.clone()).collect();
        let per_group = per_xmid as f64;
        let rate = self.budget.requests_per_second();
        Ok(groups::even(&ordered, self.config.group_size)
            .into_iter()
            .enumerate()
            .map(|(k, group)| {
                let after = if rate > 0.0 {
                    Duration::from_secs_f64(k as f64 * per_group / rate)
                } else {
                    Duration::ZERO
                };
                (group, FirstPoll::After(after))
            })
            .collect())
    }

    /// Polls each resource of the group on its own schedule, and sweeps it on its own,
    /// until `stop`.
    pub(crate) async fn run_group(
        self,
        xmids: Vec<String>,
        stop: CancellationToken,
        first: FirstPoll,
    ) {
        let loops = self
            .config
            .resources
            .iter()
            .map(|resource| self.run_resource(resource, &xmids, &stop, first));
        let sweeps = self
            .config
            .resources
            .iter()
            .map(|resource| self.run_sweeps(resource, &xmids, &stop));
        futures::future::join(
            futures::future::join_all(loops),
            futures::future::join_all(sweeps),
        )
        .await;
    }

    async fn run_resource(
        &self,
        resource: &'static Resource,
        xmids: &[String],
        stop: &CancellationToken,
        first: FirstPoll,
    ) {
        let first_in = match first {
            // Spread the first polls so thousands of pollers do not fire at once.
            FirstPoll::Spread => self
                .config
                .first_poll_within
                .mul_f64(rand::thread_rng().gen_range(0.0..1.0)),
            FirstPoll::After(after) => after,
        };
        if sleep_or_stop(stop, first_in).await {
            return;
        }
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(self.config.max_backoff)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        // Pollers started at once (a shard taken over) spread out after their first poll, so
        // they do not all want the request budget at the same instant of every interval.
        let mut spread_out =
            first != FirstPoll::Spread || self.config.first_poll_within < self.config.interval;
        let mut poll_now = self.merchants.subscribe();
        loop {
            let started = tokio::time::Instant::now();
            let span = poll_span("poll", resource, xmids);
            let polled =
                tracing::Instrument::instrument(self.poll_once(resource, xmids), span.clone())
                    .await;
            if let Err(error) = &polled {
                failed_span(&span, error);
            }
            drop(span);
            let delay = match polled {
                Ok(()) => {
                    PollSucceeded.emit(&self.metrics);
                    self.merchants.poll_succeeded(resource.name, xmids);
                    delays = backoff();
                    if std::mem::take(&mut spread_out) {
                        self.config
                            .interval
                            .mul_f64(rand::thread_rng().gen_range(0.0..1.0))
                    } else {
                        // One interval from this poll's start, not its end: the time a poll
                        // takes (pages, waits for the budget) does not add to the lag.
                        self.config.interval.saturating_sub(started.elapsed())
                    }
                }
                Err(error) => {
                    // A refused credential or request will not fix itself: wait the longest.
                    let backoff = match &error {
                        PollError::Mxc(e) if !e.is_transient() => self.config.max_backoff,
                        // Space can return any moment: look again soon, not after minutes.
                        PollError::Store(StoreError::DiskFull { .. }) => Duration::from_secs(5),
                        _ => delays.next().unwrap_or(self.config.max_backoff),
                    };
                    // Honour Retry-After, within reason.
                    let delay = match error_retry_after(&error) {
                        Some(after) => backoff.max(after.min(self.config.max_backoff)),
                        None => backoff,
                    };
                    PollFailed {
                        xmids,
                        resource: resource.name,
                        error: &error,
                        retry_in: delay,
                    }
                    .emit(&self.metrics);
                    self.merchants
                        .poll_failed(resource.name, xmids, &error.to_string());
                    delay
                }
            };
            if self
                .sleep_or_poll_now(stop, delay, xmids, &mut poll_now)
                .await
            {
                return;
            }
        }
    }

    /// Like [`sleep_or_stop`], but an operator's "poll now" for one of `xmids` ends the wait.
    async fn sleep_or_poll_now(
        &self,
        stop: &CancellationToken,
        delay: Duration,
        xmids: &[String],
        poll_now: &mut tokio::sync::broadcast::Receiver<String>,
    ) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return stop.is_cancelled(),
                _ = stop.cancelled() => return true,
                woken = poll_now.recv() => match woken {
                    Ok(xmid) if xmids.contains(&xmid) => return false,
                    // Missed some: one of them may have been ours.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return false,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return sleep_or_stop(stop, delay).await
                    }
                },
            }
        }
    }
}

/// The root span of a poll (or sweep) of a group: one trace each.
pub(crate) fn poll_span(kind: &str, resource: &Resource, xmids: &[String]) -> tracing::Span {
    tracing::info_span!(target: traces::TARGET, parent: None, "poll",
        otel.name = %format_args!("{kind} {}", resource.name),
        otel.kind = "internal",
        mxc_relay.resource = resource.name,
        // The group by a digest of its XMIDs: the same group, the same id, and no account
        // number in the span.
        mxc_relay.group = %format_args!("{:08x}", crc32fast::hash(xmids.join(",").as_bytes())),
        mxc_relay.xmids.count = xmids.len(),
        mxc_relay.pages = tracing::field::Empty,
        mxc_relay.records.new = tracing::field::Empty,
        mxc_relay.records.duplicate = tracing::field::Empty,
        mxc.status = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    )
}

/// Marks a poll's span failed, with MXC's status when it answered.
pub(crate) fn failed_span(span: &tracing::Span, error: &PollError) {
    if span.is_disabled() {
        return;
    }
    let kind = match error {
        PollError::Mxc(e) => {
            if let Some(status) = e.status() {
                span.record("mxc.status", status);
            }
            e.kind()
        }
        PollError::Store(_) => "store",
        PollError::FilterIgnored(_) => "filter_ignored",
    };
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", error.to_string());
}

fn error_retry_after(error: &PollError) -> Option<Duration> {
    match error {
        PollError::Mxc(e) => e.retry_after(),
        PollError::Store(_) | PollError::FilterIgnored(_) => None,
    }
}

/// Sleeps; true if `stop` was cancelled meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => stop.is_cancelled(),
        _ = stop.cancelled() => true,
    }
}
