//! One poll of a group and resource: its window on the resource's time basis (from each
//! cursor, less `overlap` or `look_back`, to MXC's now), the pages in time order, each page's
//! records turned into admissions (known ids dropped, each XMID held to its own window, the
//! routes' events made) and admitted in one transaction while the next page is fetched; then
//! the cursors, and the handoff. `mod.rs` schedules these polls; this is what one does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{PollError, PolledState, Pollers};
use crate::event::Event;
use crate::route::{Route, TreeNeed};
use crate::store::{Admission, AdmitOutcome, Cursor, StoreError};
use crate::telemetry::events::{
    BudgetWaited, InternalEvent, PageAdmitted, PageFetched, RecordOutsideWindow, RecordOversize,
    RecordUnreadable, RecordWithoutId, RecordWrongType,
};
use crate::telemetry::traces;
use mxc::{Batch, Record, ReportQuery, Resource, TimeBasis};

/// A record whose JSON is larger than this is counted (`outcome="oversize"`) and logged: it is
/// still admitted and delivered, but sinks with a smaller limit (Kafka's `message.max.bytes`,
/// 1,000,000 by default) dead-letter it with the reason.
pub const OVERSIZE_BYTES: usize = 1 << 20;

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

/// What one poll reads: its resource, its window and range, its XMIDs' cursors.
struct Pass {
    resource: &'static Resource,
    window: Window,
    from: DateTime<Utc>,
    upper: DateTime<Utc>,
    cursors: Vec<(String, Cursor)>,
    /// The XMIDs, for log lines.
    source: String,
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
        let cursors = self.cursors_at(resource, xmids, upper)?;
        let from = cursors
            .iter()
            .map(|(_, c)| window.start(c))
            .min()
            .unwrap_or(upper);
        // Nothing can have been ingested since (a cursor just set at MXC's now): no request.
        if from >= upper {
            return Ok(());
        }
        let pass = Pass {
            resource,
            window,
            from,
            upper,
            cursors,
            source: xmids.join(","),
        };
        // In a cluster: the ids of each XMID's window, handed over with its cursor.
        let mut seen: Option<HashMap<String, Vec<String>>> =
            self.handover.as_ref().map(|_| HashMap::new());
        let (pages, new, duplicate) = self.admit_pages(&pass, seen.as_mut()).await?;
        let moved = self.move_cursors(resource, pass.cursors, upper).await?;
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

    /// Each XMID's cursor for `resource`; one never polled starts at `upper` (its first poll
    /// reads nothing: it starts now).
    fn cursors_at(
        &self,
        resource: &Resource,
        xmids: &[String],
        upper: DateTime<Utc>,
    ) -> Result<Vec<(String, Cursor)>, StoreError> {
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
        Ok(cursors)
    }

    /// Fetches the pass's pages in time order and admits each; returns how many pages, new
    /// and duplicate records.
    ///
    /// Each page is fetched while the one before it is admitted (its transaction and flush):
    /// a group's pages come one after another, and waiting for the flush before asking for
    /// the next page would leave both the disk and MXC idle half the time. Pages are still
    /// admitted in order, each in its own transaction; an error of either stops the poll
    /// with the cursors where they were. Only pages that are requested spend the budget
    /// (the pager knows when it is done).
    async fn admit_pages(
        &self,
        pass: &Pass,
        mut seen: Option<&mut HashMap<String, Vec<String>>>,
    ) -> Result<(usize, usize, usize), PollError> {
        let resource = pass.resource;
        let xmids: Vec<String> = pass.cursors.iter().map(|(x, _)| x.clone()).collect();
        let mut query = ReportQuery::new(xmids, pass.from, pass.upper)
            .of(resource)
            .by(pass.window.basis);
        query.page_size = self.config.page_size;
        query.tie_break = self.bases.tie_break(resource);
        let mut pager = self
            .client
            .report_pages(query)
            .with_max_result_window(self.config.max_result_window);
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
                    Some(batch) => {
                        let seen = seen.as_deref_mut();
                        let (cursors, window) = (&pass.cursors, &pass.window);
                        self.admit_batch(resource, batch, cursors, window, &pass.source, seen)
                            .await
                            .map(Some)
                    }
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
                    if pass.window.basis == TimeBasis::Ingestion {
                        if let Some(error) = outside_range(resource, &batch, pass.from, pass.upper)
                        {
                            if self.bases.filter_ignored(resource, &error, &self.metrics) {
                                return Err(error);
                            }
                        }
                    }
                    fetched = Some(batch)
                }
                None => return Ok((pages, new, duplicate)),
            }
        }
    }

    /// Moves each cursor to the window's end (never backwards: MXC's clock, as its answers
    /// tell it, may step back), in one transaction; returns the cursors as stored.
    async fn move_cursors(
        &self,
        resource: &Resource,
        cursors: Vec<(String, Cursor)>,
        upper: DateTime<Utc>,
    ) -> Result<Vec<(String, Cursor)>, StoreError> {
        let moved: Vec<(String, Cursor)> = cursors
            .into_iter()
            .map(|(xmid, c)| {
                let position = c.position.max(upper);
                let cursor = Cursor {
                    position,
                    floor: c.floor,
                };
                (resource.cursor_key(&xmid), cursor)
            })
            .collect();
        self.store.admit(&[], &moved).await?;
        Ok(moved)
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
    pub(super) async fn wait_for_budget(&self) {
        if !self.budget.try_take() {
            BudgetWaited.emit(&self.metrics);
            self.polls_waiting.fetch_add(1, Ordering::Relaxed);
            self.budget.take().await;
            self.polls_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Admits one fetched page in one transaction (unless the disk is nearly full), counting
    /// and logging what it held; `source` names the XMIDs (or job) in log lines.
    pub(super) async fn admit_batch(
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
    pub(super) fn admissions(
        &self,
        resource: &'static Resource,
        records: &[Record],
        cursors: &[(String, Cursor)],
        window: &Window,
        mut seen: Option<&mut HashMap<String, Vec<String>>>,
    ) -> Result<(Vec<Admission>, usize), StoreError> {
        let mut out = Vec::with_capacity(records.len());
        let mut known = 0;
        let routing = self.routing(resource);
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
            if !in_own_window(record, xmid, cursors, window) {
                RecordOutsideWindow.emit(&self.metrics);
                continue;
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
            self.say_problems(resource, record, xmid, id);
            out.push(Admission {
                record_id,
                xmid: xmid.to_string(),
                events: routing.events(record, xmid, id),
            });
        }
        Ok((out, known))
    }

    /// What routing `resource`'s records needs, for one page.
    fn routing(&self, resource: &'static Resource) -> Routing<'_> {
        let routes: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.resource == resource)
            .collect();
        // Traces on and this poll sampled: each record's span under the poll's, its context
        // carried by the record's events. An unsampled poll's records carry none: carrying
        // the unsampled context cost 5–10 % of the CPU per record in the Kafka bench, for
        // consumers that could only learn "not sampled" from it.
        let poll = tracing::Span::current();
        let sampled = traces::traceparent(&poll).is_some_and(|t| traces::is_sampled(&t));
        Routing {
            resource,
            tree: TreeNeed::of(routes.iter().copied()),
            routes,
            fetched_at_ms: self.store.clock().now().timestamp_millis(),
            traced: sampled.then_some(poll),
        }
    }

    /// Counts and logs what is odd about a new record: it is kept and delivered as MXC sent
    /// it all the same (filters see a mistyped field as it is; a sink with a smaller limit
    /// dead-letters an oversize one).
    fn say_problems(&self, resource: &Resource, record: &Record, xmid: &str, id: &str) {
        if let Some(problem) = record.type_problem() {
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
    }
}

/// Whether `record` lies in its own XMID's part of the window. A group's window starts at its
/// earliest member's: each XMID only takes records from its own window, so no member re-reads
/// (and re-admits, once their ids are pruned) what it covered long ago, nor anything before
/// its start.
fn in_own_window(
    record: &Record,
    xmid: &str,
    cursors: &[(String, Cursor)],
    window: &Window,
) -> bool {
    let own_start = cursors
        .iter()
        .find(|(x, _)| x == xmid)
        .map(|(_, c)| window.start(c));
    match (own_start, window.time_of(record)) {
        (Some(start), Some(t)) => t >= start,
        _ => true,
    }
}

/// What routing one page's new records needs: the resource's routes, how much of each
/// record's tree they read, when the page was fetched, and the poll's span when it is sampled.
struct Routing<'a> {
    resource: &'static Resource,
    routes: Vec<&'a Route>,
    tree: TreeNeed,
    fetched_at_ms: i64,
    traced: Option<tracing::Span>,
}

impl Routing<'_> {
    /// The events the routes make of a new record, carrying its span's context when traced.
    fn events(&self, record: &Record, xmid: &str, id: &str) -> Vec<Event> {
        let value = self.tree.read(record);
        let mut events: Vec<Event> = self
            .routes
            .iter()
            .filter(|r| r.matches(&value))
            .map(|r| r.event(record, id, &value, self.fetched_at_ms))
            .collect();
        if let Some(poll) = &self.traced {
            let span = record_span(poll, self.resource, xmid, id, events.len());
            let traceparent = traces::traceparent(&span);
            for event in &mut events {
                event.head.traceparent.clone_from(&traceparent);
            }
        }
        events
    }
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
