//! Report queries (authorizations, disputes, batches, ACH): one page, every page of a time
//! window in time order, and the export (scroll) form for large backfills.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;

use super::client::Client;
use super::error::MxcError;
use super::record::{Page, Record, RejectedRecord};
use super::resource::{Resource, AUTHORIZATIONS};

/// The API's largest page.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Elasticsearch's default `max_result_window`: `from + size` beyond it is refused.
pub const DEFAULT_MAX_RESULT_WINDOW: u32 = 10_000;

/// Which of a record's instants a query selects, sorts and pages by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBasis {
    /// The resource's time field (`transactionDateAndTime` …), with `dr_from`/`dr_to`.
    Transaction,
    /// When MXC ingested the record (the resource's `ingestion_field`, `created`), with a
    /// `range` filter and `sort=created:asc,id:asc`: records that reach MXC late still come
    /// after everything read before them.
    Ingestion,
}

impl TimeBasis {
    /// A record's instant on this basis.
    pub fn of(self, record: &Record) -> Option<DateTime<Utc>> {
        match self {
            TimeBasis::Transaction => record.time(),
            TimeBasis::Ingestion => record.created(),
        }
    }
}

/// Records of one resource (authorizations unless [`ReportQuery::of`] says otherwise) of
/// some XMIDs whose time (of the query's [`TimeBasis`]) lies in `[from, to]`, oldest first.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub resource: &'static Resource,
    /// Transaction time unless [`ReportQuery::by`] says otherwise.
    pub basis: TimeBasis,
    /// On ingestion time: sort on the id after it (`created:asc,id:asc`), so records of one
    /// instant keep their order from page to page. On by default; off for an API that
    /// refuses a second sort key.
    pub tie_break: bool,
    pub xmids: Vec<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// 1 to 100.
    pub page_size: u32,
    /// Return only these fields (`fields=`); `None` returns every field.
    pub fields: Option<Vec<String>>,
    /// An extra Elasticsearch-style bool query (`filter=`), e.g. `{"must":[{"terms":{…}}]}`.
    pub filter: Option<serde_json::Value>,
}

impl ReportQuery {
    /// Authorizations.
    pub fn new(xmids: Vec<String>, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        ReportQuery {
            resource: &AUTHORIZATIONS,
            basis: TimeBasis::Transaction,
            tie_break: true,
            xmids,
            from,
            to,
            page_size: MAX_PAGE_SIZE,
            fields: None,
            filter: None,
        }
    }

    /// The same query over another resource.
    pub fn of(mut self, resource: &'static Resource) -> Self {
        self.resource = resource;
        self
    }

    /// The same query on another time basis.
    pub fn by(mut self, basis: TimeBasis) -> Self {
        self.basis = basis;
        self
    }

    /// The field the query selects and sorts by.
    pub fn time_field(&self) -> &'static str {
        match self.basis {
            TimeBasis::Transaction => self.resource.time_field,
            TimeBasis::Ingestion => self.resource.ingestion_field.unwrap_or("created"),
        }
    }

    fn check(&self) -> Result<(), MxcError> {
        if self.basis == TimeBasis::Ingestion && self.resource.ingestion_field.is_none() {
            return Err(MxcError::InvalidRequest(format!(
                "{} records carry no ingestion time: query them by {}",
                self.resource.name, self.resource.time_field
            )));
        }
        if self.xmids.is_empty() {
            return Err(MxcError::InvalidRequest(format!(
                "a query of {} needs at least one XMID",
                self.resource.name
            )));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(MxcError::InvalidRequest(format!(
                "page size must be 1 to {MAX_PAGE_SIZE}, got {}",
                self.page_size
            )));
        }
        if self.from > self.to {
            return Err(MxcError::InvalidRequest(format!(
                "window start {} is after its end {}",
                instant(self.from),
                instant(self.to)
            )));
        }
        Ok(())
    }

    /// The query string, without `from` (the offset).
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![(
            "accountNumbers",
            serde_json::to_string(&self.xmids).unwrap_or_default(),
        )];
        let filter = match self.basis {
            TimeBasis::Transaction => {
                params.extend([
                    ("dr_type", "abs".to_string()),
                    ("dr_from", instant(self.from)),
                    ("dr_to", instant(self.to)),
                    ("sort", format!("{}:asc", self.time_field())),
                ]);
                self.filter.clone()
            }
            TimeBasis::Ingestion => {
                // No dr_type: the range on the ingestion time bounds the query, whatever the
                // records' transaction times. The id breaks ties, so paging is stable.
                let field = self.time_field();
                let sort = if self.tie_break {
                    format!("{field}:asc,{}:asc", self.resource.id_field)
                } else {
                    format!("{field}:asc")
                };
                params.push(("sort", sort));
                let range = serde_json::json!({ "range": { field: {
                    "gte": instant(self.from),
                    "lte": instant(self.to),
                } } });
                Some(match &self.filter {
                    None => serde_json::json!({ "must": [range] }),
                    Some(extra) => serde_json::json!({ "must": [range, { "bool": extra }] }),
                })
            }
        };
        params.push(("size", self.page_size.to_string()));
        if let Some(fields) = &self.fields {
            params.push(("fields", serde_json::to_string(fields).unwrap_or_default()));
        }
        if let Some(filter) = filter {
            params.push(("filter", filter.to_string()));
        }
        params
    }
}

/// The API's instant format: `2026-01-01T00:00:00.000Z`.
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Client {
    /// One page of the query's resource, `offset` records into the window.
    pub async fn report(&self, query: &ReportQuery, offset: u32) -> Result<Page, MxcError> {
        query.check()?;
        let mut params = query.params();
        params.push(("from", offset.to_string()));
        let page = self
            .page(Method::GET, query.resource.path, &params, None)
            .await?;
        Ok(page.of(query.resource))
    }

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

    /// Starts an export (scroll) over the query: for backfills larger than paging can reach.
    pub fn report_export(&self, query: ReportQuery) -> ExportPager {
        ExportPager {
            client: self.clone(),
            query,
            scroll_id: None,
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

/// What one call of [`ReportPager::next_page`] yields.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    pub rejected: Vec<RejectedRecord>,
    /// The window's `totalRecords` as the server last counted it, when it says.
    pub total_records: Option<u64>,
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

/// Pages through the export (scroll) form: the first call opens the scroll, each next one
/// posts `{"scrollId": …}`; an empty page ends it.
pub struct ExportPager {
    client: Client,
    query: ReportQuery,
    scroll_id: Option<String>,
    done: bool,
}

impl ExportPager {
    pub async fn next_page(&mut self) -> Result<Option<Batch>, MxcError> {
        if self.done {
            return Ok(None);
        }
        self.query.check()?;
        let params = self.query.params();
        let body = self
            .scroll_id
            .as_ref()
            .map(|id| serde_json::json!({ "scrollId": id }));
        let page = self
            .client
            .page(
                Method::POST,
                self.query.resource.export_path,
                &params,
                body.as_ref(),
            )
            .await?
            .of(self.query.resource);
        if page.records.is_empty() && page.rejected.is_empty() {
            self.done = true;
            return Ok(None);
        }
        match page.scroll_id {
            Some(id) => self.scroll_id = Some(id),
            None if self.scroll_id.is_none() => {
                return Err(MxcError::Malformed {
                    endpoint: format!("POST {}", self.query.resource.export_path),
                    status: 200,
                    detail: "the export answer has records but no _scroll_id".into(),
                    excerpt: String::new(),
                })
            }
            None => {}
        }
        Ok(Some(Batch {
            records: page.records,
            rejected: page.rejected,
            total_records: page.total_records,
        }))
    }
}
