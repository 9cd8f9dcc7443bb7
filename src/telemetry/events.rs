//! Internal events, in the manner of Vector's `internal_events`: one struct per notable thing
//! the pollers and the sinks' deliveries do, whose `emit` writes its log line and updates its
//! metric, so the two cannot drift apart. A site builds the event and emits it; no other code
//! touches these series.
//!
//! Log lines keep the target of the module they describe (`mxc_relay::poll::sweep`, …), so a
//! filter such as `RUST_LOG=mxc_relay::poll=debug` selects them as before.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Metrics;

/// Something that happened, told once: its log line (if any) and its metric.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

const POLL: &str = "mxc_relay::poll";
const BASIS: &str = "mxc_relay::poll::basis";
const SWEEP: &str = "mxc_relay::poll::sweep";
const ROSTER: &str = "mxc_relay::poll::roster";
const WORKER: &str = "mxc_relay::sink::worker";
const WEBHOOK: &str = "mxc_relay::sink::webhook";

/// A poll of one group and resource completed.
pub struct PollSucceeded;

impl InternalEvent for PollSucceeded {
    fn emit(self, metrics: &Metrics) {
        metrics.polls.with_label_values(&["ok"]).inc();
    }
}

/// A poll failed; the next is due in `retry_in`.
pub struct PollFailed<'a> {
    pub xmids: &'a [String],
    pub resource: &'a str,
    pub error: &'a dyn Display,
    pub retry_in: Duration,
}

impl InternalEvent for PollFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.polls.with_label_values(&["error"]).inc();
        // Whole milliseconds: "1s 250ms", not nanoseconds of jitter.
        let retry_in = Duration::from_millis(self.retry_in.as_millis() as u64);
        tracing::warn!(target: POLL, xmids = %self.xmids.join(","), resource = self.resource,
            error = %self.error, retry_in = %humantime::format_duration(retry_in), "poll failed");
    }
}

/// A request waited for the global request budget.
pub struct BudgetWaited;

impl InternalEvent for BudgetWaited {
    fn emit(self, metrics: &Metrics) {
        metrics.rate_limiter_waits.inc();
    }
}

/// A page came back with this many entries, readable or not.
pub struct PageFetched {
    pub entries: usize,
}

impl InternalEvent for PageFetched {
    fn emit(self, metrics: &Metrics) {
        metrics
            .records
            .with_label_values(&["fetched"])
            .inc_by(self.entries as u64);
    }
}

/// An entry of a page that is not a record (not a JSON object), skipped.
pub struct RecordUnreadable<'a> {
    /// The XMIDs (or the job) the page was fetched for.
    pub source: &'a str,
    pub resource: &'a str,
    pub record_id: Option<&'a str>,
    pub reason: &'a dyn Display,
}

impl InternalEvent for RecordUnreadable<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.records.with_label_values(&["rejected"]).inc();
        tracing::warn!(target: POLL, source = %self.source, resource = self.resource,
            record_id = self.record_id.unwrap_or("(none)"), reason = %self.reason,
            "unreadable record skipped");
    }
}

/// A record without an id, skipped: without one it cannot be deduplicated.
pub struct RecordWithoutId<'a> {
    pub xmid: &'a str,
    pub resource: &'a str,
    pub time: &'a dyn Debug,
}

impl InternalEvent for RecordWithoutId<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.records.with_label_values(&["skipped_no_id"]).inc();
        tracing::warn!(target: POLL, xmid = %self.xmid, resource = self.resource,
            time = ?self.time, "record without an id skipped");
    }
}

/// A record of a group's page that lies before its own XMID's window: not taken.
pub struct RecordOutsideWindow;

impl InternalEvent for RecordOutsideWindow {
    fn emit(self, metrics: &Metrics) {
        metrics.records.with_label_values(&["outside_window"]).inc();
    }
}

/// A new record whose known field has an unexpected type: kept and delivered as sent.
pub struct RecordWrongType<'a> {
    pub xmid: &'a str,
    pub record_id: &'a str,
    pub resource: &'a str,
    pub problem: &'a dyn Display,
}

impl InternalEvent for RecordWrongType<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.records.with_label_values(&["wrong_type"]).inc();
        tracing::warn!(target: POLL, xmid = %self.xmid, record_id = %self.record_id,
            resource = self.resource, problem = %self.problem,
            "record with a field of an unexpected type");
    }
}

/// A new record over the size sinks are expected to take: admitted all the same.
pub struct RecordOversize<'a> {
    pub xmid: &'a str,
    pub record_id: &'a str,
    pub resource: &'a str,
    pub bytes: usize,
    pub limit: usize,
}

impl InternalEvent for RecordOversize<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.records.with_label_values(&["oversize"]).inc();
        tracing::warn!(target: POLL, xmid = %self.xmid, record_id = %self.record_id,
            resource = self.resource, bytes = self.bytes, limit = self.limit,
            "record over 1 MiB: admitted, but sinks with a smaller limit (Kafka) dead-letter it");
    }
}

/// A page admitted: its new records, those already known, and the outbox entries written
/// per sink and event type.
pub struct PageAdmitted<'a> {
    pub new: usize,
    pub duplicate: usize,
    pub enqueued: &'a BTreeMap<(String, String), usize>,
}

impl InternalEvent for PageAdmitted<'_> {
    fn emit(self, metrics: &Metrics) {
        let records = &metrics.records;
        records.with_label_values(&["new"]).inc_by(self.new as u64);
        records
            .with_label_values(&["duplicate"])
            .inc_by(self.duplicate as u64);
        metrics.count_enqueued(self.enqueued);
    }
}

/// MXC refused a query on the ingestion time: the resource is polled by transaction time for
/// the life of the process. Emitted once per resource.
pub struct CursorFellBack<'a> {
    pub resource: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for CursorFellBack<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics
            .cursor_fallback
            .with_label_values(&[self.resource])
            .set(1);
        tracing::warn!(target: BASIS, resource = self.resource, error = %self.error,
            "MXC refuses queries on the ingestion time (created): this resource is polled by transaction time with pollers.look_back from now on; records that reach MXC later than the look-back are found only by the reconciliation sweep");
    }
}

/// MXC answered a query on the ingestion time with a record outside its range: it ignores
/// the filter. Emitted once per resource; `falls_back` in `auto` (then the resource is polled
/// by transaction time for the life of the process, and `CursorFellBack` is not emitted).
pub struct CreatedFilterIgnored<'a> {
    pub resource: &'a str,
    pub error: &'a dyn Display,
    pub falls_back: bool,
}

impl InternalEvent for CreatedFilterIgnored<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics
            .created_filter_ignored
            .with_label_values(&[self.resource])
            .set(1);
        if self.falls_back {
            metrics
                .cursor_fallback
                .with_label_values(&[self.resource])
                .set(1);
            tracing::warn!(target: BASIS, resource = self.resource, error = %self.error,
                "MXC ignores the range of queries on the ingestion time (created): this resource is polled by transaction time with pollers.look_back from now on; records that reach MXC later than the look-back are found only by the reconciliation sweep");
        } else {
            tracing::warn!(target: BASIS, resource = self.resource, error = %self.error,
                "MXC ignores the range of queries on the ingestion time (created): pollers.cursor = \"created\" keeps polling on it, reading more than each window (known records are skipped); \"auto\" would fall back to transaction time");
        }
    }
}

/// Records found by a page of the reconciliation sweep, admitted.
pub struct SweepAdmitted<'a> {
    pub enqueued: &'a BTreeMap<(String, String), usize>,
}

impl InternalEvent for SweepAdmitted<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.count_enqueued(self.enqueued);
    }
}

/// A reconciliation sweep completed, having found `found` records the polls had missed.
pub struct SweepSucceeded<'a> {
    pub xmids: &'a [String],
    pub resource: &'a str,
    pub found: usize,
}

impl InternalEvent for SweepSucceeded<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.sweeps.with_label_values(&["ok"]).inc();
        tracing::debug!(target: SWEEP, xmids = %self.xmids.join(","), resource = self.resource,
            found = self.found, "reconciliation sweep done");
    }
}

/// A reconciliation sweep stopped at its share of the budget before the window's end; the
/// group's next sweep goes on from there. Said at `warn` the first time in the process
/// (`first`), with what a whole pass takes; at `debug` after.
pub struct SweepPartial<'a> {
    pub xmids: &'a [String],
    pub resource: &'a str,
    /// Pages read, records found, where the next sweep goes on, the window's records, and
    /// the sweeps a whole pass over it takes at this pace.
    pub pages: usize,
    pub found: usize,
    pub resume_at: Option<DateTime<Utc>>,
    pub total_records: Option<u64>,
    pub sweeps_per_pass: Option<usize>,
    pub window: Duration,
    pub every: Duration,
    pub first: bool,
}

impl InternalEvent for SweepPartial<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.sweeps.with_label_values(&["partial"]).inc();
        let resume_at = self.resume_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        if self.first {
            let records = self
                .total_records
                .map_or("an unknown number of".to_string(), |n| n.to_string());
            let per_pass = self
                .sweeps_per_pass
                .map_or("several".to_string(), |n| format!("about {}", n.max(2)));
            tracing::warn!(target: SWEEP, xmids = %self.xmids.join(","), resource = self.resource,
                pages = self.pages, found = self.found, %resume_at,
                "reconciliation sweeps cannot read pollers.reconcile_window ({}) every pollers.reconcile_every ({}) within their share of the request budget: this group's window holds {records} records and a sweep may read {} pages, so each sweep goes on where the last stopped and a whole pass takes {per_pass} sweeps (raise pollers.requests_per_second or reconcile_every, or shorten reconcile_window)",
                humantime::format_duration(self.window), humantime::format_duration(self.every), self.pages);
        } else {
            tracing::debug!(target: SWEEP, xmids = %self.xmids.join(","), resource = self.resource,
                pages = self.pages, found = self.found, %resume_at,
                "reconciliation sweep stopped at its share of the budget; the next goes on from here");
        }
    }
}

/// A reconciliation sweep failed.
pub struct SweepFailed<'a> {
    pub xmids: &'a [String],
    pub resource: &'a str,
    pub error: &'a dyn Display,
}

impl InternalEvent for SweepFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.sweeps.with_label_values(&["error"]).inc();
        tracing::warn!(target: SWEEP, xmids = %self.xmids.join(","), resource = self.resource,
            error = %self.error,
            "reconciliation sweep failed; the next one is due in pollers.reconcile_every");
    }
}

/// New merchants from the roster start polling. `boarded` counts those new to the relay (not
/// counted on the first read of a fresh store, when every merchant is new).
pub struct RosterMerchantsStarted<'a> {
    pub count: usize,
    pub sample: &'a str,
    pub from: DateTime<Utc>,
    pub boarded: Option<usize>,
}

impl InternalEvent for RosterMerchantsStarted<'_> {
    fn emit(self, metrics: &Metrics) {
        if let Some(boarded) = self.boarded {
            metrics.roster_added.inc_by(boarded as u64);
        }
        tracing::info!(target: ROSTER, count = self.count, xmids = %self.sample,
            new_from = %self.from, "merchants from the roster start polling");
    }
}

/// The roster was read and the groups re-formed: merchants whose grace period ended were
/// removed, `polled` remain.
pub struct RosterRead {
    pub removed: usize,
    pub polled: usize,
    pub at: DateTime<Utc>,
}

impl InternalEvent for RosterRead {
    fn emit(self, metrics: &Metrics) {
        // Both at once, after the groups are re-formed: one who reads the counter sees the
        // gauge of the same read.
        metrics.roster_removed.inc_by(self.removed as u64);
        metrics.roster_merchants.set(self.polled as i64);
        metrics.roster_last_read.set(self.at.timestamp() as f64);
    }
}

/// Events a sink confirmed, with when their records were fetched (for the delivery lag).
pub struct EventsDelivered<'a, I: IntoIterator<Item = i64>> {
    pub sink: &'a str,
    pub fetched_at_ms: I,
}

impl<I: IntoIterator<Item = i64>> InternalEvent for EventsDelivered<'_, I> {
    fn emit(self, metrics: &Metrics) {
        metrics.delivered(self.sink, self.fetched_at_ms);
    }
}

/// One delivery attempt failed; the event stays in the outbox (its retry is logged where it
/// is scheduled).
pub struct DeliveryFailed<'a> {
    pub sink: &'a str,
}

impl InternalEvent for DeliveryFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics
            .events
            .with_label_values(&[self.sink, "failed"])
            .inc();
    }
}

/// Which delivery path gave an event up.
#[derive(Clone, Copy)]
pub enum DeliveryPath {
    /// The generic worker (Kafka, file, stdout): the sink refused the event itself.
    Worker,
    /// The webhook dispatcher: its schedule ran out.
    Webhook,
}

/// An event given up and moved to the sink's dead letters.
pub struct EventDeadLettered<'a> {
    pub path: DeliveryPath,
    pub sink: &'a str,
    pub event_id: &'a str,
    pub record_id: &'a str,
    pub xmid: &'a str,
    pub reason: &'a dyn Display,
}

impl InternalEvent for EventDeadLettered<'_> {
    fn emit(self, metrics: &Metrics) {
        let EventDeadLettered {
            sink,
            event_id,
            record_id,
            xmid,
            reason,
            ..
        } = self;
        match self.path {
            DeliveryPath::Worker => {
                tracing::warn!(target: WORKER, sink = %sink, event_id = %event_id,
                record_id = %record_id, xmid = %xmid, reason = %reason, "event dead-lettered")
            }
            DeliveryPath::Webhook => {
                tracing::warn!(target: WEBHOOK, sink = %sink, event_id = %event_id,
                record_id = %record_id, xmid = %xmid, reason = %reason, "webhook dead-lettered")
            }
        }
        metrics
            .events
            .with_label_values(&[sink, "dead_lettered"])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(metrics: &Metrics, outcome: &str) -> u64 {
        metrics.records.with_label_values(&[outcome]).get()
    }

    #[test]
    fn each_event_moves_its_own_series() {
        let metrics = Metrics::new();
        let xmids = ["X1".to_string()];
        PollSucceeded.emit(&metrics);
        PollFailed {
            xmids: &xmids,
            resource: "authorizations",
            error: &"HTTP 503",
            retry_in: Duration::from_secs(1),
        }
        .emit(&metrics);
        PollFailed {
            xmids: &xmids,
            resource: "authorizations",
            error: &"HTTP 503",
            retry_in: Duration::from_secs(2),
        }
        .emit(&metrics);
        assert_eq!(metrics.polls.with_label_values(&["ok"]).get(), 1);
        assert_eq!(metrics.polls.with_label_values(&["error"]).get(), 2);

        PageFetched { entries: 7 }.emit(&metrics);
        RecordUnreadable {
            source: "X1",
            resource: "authorizations",
            record_id: None,
            reason: &"not an object",
        }
        .emit(&metrics);
        RecordWithoutId {
            xmid: "X1",
            resource: "authorizations",
            time: &None::<DateTime<Utc>>,
        }
        .emit(&metrics);
        RecordOutsideWindow.emit(&metrics);
        RecordWrongType {
            xmid: "X1",
            record_id: "r1",
            resource: "authorizations",
            problem: &"amount is text",
        }
        .emit(&metrics);
        RecordOversize {
            xmid: "X1",
            record_id: "r2",
            resource: "authorizations",
            bytes: 2 << 20,
            limit: 1 << 20,
        }
        .emit(&metrics);
        let enqueued = BTreeMap::from([(
            ("kafka".to_string(), "authorization.created".to_string()),
            3,
        )]);
        PageAdmitted {
            new: 3,
            duplicate: 2,
            enqueued: &enqueued,
        }
        .emit(&metrics);
        for (outcome, n) in [
            ("fetched", 7),
            ("rejected", 1),
            ("skipped_no_id", 1),
            ("outside_window", 1),
            ("wrong_type", 1),
            ("oversize", 1),
            ("new", 3),
            ("duplicate", 2),
        ] {
            assert_eq!(
                records(&metrics, outcome),
                n,
                "records{{outcome={outcome:?}}}"
            );
        }
        assert!(metrics.render().contains(
            r#"mxc_relay_events_enqueued_total{event_type="authorization.created",sink="kafka"} 3"#
        ));

        SweepSucceeded {
            xmids: &xmids,
            resource: "authorizations",
            found: 0,
        }
        .emit(&metrics);
        SweepFailed {
            xmids: &xmids,
            resource: "authorizations",
            error: &"timeout",
        }
        .emit(&metrics);
        assert_eq!(metrics.sweeps.with_label_values(&["ok"]).get(), 1);
        assert_eq!(metrics.sweeps.with_label_values(&["error"]).get(), 1);
        SweepPartial {
            xmids: &xmids,
            resource: "authorizations",
            pages: 2,
            found: 0,
            resume_at: None,
            total_records: Some(1_000),
            sweeps_per_pass: Some(5),
            window: Duration::from_secs(3600),
            every: Duration::from_secs(60),
            first: true,
        }
        .emit(&metrics);
        assert_eq!(metrics.sweeps.with_label_values(&["partial"]).get(), 1);
        assert_eq!(metrics.sweeps.with_label_values(&["ok"]).get(), 1);

        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        RosterMerchantsStarted {
            count: 4,
            sample: "X1, X2, …",
            from: at,
            boarded: None,
        }
        .emit(&metrics);
        RosterMerchantsStarted {
            count: 4,
            sample: "X1, X2, …",
            from: at,
            boarded: Some(4),
        }
        .emit(&metrics);
        RosterRead {
            removed: 2,
            polled: 9,
            at,
        }
        .emit(&metrics);
        assert_eq!(
            metrics.roster_added.get(),
            4,
            "the first read boards nobody"
        );
        assert_eq!(metrics.roster_removed.get(), 2);
        assert_eq!(metrics.roster_merchants.get(), 9);
        assert_eq!(metrics.roster_last_read.get(), 1_700_000_000.0);

        DeliveryFailed { sink: "hooks" }.emit(&metrics);
        for path in [DeliveryPath::Worker, DeliveryPath::Webhook] {
            EventDeadLettered {
                path,
                sink: "hooks",
                event_id: "evt_1",
                record_id: "r1",
                xmid: "X1",
                reason: &"HTTP 400",
            }
            .emit(&metrics);
        }
        let events = |outcome: &str| metrics.events.with_label_values(&["hooks", outcome]).get();
        assert_eq!((events("failed"), events("dead_lettered")), (1, 2));
    }
}
