//! The event contract: a JSON Schema (draft 2020-12) per event type, describing the whole
//! event as a Kafka consumer receives it (the envelope with its `data`), and the AsyncAPI
//! document of a configuration. Pure: the CLI (`mxc-relay schema`) prints them and the Kafka
//! sink names them in `ce_dataschema`.
//!
//! Each schema file is self-contained: `$defs/envelope` (shared by every event type, built
//! here once), `$defs/data` (the record, as its routes shape it) and `$defs/webhook` (the body
//! a webhook receiver gets for the same event). Only keywords that mean the same in draft-07
//! are used, so the AsyncAPI document can carry the same schemas.

mod asyncapi;
mod fields;

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub use asyncapi::asyncapi;
pub use fields::Enums;

use crate::config::Config;
use crate::route::{compile_all, Path, Route, RouteError};
use mxc::{Resource, RESOURCES};

/// Version of the event envelope, in the `mxc-schema-version` header.
pub const SCHEMA_VERSION: &str = "1";

/// The JSON Schema dialect of every schema.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The configuration the checked-in AsyncAPI document describes (`deploy/schemas/`): every
/// resource to Kafka as CloudEvents, the alerts as webhooks.
pub const REFERENCE_CONFIG: &str = include_str!("reference.toml");

/// An event's time and a webhook's `timestamp`: UTC, to the millisecond.
const UTC_MILLIS: &str = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$";

/// The `$id` of an event type's schema (and its events' `ce_dataschema`): a URN, so that it
/// names the contract wherever the files are published.
pub fn schema_id(event_type: &str) -> String {
    format!("urn:mxc-relay:schema:{event_type}:v{SCHEMA_VERSION}")
}

/// The CloudEvents `source` of a merchant's events: a URI reference naming the XMID,
/// `/mxc/merchants/<XMID>` (percent-encoded beyond the URI's unreserved characters).
pub fn cloudevents_source(xmid: &str) -> String {
    const PREFIX: &str = "/mxc/merchants/";
    let mut source = String::with_capacity(PREFIX.len() + xmid.len());
    source.push_str(PREFIX);
    for b in xmid.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            source.push(char::from(b));
        } else {
            source.push_str(&format!("%{b:02X}"));
        }
    }
    source
}

/// One event type's contract.
#[derive(Debug, Clone)]
pub struct EventContract {
    pub event_type: String,
    /// The schema's `$id`; a configuration whose routes reshape the data (redaction, another
    /// resource) gets its own, suffixed with a digest of what they do.
    pub id: String,
    description: String,
    /// The schema of the event's `data`.
    data: Value,
}

/// The contracts of a set of event types, in a stable order.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub events: Vec<EventContract>,
}

/// What one route does, as far as the contract is concerned.
struct RouteShape<'a> {
    route: &'a Route,
    drop: Vec<Vec<String>>,
    mask: Vec<Vec<String>>,
}

impl Catalog {
    /// The event types every resource makes by default (`authorization.created`,
    /// `authorization.declined` …), unredacted: the schemas in `deploy/schemas/`.
    pub fn defaults(enums: Enums) -> Catalog {
        let mut events = Vec::new();
        for r in RESOURCES {
            let data = fields::record(r).render(enums, 0);
            events.push(EventContract {
                event_type: r.event_type.to_string(),
                id: schema_id(r.event_type),
                description: format!("Every new record of the {} report ({}).", r.name, r.path),
                data: data.clone(),
            });
            events.push(EventContract {
                event_type: r.alert.event_type.to_string(),
                id: schema_id(r.alert.event_type),
                description: match r.alert.filter {
                    Some(filter) => format!(
                        "An urgent record of the {} report ({}): {filter}, as a route with alerts = true selects them.",
                        r.name, r.path
                    ),
                    None => format!("Every new record of the {} report.", r.name),
                },
                data,
            });
        }
        Catalog { events }
    }

    /// The event types a configuration's routes make (see [`Catalog::for_routes`]); fails
    /// only for a route that does not compile (a configuration that skipped validation).
    pub fn for_config(config: &Config, enums: Enums) -> Result<Catalog, RouteError> {
        Ok(Catalog::for_routes(&compile_all(&config.routes)?, enums))
    }

    /// The event types these compiled routes make, each described as those routes shape it:
    /// a field some route drops is not required, one some route masks may be masked.
    pub fn for_routes(routes: &[Route], enums: Enums) -> Catalog {
        let mut groups: Vec<(String, Vec<RouteShape>)> = Vec::new();
        for route in routes {
            let shape = RouteShape::of(route);
            match groups.iter_mut().find(|(t, _)| *t == route.event_type) {
                Some((_, shapes)) => shapes.push(shape),
                None => groups.push((route.event_type.clone(), vec![shape])),
            }
        }
        let events = groups
            .into_iter()
            .map(|(event_type, shapes)| EventContract::of_routes(event_type, &shapes, enums))
            .collect();
        Catalog { events }
    }

    pub fn get(&self, event_type: &str) -> Option<&EventContract> {
        self.events.iter().find(|e| e.event_type == event_type)
    }

    /// The event types, for error messages.
    pub fn types(&self) -> String {
        self.events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every schema, keyed by event type.
    pub fn documents(&self) -> Value {
        Value::Object(
            self.events
                .iter()
                .map(|e| (e.event_type.clone(), e.document()))
                .collect(),
        )
    }

    /// Each event type's schema id: the `ce_dataschema` of its events.
    pub fn ids(&self) -> HashMap<String, String> {
        self.events
            .iter()
            .map(|e| (e.event_type.clone(), e.id.clone()))
            .collect()
    }
}

impl RouteShape<'_> {
    fn of(route: &Route) -> RouteShape<'_> {
        let segments = |paths: &[Path]| -> Vec<Vec<String>> {
            paths.iter().map(|p| p.segments().to_vec()).collect()
        };
        let (drop, mask) = route.redaction();
        RouteShape {
            route,
            drop: segments(drop),
            mask: segments(mask),
        }
    }
}

impl EventContract {
    fn of_routes(event_type: String, shapes: &[RouteShape], enums: Enums) -> EventContract {
        let mut resources: Vec<&'static Resource> = Vec::new();
        for s in shapes {
            if !resources.contains(&s.route.resource) {
                resources.push(s.route.resource);
            }
        }
        let mut datas: Vec<Value> = resources
            .iter()
            .map(|r| {
                let mine: Vec<&RouteShape> =
                    shapes.iter().filter(|s| s.route.resource == *r).collect();
                let mut record = fields::record(r);
                for s in &mine {
                    record.redact(&s.route.name, &s.drop, &s.mask);
                }
                record.render(enums, mine.len())
            })
            .collect();
        let data = if datas.len() == 1 {
            datas.remove(0)
        } else {
            json!({ "anyOf": datas })
        };
        // The default schema of this type describes these events only if the routes are of
        // its resource and redact nothing.
        let default_resource = RESOURCES
            .iter()
            .find(|r| r.event_type == event_type || r.alert.event_type == event_type);
        let reshaped = shapes
            .iter()
            .any(|s| !s.drop.is_empty() || !s.mask.is_empty())
            || default_resource.is_some_and(|d| resources.iter().any(|r| r != d));
        let mut id = schema_id(&event_type);
        if reshaped {
            let mut digest = Sha256::new();
            for s in shapes {
                digest.update(format!(
                    "{}\0{}\0{:?}\0{:?}\0",
                    s.route.name, s.route.resource.name, s.drop, s.mask
                ));
            }
            let hex: String = digest.finalize()[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            id.push_str(&format!(":routes-{hex}"));
        }
        let made_by: Vec<String> = shapes
            .iter()
            .map(|s| {
                format!(
                    "{} ({}, {}, to sink {})",
                    s.route.name,
                    s.route.resource.name,
                    s.route
                        .filter_text()
                        .map_or("every record".to_string(), |f| format!("where {f}")),
                    s.route.sink
                )
            })
            .collect();
        EventContract {
            event_type,
            id,
            description: format!("Made by route(s) {}.", made_by.join("; ")),
            data,
        }
    }

    /// The JSON Schema of this event type: the Kafka message value, with the webhook body in
    /// `$defs/webhook`.
    pub fn document(&self) -> Value {
        let mut defs = Map::new();
        defs.insert("envelope".into(), envelope());
        defs.insert("data".into(), self.data.clone());
        defs.insert(
            "webhook".into(),
            webhook_body(&self.event_type, "#/$defs/data"),
        );
        let mut document = Map::new();
        document.insert("$schema".into(), json!(DIALECT));
        document.insert("$id".into(), json!(self.id));
        document.insert("title".into(), json!(self.event_type));
        document.insert(
            "description".into(),
            json!(format!(
                "{} The whole event as a Kafka consumer receives it (the message value); #/$defs/webhook is the body a webhook receiver gets.",
                self.description
            )),
        );
        if let Value::Object(payload) =
            event_payload(&self.event_type, "#/$defs/envelope", "#/$defs/data")
        {
            document.extend(payload);
        }
        document.insert("$defs".into(), Value::Object(defs));
        Value::Object(document)
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The schema of the event's `data`.
    pub fn data(&self) -> &Value {
        &self.data
    }
}

/// The envelope every event shares: `{id, type, xmid, occurred_at, data}`.
pub fn envelope() -> Value {
    json!({
        "type": "object",
        "description": "The envelope every mxc-relay event shares. Consumers deduplicate on id (or the mxc-record-id header): a redelivery carries the same one.",
        "required": ["id", "type", "xmid", "occurred_at", "data"],
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^evt_[0-9a-f]{32}$",
                "description": "The event id: evt_ and 32 hex digits of SHA-256 over the route's name and the record's id. The same on every redelivery; webhook-id and ce_id carry it too."
            },
            "type": {
                "type": "string",
                "pattern": "^[a-z0-9._-]+$",
                "description": "The event type (authorization.created, authorization.declined …): the route's event_type."
            },
            "xmid": {
                "type": "string",
                "description": "The merchant account (XMID): the record's accountNumber, empty if it has none."
            },
            "occurred_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "pattern": UTC_MILLIS,
                "description": "The record's own time (transactionDateAndTime, disputeDate, batchDate, depositDate) in UTC, to the millisecond; null for a record without one."
            },
            "data": {
                "type": "object",
                "description": "The record as MXC sent it (unknown fields included), less the route's redactions."
            }
        },
        "additionalProperties": true
    })
}

/// A Kafka message's value for one event type: the envelope, with its type and data.
fn event_payload(event_type: &str, envelope_ref: &str, data_ref: &str) -> Value {
    json!({
        "type": "object",
        "allOf": [{ "$ref": envelope_ref }],
        "properties": {
            "type": { "const": event_type },
            "data": { "$ref": data_ref }
        }
    })
}

/// A webhook's body for one event type (Standard Webhooks): `{type, timestamp, data}`.
fn webhook_body(event_type: &str, data_ref: &str) -> Value {
    json!({
        "type": "object",
        "description": "The body of a webhook delivery (Standard Webhooks): the event's type, the record's time and the record.",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": { "const": event_type },
            "timestamp": {
                "type": ["string", "null"],
                "format": "date-time",
                "pattern": UTC_MILLIS,
                "description": "The record's own time in UTC, to the millisecond (the envelope's occurred_at); null for a record without one. Order deliveries by it: webhooks are not ordered."
            },
            "data": { "$ref": data_ref }
        },
        "additionalProperties": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloudevents_source_names_the_xmid_as_a_uri_reference() {
        assert_eq!(
            cloudevents_source("887000000001"),
            "/mxc/merchants/887000000001"
        );
        assert_eq!(
            cloudevents_source("XMID_value-01.~"),
            "/mxc/merchants/XMID_value-01.~"
        );
        assert_eq!(cloudevents_source("a b/ü"), "/mxc/merchants/a%20b%2F%C3%BC");
        assert_eq!(cloudevents_source(""), "/mxc/merchants/");
    }

    #[test]
    fn the_defaults_cover_every_resource_and_alert_type() {
        let catalog = Catalog::defaults(Enums::Open);
        for r in RESOURCES {
            for t in [r.event_type, r.alert.event_type] {
                let e = catalog.get(t).unwrap();
                assert_eq!(e.id, schema_id(t));
                let doc = e.document();
                assert_eq!(doc["properties"]["type"]["const"], t);
                assert_eq!(doc["$defs"]["data"]["required"][0], r.id_field);
            }
        }
        assert_eq!(catalog.events.len(), 8);
    }

    #[test]
    fn a_redacting_route_gets_its_own_id() {
        let text = r#"
[mxc]
base_url = "http://127.0.0.1:1"
[pollers]
xmids = ["X1"]
resources = ["authorizations", "disputes"]
[sinks.out]
kind = "stdout"
[[routes]]
name = "plain"
sink = "out"
[[routes]]
name = "declines"
sink = "out"
alerts = true
redact.drop = ["cardNumber.data"]
[[routes]]
name = "all"
sink = "out"
resource = "disputes"
event_type = "mxc.any"
[[routes]]
name = "all2"
sink = "out"
event_type = "mxc.any"
"#;
        let config = Config::from_toml_without_secrets(text, "test", &|_| None).unwrap();
        let catalog = Catalog::for_config(&config, Enums::Open).unwrap();
        assert_eq!(
            catalog.types(),
            "authorization.created, authorization.declined, mxc.any"
        );
        assert_eq!(
            catalog.get("authorization.created").unwrap().id,
            schema_id("authorization.created")
        );
        let declined = catalog.get("authorization.declined").unwrap();
        assert!(declined
            .id
            .starts_with("urn:mxc-relay:schema:authorization.declined:v1:routes-"));
        assert!(
            declined.data["properties"]["cardNumber"]["properties"]["data"]["description"]
                .as_str()
                .unwrap()
                .contains("route(s) declines")
        );
        let any = catalog.get("mxc.any").unwrap();
        assert_eq!(any.id, schema_id("mxc.any"));
        assert_eq!(any.data["anyOf"].as_array().unwrap().len(), 2);
    }
}
