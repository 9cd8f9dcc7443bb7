//! The `filter` parameter: an Elasticsearch-style bool query, parsed once, matched against
//! records, and read for the range on `created` that the index by `created` can answer.

use std::cmp::Ordering;

use serde_json::Value;

use super::fields::{compare, equal, field_of, number};
use super::params::parse_instant;
use super::{CREATED, EXACT_IN_F64};
use crate::data::SimRecord;

/// An Elasticsearch-style bool query: `must`, `filter`, `should`, `must_not`, whose clauses are
/// `terms`, `term`, `match`, `range`, `exists` or a nested `bool`.
#[derive(Debug, Default)]
pub(super) struct Filter {
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
    pub(super) fn created_range(&self) -> Option<(i64, i64)> {
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
    pub(super) fn is_created_range(&self) -> bool {
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
    pub(super) fn names(&self, field: &str) -> bool {
        self.must
            .iter()
            .chain(&self.should)
            .chain(&self.must_not)
            .any(|c| c.names(field))
    }

    pub(super) fn parse(value: &Value) -> Result<Filter, String> {
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

    pub(super) fn matches(&self, record: &SimRecord) -> bool {
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
