//! Report queries (authorizations, disputes, batches, ACH): one page, every page of a time
//! window in time order, and the export (scroll) form for large backfills.

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;

use super::client::Client;
use super::error::{excerpt, MxcError};
use super::record::{Envelope, Page, ParseError, Record, RejectedRecord};
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

    /// The window cut by time into at most `parts` consecutive windows that together cover
    /// exactly this one and share no instant: the API's bounds are inclusive and to the
    /// millisecond, so each ends a millisecond before the next begins. Fewer parts when the
    /// window holds fewer milliseconds; the window itself when it is empty or reversed.
    pub fn split(&self, parts: usize) -> Vec<ReportQuery> {
        let (from_ms, to_ms) = (self.from.timestamp_millis(), self.to.timestamp_millis());
        let slots = i128::from(to_ms) - i128::from(from_ms) + 1;
        if slots <= 1 || parts <= 1 {
            return vec![self.clone()];
        }
        let parts = (parts as i128).min(slots);
        // Part k starts at `from + ⌊slots·k/parts⌋` ms: at least one millisecond each.
        let start = |k: i128| from_ms + (slots * k / parts) as i64;
        (0..parts)
            .map(|k| {
                let mut part = self.clone();
                if k > 0 {
                    part.from = at_ms(start(k));
                }
                if k + 1 < parts {
                    part.to = at_ms(start(k + 1) - 1);
                }
                part
            })
            .collect()
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

/// An instant from unix milliseconds that lie between two instants chrono holds.
fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
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

/// A call's query string, as pairs.
type QueryString = Vec<(&'static str, String)>;

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
        let (params, body) = self.request()?;
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
        let empty = page.records.is_empty() && page.rejected.is_empty();
        if !self.advance(empty, page.scroll_id)? {
            return Ok(None);
        }
        Ok(Some(Batch {
            records: page.records,
            rejected: page.rejected,
            total_records: page.total_records,
        }))
    }

    /// Like [`ExportPager::next_page`], with the records left unparsed (see [`RawPage`]).
    pub async fn next_raw_page(&mut self) -> Result<Option<RawPage>, MxcError> {
        if self.done {
            return Ok(None);
        }
        let (params, body) = self.request()?;
        let path = self.query.resource.export_path;
        let endpoint = format!("POST {path}");
        let (status, bytes) = self
            .client
            .send(Method::POST, path, &params, body.as_ref(), &endpoint)
            .await?;
        let mut page = RawPage::parse(&bytes).map_err(|detail| MxcError::Malformed {
            endpoint,
            status,
            detail: detail.to_string(),
            excerpt: excerpt(&bytes),
        })?;
        let empty = page.records.is_empty() && page.rejected.is_empty();
        if !self.advance(empty, page.scroll_id.take())? {
            return Ok(None);
        }
        Ok(Some(page))
    }

    /// The query string and body of the next call: the first opens the scroll, the others
    /// name it.
    fn request(&self) -> Result<(QueryString, Option<serde_json::Value>), MxcError> {
        self.query.check()?;
        let body = self
            .scroll_id
            .as_ref()
            .map(|id| serde_json::json!({ "scrollId": id }));
        Ok((self.query.params(), body))
    }

    /// Takes in an answer: false when it ends the scroll (an empty page).
    fn advance(&mut self, empty: bool, scroll_id: Option<String>) -> Result<bool, MxcError> {
        if empty {
            self.done = true;
            return Ok(false);
        }
        match scroll_id {
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
        Ok(true)
    }
}

/// One page of the export as MXC sent it, its records not parsed: each record's exact JSON
/// text cut out of the body (sharing its buffer), for callers that pass records on as they
/// are. Reading the envelope still checks that every record is well-formed JSON.
#[derive(Debug, Default)]
pub struct RawPage {
    /// The records that are JSON objects, in the page's order.
    pub records: Vec<Bytes>,
    /// The others, with the reason, as [`Page::rejected`] has them.
    pub rejected: Vec<RejectedRecord>,
    /// The window's `totalRecords`, when the server says.
    pub total_records: Option<u64>,
    scroll_id: Option<String>,
}

impl RawPage {
    /// Reads the envelope; the same answers are malformed as for [`Page::parse`].
    pub fn parse(body: &Bytes) -> Result<RawPage, ParseError> {
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ParseError::NotAnObjectPage);
        }
        let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(ParseError::Envelope)?;
        let mut page = RawPage {
            records: Vec::with_capacity(envelope.records.len()),
            rejected: Vec::new(),
            total_records: envelope.total_records,
            scroll_id: envelope.scroll_id,
        };
        for (index, raw) in envelope.records.into_iter().enumerate() {
            let text = raw.get();
            if text.starts_with('{') {
                // serde_json borrows raw values from the input: `text` lies within `body`.
                page.records.push(body.slice_ref(text.as_bytes()));
            } else {
                let reason = Record::from_json(text)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "not a JSON object".into());
                page.rejected.push(RejectedRecord {
                    index,
                    id: None,
                    reason,
                });
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(from: &str, to: &str) -> ReportQuery {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        ReportQuery::new(vec!["X".into()], at(from), at(to))
    }

    fn bounds(parts: &[ReportQuery]) -> Vec<(String, String)> {
        parts
            .iter()
            .map(|p| (instant(p.from), instant(p.to)))
            .collect()
    }

    #[test]
    fn a_split_covers_the_window_with_parts_that_share_no_millisecond() {
        let q = window("2026-01-01T00:00:00Z", "2026-01-01T04:00:00Z");
        assert_eq!(
            bounds(&q.split(4)),
            [
                ("2026-01-01T00:00:00.000Z", "2026-01-01T00:59:59.999Z"),
                ("2026-01-01T01:00:00.000Z", "2026-01-01T01:59:59.999Z"),
                ("2026-01-01T02:00:00.000Z", "2026-01-01T02:59:59.999Z"),
                ("2026-01-01T03:00:00.000Z", "2026-01-01T04:00:00.000Z"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(bounds(&q.split(1)), bounds(std::slice::from_ref(&q)));
    }

    #[test]
    fn a_short_window_gives_one_part_per_millisecond_at_most() {
        let q = window("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.002Z");
        assert_eq!(
            bounds(&q.split(8)),
            [
                ("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"),
                ("2026-01-01T00:00:00.001Z", "2026-01-01T00:00:00.001Z"),
                ("2026-01-01T00:00:00.002Z", "2026-01-01T00:00:00.002Z"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let instant_only = window("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        assert_eq!(instant_only.split(4).len(), 1);
        let reversed = window("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z");
        assert_eq!(reversed.split(4).len(), 1, "left for check() to refuse");
    }

    #[test]
    fn uneven_splits_keep_every_millisecond_once() {
        let q = window("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z");
        for parts in 1..=16 {
            let split = q.split(parts);
            assert_eq!(split.len(), parts);
            assert_eq!(split[0].from, q.from);
            assert_eq!(split[parts - 1].to, q.to);
            for pair in split.windows(2) {
                assert!(pair[0].from <= pair[0].to);
                assert_eq!(
                    pair[1].from - pair[0].to,
                    chrono::TimeDelta::milliseconds(1)
                );
            }
        }
    }

    #[test]
    fn a_raw_page_keeps_each_record_text_exactly() {
        let body = Bytes::from_static(
            br#"{"aggregations":{"totalAmount":{"value":1.5}},"totalRecords":7,"_scroll_id":"s-1","records":[
                {"id":"a", "n": [1, 2]},["not an object"],{"id":"b","x":"\u00e9"}]}"#,
        );
        let mut page = RawPage::parse(&body).unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(&page.records[0][..], br#"{"id":"a", "n": [1, 2]}"#);
        assert_eq!(&page.records[1][..], br#"{"id":"b","x":"\u00e9"}"#);
        assert_eq!(page.rejected.len(), 1);
        assert_eq!(page.rejected[0].index, 1);
        assert!(
            page.rejected[0].reason.contains("an array"),
            "{:?}",
            page.rejected
        );
        assert_eq!(page.total_records, Some(7));
        assert_eq!(page.scroll_id.take().as_deref(), Some("s-1"));
        for bad in [
            &br#"[{"records":[]}]"#[..],
            br#"{"totalRecords":1}"#,
            br#"{"records":[{"id""#,
        ] {
            assert!(RawPage::parse(&Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
