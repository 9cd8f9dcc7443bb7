//! Reading the sections of a configuration one by one, so that one bad value hides nothing
//! else: a value of the wrong type is reported, dropped (its default stands in) and the rest
//! of its section read again; the values that depended on it are then not checked further.

use serde::de::DeserializeOwned;
use serde_path_to_error::{Path, Segment};

use super::ConfigError;

/// The errors found while reading, and what they make unreliable.
#[derive(Default)]
pub(super) struct Reading {
    pub(super) errors: Vec<ConfigError>,
    /// Sections that could not be read at all: they hold their defaults.
    failed: Vec<&'static str>,
    /// Keys dropped for a value of the wrong type (`pollers.burst`): their defaults stand in.
    dropped: Vec<String>,
}

impl Reading {
    /// Deserializes section `name` out of `table`, recording type errors and unknown keys with
    /// their paths. A value of the wrong type is dropped and the section read again; a section
    /// that still cannot be read (a table missing a required key) falls back to its defaults.
    pub(super) fn section<T: DeserializeOwned + Default>(
        &mut self,
        table: &mut toml::Table,
        name: &'static str,
    ) -> T {
        let Some(value) = table.remove(name) else {
            return T::default();
        };
        let expected = if name == "routes" { "array" } else { "table" };
        if value.type_str() != expected {
            self.errors.push(ConfigError {
                path: name.to_string(),
                message: format!("must be a {expected}, got a {}", value.type_str()),
            });
            self.failed.push(name);
            return T::default();
        }
        let mut value = if name == "sinks" {
            let Some(tagged) = tag_sinks(value, &mut self.errors) else {
                self.failed.push(name);
                return T::default();
            };
            tagged
        } else {
            value
        };
        let (mut unknown, mut wrong): (Vec<String>, Vec<ConfigError>) = (Vec::new(), Vec::new());
        let section = loop {
            let mut found = Vec::new();
            let mut record = |path: serde_ignored::Path| found.push(path.to_string());
            let deserializer = serde_ignored::Deserializer::new(value.clone(), &mut record);
            let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
            for key in found {
                if !unknown.contains(&key) {
                    unknown.push(key);
                }
            }
            match result {
                Ok(section) => break section,
                Err(e) => {
                    wrong.push(type_error(name, &e));
                    match drop_key(&mut value, e.path()) {
                        Some(dropped) => self.dropped.push(key_path(name, &dropped)),
                        None => {
                            self.failed.push(name);
                            break T::default();
                        }
                    }
                }
            }
        };
        for key in unknown {
            self.errors.push(ConfigError {
                path: key_path(name, &key),
                message: "unknown key".into(),
            });
        }
        self.errors.extend(wrong);
        section
    }

    /// Whether a later check's error would be noise: about a section that holds its defaults,
    /// or about (or naming) a dropped key, whose default stands in.
    pub(super) fn hides(&self, error: &ConfigError) -> bool {
        let section = error.path.split(['.', '[']).next().unwrap_or_default();
        // A route's sink is looked up among the sinks: not when those failed to load.
        let looks_up_failed_sinks =
            section == "routes" && error.path.ends_with(".sink") && self.failed.contains(&"sinks");
        self.failed.contains(&section)
            || looks_up_failed_sinks
            || self.dropped.iter().any(|key| {
                error.path == *key
                    || error.path.starts_with(&format!("{key}."))
                    || error.path.starts_with(&format!("{key}["))
                    || error.message.contains(key.as_str())
            })
    }
}

/// A deserialization error at its key path, in the deserializer's words.
fn type_error(name: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    // A sink's kind (the variant of an externally tagged enum) is no key of the path, except
    // when it is the error: an unknown kind.
    let segments: Vec<String> = e
        .path()
        .iter()
        .filter(|s| !matches!(s, Segment::Enum { .. }))
        .map(ToString::to_string)
        .collect();
    let unknown_kind = name == "sinks" && e.path().iter().count() == 1;
    let path = segments.join(".") + if unknown_kind { ".kind" } else { "" };
    ConfigError {
        path: if path.is_empty() {
            name.to_string()
        } else {
            key_path(name, &path)
        },
        // The toml crate appends "in `key`" lines: the path says it already.
        message: e
            .inner()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Removes the key whose value `path` leads into (the innermost table key on the path: a
/// whole list for one bad item), unless that value is a table; returns its path within the
/// section (`burst`, `out.timeout`, `1.filter`).
fn drop_key(value: &mut toml::Value, path: &Path) -> Option<String> {
    let segments: Vec<&Segment> = path.iter().collect();
    let last = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))?;
    let mut at = value;
    for segment in &segments[..last] {
        at = match (segment, at) {
            (Segment::Map { key } | Segment::Enum { variant: key }, toml::Value::Table(t)) => {
                t.get_mut(key.as_str())?
            }
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index)?,
            _ => return None,
        };
    }
    let (Segment::Map { key }, toml::Value::Table(table)) = (segments[last], at) else {
        return None;
    };
    if table.get(key.as_str())?.is_table() {
        return None;
    }
    table.remove(key.as_str())?;
    Some(
        segments[..=last]
            .iter()
            .filter(|s| !matches!(s, Segment::Enum { .. }))
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// `[sinks.NAME] kind = "K"` read as `[sinks.NAME.K]`: serde reads an internally tagged enum
/// from a buffered copy, which loses the key paths of its errors and its unknown keys; an
/// externally tagged one keeps both. `None` (with the errors) when a sink has no usable `kind`.
fn tag_sinks(sinks: toml::Value, errors: &mut Vec<ConfigError>) -> Option<toml::Value> {
    let toml::Value::Table(sinks) = sinks else {
        return Some(sinks);
    };
    let mut tagged = toml::Table::new();
    let mut ok = true;
    for (name, sink) in sinks {
        let path = format!("sinks.{name}");
        let toml::Value::Table(mut body) = sink else {
            errors.push(ConfigError {
                path,
                // The type only: the value could be a secret put in the wrong place.
                message: format!("must be a table with a `kind`, got {}", sink.type_str()),
            });
            ok = false;
            continue;
        };
        match body.remove("kind") {
            Some(toml::Value::String(kind)) => {
                let sink = toml::Table::from_iter([(kind, toml::Value::Table(body))]);
                tagged.insert(name, toml::Value::Table(sink));
            }
            Some(kind) => {
                errors.push(ConfigError {
                    path: format!("{path}.kind"),
                    message: format!(
                        "must be one of `stdout`, `file`, `kafka`, `webhook`, got {kind}"
                    ),
                });
                ok = false;
            }
            None => {
                errors.push(ConfigError {
                    path,
                    message: "missing field `kind`".into(),
                });
                ok = false;
            }
        }
    }
    ok.then_some(toml::Value::Table(tagged))
}

/// `routes` + `1.redact.dorp` → `routes[1].redact.dorp`; `?` (a newtype, such as the webhook
/// sink's box) is skipped.
fn key_path(section: &str, inner: &str) -> String {
    let mut out = section.to_string();
    for part in inner.split('.') {
        if part == "?" {
            continue;
        } else if part.starts_with('[') {
            out.push_str(part);
        } else if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            out.push('.');
            out.push_str(part);
        }
    }
    out
}
