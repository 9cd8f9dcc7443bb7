//! The reconciliation sweep, the safety net under the cursor: every `reconcile_every`, each
//! group re-reads `reconcile_window` of transaction time in one export and admits what its
//! cursor passed without reading it, counted as `records_total{outcome="reconciled"}` and
//! logged with XMID and id. A healthy run counts zero.
//!
//! It runs at low priority under the same request budget: it takes a request only while no
//! poll waits for one, and at most half the rate, so the budget stays full for the polls.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{sleep_or_stop, PollError, Pollers, Window};
use crate::store::Cursor;
use crate::telemetry::events::{InternalEvent, SweepAdmitted, SweepFailed, SweepSucceeded};
use mxc::{Record, ReportQuery, Resource};

impl Pollers {
    /// Sweeps the group's `resource` every `reconcile_every` (never when it is zero), until
    /// `stop`.
    pub(super) async fn run_sweeps(
        &self,
        resource: &'static Resource,
        xmids: &[String],
        stop: &CancellationToken,
    ) {
        if self.config.reconcile_every.is_zero() {
            return;
        }
        loop {
            if sleep_or_stop(stop, self.config.reconcile_every).await {
                return;
            }
            // Paused merchants are not swept either.
            let active = self.merchants.active(xmids);
            if active.is_empty() {
                continue;
            }
            match self.sweep(resource, &active, stop).await {
                Ok(found) => {
                    SweepSucceeded {
                        xmids,
                        resource: resource.name,
                        found,
                    }
                    .emit(&self.metrics);
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

    /// One sweep of the group's `resource`: returns how many records the cursor had missed.
    pub async fn sweep(
        &self,
        resource: &'static Resource,
        xmids: &[String],
        stop: &CancellationToken,
    ) -> Result<usize, PollError> {
        let now = self.client.mxc_now();
        let span = chrono::Duration::from_std(self.config.reconcile_window).unwrap_or_default();
        let mut query = ReportQuery::new(xmids.to_vec(), now - span, now).of(resource);
        query.page_size = self.config.page_size;
        let mut export = self.client.report_export(query);
        let mut found = 0;
        loop {
            if self.wait_for_spare_budget(stop).await {
                return Ok(found);
            }
            let Some(batch) = export.next_page().await? else {
                return Ok(found);
            };
            let (window, _) = self.window(self.bases.of(resource));
            let missed = self.missed(resource, &window, batch.records)?;
            if missed.is_empty() {
                continue;
            }
            // Admitted as they are (no cursors: no window check): these are behind the window.
            let (admissions, _) = self.admissions(resource, &missed, &[], &window, None)?;
            self.store.check_space()?;
            let outcome = self.store.admit(&admissions, &[]).await?;
            self.metrics
                .records
                .with_label_values(&["reconciled"])
                .inc_by(outcome.new as u64);
            SweepAdmitted {
                enqueued: &outcome.enqueued,
            }
            .emit(&self.metrics);
            found += outcome.new;
        }
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
