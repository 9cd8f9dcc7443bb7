//! `[sinks.NAME] kind = "webhook"`: one receiving endpoint, its secrets and its delivery policy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::signature::WebhookSecret;
use mxc::Secret;

/// Events POSTed to one URL, signed per the Standard Webhooks specification; each event is
/// retried on its own schedule, so a failing event never holds back the others.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WebhookConfig {
    /// `https://…` (or `http://…` with `allow_insecure = true`). Redirects are not followed.
    /// Credentials in it (`https://user:password@host/…`) are sent as an `Authorization:
    /// Basic` header and kept out of every log line.
    pub url: WebhookUrl,
    /// Signing secrets, `whsec_…` (`mxc-relay webhook secret` makes one). Several = rotation:
    /// each delivery carries one signature per secret. Prefer `secrets_env`.
    /// Default: `[]`.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// An environment variable holding secrets (space-separated), added to `secrets`.
    /// Default: none.
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// Allow a plain `http://` URL (local receivers, tests).
    /// Default: `false`.
    #[serde(default)]
    pub allow_insecure: bool,
    /// Whole-request timeout; a timeout counts as a failed attempt and throttles the endpoint.
    /// Default: `"15s"`.
    #[serde(default = "default_timeout", with = "super::duration")]
    pub timeout: Duration,
    /// Requests to this endpoint at once.
    /// Default: `16`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most requests per second to this endpoint.
    /// Default: no limit beyond `max_in_flight`.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Extra request headers (e.g. `Authorization`); values are treated as secrets.
    /// Default: `{}`.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Delay before each attempt: the first is usually `0s`; after the last, the event is
    /// dead-lettered.
    /// Default: `["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]` (about 28 h).
    #[serde(default = "default_schedule", with = "durations")]
    pub schedule: Vec<Duration>,
    /// Each delay varies by up to this fraction either way (0.2 = ±20 %).
    /// Default: `0.2`.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Longest `Retry-After` honoured; longer ones are cut to it.
    /// Default: `"1h"`.
    #[serde(default = "default_retry_after_max", with = "super::duration")]
    pub retry_after_max: Duration,
    /// An endpoint with no success for this long is disabled (its events stay in the outbox
    /// until it is enabled again). A `410 Gone` disables it at once.
    /// Default: `"5d"`.
    #[serde(default = "default_disable_after", with = "super::duration")]
    pub disable_after: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

fn default_max_in_flight() -> usize {
    16
}

/// The Standard Webhooks / Svix schedule.
pub fn default_schedule() -> Vec<Duration> {
    [
        0,
        5,
        5 * 60,
        30 * 60,
        2 * 3600,
        5 * 3600,
        10 * 3600,
        10 * 3600,
    ]
    .into_iter()
    .map(Duration::from_secs)
    .collect()
}

fn default_jitter() -> f64 {
    0.2
}

fn default_retry_after_max() -> Duration {
    Duration::from_secs(3600)
}

fn default_disable_after() -> Duration {
    Duration::from_secs(5 * 86_400)
}

/// Headers mxc-relay sets itself; a configured header may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
];

/// A webhook's URL without its credentials. `user:password@` in the configured URL (a common
/// way to give a receiver Basic auth) is taken out as the configuration is read and kept as
/// the `Authorization: Basic` value, a secret: the URL the HTTP client sees, and so its
/// connection pool's DEBUG and TRACE lines, holds none. `Debug` shows it without its query,
/// which may hold a token too.
#[derive(Clone, PartialEq)]
pub struct WebhookUrl {
    url: String,
    /// `Basic base64(user:password)`.
    basic: Option<Secret>,
    /// The password alone, scrubbed from receivers' answers should one echo it.
    password: Option<Secret>,
}

impl WebhookUrl {
    /// The `Authorization` value the URL's credentials make, if it had any.
    pub fn basic_auth(&self) -> Option<&Secret> {
        self.basic.as_ref()
    }

    /// What a receiver's answer must not repeat: the Basic value and the password.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.basic.iter().chain(self.password.iter())
    }
}

impl From<String> for WebhookUrl {
    fn from(raw: String) -> WebhookUrl {
        use base64::Engine;
        let decoded = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        match url::Url::parse(&raw) {
            Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                let user = decoded(url.username());
                let password = decoded(url.password().unwrap_or(""));
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                // Only a URL that cannot be a base fails these; a credential cannot be in one.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                WebhookUrl {
                    url: url.to_string(),
                    basic: Some(Secret::new(format!("Basic {token}"))),
                    password: (!password.is_empty()).then(|| Secret::new(password)),
                }
            }
            _ => WebhookUrl {
                url: raw,
                basic: None,
                password: None,
            },
        }
    }
}

impl std::ops::Deref for WebhookUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", mxc::display_url(&self.url))?;
        if self.basic.is_some() {
            f.write_str(" (with Basic credentials)")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WebhookUrl, D::Error> {
        String::deserialize(d).map(WebhookUrl::from)
    }
}

impl WebhookConfig {
    /// A webhook to `url` signed with `secret`, every other setting at its default.
    pub fn new(url: impl Into<String>, secret: &str) -> WebhookConfig {
        WebhookConfig {
            url: WebhookUrl::from(url.into()),
            secrets: vec![Secret::new(secret)],
            secrets_env: None,
            allow_insecure: false,
            timeout: default_timeout(),
            max_in_flight: default_max_in_flight(),
            rate_limit: None,
            headers: BTreeMap::new(),
            schedule: default_schedule(),
            jitter: default_jitter(),
            retry_after_max: default_retry_after_max(),
            disable_after: default_disable_after(),
        }
    }

    /// The parsed secrets (validation has checked them).
    pub fn signing_secrets(&self) -> Result<Vec<WebhookSecret>, super::ValueError> {
        self.secrets
            .iter()
            .enumerate()
            .map(|(index, s)| {
                WebhookSecret::parse(s.expose())
                    .map_err(|error| super::ValueError::Secret { index, error })
            })
            .collect()
    }

    /// Adds the secrets found in `secrets_env`.
    pub(super) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        if let Some(value) = self.secrets_env.as_deref().and_then(env) {
            self.secrets
                .extend(value.split_whitespace().map(Secret::new));
        }
    }

    /// The sink's errors, each at `at(key)` (`sinks.NAME.key`), in the order they are reported.
    pub(super) fn validate(&self, at: &dyn Fn(&str) -> String, errors: &mut Vec<ConfigError>) {
        let mut error = |key: &str, message: String| {
            errors.push(ConfigError {
                path: at(key),
                message,
            })
        };
        self.validate_url(&mut error);
        self.validate_secrets(&mut error);
        self.validate_limits(&mut error);
        self.validate_headers(&mut error);
        self.validate_schedule(&mut error);
    }

    /// `url`: http(s) with a host, https unless `allow_insecure`, and its credentials not
    /// given twice. The URL may hold a token: messages show it without its query.
    fn validate_url(&self, error: &mut impl FnMut(&str, String)) {
        let shown = || mxc::display_url(&self.url);
        match url::Url::parse(&self.url) {
            // The scheme first: a `file:` URL's missing host is not what is wrong with it.
            Ok(url) if !matches!(url.scheme(), "http" | "https") => error(
                "url",
                format!(
                    "{:?} has the scheme {:?}: a webhook URL is https (or http with allow_insecure = true)",
                    shown(),
                    url.scheme()
                ),
            ),
            Ok(url) if url.host().is_none() => error("url", format!("{:?} has no host", shown())),
            Ok(url) if url.scheme() == "https" => {}
            Ok(_) if self.allow_insecure => {}
            Ok(_) => error(
                "url",
                format!(
                    "{:?} is plain http: use https, or set allow_insecure = true for a local receiver",
                    shown()
                ),
            ),
            // The URL may hold a token: name the problem, not the text.
            Err(e) => error("url", format!("not a URL ({e})")),
        }
        if self.url.basic_auth().is_some()
            && self
                .headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case("authorization"))
        {
            error(
                "url",
                "has credentials (user:password@) and headers sets Authorization too: keep one"
                    .to_string(),
            );
        }
    }

    /// `secrets`: at least one (with `secrets_env` applied), each a `whsec_` secret.
    fn validate_secrets(&self, error: &mut impl FnMut(&str, String)) {
        if self.secrets.is_empty() {
            error(
                "secrets",
                match &self.secrets_env {
                    Some(var) => format!("no signing secret: the list is empty and {var} (secrets_env) is not set"),
                    None => "at least one signing secret (`mxc-relay webhook secret` makes one); prefer secrets_env".into(),
                },
            );
        }
        for (i, secret) in self.secrets.iter().enumerate() {
            if let Err(e) = WebhookSecret::parse(secret.expose()) {
                error(&format!("secrets[{i}]"), e.to_string());
            }
        }
    }

    /// What one endpoint is asked at once: `timeout`, `max_in_flight`, `rate_limit`.
    fn validate_limits(&self, error: &mut impl FnMut(&str, String)) {
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.timeout) {
            error(
                "timeout",
                format!(
                    "must be 1s to 5m, got {}",
                    humantime::format_duration(self.timeout)
                ),
            );
        }
        if !(1..=1000).contains(&self.max_in_flight) {
            error(
                "max_in_flight",
                format!("must be 1 to 1000, got {}", self.max_in_flight),
            );
        }
        if let Some(rate) = self.rate_limit {
            if !(0.01..=100_000.0).contains(&rate) {
                error(
                    "rate_limit",
                    format!("requests per second, 0.01 to 100000, got {rate}"),
                );
            }
        }
    }

    /// `headers`: valid names and values, none that mxc-relay sets itself.
    fn validate_headers(&self, error: &mut impl FnMut(&str, String)) {
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                error(
                    &format!("headers.{name}"),
                    "set by mxc-relay itself; it cannot be configured".into(),
                );
            } else if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                error(
                    &format!("headers.{name}"),
                    "not a valid HTTP header name".into(),
                );
            } else if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                error(
                    &format!("headers.{name}"),
                    "the value is not a valid HTTP header value (control characters?)".into(),
                );
            }
        }
    }

    /// The retry policy: `schedule`, `jitter`, `retry_after_max`, `disable_after`.
    fn validate_schedule(&self, error: &mut impl FnMut(&str, String)) {
        if self.schedule.is_empty() || self.schedule.len() > 50 {
            error(
                "schedule",
                format!(
                    "list 1 to 50 delays (one per attempt), got {}",
                    self.schedule.len()
                ),
            );
        }
        if let Some((i, d)) = self
            .schedule
            .iter()
            .enumerate()
            .find(|(_, d)| **d > Duration::from_secs(7 * 86_400))
        {
            error(
                &format!("schedule[{i}]"),
                format!("must be at most 7d, got {}", humantime::format_duration(*d)),
            );
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            error(
                "jitter",
                format!("a fraction from 0 to 0.5, got {}", self.jitter),
            );
        }
        if self.retry_after_max > Duration::from_secs(86_400) {
            error(
                "retry_after_max",
                format!(
                    "must be at most 1d, got {}",
                    humantime::format_duration(self.retry_after_max)
                ),
            );
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400))
            .contains(&self.disable_after)
        {
            error(
                "disable_after",
                format!(
                    "must be 1m to 30d, got {}",
                    humantime::format_duration(self.disable_after)
                ),
            );
        }
    }
}

/// Lists of durations written as text: `["0s", "5s", "5m"]`.
mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|t| super::super::duration::parse(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_for_a_basic_header_and_debug_shows_neither() {
        let url = WebhookUrl::from(
            "https://hook%20user:p%40ss@hooks.example.com/in?token=t0k".to_string(),
        );
        assert_eq!(&*url, "https://hooks.example.com/in?token=t0k");
        // base64("hook user:p@ss")
        assert_eq!(
            url.basic_auth().map(Secret::expose),
            Some("Basic aG9vayB1c2VyOnBAc3M=")
        );
        let shown = format!("{url:?}");
        assert_eq!(
            shown,
            "\"https://hooks.example.com/in?…\" (with Basic credentials)"
        );
        let plain = WebhookUrl::from("http://127.0.0.1:9/".to_string());
        assert_eq!((&*plain, plain.basic_auth()), ("http://127.0.0.1:9/", None));
        let mut config = WebhookConfig::new("https://u:p@hooks.example.com/", "whsec_x");
        config
            .headers
            .insert("AUTHORIZATION".into(), Secret::new("Bearer y"));
        let mut errors = Vec::new();
        config.validate(&|k| format!("sinks.hooks.{k}"), &mut errors);
        assert!(
            errors.iter().any(|e| e.path == "sinks.hooks.url"
                && e.message.contains("headers sets Authorization too")),
            "{errors:?}"
        );
        assert!(!format!("{config:?}").contains("u:p"), "{config:?}");
    }
}
