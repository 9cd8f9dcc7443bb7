//! Loading: defaults → file → environment, collecting every error with its key path.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::{Config, MxcConfig};
use crate::secret::Secret;

/// One thing wrong with the configuration, at a key path such as `pollers.interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything wrong with one configuration source.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The file (or "environment") the errors are about.
    pub source: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} error{}",
            self.source,
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The environment variables read, and the key each one sets.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("MXC_BASE_URL", "mxc.base_url"),
    ("MXC_API_KEY", "mxc.api_key"),
    ("MXC_USERNAME", "mxc.username"),
    ("MXC_PASSWORD", "mxc.password"),
    ("MXC_CLUSTER_INSTANCE", "cluster.instance"),
];

impl Config {
    /// Reads `path`, applies the environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source: source.clone(),
            errors: vec![ConfigError {
                path: "(file)".into(),
                message: format!("cannot read it: {e}"),
            }],
        })?;
        Config::from_toml(&text, &source, &|name| std::env::var(name).ok())
    }

    /// Parses TOML text, applies `env` (a variable lookup), and validates.
    pub fn from_toml(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source: source.to_string(),
            errors,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            fail(vec![ConfigError {
                path: "(syntax)".into(),
                message: e.message().to_string()
                    + &e.span()
                        .map(|s| format!(" (at {})", line_col(text, s.start)))
                        .unwrap_or_default(),
            }])
        })?;
        let mut errors = Vec::new();
        // Sections that failed to load hold defaults: checking their values would add noise.
        let mut failed = Vec::new();
        let mut config = Config {
            mxc: section(&mut table, "mxc", &mut errors, &mut failed),
            pollers: section(&mut table, "pollers", &mut errors, &mut failed),
            store: section(&mut table, "store", &mut errors, &mut failed),
            delivery: section(&mut table, "delivery", &mut errors, &mut failed),
            sinks: section(&mut table, "sinks", &mut errors, &mut failed),
            routes: section(&mut table, "routes", &mut errors, &mut failed),
            log: section(&mut table, "log", &mut errors, &mut failed),
            telemetry: section(&mut table, "telemetry", &mut errors, &mut failed),
            cluster: section(&mut table, "cluster", &mut errors, &mut failed),
            admin: section(&mut table, "admin", &mut errors, &mut failed),
        };
        for key in table.keys() {
            errors.push(ConfigError {
                path: key.clone(),
                message: "unknown section or key (known: mxc, pollers, store, delivery, sinks, routes, log, telemetry, cluster, admin)".into(),
            });
        }
        config.apply_env(env);
        if !failed.contains(&"admin") {
            errors.extend(config.admin.resolve_token(env));
        }
        errors.extend(config.validate().into_iter().filter(|e| {
            let section = e.path.split(['.', '[']).next().unwrap_or_default();
            // A route's sink is looked up among the sinks: not when those failed to load.
            let looks_up_failed_sinks =
                section == "routes" && e.path.ends_with(".sink") && failed.contains(&"sinks");
            !(failed.contains(&section) || looks_up_failed_sinks)
        }));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(fail(errors))
        }
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        self.mxc.apply_env(env);
        // One file for every replica, each naming itself (a pod's name, say).
        if let Some(name) = env("MXC_CLUSTER_INSTANCE").filter(|v| !v.is_empty()) {
            self.cluster.instance = name;
        }
        for sink in self.sinks.values_mut() {
            if let super::SinkConfig::Webhook(webhook) = sink {
                webhook.apply_env(env);
            }
        }
    }
}

impl MxcConfig {
    /// Applies the [`ENV_OVERRIDES`] found by `env` (a variable lookup); empty ones are ignored.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        for (var, key) in ENV_OVERRIDES {
            let Some(value) = env(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            match *key {
                "mxc.base_url" => self.base_url = value,
                "mxc.api_key" => self.api_key = Secret::new(value),
                "mxc.username" => self.username = value,
                "mxc.password" => self.password = Secret::new(value),
                _ => {}
            }
        }
    }
}

/// Deserializes one section, recording type errors and unknown keys with their paths; a
/// section with errors falls back to its defaults (and is named in `failed`) so the other
/// sections are still checked.
fn section<T: DeserializeOwned + Default>(
    table: &mut toml::Table,
    name: &'static str,
    errors: &mut Vec<ConfigError>,
    failed: &mut Vec<&'static str>,
) -> T {
    let Some(value) = table.remove(name) else {
        return T::default();
    };
    let expected = if name == "routes" { "array" } else { "table" };
    if value.type_str() != expected {
        errors.push(ConfigError {
            path: name.to_string(),
            message: format!("must be a {expected}, got a {}", value.type_str()),
        });
        failed.push(name);
        return T::default();
    }
    let value = if name == "sinks" {
        let Some(tagged) = tag_sinks(value, errors) else {
            failed.push(name);
            return T::default();
        };
        tagged
    } else {
        value
    };
    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path| unknown.push(path.to_string());
    let deserializer = serde_ignored::Deserializer::new(value, &mut record_unknown);
    let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    for key in unknown {
        errors.push(ConfigError {
            path: key_path(name, &key),
            message: "unknown key".into(),
        });
    }
    match result {
        Ok(section) => section,
        Err(e) => {
            // A sink's kind (the variant of an externally tagged enum) is no key of the path,
            // except when it is the error: an unknown kind.
            let segments: Vec<String> = e
                .path()
                .iter()
                .filter(|s| !matches!(s, Segment::Enum { .. }))
                .map(ToString::to_string)
                .collect();
            let unknown_kind = name == "sinks" && e.path().iter().count() == 1;
            let path = segments.join(".") + if unknown_kind { ".kind" } else { "" };
            errors.push(ConfigError {
                path: if path.is_empty() {
                    name.to_string()
                } else {
                    key_path(name, &path)
                },
                // The toml crate appends "in `key`" lines: the path says it already.
                message: e
                    .into_inner()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            });
            failed.push(name);
            T::default()
        }
    }
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

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("line {line}, column {col}")
}
