//! The event contract in tests: each event a test sees is checked against its event type's
//! JSON Schema with a real validator (formats asserted, enums closed: a value nobody listed
//! fails too).

use std::collections::HashMap;

use jsonschema::Validator;
use mxc_relay::config::Config;
use mxc_relay::schema::{Catalog, Enums};
use serde_json::{json, Value};

pub struct Contract {
    /// By event type: the Kafka value's validator and the webhook body's.
    validators: HashMap<String, (Validator, Validator)>,
}

fn compile(schema: &Value) -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("the schema compiles: {e}"))
}

impl Contract {
    /// What `config`'s routes produce, as they shape it.
    pub fn of(config: &Config) -> Contract {
        Contract::from(Catalog::for_config(config, Enums::Closed).expect("the routes compile"))
    }

    /// The default event types (`deploy/schemas/`).
    pub fn defaults() -> Contract {
        Contract::from(Catalog::defaults(Enums::Closed))
    }

    fn from(catalog: Catalog) -> Contract {
        let validators = catalog
            .events
            .iter()
            .map(|e| {
                let document = e.document();
                let webhook = json!({
                    "$schema": document["$schema"],
                    "$ref": "#/$defs/webhook",
                    "$defs": document["$defs"],
                });
                (
                    e.event_type.clone(),
                    (compile(&document), compile(&webhook)),
                )
            })
            .collect();
        Contract { validators }
    }

    /// Why `value` (an event, or with `webhook` a webhook body) does not match its type's
    /// schema: at most 5 errors, each with where.
    pub fn errors(&self, value: &Value, webhook: bool) -> Vec<String> {
        let t = value["type"].as_str().expect("an event has a type");
        let (kafka, hook) = self
            .validators
            .get(t)
            .unwrap_or_else(|| panic!("no schema for the event type {t:?}"));
        let validator = if webhook { hook } else { kafka };
        validator
            .iter_errors(value)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn validate(&self, value: &Value, webhook: bool) {
        let t = value["type"].as_str().unwrap_or_default();
        let errors = self.errors(value, webhook);
        assert!(
            errors.is_empty(),
            "a {t} {} does not match its schema: {errors:#?}\nevent: {}",
            if webhook { "webhook body" } else { "event" },
            value.to_string().chars().take(600).collect::<String>()
        );
    }

    /// A Kafka value, or a file/stdout line: the envelope.
    pub fn check(&self, event: &Value) {
        self.validate(event, false)
    }

    /// A webhook body: `{type, timestamp, data}`.
    pub fn check_webhook(&self, body: &Value) {
        self.validate(body, true)
    }
}
