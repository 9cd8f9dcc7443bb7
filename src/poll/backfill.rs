//! Backfill: history replayed through the export (scroll) API, in time order, into the same
//! admission as polling — so what was already sent is recognised and not sent again — with a
//! checkpoint after every page, so an interrupted backfill resumes where it stopped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{sleep_or_stop, PollError, Pollers, Window};
use mxc::{ReportQuery, Resource, TimeBasis, AUTHORIZATIONS};

/// What to replay.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    /// What is replayed.
    pub resource: &'static Resource,
    pub xmids: Vec<String>,
    /// The start as the user gave it (`30d`, an instant …): with `until` and the XMIDs, the
    /// checkpoint's key, so the same command resumes even when its start is relative.
    pub since_spec: String,
    /// The start, resolved now; a resumed backfill keeps the one of its first run.
    pub since: DateTime<Utc>,
    /// The end; `None`: the instant the backfill first started (kept in its checkpoint, so
    /// the same command resumes the same window).
    pub until: Option<DateTime<Utc>>,
}

impl BackfillRequest {
    /// The checkpoint's key: the same request resumes the same checkpoint.
    fn job(&self) -> String {
        // Authorizations keep the key they had before there were other resources.
        let resource = if self.resource == &AUTHORIZATIONS {
            String::new()
        } else {
            format!("{} ", self.resource.name)
        };
        format!(
            "backfill {resource}{} {} {}",
            self.since_spec,
            self.until.map_or("(start)".into(), mxc::instant),
            self.xmids.join(",")
        )
    }
}

/// Where a backfill stands; also its checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackfillProgress {
    /// Records read (since the backfill first started).
    pub read: u64,
    /// Of which admitted for the first time (sent to the sinks) …
    pub new: u64,
    /// … or already admitted before (by polling or an earlier run): not sent again.
    pub duplicate: u64,
    /// Records of the whole request, as far as the server has said.
    pub total: Option<u64>,
    /// Everything before this transaction time is admitted.
    pub position: Option<DateTime<Utc>>,
    /// The window, fixed when the backfill first started.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Whether this run resumed a checkpoint.
    #[serde(skip)]
    pub resumed: bool,
    /// Whether the request is entirely admitted (else it was interrupted).
    #[serde(skip)]
    pub complete: bool,
}

/// Scroll expiries in a row, without a page read in between, before the backfill gives up.
const MAX_EXPIRIES: u32 = 10;

/// Whether `e` says the scroll is gone: a 404 to a request continuing one (a 404 opening an
/// export is a refusal of the request itself).
fn scroll_expired(e: &mxc::MxcError, first_page: bool) -> bool {
    !first_page && matches!(e, mxc::MxcError::Refused { status: 404, .. })
}

impl Pollers {
    /// Replays `request` page by page, calling `on_page` after each; stops early (checkpoint
    /// kept) when `stop` is cancelled. Transient errors are retried from the checkpoint.
    pub async fn backfill(
        &self,
        request: &BackfillRequest,
        stop: &CancellationToken,
        mut on_page: impl FnMut(&BackfillProgress),
    ) -> Result<BackfillProgress, PollError> {
        let job = request.job();
        let mut progress: BackfillProgress = match self.store.checkpoint(&job)? {
            Some(value) => match serde_json::from_value(value) {
                Ok(p) => BackfillProgress { resumed: true, ..p },
                Err(_) => BackfillProgress::default(),
            },
            None => BackfillProgress::default(),
        };
        let since = *progress.since.get_or_insert(request.since);
        let until = *progress
            .until
            .get_or_insert(request.until.unwrap_or_else(|| self.store.clock().now()));
        // The checkpoint is only a position if pages come oldest first, as asked; once one
        // does not, it stays where it was (a resume then re-reads, deduplicated).
        let mut ordered = true;
        let mut newest_seen: Option<DateTime<Utc>> = progress.position;
        let mut failures = 0u32;
        let mut expiries = 0u32;
        'export: loop {
            // From the checkpoint on: records at exactly that instant are read again and
            // recognised as admitted.
            let from = progress.position.unwrap_or(since).max(since);
            let read_before = progress.read;
            let mut query =
                ReportQuery::new(request.xmids.clone(), from, until).of(request.resource);
            query.page_size = self.config.page_size;
            let mut export = self.client.report_export(query);
            let mut first_page = true;
            loop {
                if stop.is_cancelled() {
                    return Ok(progress);
                }
                self.wait_for_budget().await;
                let batch = match export.next_page().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break 'export,
                    Err(e) if e.is_transient() && failures < 10 => {
                        failures += 1;
                        let wait = e
                            .retry_after()
                            .unwrap_or(Duration::from_secs(1 << failures.min(5)));
                        tracing::warn!(error = %e, retry_in = ?wait, "backfill page failed; resuming from the checkpoint");
                        if sleep_or_stop(stop, wait).await {
                            return Ok(progress);
                        }
                        continue 'export;
                    }
                    // MXC forgets a scroll left idle past its keep-alive: a new export from
                    // the checkpoint reads on (what it re-reads is recognised by id).
                    Err(e) if scroll_expired(&e, first_page) && expiries < MAX_EXPIRIES => {
                        expiries += 1;
                        tracing::warn!(error = %e, "backfill: the export's scroll expired; resuming from the checkpoint");
                        continue 'export;
                    }
                    Err(e) => return Err(e.into()),
                };
                failures = 0;
                if !first_page {
                    // Progress since the last expiry: the limit is on expiries in a row.
                    expiries = 0;
                }
                if first_page {
                    // What this export holds plus what earlier exports read.
                    progress.total = batch.total_records.map(|t| t + read_before);
                    first_page = false;
                }
                let outcome = self
                    .admit_batch(
                        request.resource,
                        &batch,
                        &[],
                        &Window {
                            basis: TimeBasis::Transaction,
                            below: chrono::Duration::zero(),
                        },
                        "backfill",
                        None,
                    )
                    .await?;
                progress.read += (batch.records.len() + batch.rejected.len()) as u64;
                progress.new += outcome.new as u64;
                progress.duplicate += outcome.duplicate as u64;
                for t in batch.records.iter().filter_map(|r| r.time()) {
                    if ordered && newest_seen.is_some_and(|n| t < n) {
                        ordered = false;
                        tracing::error!(at = %t, "backfill: the export is not in time order; the checkpoint stays where it is, so a resume re-reads from there");
                    }
                    newest_seen = Some(newest_seen.map_or(t, |n| n.max(t)));
                }
                if ordered {
                    progress.position = newest_seen;
                }
                let checkpoint = serde_json::to_value(&progress).unwrap_or_default();
                self.store.set_checkpoint(&job, Some(&checkpoint)).await?;
                on_page(&progress);
            }
        }
        self.store.set_checkpoint(&job, None).await?;
        progress.complete = true;
        Ok(progress)
    }
}
