//! `[[routes]]`: which records go to which sink, redacted how, with validation.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::validate;
use super::{ConfigError, PollersConfig, SinkConfig};
use crate::filter::{Filter, Path};
use mxc::Resource;

/// `[[routes]]`: records of `resource` matching `filter` become `event_type` events for `sink`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in logs and event ids.
    /// Default: the sink name and the route's index, `SINK#INDEX`.
    #[serde(default)]
    pub name: Option<String>,
    /// A name from `[sinks]`.
    pub sink: String,
    /// Whose records: `authorizations`, `disputes`, `batches` or `ach` (one of
    /// `pollers.resources`).
    /// Default: `"authorizations"`.
    #[serde(default = "default_resource")]
    pub resource: String,
    /// Only the records someone must act on now, as the resource defines them: declined
    /// authorizations (`authorization.declined`), chargebacks (`dispute.chargeback`), rejected
    /// batches (`batch.rejected`), returned deposits (`ach.returned`). `filter` and
    /// `event_type`, when given, still win.
    /// Default: `false`.
    #[serde(default)]
    pub alerts: bool,
    /// The event type.
    /// Default: the resource's (`authorization.created`, `dispute.created`, `batch.created`,
    /// `ach.deposit`); with `alerts`, the alert's.
    #[serde(default)]
    pub event_type: Option<String>,
    /// An expression over record fields, e.g. `authorizationResponseStatus != "Approved"` or
    /// `authorizedAmount >= 500 and cardType in ["Visa", "Mastercard"]`.
    /// Default: none: every record (with `alerts`, the resource's alert filter).
    #[serde(default)]
    pub filter: Option<String>,
    /// Fields removed or masked before the event leaves.
    #[serde(default)]
    pub redact: RedactConfig,
}

impl RouteConfig {
    /// A route taking every authorization to `sink` as `authorization.created`, unredacted.
    pub fn every_record(name: &str, sink: &str) -> RouteConfig {
        RouteConfig {
            name: Some(name.to_string()),
            sink: sink.to_string(),
            resource: default_resource(),
            alerts: false,
            event_type: None,
            filter: None,
            redact: RedactConfig::default(),
        }
    }

    /// The route's resource, if its name is one.
    pub fn resource(&self) -> Option<&'static mxc::Resource> {
        mxc::Resource::named(&self.resource)
    }

    /// The event type: its own, else the resource's (or its alert's).
    pub fn event_type(&self) -> String {
        match (&self.event_type, self.resource()) {
            (Some(t), _) => t.clone(),
            (None, Some(r)) if self.alerts => r.alert.event_type.to_string(),
            (None, Some(r)) => r.event_type.to_string(),
            (None, None) => mxc::AUTHORIZATIONS.event_type.to_string(),
        }
    }

    /// The filter: its own, else with `alerts` the resource's alert filter.
    pub fn filter(&self) -> Option<&str> {
        match (&self.filter, self.resource()) {
            (Some(f), _) => Some(f),
            (None, Some(r)) if self.alerts => r.alert.filter,
            _ => None,
        }
    }

    /// The route's name: its own, or `SINK#INDEX`.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}#{index}", self.sink))
    }
}

fn default_resource() -> String {
    mxc::AUTHORIZATIONS.name.to_string()
}

/// Dotted field paths to remove (`drop`) or mask (`mask`: strings keep their last four
/// characters) in a route's events, e.g. `cardNumber.data`, `uar.entity.taxId`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Paths of the fields removed.
    /// Default: `[]`.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Paths of the fields masked.
    /// Default: `[]`.
    #[serde(default)]
    pub mask: Vec<String>,
}

impl RouteConfig {
    /// The errors of `routes[i]`: its sink must be among `sinks`, its resource polled, and its
    /// name unused (`names`).
    pub(super) fn validate(
        &self,
        i: usize,
        sinks: &BTreeMap<String, SinkConfig>,
        pollers: &PollersConfig,
        names: &mut HashSet<String>,
        errors: &mut Vec<ConfigError>,
    ) {
        let mut error = validate::reporter(errors);
        let at = |key: &str| format!("routes[{i}].{key}");
        if !sinks.contains_key(&self.sink) {
            let known: Vec<&str> = sinks.keys().map(String::as_str).collect();
            error(
                &at("sink"),
                format!(
                    "no sink named {:?} (defined: {})",
                    self.sink,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        if !names.insert(self.display_name(i)) {
            error(
                &at("name"),
                format!("{:?} is used by another route", self.display_name(i)),
            );
        }
        match self.resource() {
            None => error(
                &at("resource"),
                format!(
                    "no resource named {:?} (known: {})",
                    self.resource,
                    Resource::names()
                ),
            ),
            // (With none polled, that error alone says it.)
            Some(r)
                if !pollers.resources.is_empty()
                    && !pollers.resources.iter().any(|p| p == r.name) =>
            {
                error(
                    &at("resource"),
                    format!(
                        "{:?} is not polled: add it to pollers.resources (now {:?})",
                        r.name, pollers.resources
                    ),
                )
            }
            Some(_) => {}
        }
        if let Some(event_type) = &self.event_type {
            if event_type.is_empty()
                || !event_type.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
            {
                error(
                    &at("event_type"),
                    format!("lower-case letters, digits, '.', '_' or '-', like authorization.declined; got {event_type:?}"),
                );
            }
        }
        if let Some(filter) = &self.filter {
            if let Err(e) = Filter::parse(filter) {
                error(&at("filter"), format!("{e}: {filter}"));
            }
        }
        for (key, paths) in [
            ("redact.drop", &self.redact.drop),
            ("redact.mask", &self.redact.mask),
        ] {
            for (j, p) in paths.iter().enumerate() {
                if Path::parse(p).is_none() {
                    error(
                        &format!("routes[{i}].{key}[{j}]"),
                        format!("{p:?} is not a dotted field path like cardNumber.data"),
                    );
                }
            }
        }
    }
}
