//! Routes: which records go to which sink, as which event type, with which fields removed or
//! masked. Pure: no I/O.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::filter::{Filter, FilterError, Path};

use crate::event::{Event, Head};

use crate::config::RouteConfig;
use mxc::{Record, Resource};

/// Why a configured route does not compile. Validation reports the same problems first, so
/// these are for callers that skipped it; each text names the route by its index.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// `resource` names no resource MXC serves.
    #[error("routes[{index}].resource: no resource named {resource:?}")]
    UnknownResource { index: usize, resource: String },
    /// `filter` does not parse.
    #[error("routes[{index}].filter: {error}")]
    Filter { index: usize, error: FilterError },
    /// An entry of `redact.drop` or `redact.mask` (`key`) is not a field path.
    #[error("routes[{index}].redact.{key}: {path:?} is not a field path")]
    NotAFieldPath {
        index: usize,
        key: &'static str,
        path: String,
    },
}

/// A route, compiled from its configuration.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub sink: String,
    /// Whose records it takes.
    pub resource: &'static Resource,
    pub event_type: String,
    filter: Option<Filter>,
    /// The filter as configured (for descriptions: the event contract says what it selects).
    filter_text: Option<String>,
    drop: Vec<Path>,
    mask: Vec<Path>,
}

/// The configured routes, compiled: once, at start; the pollers share them.
pub fn compile_all(configs: &[RouteConfig]) -> Result<Vec<Route>, RouteError> {
    configs
        .iter()
        .enumerate()
        .map(|(index, config)| Route::compile(config, index))
        .collect()
}

impl Route {
    /// Compiles a configured route. The configuration was validated, so errors here name the
    /// route and are for callers that skipped validation.
    pub fn compile(config: &RouteConfig, index: usize) -> Result<Route, RouteError> {
        let name = config.display_name(index);
        let resource = config
            .resource()
            .ok_or_else(|| RouteError::UnknownResource {
                index,
                resource: config.resource.clone(),
            })?;
        let filter = match config.filter() {
            Some(text) => {
                Some(Filter::parse(text).map_err(|error| RouteError::Filter { index, error })?)
            }
            None => None,
        };
        let paths = |list: &[String], key: &'static str| -> Result<Vec<Path>, RouteError> {
            list.iter()
                .map(|p| {
                    Path::parse(p).ok_or_else(|| RouteError::NotAFieldPath {
                        index,
                        key,
                        path: p.clone(),
                    })
                })
                .collect()
        };
        Ok(Route {
            name,
            sink: config.sink.clone(),
            resource,
            event_type: config.event_type(),
            filter,
            filter_text: config.filter().map(str::to_string),
            drop: paths(&config.redact.drop, "drop")?,
            mask: paths(&config.redact.mask, "mask")?,
        })
    }

    /// The filter as configured, if any.
    pub fn filter_text(&self) -> Option<&str> {
        self.filter_text.as_deref()
    }

    /// The paths it drops and those it masks.
    pub fn redaction(&self) -> (&[Path], &[Path]) {
        (&self.drop, &self.mask)
    }

    fn redacts(&self) -> bool {
        !self.drop.is_empty() || !self.mask.is_empty()
    }

    pub fn matches(&self, record: &Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(record))
    }

    /// The event for `record`; `value` is the record's JSON tree, parsed once by the caller as
    /// far as the routes [need it](TreeNeed); `fetched_at_ms` is when the record was fetched.
    pub fn event(
        &self,
        record: &Record,
        record_id: &str,
        value: &Value,
        fetched_at_ms: i64,
    ) -> Event {
        let id = event_id(&self.name, record_id);
        let xmid = record.xmid().unwrap_or_default().to_string();
        let occurred_at = record
            .time()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        // The envelope is written around the record's own JSON text: no tree to clone and
        // serialize again unless this route redacts.
        let data = if self.redacts() {
            let mut data = value.clone();
            for path in &self.drop {
                remove(&mut data, path.segments());
            }
            for path in &self.mask {
                mask(&mut data, path.segments());
            }
            std::borrow::Cow::Owned(data.to_string())
        } else {
            std::borrow::Cow::Borrowed(record.json())
        };
        Event::new(
            Head {
                id,
                event_type: self.event_type.clone(),
                route: self.name.clone(),
                resource: self.resource.name.to_string(),
                sink: self.sink.clone(),
                xmid,
                record_id: record_id.to_string(),
                occurred_at,
                fetched_at_ms,
                traceparent: None,
            },
            &data,
        )
    }
}

/// How much of each record's JSON tree a set of routes reads: none of it, a few top-level
/// fields (filters), or all of it (redaction). A 7 KB record parsed into a tree costs more than
/// everything else routing does, so it is parsed only as far as needed.
#[derive(Debug, Clone, PartialEq)]
pub enum TreeNeed {
    Nothing,
    Fields(Vec<String>),
    Whole,
}

impl TreeNeed {
    pub fn of<'r>(routes: impl IntoIterator<Item = &'r Route>) -> TreeNeed {
        let mut fields = Vec::new();
        for route in routes {
            if route.redacts() {
                return TreeNeed::Whole;
            }
            if let Some(filter) = &route.filter {
                filter.fields(&mut fields);
            }
        }
        if fields.is_empty() {
            TreeNeed::Nothing
        } else {
            TreeNeed::Fields(fields)
        }
    }

    /// The part of `record`'s tree the routes read (`Null` when they read none).
    pub fn read(&self, record: &Record) -> Value {
        match self {
            TreeNeed::Nothing => Value::Null,
            TreeNeed::Fields(fields) => record.pick(fields),
            TreeNeed::Whole => record.to_value(),
        }
    }
}

/// `evt_` and 32 hex digits of SHA-256 over the route name and the record id.
pub fn event_id(route: &str, record_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(record_id.as_bytes());
    let digest = hash.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(36);
    id.push_str("evt_");
    for b in &digest[..16] {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 15)] as char);
    }
    id
}

fn remove(value: &mut Value, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            if let Some(map) = value.as_object_mut() {
                map.shift_remove(last);
            }
        }
        [head, rest @ ..] => {
            if let Some(child) = value.get_mut(head) {
                remove(child, rest);
            }
        }
    }
}

/// Strings keep their last four characters; other values become "[masked]".
fn mask(value: &mut Value, path: &[String]) {
    let Some(target) = path.iter().try_fold(value, |v, key| v.get_mut(key)) else {
        return;
    };
    *target = match target {
        Value::String(s) => {
            let chars: Vec<char> = s.chars().collect();
            let keep = if chars.len() > 4 { 4 } else { 0 };
            let masked: String = std::iter::repeat_n('*', chars.len() - keep)
                .chain(chars[chars.len() - keep..].iter().copied())
                .collect();
            Value::String(masked)
        }
        Value::Null => Value::Null,
        _ => Value::String("[masked]".into()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RedactConfig, RouteConfig};

    #[test]
    fn compile_errors_name_the_route_and_the_key() {
        let mut config = RouteConfig::every_record("all", "out");
        config.resource = "deposits".into();
        let error = Route::compile(&config, 2).unwrap_err();
        assert_eq!(
            error,
            RouteError::UnknownResource {
                index: 2,
                resource: "deposits".into()
            }
        );
        assert_eq!(
            error.to_string(),
            r#"routes[2].resource: no resource named "deposits""#
        );

        let mut config = RouteConfig::every_record("all", "out");
        config.redact.mask = vec!["card.number".into(), "card..cvv".into()];
        assert_eq!(
            Route::compile(&config, 0).unwrap_err().to_string(),
            r#"routes[0].redact.mask: "card..cvv" is not a field path"#
        );

        let mut config = RouteConfig::every_record("all", "out");
        config.filter = Some("amount >".into());
        let error = Route::compile(&config, 1).unwrap_err();
        let RouteError::Filter {
            index: 1,
            error: cause,
        } = &error
        else {
            panic!("not a filter error: {error:?}");
        };
        assert_eq!(error.to_string(), format!("routes[1].filter: {cause}"));
    }

    fn route(filter: Option<&str>, drop: &[&str], mask: &[&str]) -> Route {
        let config = RouteConfig {
            name: Some("declines".into()),
            sink: "alerts".into(),
            resource: "authorizations".into(),
            alerts: false,
            event_type: Some("authorization.declined".into()),
            filter: filter.map(str::to_string),
            redact: RedactConfig {
                drop: drop.iter().map(|s| s.to_string()).collect(),
                mask: mask.iter().map(|s| s.to_string()).collect(),
            },
        };
        Route::compile(&config, 0).unwrap()
    }

    const RECORD: &str = r#"{"id":"r-1","accountNumber":"X1","transactionDateAndTime":"2026-01-02T03:04:05.000-05:00","authorizationResponseStatus":"Declined","cardNumber":{"data":"d4t4","hash":"abcdef123456","mask":"4242"},"uar":{"entity":{"taxId":{"number":{"hash":"h"}}}}}"#;

    #[test]
    fn the_envelope_and_a_stable_id() {
        let record = Record::from_json(RECORD).unwrap();
        let value = record.to_value();
        let r = route(
            Some(r#"authorizationResponseStatus != "Approved""#),
            &[],
            &[],
        );
        assert!(r.matches(&value));
        let event = r.event(&record, "r-1", &value, 0);
        assert_eq!(event.id, event_id("declines", "r-1"));
        assert_eq!(event.id, r.event(&record, "r-1", &value, 0).id);
        assert_ne!(event.id, event_id("everything", "r-1"));
        let body: Value = serde_json::from_str(event.body()).unwrap();
        assert_eq!(body["id"], event.id.as_str());
        assert_eq!(body["type"], "authorization.declined");
        assert_eq!(body["xmid"], "X1");
        assert_eq!(body["occurred_at"], "2026-01-02T08:04:05.000Z");
        assert_eq!(body["data"], value);
        let data: Value = serde_json::from_str(event.data_json()).unwrap();
        assert_eq!(data, value);
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["id", "type", "xmid", "occurred_at", "data"]
        );
    }

    #[test]
    fn redaction_drops_and_masks_paths() {
        let record = Record::from_json(RECORD).unwrap();
        let value = record.to_value();
        let r = route(
            None,
            &["cardNumber.data", "uar.entity.taxId", "not.there"],
            &["cardNumber.hash", "cardNumber.mask"],
        );
        let body: Value = serde_json::from_str(r.event(&record, "r-1", &value, 0).body()).unwrap();
        assert_eq!(
            body["data"]["cardNumber"],
            serde_json::json!({"hash": "********3456", "mask": "****"})
        );
        assert!(body["data"]["uar"]["entity"]
            .as_object()
            .unwrap()
            .is_empty());
        assert!(!r.event(&record, "r-1", &value, 0).body().contains("d4t4"));
    }
}
