//! The reconciliation sweep, the safety net under the cursor: every `reconcile_every`, each
//! group re-reads `reconcile_window` of transaction time in one export and admits what its
//! cursor passed without reading it, counted as `records_total{outcome="reconciled"}` and
//! logged with XMID and id. A healthy run counts zero.
//!
//! It runs at low priority under the same request budget: it takes a request only while no
//! poll waits for one, and at most half the rate, so the budget stays full for the polls.
//!
//! Its cost grows with records, not merchants (MXC's pages hold at most 100), so it is sized
//! to the budget: the pages it reads ask for the fields it checks (id, XMID, times) and not
//! the ~7 KB record, a record it finds missing is read again whole, and each sweep reads at
//! most its share of the budget's spare half over `reconcile_every`. A sweep that reaches
//! that share stops where it is, counted `outcome="partial"`, and the group's next sweep
//! goes on from there: a pass over the window then takes several periods (said once, in the
//! log, with the figures).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{sleep_or_stop, PollError, Pollers, Window};
use crate::store::Cursor;
use crate::telemetry::events::{
    InternalEvent, SweepAdmitted, SweepFailed, SweepPartial, SweepSucceeded,
};
use mxc::{MxcError, Record, ReportQuery, Resource};

/// The share of the budget the sweeps may spend at most (and only while no poll waits).
const SWEEP_SHARE: f64 = 0.5;

/// The sweeps of one process: how many groups sweep (they split the spare budget), and what
/// was said once.
#[derive(Debug, Default)]
pub struct Sweeps {
    active: AtomicUsize,
    partial_said: AtomicBool,
    /// MXC refused the sweep's `fields` (then pages are read whole).
    fields_refused: AtomicBool,
}

/// Counts a group's sweep loop while it lives.
struct Sweeping<'a>(&'a Sweeps);

impl Drop for Sweeping<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Records the cursor had missed, admitted now.
    pub found: usize,
    /// Pages of the window read.
    pub pages: usize,
    /// Stopped at its share of the budget: where the next sweep of the group goes on.
    pub resume_at: Option<DateTime<Utc>>,
    /// The window's records as MXC counted them, when it says.
    pub total_records: Option<u64>,
}

impl Pollers {
    /// Sweeps the group's `resource` every `reconcile_every` (never when it is zero), until
    /// `stop`; a sweep stopped at its share of the budget is continued by the next.
    pub(super) async fn run_sweeps(
        &self,
        resource: &'static Resource,
        xmids: &[String],
        stop: &CancellationToken,
    ) {
        if self.config.reconcile_every.is_zero() {
            return;
        }
        self.sweeps.active.fetch_add(1, Ordering::Relaxed);
        let _sweeping = Sweeping(&self.sweeps);
        let mut resume_at = None;
        loop {
            if sleep_or_stop(stop, self.config.reconcile_every).await {
                return;
            }
            // Paused merchants are not swept either.
            let active = self.merchants.active(xmids);
            if active.is_empty() {
                continue;
            }
            let most_pages = self.sweep_pages();
            let span = super::poll_span("sweep", resource, &active);
            let swept = self.sweep(resource, &active, stop, resume_at, most_pages);
            let swept = tracing::Instrument::instrument(swept, span.clone()).await;
            match &swept {
                Ok(outcome) => {
                    span.record("mxc_relay.pages", outcome.pages);
                    span.record("mxc_relay.records.new", outcome.found);
                }
                Err(error) => super::failed_span(&span, error),
            }
            drop(span);
            match swept {
                // Cut short by the stop: neither done nor partial.
                Ok(_) if stop.is_cancelled() => return,
                Ok(outcome) => {
                    resume_at = outcome.resume_at;
                    if outcome.resume_at.is_some() {
                        SweepPartial {
                            xmids,
                            resource: resource.name,
                            pages: outcome.pages,
                            found: outcome.found,
                            resume_at: outcome.resume_at,
                            total_records: outcome.total_records,
                            sweeps_per_pass: outcome.total_records.map(|n| {
                                (n as usize).div_ceil(
                                    self.config.page_size.max(1) as usize * outcome.pages.max(1),
                                )
                            }),
                            window: self.config.reconcile_window,
                            every: self.config.reconcile_every,
                            first: !self.sweeps.partial_said.swap(true, Ordering::Relaxed),
                        }
                        .emit(&self.metrics);
                    } else {
                        SweepSucceeded {
                            xmids,
                            resource: resource.name,
                            found: outcome.found,
                        }
                        .emit(&self.metrics);
                    }
                }
                Err(error) => {
                    SweepFailed {
                        xmids,
                        resource: resource.name,
                        error: &error,
                    }
                    .emit(&self.metrics);
                }
            }
        }
    }

    /// The most pages one sweep reads: its group's part of the budget's spare share over
    /// `reconcile_every` (at least 1).
    fn sweep_pages(&self) -> usize {
        let rate = self.budget.requests_per_second() * SWEEP_SHARE;
        let groups = self.sweeps.active.load(Ordering::Relaxed).max(1) as f64;
        let pages = rate * self.config.reconcile_every.as_secs_f64() / groups;
        (pages.floor() as usize).max(1)
    }

    /// One sweep of the group's `resource`, from `resume_at` (when it is still within the
    /// window) or the window's start, reading at most `most_pages` pages of it.
    pub async fn sweep(
        &self,
        resource: &'static Resource,
        xmids: &[String],
        stop: &CancellationToken,
        resume_at: Option<DateTime<Utc>>,
        most_pages: usize,
    ) -> Result<SweepOutcome, PollError> {
        let now = self.client.mxc_now();
        let span = chrono::Duration::from_std(self.config.reconcile_window).unwrap_or_default();
        let from = resume_at
            .filter(|at| *at > now - span && *at < now)
            .unwrap_or(now - span);
        let mut query = ReportQuery::new(xmids.to_vec(), from, now).of(resource);
        query.page_size = self.config.page_size;
        if !self.sweeps.fields_refused.load(Ordering::Relaxed) {
            query.fields = Some(checked_fields(resource));
        }
        let mut export = self.client.report_export(query.clone());
        let mut outcome = SweepOutcome {
            found: 0,
            pages: 0,
            resume_at: None,
            total_records: None,
        };
        let mut last_time = None;
        loop {
            if outcome.pages >= most_pages {
                // Where the last page ended (its records there are read again: they are known).
                outcome.resume_at = last_time.or(Some(from));
                return Ok(outcome);
            }
            if self.wait_for_spare_budget(stop).await {
                return Ok(outcome);
            }
            let batch = match export.next_page().await {
                Ok(Some(batch)) => batch,
                Ok(None) => return Ok(outcome),
                Err(MxcError::Refused { status: 400, .. })
                    if outcome.pages == 0 && query.fields.is_some() =>
                {
                    // `fields` on the export is inferred, not documented: read whole pages.
                    if !self.sweeps.fields_refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(resource = resource.name,
                            "MXC refuses the reconciliation sweep's fields parameter: sweeps read whole records from now on");
                    }
                    query.fields = None;
                    export = self.client.report_export(query.clone());
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            outcome.pages += 1;
            outcome.total_records = outcome.total_records.or(batch.total_records);
            last_time = batch
                .records
                .iter()
                .rev()
                .find_map(Record::time)
                .or(last_time);
            let (window, _) = self.window(self.bases.of(resource));
            let missed = self.missed(resource, &window, batch.records)?;
            if missed.is_empty() {
                continue;
            }
            let missed = if query.fields.is_some() {
                match self.whole(resource, &missed, stop).await? {
                    Some(records) => records,
                    None => return Ok(outcome),
                }
            } else {
                missed
            };
            // Admitted as they are (no cursors: no window check): these are behind the window.
            let (admissions, _) = self.admissions(resource, &missed, &[], &window, None)?;
            self.store.check_space()?;
            let admitted = self.store.admit(&admissions, &[]).await?;
            let sweep = tracing::Span::current();
            if !sweep.is_disabled() {
                for admission in &admissions {
                    sweep.add_event(
                        "reconciled",
                        vec![
                            opentelemetry::KeyValue::new(
                                "mxc_relay.record_id",
                                admission.record_id.clone(),
                            ),
                            opentelemetry::KeyValue::new("mxc_relay.xmid", admission.xmid.clone()),
                        ],
                    );
                }
            }
            self.metrics
                .records
                .with_label_values(&["reconciled"])
                .inc_by(admitted.new as u64);
            SweepAdmitted {
                enqueued: &admitted.enqueued,
            }
            .emit(&self.metrics);
            outcome.found += admitted.new;
        }
    }

    /// The whole records of `missed` (read with the sweep's fields only): their XMIDs' records
    /// over the span of their times, read again in full, those ids kept. `None` if `stop`
    /// came first.
    async fn whole(
        &self,
        resource: &'static Resource,
        missed: &[Record],
        stop: &CancellationToken,
    ) -> Result<Option<Vec<Record>>, PollError> {
        let ids: HashSet<&str> = missed.iter().filter_map(Record::id).collect();
        let mut xmids: Vec<String> = missed
            .iter()
            .filter_map(|r| r.xmid().map(str::to_string))
            .collect();
        xmids.sort();
        xmids.dedup();
        let times = missed.iter().filter_map(Record::time);
        let (Some(first), Some(last)) = (times.clone().min(), times.max()) else {
            return Ok(Some(Vec::new()));
        };
        // MXC's instants are sent to the millisecond: a second either side holds them.
        let slack = chrono::Duration::seconds(1);
        let mut query = ReportQuery::new(xmids, first - slack, last + slack).of(resource);
        query.page_size = self.config.page_size;
        let mut pages = self
            .client
            .report_pages(query)
            .with_max_result_window(self.config.max_result_window);
        let mut whole = Vec::with_capacity(missed.len());
        while !pages.is_done() {
            if self.wait_for_spare_budget(stop).await {
                return Ok(None);
            }
            let Some(batch) = pages.next_page().await? else {
                break;
            };
            whole.extend(
                batch
                    .records
                    .into_iter()
                    .filter(|r| r.id().is_some_and(|id| ids.contains(id))),
            );
        }
        Ok(Some(whole))
    }

    /// The records of a sweep's page that the cursor passed (they are behind its window and
    /// at or after its floor) without admitting them. Records still ahead of a cursor are
    /// left to the polls.
    fn missed(
        &self,
        resource: &'static Resource,
        window: &Window,
        records: Vec<Record>,
    ) -> Result<Vec<Record>, PollError> {
        let mut cursors: HashMap<String, Option<Cursor>> = HashMap::new();
        let mut missed = Vec::new();
        for record in records {
            let (Some(xmid), Some(id)) = (record.xmid(), record.id()) else {
                continue;
            };
            let cursor = match cursors.get(xmid) {
                Some(c) => *c,
                None => {
                    let c = self.store.cursor(&resource.cursor_key(xmid))?;
                    cursors.insert(xmid.to_string(), c);
                    c
                }
            };
            let (Some(cursor), Some(t)) = (cursor, window.time_of(&record)) else {
                continue;
            };
            if t < cursor.floor || t >= window.start(&cursor) {
                continue;
            }
            if self.store.is_seen(&resource.seen_key(id))? {
                continue;
            }
            tracing::warn!(%xmid, record_id = %id, resource = resource.name, at = %t,
                "reconciliation sweep found a record the cursor missed: admitted now");
            missed.push(record);
        }
        Ok(missed)
    }

    /// Waits until a request can be spent without delaying a poll: none waits for the budget,
    /// and the budget has a request to spare; then paces itself to half the budget's rate.
    /// True if `stop` came first.
    async fn wait_for_spare_budget(&self, stop: &CancellationToken) -> bool {
        loop {
            let period = Duration::from_secs_f64(1.0 / self.budget.requests_per_second().max(1e-3));
            if self.polls_waiting.load(Ordering::Relaxed) == 0 && self.budget.try_take() {
                return sleep_or_stop(stop, period).await;
            }
            if sleep_or_stop(stop, period.max(Duration::from_millis(50))).await {
                return true;
            }
        }
    }
}

/// What a sweep's pages ask for: what `missed` reads of a record.
fn checked_fields(resource: &Resource) -> Vec<String> {
    let mut fields = vec![
        resource.id_field.to_string(),
        "accountNumber".to_string(),
        resource.time_field.to_string(),
    ];
    fields.extend(resource.ingestion_field.map(str::to_string));
    fields
}
