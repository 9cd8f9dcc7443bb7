//! A record's fields as a query reads them (dotted paths, the common ones without parsing the
//! JSON), and how two field values compare.

use std::borrow::Cow;
use std::cmp::Ordering;

use chrono::DateTime;
use serde_json::{Map, Value};

use mxc::AUTHORIZATIONS;

use super::CREATED;
use crate::data::SimRecord;

/// A field of a record: the common ones without parsing, the rest from its JSON.
pub(super) fn field_of<'a>(record: &'a SimRecord, field: &str) -> Option<Cow<'a, Value>> {
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
pub(super) fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// Sets `value` at a dotted path in `out`, making the objects on the way.
pub(super) fn insert_path(out: &mut Map<String, Value>, path: &str, value: Value) {
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
pub(super) fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
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
pub(super) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis() as f64),
        _ => None,
    }
}

/// A value as text: a string as it is, the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether two field values are equal as [`compare`] orders them.
pub(super) fn equal(a: &Value, b: &Value) -> bool {
    compare(Some(a), Some(b)) == Ordering::Equal
}
