//! Report queries (authorizations, disputes, batches, ACH): the query and one page of it.
//! Every page of a window in time order is in `paging`, the export (scroll) form for large
//! backfills in `export`.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;

use super::client::Client;
use super::error::MxcError;
use super::record::{Page, Record, RejectedRecord};
use super::resource::{Resource, AUTHORIZATIONS};

mod export;
mod paging;

pub use export::{ExportPager, RawPage};
pub use paging::ReportPager;

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
}

/// What one call of [`ReportPager::next_page`] or [`ExportPager::next_page`] yields.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    pub rejected: Vec<RejectedRecord>,
    /// The window's `totalRecords` as the server last counted it, when it says.
    pub total_records: Option<u64>,
}

/// A call's query string, as pairs.
type QueryString = Vec<(&'static str, String)>;

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
}
