//! Every page of a report query's window, in time order, with `from`/`size`: past the
//! result window by moving the window's start, and through an instant more crowded than the
//! result window by the export form.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{instant, Batch, ExportPager, ReportQuery, DEFAULT_MAX_RESULT_WINDOW};
use crate::client::Client;
use crate::error::MxcError;
use crate::record::Record;

impl Client {
    /// Every page of the window, in time order (see [`ReportPager`]).
    pub fn report_pages(&self, query: ReportQuery) -> ReportPager {
        ReportPager {
            client: self.clone(),
            query,
            offset: 0,
            max_result_window: DEFAULT_MAX_RESULT_WINDOW,
            boundary: None,
            crowded: None,
            done: false,
        }
    }
}

/// Pages through a window with `from`/`size`.
///
/// Elasticsearch refuses `from + size` beyond its result window (10,000 by default), so when a
/// window holds more, the pager moves the window's start to the time of the last record it
/// returned and pages again from offset 0, skipping the records at that instant it already gave.
/// When more records than the result window share that one instant (a group of merchants
/// ingested in bulk), it reads that instant through the export form (scroll) instead, then
/// goes on from the next millisecond.
pub struct ReportPager {
    client: Client,
    query: ReportQuery,
    offset: u32,
    max_result_window: u32,
    /// The latest time (of the query's basis) returned, with the ids returned at exactly it.
    boundary: Option<(DateTime<Utc>, HashSet<String>)>,
    /// The export of one instant that holds more records than the result window.
    crowded: Option<ExportPager>,
    done: bool,
}

impl ReportPager {
    /// Overrides the result window (for a server configured with another one).
    pub fn with_max_result_window(mut self, window: u32) -> Self {
        self.max_result_window = window.max(self.query.page_size);
        self
    }

    /// Whether the window is exhausted: the next call returns `None` without a request.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next page, or `None` when the window is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Batch>, MxcError> {
        if self.done {
            return Ok(None);
        }
        if self.crowded.is_none() && self.offset + self.query.page_size > self.max_result_window {
            self.reanchor()?;
        }
        if let Some(export) = self.crowded.as_mut() {
            let batch = match export.next_page().await? {
                Some(batch) => batch,
                None => {
                    // The crowded instant is read (that took this call's request): on from the
                    // next millisecond, at the next call.
                    self.crowded = None;
                    self.query.from = export_end(&self.query, &self.boundary);
                    self.offset = 0;
                    self.done = self.query.from > self.query.to;
                    Batch::default()
                }
            };
            return Ok(Some(self.unseen(batch)));
        }
        let page = self.client.report(&self.query, self.offset).await?;
        let received = (page.records.len() + page.rejected.len()) as u32;
        self.offset += received;
        // With a total, page until it is reached (a server may send shorter pages than asked);
        // without one, a short page is the last.
        self.done = received == 0
            || match page.total_records {
                Some(total) => u64::from(self.offset) >= total,
                None => received < self.query.page_size,
            };
        Ok(Some(self.unseen(Batch {
            records: page.records,
            rejected: page.rejected,
            total_records: page.total_records,
        })))
    }

    /// The batch without the records already given at the boundary instant.
    fn unseen(&mut self, batch: Batch) -> Batch {
        let mut records = Vec::with_capacity(batch.records.len());
        for record in batch.records {
            if self.seen_at_boundary(&record) {
                continue;
            }
            self.extend_boundary(&record);
            records.push(record);
        }
        Batch { records, ..batch }
    }

    /// Moves the window's start to the last instant returned; when the window already starts
    /// there (more records than the result window share it), starts the export of that
    /// instant instead: the next pages come from it.
    fn reanchor(&mut self) -> Result<(), MxcError> {
        match &self.boundary {
            Some((time, _)) if *time > self.query.from => {
                self.query.from = *time;
                self.offset = 0;
                Ok(())
            }
            Some((time, _)) if *time == self.query.from => {
                let mut instant = self.query.clone();
                instant.to = *time;
                self.crowded = Some(self.client.report_export(instant));
                Ok(())
            }
            _ => Err(MxcError::InvalidRequest(format!(
                "more than {} {} from {} for {:?}, without a record's time and id to go on from (use the export form)",
                self.max_result_window,
                self.query.resource.name,
                instant(self.query.from),
                self.query.xmids
            ))),
        }
    }

    fn seen_at_boundary(&self, record: &Record) -> bool {
        match (&self.boundary, self.query.basis.of(record), record.id()) {
            (Some((time, ids)), Some(t), Some(id)) => t == *time && ids.contains(id),
            _ => false,
        }
    }

    fn extend_boundary(&mut self, record: &Record) {
        let (Some(t), Some(id)) = (self.query.basis.of(record), record.id()) else {
            return;
        };
        match &mut self.boundary {
            Some((time, ids)) if *time == t => {
                ids.insert(id.to_string());
            }
            Some((time, _)) if *time > t => {}
            _ => self.boundary = Some((t, HashSet::from([id.to_string()]))),
        }
    }
}

/// Where a window goes on after the export of its crowded first instant: the millisecond after
/// it (MXC's times have millisecond precision).
fn export_end(
    query: &ReportQuery,
    boundary: &Option<(DateTime<Utc>, HashSet<String>)>,
) -> DateTime<Utc> {
    let crowded = boundary.as_ref().map_or(query.from, |(time, _)| *time);
    crowded.max(query.from) + chrono::Duration::milliseconds(1)
}
