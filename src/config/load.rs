//! Loading: defaults → file → environment, collecting every error with its key path.

use std::fmt;
use std::path::Path;

use super::section::Reading;
use super::{Config, MxcConfig};
use mxc::Secret;

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

/// How far a configuration is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Its text and values.
    Values,
    /// And what `run` needs of this machine ([`Config::preflight`]).
    ForRun,
    /// Its text and values, its secrets aside: for describing what a configuration produces
    /// (`mxc-relay schema`), where missing ones (`mxc.api_key`, a webhook sink's `secrets`)
    /// are no error.
    WithoutSecrets,
}

impl Config {
    /// Reads `path`, applies the environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::read_file(path, Checks::Values)
    }

    /// [`Config::load`], and what `run` will need of this machine ([`Config::preflight`]):
    /// for `run`, `reload`, `check-config` and `backfill`.
    pub fn load_for_run(path: &Path) -> Result<Config, ConfigErrors> {
        Config::read_file(path, Checks::ForRun)
    }

    /// [`Config::load`] without requiring the secrets (see [`Checks::WithoutSecrets`]).
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigErrors> {
        Config::read_file(path, Checks::WithoutSecrets)
    }

    fn read_file(path: &Path, checks: Checks) -> Result<Config, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source: source.clone(),
            errors: vec![ConfigError {
                path: "(file)".into(),
                message: format!("cannot read it: {e}"),
            }],
        })?;
        Config::read(&text, &source, &|name| std::env::var(name).ok(), checks)
    }

    /// Parses TOML text, applies `env` (a variable lookup), and validates.
    pub fn from_toml(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::read(text, source, env, Checks::Values)
    }

    /// [`Config::from_toml`], and what `run` will need of this machine.
    pub fn from_toml_for_run(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::read(text, source, env, Checks::ForRun)
    }

    /// [`Config::from_toml`] without requiring the secrets (see [`Checks::WithoutSecrets`]).
    pub fn from_toml_without_secrets(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::read(text, source, env, Checks::WithoutSecrets)
    }

    fn read(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
        checks: Checks,
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
        let mut reading = Reading::default();
        let mut config = Config {
            mxc: reading.section(&mut table, "mxc"),
            pollers: reading.section(&mut table, "pollers"),
            store: reading.section(&mut table, "store"),
            delivery: reading.section(&mut table, "delivery"),
            sinks: reading.section(&mut table, "sinks"),
            routes: reading.section(&mut table, "routes"),
            log: reading.section(&mut table, "log"),
            telemetry: reading.section(&mut table, "telemetry"),
            cluster: reading.section(&mut table, "cluster"),
            admin: reading.section(&mut table, "admin"),
        };
        for key in table.keys() {
            reading.errors.push(ConfigError {
                path: key.clone(),
                message: "unknown section or key (known: mxc, pollers, store, delivery, sinks, routes, log, telemetry, cluster, admin)".into(),
            });
        }
        config.apply_env(env);
        // The token is resolved (read from its file or the environment) before validation.
        let mut checked: Vec<ConfigError> = config.admin.resolve_token(env).into_iter().collect();
        checked.extend(config.validate());
        checked.retain(|e| !reading.hides(e));
        let mut errors = std::mem::take(&mut reading.errors);
        errors.extend(checked);
        if checks == Checks::ForRun {
            let machine: Vec<ConfigError> = config
                .preflight()
                .into_iter()
                .filter(|e| {
                    !reading.hides(e) && !errors.iter().any(|known| about_the_same(known, e))
                })
                .collect();
            errors.extend(machine);
        }
        if checks == Checks::WithoutSecrets {
            errors.retain(|e| {
                e.path != "mxc.api_key"
                    && !(e.path.starts_with("sinks.") && e.path.ends_with(".secrets"))
            });
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(fail(errors))
        }
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        self.mxc.apply_env(env);
        self.telemetry.traces.apply_env(env);
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

/// Whether `known` already concerns what the machine check `e` is about: the store path
/// itself, or the Kafka client (`sinks.NAME`, `cluster`) whose properties it checks.
fn about_the_same(known: &ConfigError, e: &ConfigError) -> bool {
    let subject = e.path.strip_suffix(".properties").unwrap_or(&e.path);
    known.path == subject
        || known.path.starts_with(&format!("{subject}."))
        || known.path.starts_with(&format!("{subject}["))
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("line {line}, column {col}")
}
