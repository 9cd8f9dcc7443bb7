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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
mod groups;
mod roster;
mod sweep;

pub use backfill::{BackfillProgress, BackfillRequest};
pub use basis::Bases;
pub use budget::Budget;
pub use control::MerchantControls;
pub use roster::{Fleet, Ownership, Reassign, RosterWatch};
pub use sweep::{SweepOutcome, Sweeps};

use crate::route::{Route, TreeNeed};
use crate::store::{Admission, AdmitOutcome, Cursor, Store, StoreError};
use crate::telemetry::events::{
    BudgetWaited, InternalEvent, PageAdmitted, PageFetched, PollFailed, PollSucceeded,
    RecordOutsideWindow, RecordOversize, RecordUnreadable, RecordWithoutId, RecordWrongType,
};
use crate::telemetry::{traces, Metrics};
use mxc::{Batch, Client, MxcError, Record, ReportQuery, Resource, TimeBasis};

/// A record whose JSON is larger than this is counted (`outcome="oversize"`) and logged: it is
/// still admitted and delivered, but sinks with a smaller limit (Kafka's `message.max.bytes`,
/// 1,000,000 by default) dead-letter it with the reason.
pub const OVERSIZE_BYTES: usize = 1 << 20;

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

/// A record outside the `created` range of the query that returned it.
#[derive(Debug, thiserror::Error)]
#[error("MXC answered a query on {resource} created from {from} to {to} with record {record_id} (XMID {xmid}) created {created}: it ignores the range")]
pub struct OutsideRange {
    resource: &'static str,
    from: String,
    to: String,
    record_id: String,
    xmid: String,
    created: String,
}

/// How far outside a `created` range a record may lie before MXC is taken to ignore the
/// range: the query's bounds are sent to the millisecond, and a server may round them.
const RANGE_SLACK: chrono::Duration = chrono::Duration::seconds(1);

/// The first record of `batch` whose `created` lies outside `[from, to]` (with
/// [`RANGE_SLACK`]), as the error that says so.
fn outside_range(
    resource: &'static Resource,
    batch: &Batch,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<PollError> {
    let record = batch.records.iter().find(|r| {
        r.created()
            .is_some_and(|c| c < from - RANGE_SLACK || c > to + RANGE_SLACK)
    })?;
    Some(PollError::FilterIgnored(Box::new(OutsideRange {
        resource: resource.name,
        from: mxc::instant(from),
        to: mxc::instant(to),
        record_id: record.id().unwrap_or("(no id)").to_string(),
        xmid: record.xmid().unwrap_or("(no XMID)").to_string(),
        created: record.created().map(mxc::instant).unwrap_or_default(),
    })))
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

/// A poll's window on one time basis: from each cursor less `below` (never before its floor)
/// to `upper`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub basis: TimeBasis,
    pub below: chrono::Duration,
}

impl Window {
    /// Where an XMID's part of the window starts.
    pub fn start(&self, cursor: &Cursor) -> DateTime<Utc> {
        (cursor.position - self.below).max(cursor.floor)
    }

    /// A record's instant on the window's basis.
    pub fn time_of(&self, record: &Record) -> Option<DateTime<Utc>> {
        self.basis.of(record)
    }
}

impl Pollers {
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

    /// One cycle for a group and a resource, on the resource's time basis (see the module's
    /// doc). A poll on `created` that MXC refuses (400) is tried again at once without its
    /// `id` tie-break, then (in `auto`) on transaction time.
    pub async fn poll_once(
        &self,
        resource: &'static Resource,
        xmids: &[String],
    ) -> Result<(), PollError> {
        loop {
            let (basis, tie_break) = (self.bases.of(resource), self.bases.tie_break(resource));
            match self.poll_by(resource, xmids, basis).await {
                // Each retry is on a lesser basis: this loop turns at most twice more.
                Err(PollError::Mxc(error))
                    if basis == TimeBasis::Ingestion
                        && self
                            .bases
                            .fall_back(resource, &error, tie_break, &self.metrics) => {}
                // Returned only when `auto` fell back (see `poll_by`).
                Err(PollError::FilterIgnored(_)) if basis == TimeBasis::Ingestion => {}
                other => return other,
            }
        }
    }

    /// The window from the earliest cursor (less the overlap or look-back) to MXC's now (less
    /// the settle time on `created`), page by page in time order, each page admitted in one
    /// transaction; then the cursors, to the window's end.
    async fn poll_by(
        &self,
        resource: &'static Resource,
        xmids: &[String],
        basis: TimeBasis,
    ) -> Result<(), PollError> {
        self.store.check_space()?;
        // Paused merchants keep their cursors: resumed, they catch up from there.
        let active = self.merchants.active(xmids);
        if active.is_empty() {
            return Ok(());
        }
        let xmids = &active[..];
        let (window, upper) = self.window(basis);
        let mut cursors = Vec::with_capacity(xmids.len());
        for xmid in xmids {
            let cursor = self
                .store
                .cursor(&resource.cursor_key(xmid))?
                .unwrap_or(Cursor {
                    position: upper,
                    floor: upper,
                });
            cursors.push((xmid.clone(), cursor));
        }
        let from = cursors
            .iter()
            .map(|(_, c)| window.start(c))
            .min()
            .unwrap_or(upper);
        // Nothing can have been ingested since (a cursor just set at MXC's now): no request.
        if from >= upper {
            return Ok(());
        }
        let mut query = ReportQuery::new(xmids.to_vec(), from, upper)
            .of(resource)
            .by(basis);
        query.page_size = self.config.page_size;
        query.tie_break = self.bases.tie_break(resource);
        let mut pager = self
            .client
            .report_pages(query)
            .with_max_result_window(self.config.max_result_window);
        // In a cluster: the ids of each XMID's window, handed over with its cursor.
        let mut seen: Option<HashMap<String, Vec<String>>> =
            self.handover.as_ref().map(|_| HashMap::new());
        let source = xmids.join(",");
        // Each page is fetched while the one before it is admitted (its transaction and flush):
        // a group's pages come one after another, and waiting for the flush before asking for
        // the next page would leave both the disk and MXC idle half the time. Pages are still
        // admitted in order, each in its own transaction; an error of either stops the poll
        // with the cursors where they were. Only pages that are requested spend the budget
        // (the pager knows when it is done).
        let mut fetched: Option<Batch> = None;
        let (mut pages, mut new, mut duplicate) = (0usize, 0usize, 0usize);
        loop {
            let next = async {
                if pager.is_done() {
                    return Ok(None);
                }
                self.wait_for_budget().await;
                pager.next_page().await
            };
            let admit = async {
                match &fetched {
                    Some(batch) => self
                        .admit_batch(resource, batch, &cursors, &window, &source, seen.as_mut())
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            };
            let (next, admitted) = futures::future::join(next, admit).await;
            if let Some(outcome) = admitted? {
                pages += 1;
                new += outcome.new;
                duplicate += outcome.duplicate;
            }
            match next? {
                Some(batch) => {
                    // Trust, but check: a server that ignores the range would have the cursor
                    // skip what it never read in order.
                    if basis == TimeBasis::Ingestion {
                        if let Some(error) = outside_range(resource, &batch, from, upper) {
                            if self.bases.filter_ignored(resource, &error, &self.metrics) {
                                return Err(error);
                            }
                        }
                    }
                    fetched = Some(batch)
                }
                None => break,
            }
        }
        let moved: Vec<(String, Cursor)> = cursors
            .into_iter()
            .map(|(xmid, c)| {
                (
                    resource.cursor_key(&xmid),
                    Cursor {
                        // Never backwards (MXC's clock, as its answers tell it, may step back).
                        position: c.position.max(upper),
                        floor: c.floor,
                    },
                )
            })
            .collect();
        self.store.admit(&[], &moved).await?;
        let span = tracing::Span::current();
        span.record("mxc_relay.pages", pages);
        span.record("mxc_relay.records.new", new);
        span.record("mxc_relay.records.duplicate", duplicate);
        if let (Some(handover), Some(mut seen)) = (&self.handover, seen) {
            let states = moved
                .iter()
                .zip(xmids)
                .map(|((key, cursor), xmid)| PolledState {
                    xmid: xmid.clone(),
                    key: key.clone(),
                    position: cursor.position,
                    floor: cursor.floor,
                    seen: seen.remove(xmid).unwrap_or_default(),
                })
                .collect();
            handover.polled(states);
        }
        Ok(())
    }

    /// The window of a poll starting now on `basis`, and its end: MXC's now, less the settle
    /// time on `created` (records still being indexed are read next time).
    pub(crate) fn window(&self, basis: TimeBasis) -> (Window, DateTime<Utc>) {
        let now = self.client.mxc_now();
        let duration = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
        match basis {
            TimeBasis::Ingestion => (
                Window {
                    basis,
                    below: duration(self.config.overlap),
                },
                now - duration(self.config.settle),
            ),
            TimeBasis::Transaction => (
                Window {
                    basis,
                    below: duration(self.config.look_back),
                },
                now,
            ),
        }
    }

    /// Waits for the request budget (see [`Budget`]), counting the waits.
    async fn wait_for_budget(&self) {
        if !self.budget.try_take() {
            BudgetWaited.emit(&self.metrics);
            self.polls_waiting.fetch_add(1, Ordering::Relaxed);
            self.budget.take().await;
            self.polls_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Admits one fetched page in one transaction (unless the disk is nearly full), counting
    /// and logging what it held; `source` names the XMIDs (or job) in log lines.
    async fn admit_batch(
        &self,
        resource: &'static Resource,
        batch: &Batch,
        cursors: &[(String, Cursor)],
        window: &Window,
        source: &str,
        seen: Option<&mut HashMap<String, Vec<String>>>,
    ) -> Result<AdmitOutcome, PollError> {
        PageFetched {
            entries: batch.records.len() + batch.rejected.len(),
        }
        .emit(&self.metrics);
        for rejected in &batch.rejected {
            RecordUnreadable {
                source,
                resource: resource.name,
                record_id: rejected.id.as_deref(),
                reason: &rejected.reason,
            }
            .emit(&self.metrics);
        }
        let (admissions, known) =
            self.admissions(resource, &batch.records, cursors, window, seen)?;
        self.store.check_space()?;
        let span = tracing::info_span!(target: traces::TARGET, "admit",
            otel.name = "admit", mxc_relay.resource = resource.name,
            mxc_relay.records = batch.records.len(), mxc_relay.records.new = tracing::field::Empty,
            mxc_relay.records.duplicate = tracing::field::Empty);
        let mut outcome = self.store.admit(&admissions, &[]).await?;
        outcome.duplicate += known;
        span.record("mxc_relay.records.new", outcome.new);
        span.record("mxc_relay.records.duplicate", outcome.duplicate);
        PageAdmitted {
            new: outcome.new,
            duplicate: outcome.duplicate,
            enqueued: &outcome.enqueued,
        }
        .emit(&self.metrics);
        Ok(outcome)
    }

    /// The admissions of one page: each record with an id that is not known yet, with the
    /// events its resource's routes select; and how many were known (seen before). A known
    /// record is not routed: on a re-read most records are, and routing costs more than the
    /// look-up. (`admit` checks again, in its transaction.) `seen`, in a cluster, collects the
    /// ids of each XMID's window, known or not.
    fn admissions(
        &self,
        resource: &'static Resource,
        records: &[Record],
        cursors: &[(String, Cursor)],
        window: &Window,
        mut seen: Option<&mut HashMap<String, Vec<String>>>,
    ) -> Result<(Vec<Admission>, usize), StoreError> {
        let mut out = Vec::with_capacity(records.len());
        let mut known = 0;
        let routes: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.resource == resource)
            .collect();
        let tree = TreeNeed::of(routes.iter().copied());
        let fetched_at_ms = Utc::now().timestamp_millis();
        // Traces on and this poll sampled: each record's span under the poll's, its context
        // carried by the record's events. An unsampled poll's records carry none: carrying
        // the unsampled context cost 5–10 % of the CPU per record in the Kafka bench, for
        // consumers that could only learn "not sampled" from it.
        let poll = tracing::Span::current();
        let per_record = traces::traceparent(&poll).is_some_and(|t| traces::is_sampled(&t));
        // `seen` is collected only for a handoff.
        let max_ids = self
            .handover
            .as_ref()
            .map_or(usize::MAX / 2, |h| h.max_ids());
        for record in records {
            let xmid = record.xmid().unwrap_or_default();
            let Some(id) = record.id() else {
                RecordWithoutId {
                    xmid,
                    resource: resource.name,
                    time: &record.time(),
                }
                .emit(&self.metrics);
                continue;
            };
            // A group's window starts at its earliest member's: each XMID only takes records
            // from its own window, so no member re-reads (and re-admits, once their ids are
            // pruned) what it covered long ago, nor anything before its start.
            let own_start = cursors
                .iter()
                .find(|(x, _)| x == xmid)
                .map(|(_, c)| window.start(c));
            if let (Some(start), Some(t)) = (own_start, window.time_of(record)) {
                if t < start {
                    RecordOutsideWindow.emit(&self.metrics);
                    continue;
                }
            }
            let record_id = resource.seen_key(id);
            if let Some(seen) = seen.as_deref_mut() {
                let ids = seen.entry(xmid.to_string()).or_default();
                ids.push(record_id.clone());
                // A long catch-up window: keep the newest (the handover carries at most these).
                if ids.len() >= 2 * max_ids {
                    ids.drain(..max_ids);
                }
            }
            if self.store.is_seen(&record_id)? {
                known += 1;
                continue;
            }
            if let Some(problem) = record.type_problem() {
                // Kept and delivered as MXC sent it; filters see the field as it is.
                RecordWrongType {
                    xmid,
                    record_id: id,
                    resource: resource.name,
                    problem: &problem,
                }
                .emit(&self.metrics);
            }
            // The exact JSON text as MXC sent it: its length is the record's size, at no cost.
            let bytes = record.json().len();
            if bytes > OVERSIZE_BYTES {
                RecordOversize {
                    xmid,
                    record_id: id,
                    resource: resource.name,
                    bytes,
                    limit: OVERSIZE_BYTES,
                }
                .emit(&self.metrics);
            }
            let value = tree.read(record);
            let mut events: Vec<crate::event::Event> = routes
                .iter()
                .filter(|r| r.matches(&value))
                .map(|r| r.event(record, id, &value, fetched_at_ms))
                .collect();
            if per_record {
                let span = record_span(&poll, resource, xmid, id, events.len());
                let traceparent = traces::traceparent(&span);
                for event in &mut events {
                    event.head.traceparent.clone_from(&traceparent);
                }
            }
            out.push(Admission {
                record_id,
                xmid: xmid.to_string(),
                events,
            });
        }
        Ok((out, known))
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

/// A new record's span (OpenTelemetry messaging's "create"): its context goes with its events.
fn record_span(
    poll: &tracing::Span,
    resource: &Resource,
    xmid: &str,
    record_id: &str,
    events: usize,
) -> tracing::Span {
    tracing::info_span!(target: traces::TARGET, parent: poll, "create",
        otel.name = %format_args!("create {}", resource.name),
        otel.kind = "producer",
        messaging.operation.type = "create",
        messaging.operation.name = "create",
        mxc_relay.resource = resource.name,
        mxc_relay.xmid = xmid,
        mxc_relay.record_id = record_id,
        mxc_relay.events = events,
    )
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
