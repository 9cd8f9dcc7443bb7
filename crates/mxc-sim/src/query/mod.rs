//! The report endpoints' query language as the simulator understands it: `accountNumbers`,
//! `dr_type`/`dr_from`/`dr_to`/`dr_quick`, `sort`, `size`/`from`, `fields` and `filter`.
//! This module owns the parsed query and what it does to records (match, sort, render);
//! `params` reads the parameters, `filter` the bool query, `fields` a record's fields.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::data::SimRecord;
use fields::{compare, field_of, insert_path, lookup};
use filter::Filter;
use mxc::{Resource, AUTHORIZATIONS};
use params::{instant_param, parse_sort, quick_range};

mod fields;
mod filter;
mod params;
#[cfg(test)]
mod tests;

/// Elasticsearch's default page when `size` is absent.
const DEFAULT_SIZE: usize = 10;
const MAX_SIZE: usize = 100;

/// A parsed report query. Errors are the text of the 400 answer.
#[derive(Debug)]
pub struct ReportQuery {
    pub resource: &'static Resource,
    /// `None`: every merchant of the portfolio.
    pub xmids: Option<Vec<String>>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Whether `dr_type` bounds the query (by the resource's time field).
    pub has_dr_type: bool,
    /// The bounds on `created` of the `range` clauses of the filter's top-level
    /// `must`/`filter`, intersected: the index by `created` can answer the query.
    pub created_range: Option<(i64, i64)>,
    /// Whether any filter clause or the sort names `created`.
    pub on_created: bool,
    /// Whether the filter is nothing but `created_range` (see
    /// [`ReportQuery::surely_matches_created`]).
    created_range_is_filter: bool,
    pub size: usize,
    pub offset: usize,
    sort: Vec<(String, bool)>,
    pub fields: Option<Vec<String>>,
    filter: Option<Filter>,
    /// The `filter` parameter as it came: the same text is the same filter.
    filter_text: Option<String>,
}

impl ReportQuery {
    pub fn parse(
        resource: &'static Resource,
        params: &HashMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<ReportQuery, String> {
        let xmids = match params.get("accountNumbers") {
            None => None,
            Some(text) => Some(serde_json::from_str::<Vec<String>>(text).map_err(|e| {
                format!("accountNumbers must be a JSON array of account numbers: {e}")
            })?),
        };
        let (from_ms, to_ms) = match params.get("dr_type").map(String::as_str) {
            None => (i64::MIN, i64::MAX),
            Some("abs") => {
                let from = instant_param(params, "dr_from", false)?;
                let to = instant_param(params, "dr_to", true)?;
                (from, to)
            }
            Some("q") => {
                let quick = params
                    .get("dr_quick")
                    .ok_or("dr_type=q needs dr_quick (e.g. last_24_h)")?;
                quick_range(quick, now)?
            }
            Some(other) => return Err(format!("dr_type must be abs or q, got {other:?}")),
        };
        let size = match params.get("size") {
            None => DEFAULT_SIZE,
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| format!("size must be a whole number, got {s:?}"))?,
        };
        if size > MAX_SIZE {
            return Err(format!("size must be at most {MAX_SIZE}, got {size}"));
        }
        let offset = match params.get("from") {
            None => 0,
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| format!("from must be a whole number, got {s:?}"))?,
        };
        let sort = match params.get("sort") {
            None => vec![(resource.time_field.to_string(), false)],
            Some(s) => parse_sort(s)?,
        };
        let fields = match params.get("fields") {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Vec<String>>(text)
                    .map_err(|e| format!("fields must be a JSON array of field names: {e}"))?,
            ),
        };
        let filter = match params.get("filter") {
            None => None,
            Some(text) => {
                let value: Value =
                    serde_json::from_str(text).map_err(|e| format!("filter must be JSON: {e}"))?;
                Some(Filter::parse(&value)?)
            }
        };
        let created_range = filter.as_ref().and_then(Filter::created_range);
        let created_range_is_filter = filter.as_ref().is_some_and(Filter::is_created_range);
        let on_created = sort.iter().any(|(f, _)| f == CREATED)
            || filter.as_ref().is_some_and(|f| f.names(CREATED));
        Ok(ReportQuery {
            resource,
            xmids,
            from_ms,
            to_ms,
            has_dr_type: params.contains_key("dr_type"),
            created_range,
            on_created,
            created_range_is_filter,
            size,
            offset,
            sort,
            fields,
            filter,
            filter_text: params.get("filter").cloned(),
        })
    }

    /// The text of the `filter` parameter: two queries whose texts are equal (or both
    /// absent) keep the same records.
    pub fn filter_text(&self) -> Option<&str> {
        self.filter_text.as_deref()
    }

    /// Whether the sort names `field`.
    pub fn sorts_by(&self, field: &str) -> bool {
        self.sort.iter().any(|(f, _)| f == field)
    }

    pub fn matches(&self, record: &SimRecord) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(record))
    }

    /// Whether an authorization whose `created` is `created_ms` surely matches, without
    /// reading the filter or the record: when the filter is nothing but `created_range` (as
    /// in the relay's poll), with whole-millisecond bounds an `f64` holds exactly, and
    /// `created_ms` is within it and held exactly too, so that comparing as the filter does
    /// (in `f64`) is comparing in `i64`. `false` says nothing: ask [`ReportQuery::matches`].
    pub fn surely_matches_created(&self, created_ms: i64) -> bool {
        self.created_range_is_filter
            && created_ms.unsigned_abs() <= EXACT_IN_F64
            && self
                .created_range
                .is_some_and(|(from, to)| (from..=to).contains(&created_ms))
    }

    /// Whether the sort is exactly these fields in this order, each ascending (`true`) or
    /// descending.
    pub fn sorts_exactly(&self, keys: &[(&str, bool)]) -> bool {
        self.sort.len() == keys.len()
            && self
                .sort
                .iter()
                .zip(keys)
                .all(|((field, asc), (want, want_asc))| field == want && asc == want_asc)
    }

    /// Orders records by the `sort` fields, then by generation order.
    pub fn sort(&self, records: &mut [std::sync::Arc<SimRecord>]) {
        // The usual sorts (time, `created`, `id`, amount) compare fields held outside the
        // JSON: no parsing per record.
        let fast: Option<Vec<(FastKey, bool)>> = self
            .sort
            .iter()
            .map(|(field, asc)| FastKey::of(self.resource, field).map(|k| (k, *asc)))
            .collect();
        if let Some(keys) = fast {
            records.sort_unstable_by(|a, b| {
                for (key, asc) in &keys {
                    let o = key.compare(a, b);
                    if o != Ordering::Equal {
                        return if *asc { o } else { o.reverse() };
                    }
                }
                a.seq.cmp(&b.seq)
            });
            return;
        }
        records.sort_by(|a, b| {
            for (field, asc) in &self.sort {
                let o = compare(field_of(a, field).as_deref(), field_of(b, field).as_deref());
                if o != Ordering::Equal {
                    return if *asc { o } else { o.reverse() };
                }
            }
            a.seq.cmp(&b.seq)
        });
    }

    /// The record as it goes on the wire: whole, or only the `fields` asked for.
    pub fn render<'r>(&self, record: &'r SimRecord) -> Cow<'r, str> {
        let Some(fields) = &self.fields else {
            return Cow::Borrowed(&record.json);
        };
        let full: Value = serde_json::from_str(&record.json).unwrap_or(Value::Null);
        let mut out = Map::new();
        for field in fields {
            if let Some(v) = lookup(&full, field) {
                insert_path(&mut out, field, v.clone());
            }
        }
        Cow::Owned(Value::Object(out).to_string())
    }
}

/// The field of MXC's ingestion instant.
pub const CREATED: &str = "created";

/// The largest magnitude up to which every whole number is an `f64` (2^53).
const EXACT_IN_F64: u64 = 1 << 53;

/// A sort field held outside the record's JSON.
#[derive(Debug, Clone, Copy)]
enum FastKey {
    Time,
    Created,
    Id,
    Amount,
}

impl FastKey {
    fn of(resource: &Resource, field: &str) -> Option<FastKey> {
        let authorization = resource == &AUTHORIZATIONS;
        match field {
            f if f == resource.time_field => Some(FastKey::Time),
            CREATED if authorization => Some(FastKey::Created),
            "id" => Some(FastKey::Id),
            "authorizedAmount" if authorization => Some(FastKey::Amount),
            _ => None,
        }
    }

    fn compare(self, a: &SimRecord, b: &SimRecord) -> Ordering {
        match self {
            FastKey::Time => a.tx_ms.cmp(&b.tx_ms),
            FastKey::Created => a.created_ms.cmp(&b.created_ms),
            // A record without an id sorts first, as a missing value does.
            FastKey::Id => a.id.cmp(&b.id),
            FastKey::Amount => a.amount.total_cmp(&b.amount),
        }
    }
}
