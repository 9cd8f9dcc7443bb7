//! The report endpoints' query language as the simulator understands it: `accountNumbers`,
//! `dr_type`/`dr_from`/`dr_to`/`dr_quick`, `sort`, `size`/`from`, `fields` and `filter`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use serde_json::{Map, Value};

use super::data::SimRecord;
use mxc::{Resource, AUTHORIZATIONS};

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

fn instant_param(
    params: &HashMap<String, String>,
    name: &str,
    end_of_day: bool,
) -> Result<i64, String> {
    let text = params
        .get(name)
        .ok_or_else(|| format!("dr_type=abs needs {name}"))?;
    parse_instant(text, end_of_day).ok_or_else(|| {
        format!("{name} must be an ISO-8601 instant such as 2026-01-01T00:00:00.000Z, got {text:?}")
    })
}

/// An ISO-8601 instant, one without an offset (UTC, as Elasticsearch reads it), or a plain
/// date (its first or last millisecond).
fn parse_instant(text: &str, end_of_day: bool) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(Utc.from_utc_datetime(&t).timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let start = Utc
        .from_utc_datetime(&date.and_hms_opt(0, 0, 0)?)
        .timestamp_millis();
    Some(if end_of_day {
        start + 86_400_000 - 1
    } else {
        start
    })
}

/// `last_15_m`, `last_1_h`, `last_24_h`, `last_7_d`, `today`, `yesterday`.
fn quick_range(quick: &str, now: DateTime<Utc>) -> Result<(i64, i64), String> {
    let now_ms = now.timestamp_millis();
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| Utc.from_utc_datetime(&t).timestamp_millis());
    let bad = || {
        format!("dr_quick must be last_<N>_m, last_<N>_h, last_<N>_d, today or yesterday, got {quick:?}")
    };
    match quick {
        "today" => Ok((today.ok_or_else(bad)?, now_ms)),
        "yesterday" => {
            let t = today.ok_or_else(bad)?;
            Ok((t - 86_400_000, t - 1))
        }
        _ => {
            let rest = quick.strip_prefix("last_").ok_or_else(bad)?;
            let (n, unit) = rest.split_once('_').ok_or_else(bad)?;
            let n: i64 = n.parse().map_err(|_| bad())?;
            let span = match unit {
                "m" => ChronoDuration::try_minutes(n),
                "h" => ChronoDuration::try_hours(n),
                "d" => ChronoDuration::try_days(n),
                _ => return Err(bad()),
            }
            .ok_or_else(bad)?;
            Ok((now_ms.saturating_sub(span.num_milliseconds()), now_ms))
        }
    }
}

/// `field:asc,field:desc`: spaces around the parts, an upper-case direction and empty parts
/// (a trailing comma) are accepted, as a lenient server would.
fn parse_sort(text: &str) -> Result<Vec<(String, bool)>, String> {
    let sort: Vec<(String, bool)> = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (field, dir) = part.split_once(':').unwrap_or((part, "asc"));
            let (field, dir) = (field.trim(), dir.trim());
            let asc = if dir.eq_ignore_ascii_case("asc") {
                true
            } else if dir.eq_ignore_ascii_case("desc") {
                false
            } else {
                return Err(format!(
                    "sort direction must be asc or desc, got {dir:?} in {text:?}"
                ));
            };
            if field.is_empty() {
                return Err(format!("sort needs a field name, got {text:?}"));
            }
            Ok((field.to_string(), asc))
        })
        .collect::<Result<_, _>>()?;
    if sort.is_empty() {
        return Err(format!("sort needs a field name, got {text:?}"));
    }
    Ok(sort)
}

/// A field of a record: the common ones without parsing, the rest from its JSON.
fn field_of<'a>(record: &'a SimRecord, field: &str) -> Option<Cow<'a, Value>> {
    let authorization = record.resource == &AUTHORIZATIONS;
    let fast = match field {
        "id" => Some(Value::from(record.id.as_str())),
        "accountNumber" => Some(Value::from(record.xmid.as_str())),
        f if f == record.resource.time_field => Some(Value::from(record.tx_ms)),
        "authorizedAmount" if authorization => Some(Value::from(record.amount)),
        "authorizationResponseStatus" if authorization => Some(Value::from(if record.declined {
            "Declined"
        } else {
            "Approved"
        })),
        CREATED if authorization => Some(Value::from(record.created_ms)),
        _ => None,
    };
    if let Some(v) = fast {
        return Some(Cow::Owned(v));
    }
    let full: Value = serde_json::from_str(&record.json).ok()?;
    lookup(&full, field).cloned().map(Cow::Owned)
}

/// A dotted path (`cardNumber.mask`) into a JSON value.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

fn insert_path(out: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            out.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let child = out
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = child {
                insert_path(map, rest, value);
            }
        }
    }
}

/// Orders two field values: numbers numerically, instants in time, the rest as text.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => {
            if let (Some(x), Some(y)) = (number(a), number(b)) {
                return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
            }
            text(a).cmp(&text(b))
        }
    }
}

/// A number, or an ISO-8601 instant as unix milliseconds.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis() as f64),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    compare(Some(a), Some(b)) == Ordering::Equal
}

/// An Elasticsearch-style bool query: `must`, `filter`, `should`, `must_not`, whose clauses are
/// `terms`, `term`, `match`, `range`, `exists` or a nested `bool`.
#[derive(Debug, Default)]
struct Filter {
    must: Vec<Clause>,
    should: Vec<Clause>,
    must_not: Vec<Clause>,
}

#[derive(Debug)]
enum Clause {
    Terms(String, Vec<Value>),
    Range(String, Vec<Bound>),
    Exists(String),
    Bool(Filter),
}

/// One bound of a `range`: the side, whether it is inclusive, the value and, read once, the
/// value as a number (or an instant as unix milliseconds).
#[derive(Debug)]
struct Bound {
    side: Ordering,
    inclusive: bool,
    value: Value,
    number: Option<f64>,
}

impl Bound {
    /// Whether a field's value is within this bound.
    fn admits(&self, v: &Value) -> bool {
        let o = match (self.number, v.as_f64().or_else(|| number(v))) {
            (Some(y), Some(x)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => compare(Some(v), Some(&self.value)),
        };
        o == self.side || (self.inclusive && o == Ordering::Equal)
    }
}

impl Filter {
    /// The `created` bounds its top-level `must`/`filter` ranges set, intersected, in unix
    /// milliseconds (inclusive).
    fn created_range(&self) -> Option<(i64, i64)> {
        let mut range: Option<(i64, i64)> = None;
        for clause in &self.must {
            let Clause::Range(field, bounds) = clause else {
                continue;
            };
            if field != CREATED {
                continue;
            }
            let (mut from, mut to) = range.unwrap_or((i64::MIN, i64::MAX));
            for bound in bounds {
                // Checked at parse time: a bound on `created` is an instant.
                let Some(n) = bound.number else {
                    continue;
                };
                let ms = n as i64;
                match (bound.side, bound.inclusive) {
                    (Ordering::Greater, true) => from = from.max(ms),
                    (Ordering::Greater, false) => from = from.max(ms.saturating_add(1)),
                    (Ordering::Less, true) => to = to.min(ms),
                    _ => to = to.min(ms.saturating_sub(1)),
                }
            }
            range = Some((from, to));
        }
        range
    }

    /// Whether the filter is only `range` clauses on `created` of the top-level `must`/`filter`
    /// whose bounds are whole milliseconds within ±2^53: then a record with a `created`
    /// within ±2^53 matches exactly when `created_range` holds its `created`.
    fn is_created_range(&self) -> bool {
        !self.must.is_empty()
            && self.should.is_empty()
            && self.must_not.is_empty()
            && self.must.iter().all(|clause| match clause {
                Clause::Range(field, bounds) => {
                    field == CREATED
                        && bounds.iter().all(|b| {
                            b.number.is_some_and(|n| {
                                n.is_finite() && n.fract() == 0.0 && n.abs() <= EXACT_IN_F64 as f64
                            })
                        })
                }
                _ => false,
            })
    }

    /// Whether any clause, however nested, is on `field`.
    fn names(&self, field: &str) -> bool {
        self.must
            .iter()
            .chain(&self.should)
            .chain(&self.must_not)
            .any(|c| c.names(field))
    }

    fn parse(value: &Value) -> Result<Filter, String> {
        let object = value
            .as_object()
            .ok_or("filter must be a JSON object such as {\"must\":[…]}")?;
        if let Some(inner) = object.get("bool") {
            return Filter::parse(inner);
        }
        let mut filter = Filter::default();
        for (key, clauses) in object {
            let list = match clauses {
                Value::Array(items) => items
                    .iter()
                    .map(Clause::parse)
                    .collect::<Result<Vec<_>, _>>()?,
                single => vec![Clause::parse(single)?],
            };
            match key.as_str() {
                "must" | "filter" => filter.must.extend(list),
                "should" => filter.should.extend(list),
                "must_not" => filter.must_not.extend(list),
                other => {
                    return Err(format!(
                        "unsupported bool query key {other:?} (use must, filter, should, must_not)"
                    ))
                }
            }
        }
        Ok(filter)
    }

    fn matches(&self, record: &SimRecord) -> bool {
        self.must.iter().all(|c| c.matches(record))
            && !self.must_not.iter().any(|c| c.matches(record))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(record)))
    }
}

impl Clause {
    fn parse(value: &Value) -> Result<Clause, String> {
        let object = value.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
            format!("each filter clause must be an object with one key (terms, term, match, range, exists, bool), got {value}")
        })?;
        let (kind, body) = object.iter().next().ok_or("empty filter clause")?;
        let single_field = |body: &Value| -> Result<(String, Value), String> {
            let o = body
                .as_object()
                .filter(|o| o.len() == 1)
                .ok_or_else(|| format!("{kind} takes an object with one field, got {body}"))?;
            let (f, v) = o.iter().next().ok_or("empty clause")?;
            Ok((f.clone(), v.clone()))
        };
        match kind.as_str() {
            "terms" => {
                let (field, values) = single_field(body)?;
                let values = values
                    .as_array()
                    .cloned()
                    .ok_or_else(|| format!("terms on {field} needs an array of values"))?;
                Ok(Clause::Terms(field, values))
            }
            "term" | "match" => {
                let (field, v) = single_field(body)?;
                let v = v.get("value").cloned().unwrap_or(v);
                Ok(Clause::Terms(field, vec![v]))
            }
            "range" => {
                let (field, bounds) = single_field(body)?;
                let bounds = bounds
                    .as_object()
                    .ok_or_else(|| format!("range on {field} needs {{\"gte\": …}} and the like"))?;
                let mut out = Vec::new();
                for (op, v) in bounds {
                    let (side, inclusive) = match op.as_str() {
                        "gt" => (Ordering::Greater, false),
                        "gte" => (Ordering::Greater, true),
                        "lt" => (Ordering::Less, false),
                        "lte" => (Ordering::Less, true),
                        "format" | "time_zone" => continue,
                        other => return Err(format!("range on {field}: unsupported bound {other:?}")),
                    };
                    let number = match v {
                        // A date without a time: `lte` and `gt` take its last millisecond.
                        Value::String(text) => parse_instant(text, op == "lte" || op == "gt")
                            .map(|ms| ms as f64)
                            .or_else(|| text.parse::<f64>().ok()),
                        other => number(other),
                    };
                    // `created` is a date: Elasticsearch refuses what it cannot read as one.
                    if field == CREATED && number.is_none() {
                        return Err(format!(
                            "failed to parse date field [{v}] with format [strict_date_optional_time||epoch_millis] (range on {field})"
                        ));
                    }
                    out.push(Bound { side, inclusive, value: v.clone(), number });
                }
                Ok(Clause::Range(field, out))
            }
            "exists" => {
                let field = body
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or("exists needs {\"field\": \"name\"}")?;
                Ok(Clause::Exists(field.to_string()))
            }
            "bool" => Ok(Clause::Bool(Filter::parse(body)?)),
            other => Err(format!("unsupported filter clause {other:?} (supported: terms, term, match, range, exists, bool)")),
        }
    }

    fn names(&self, name: &str) -> bool {
        match self {
            Clause::Terms(field, _) | Clause::Range(field, _) | Clause::Exists(field) => {
                field == name
            }
            Clause::Bool(filter) => filter.names(name),
        }
    }

    fn matches(&self, record: &SimRecord) -> bool {
        match self {
            Clause::Terms(field, values) => {
                field_of(record, field).is_some_and(|v| values.iter().any(|x| equal(&v, x)))
            }
            Clause::Range(field, bounds) => {
                field_of(record, field).is_some_and(|v| bounds.iter().all(|b| b.admits(&v)))
            }
            Clause::Exists(field) => field_of(record, field).is_some_and(|v| !v.is_null()),
            Clause::Bool(filter) => filter.matches(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(amount: f64, declined: bool) -> SimRecord {
        SimRecord {
            id: "r1".into(),
            xmid: "X1".into(),
            tx_ms: 1_700_000_000_000,
            created_ms: 1_700_000_000_000,
            visible_ms: 1_700_000_000_000,
            seq: 0,
            amount,
            declined,
            resource: &AUTHORIZATIONS,
            json: format!(r#"{{"id":"r1","cardType":"Visa","cardNumber":{{"mask":"4242"}},"authorizedAmount":{amount}}}"#).into(),
        }
    }

    fn filter(text: &str) -> Filter {
        Filter::parse(&serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn terms_range_exists_and_must_not() {
        let big_visa = record(700.0, false);
        let small_decline = record(5.0, true);
        let f = filter(
            r#"{"must":[{"terms":{"cardType":["Visa","Discover"]}},{"range":{"authorizedAmount":{"gte":500}}}]}"#,
        );
        assert!(f.matches(&big_visa));
        assert!(!f.matches(&small_decline));
        let f = filter(
            r#"{"bool":{"must_not":[{"term":{"authorizationResponseStatus":"Approved"}}]}}"#,
        );
        assert!(f.matches(&small_decline));
        assert!(!f.matches(&big_visa));
        assert!(filter(r#"{"must":{"exists":{"field":"cardNumber.mask"}}}"#).matches(&big_visa));
        assert!(!filter(r#"{"must":{"exists":{"field":"nope"}}}"#).matches(&big_visa));
        let f = filter(
            r#"{"must":{"range":{"transactionDateAndTime":{"gte":"2023-11-14T22:13:20.000Z","lt":"2023-11-14T22:13:21Z"}}}}"#,
        );
        assert!(f.matches(&big_visa));
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<ReportQuery, String> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ReportQuery::parse(&AUTHORIZATIONS, &map, Utc::now())
    }

    #[test]
    fn a_created_range_is_planned_from_the_top_level_must() {
        let q = parse(&[(
            "filter",
            r#"{"must":[{"range":{"created":{"gte":"2026-11-30T05:00:00.000Z","lte":"2026-11-30T05:00:25.000Z"}}},{"term":{"cardType":"Visa"}}]}"#,
        )])
        .unwrap();
        let gte = DateTime::parse_from_rfc3339("2026-11-30T05:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(q.created_range, Some((gte, gte + 25_000)));
        assert!(q.on_created && !q.has_dr_type);
        // Exclusive bounds, epoch milliseconds, two ranges intersected, `filter` as `must`.
        let q = parse(&[(
            "filter",
            r#"{"filter":[{"range":{"created":{"gt":1000,"lt":"5000"}}},{"range":{"created":{"gte":2000}}}]}"#,
        )])
        .unwrap();
        assert_eq!(q.created_range, Some((2_000, 4_999)));
        // Under `should` it narrows nothing, but it is still a query on `created`.
        let q = parse(&[(
            "filter",
            r#"{"should":[{"range":{"created":{"gte":1000}}}]}"#,
        )])
        .unwrap();
        assert_eq!(q.created_range, None);
        assert!(q.on_created);
        let q = parse(&[("sort", "created:desc")]).unwrap();
        assert!(q.on_created && q.sorts_by("created") && q.created_range.is_none());
        assert!(
            !parse(&[("sort", "transactionDateAndTime:asc")])
                .unwrap()
                .on_created
        );
        assert!(
            parse(&[("filter", r#"{"must":{"range":{"created":{"gte":"soon"}}}}"#)])
                .unwrap_err()
                .contains("failed to parse date field")
        );
    }

    #[test]
    fn a_filter_of_only_a_created_range_is_known_to_match_without_reading_it() {
        for (filter, only_created) in [
            (
                r#"{"must":[{"range":{"created":{"gte":"2023-11-14T22:13:20.000Z","lte":"2023-11-14T22:13:21.000Z"}}}]}"#,
                true,
            ),
            (
                r#"{"filter":{"range":{"created":{"gt":1700000000000,"lt":"1700000001000"}}}}"#,
                true,
            ),
            (
                r#"{"bool":{"must":[{"range":{"created":{"gte":1699999999000}}},{"range":{"created":{"lte":1700000001500,"format":"epoch_millis"}}}]}}"#,
                true,
            ),
            (
                r#"{"must":[{"range":{"created":{"gte":1699999999999.5}}}]}"#,
                false,
            ),
            (r#"{"must":[{"range":{"created":{"gte":1e300}}}]}"#, false),
            (
                r#"{"must":[{"range":{"created":{"gte":1700000000000}}},{"term":{"cardType":"Visa"}}]}"#,
                false,
            ),
            (
                r#"{"must":[{"range":{"created":{"gte":1700000000000}}}],"must_not":[{"term":{"cardType":"Amex"}}]}"#,
                false,
            ),
            (
                r#"{"should":[{"range":{"created":{"gte":1700000000000}}}]}"#,
                false,
            ),
        ] {
            let q = parse(&[("filter", filter)]).unwrap();
            assert_eq!(q.created_range_is_filter, only_created, "{filter}");
            for created_ms in (1_699_999_998_000..1_700_000_003_000).step_by(7) {
                let r = SimRecord {
                    created_ms,
                    ..record(1.0, false)
                };
                let surely = q.surely_matches_created(created_ms);
                assert!(!surely || q.matches(&r), "{filter} {created_ms}");
                if only_created {
                    assert_eq!(surely, q.matches(&r), "{filter} {created_ms}");
                }
            }
        }
    }

    #[test]
    fn sorting_by_created_then_id_orders_by_both() {
        let mk = |id: &str, created_ms: i64, seq: u64| {
            std::sync::Arc::new(SimRecord {
                id: id.into(),
                created_ms,
                seq,
                ..record(1.0, false)
            })
        };
        let mut records = vec![mk("b", 2, 0), mk("c", 1, 1), mk("a", 2, 2), mk("d", 1, 3)];
        parse(&[("sort", "created:asc, id:asc")])
            .unwrap()
            .sort(&mut records);
        let order: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["c", "d", "a", "b"]);
        parse(&[("sort", "created:DESC,id:desc")])
            .unwrap()
            .sort(&mut records);
        let order: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["b", "a", "d", "c"]);
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let now = Utc::now();
        let q = |pairs: &[(&str, &str)]| {
            let map = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ReportQuery::parse(&AUTHORIZATIONS, &map, now)
        };
        assert!(q(&[("size", "101")]).unwrap_err().contains("at most 100"));
        assert!(q(&[("dr_type", "abs"), ("dr_from", "yesterday")])
            .unwrap_err()
            .contains("dr_from"));
        assert!(q(&[("accountNumbers", "X1,X2")])
            .unwrap_err()
            .contains("JSON array"));
        assert!(q(&[("sort", "created:up")])
            .unwrap_err()
            .contains("asc or desc"));
        assert!(q(&[("filter", r#"{"must":[{"wildcard":{"a":"b"}}]}"#)])
            .unwrap_err()
            .contains("wildcard"));
        let ok = q(&[("dr_type", "q"), ("dr_quick", "last_24_h")]).unwrap();
        assert_eq!(ok.to_ms - ok.from_ms, 86_400_000);
    }
}
