//! Semantic checks, each naming its key path and what was found. Each section checks itself
//! beside its type (`MxcConfig::validate` …); [`Config::validate`] runs them in the order the
//! errors are reported, with the checks that span sections.

use std::collections::HashSet;
use std::time::Duration;

use mxc::Clock;

use super::{Config, ConfigError};

/// `error(path, message)` pushes onto `errors`.
pub(super) fn reporter(errors: &mut Vec<ConfigError>) -> impl FnMut(&str, String) + '_ {
    move |path, message| {
        errors.push(ConfigError {
            path: path.to_string(),
            message,
        })
    }
}

/// A duration as an error message shows it.
pub(super) fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// Everything wrong with the values (types and unknown keys are checked while loading).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        self.mxc.validate(&mut errors);
        self.pollers.validate(&self.store, &mut errors);
        self.store.validate(&self.pollers, &mut errors);
        self.upper_bounds(&mut errors);
        self.delivery.validate(&mut errors);
        let mut sink_errors = Vec::new();
        for (name, sink) in &self.sinks {
            sink.validate(name, &mut errors, &mut sink_errors);
        }
        if self.routes.is_empty() {
            errors.push(ConfigError {
                path: "routes".into(),
                message: "add at least one [[routes]] entry (a sink and, optionally, a filter)"
                    .into(),
            });
        }
        let mut names = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(i, &self.sinks, &self.pollers, &mut names, &mut errors);
        }
        self.log.validate(&mut errors);
        self.telemetry.validate(&mut errors);
        errors.extend(self.admin.validate());
        self.cluster.validate(&mut errors);
        errors.extend(sink_errors);
        errors
    }

    /// Upper bounds across sections: beyond them a value is a typo, and time arithmetic
    /// would overflow.
    fn upper_bounds(&self, errors: &mut Vec<ConfigError>) {
        let mut error = reporter(errors);
        let day = Duration::from_secs(86_400);
        let hour = Duration::from_secs(3600);
        for (path, value, max, max_text) in [
            ("mxc.timeout", self.mxc.timeout, hour, "1h"),
            ("mxc.connect_timeout", self.mxc.connect_timeout, hour, "1h"),
            ("mxc.refresh_margin", self.mxc.refresh_margin, day, "1d"),
            (
                "mxc.assumed_token_ttl",
                self.mxc.assumed_token_ttl,
                day,
                "1d",
            ),
            ("mxc.rejection_hold", self.mxc.rejection_hold, day, "1d"),
            ("pollers.interval", self.pollers.interval, day, "1d"),
            (
                "store.flush_interval",
                self.store.flush_interval,
                Duration::from_secs(60),
                "1m",
            ),
            (
                "store.seen_retention",
                self.store.seen_retention,
                366 * day,
                "366d",
            ),
            ("delivery.retry_min", self.delivery.retry_min, day, "1d"),
            ("delivery.retry_max", self.delivery.retry_max, day, "1d"),
            (
                "delivery.shutdown_timeout",
                self.delivery.shutdown_timeout,
                hour,
                "1h",
            ),
        ] {
            if value > max {
                error(
                    path,
                    format!("must be at most {max_text}, got {}", fmt(value)),
                );
            }
        }
    }
}

impl super::PollersConfig {
    /// `start` as an instant: `None` for "now".
    pub fn start_instant(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, super::ValueError> {
        if self.start.trim() == "now" {
            return Ok(None);
        }
        let t = chrono::DateTime::parse_from_rfc3339(self.start.trim()).map_err(|error| {
            super::ValueError::NotAnInstant {
                text: self.start.clone(),
                error,
            }
        })?;
        let t = t.with_timezone(&chrono::Utc);
        if t > mxc::SystemClock.now() {
            return Err(super::ValueError::InTheFuture(self.start.clone()));
        }
        Ok(Some(t))
    }
}
