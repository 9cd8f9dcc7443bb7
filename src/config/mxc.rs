//! `[mxc]`: how to reach MX Connect, with its defaults and validation.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::{self, fmt};
#[cfg(doc)]
use super::Config;
use super::ConfigError;
use mxc::{Secret, MAX_PAGE_SIZE};

/// `[mxc]`: how to reach MX Connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MxcConfig {
    /// API base URL. The production API is `https://api.mxconnect.com`; a simulator is
    /// `http://127.0.0.1:PORT`. Env: `MXC_BASE_URL`.
    /// Default: `"https://api.mxconnect.com"`.
    pub base_url: String,
    /// The portal's API key (`API_…`). Env: `MXC_API_KEY` (preferred: keep it out of files).
    /// Default: none (required: `MXC_API_KEY`).
    pub api_key: Secret,
    /// MXC user for the Security API's Basic header; empty sends no Basic header.
    /// Env: `MXC_USERNAME`.
    /// Default: `""`.
    pub username: String,
    /// That user's password. Env: `MXC_PASSWORD`.
    /// Default: none.
    pub password: Secret,
    /// Whole-request timeout.
    /// Default: `"30s"`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    /// Default: `"10s"`.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Refresh the JWT this long before it expires (capped at half its lifetime).
    /// Default: `"60s"`.
    #[serde(with = "duration")]
    pub refresh_margin: Duration,
    /// Lifetime assumed for a JWT without an `exp` claim (MXC documents ten minutes).
    /// Default: `"10m"`.
    #[serde(with = "duration")]
    pub assumed_token_ttl: Duration,
    /// After the Security API refuses the credentials, wait this long before asking again.
    /// Default: `"30s"`.
    #[serde(with = "duration")]
    pub rejection_hold: Duration,
    /// Records per page, 1 to 100 (the API's maximum).
    /// Default: `100`.
    pub page_size: u32,
    /// The server's largest `from + size` (Elasticsearch's default 10,000); past it the pager
    /// re-anchors the window on the last record's time.
    /// Default: `10000`.
    pub max_result_window: u32,
}

impl Default for MxcConfig {
    fn default() -> Self {
        MxcConfig {
            base_url: mxc::DEFAULT_BASE_URL.to_string(),
            api_key: Secret::default(),
            username: String::new(),
            password: Secret::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(60),
            assumed_token_ttl: Duration::from_secs(600),
            rejection_hold: Duration::from_secs(30),
            page_size: mxc::MAX_PAGE_SIZE,
            max_result_window: mxc::DEFAULT_MAX_RESULT_WINDOW,
        }
    }
}

impl MxcConfig {
    /// The client's settings.
    pub fn client_config(&self) -> mxc::ClientConfig {
        let mut config = mxc::ClientConfig::new(
            self.base_url.clone(),
            mxc::Credentials {
                api_key: self.api_key.clone(),
                username: Some(self.username.clone()).filter(|u| !u.is_empty()),
                password: self.password.clone(),
            },
        );
        config.tokens = mxc::TokenPolicy {
            refresh_margin: self.refresh_margin,
            assumed_ttl: self.assumed_token_ttl,
            rejection_hold: self.rejection_hold,
        };
        config.timeout = self.timeout;
        config.connect_timeout = self.connect_timeout;
        config
    }
}

impl MxcConfig {
    /// `[mxc]`'s errors, in the order [`Config::validate`] reports them.
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        match url::Url::parse(&self.base_url) {
            // Credentials in the URL would ride along in every request, log line and span.
            Ok(url) if !url.username().is_empty() || url.password().is_some() => error(
                "mxc.base_url",
                format!(
                    "holds credentials ({}): give them in MXC_USERNAME and MXC_PASSWORD instead",
                    mxc::display_url(&self.base_url)
                ),
            ),
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(url) => error(
                "mxc.base_url",
                format!(
                    "must be an http(s) URL with a host, got {:?} (scheme {})",
                    self.base_url,
                    url.scheme()
                ),
            ),
            Err(e) => error(
                "mxc.base_url",
                format!("not a URL ({e}): {:?}", self.base_url),
            ),
        }
        if self.api_key.is_empty() {
            error(
                "mxc.api_key",
                "missing: set MXC_API_KEY in the environment (or mxc.api_key in the file)".into(),
            );
        }
        if self.username.is_empty() && !self.password.is_empty() {
            error(
                "mxc.username",
                "a password is set but no username: set MXC_USERNAME (or mxc.username)".into(),
            );
        }
        if self.timeout < Duration::from_secs(1) {
            error(
                "mxc.timeout",
                format!("must be at least 1s, got {}", fmt(self.timeout)),
            );
        }
        if self.connect_timeout < Duration::from_millis(100) {
            error(
                "mxc.connect_timeout",
                format!("must be at least 100ms, got {}", fmt(self.connect_timeout)),
            );
        }
        if self.assumed_token_ttl < Duration::from_secs(10) {
            error(
                "mxc.assumed_token_ttl",
                format!("must be at least 10s, got {}", fmt(self.assumed_token_ttl)),
            );
        }
        if self.refresh_margin >= self.assumed_token_ttl {
            error(
                "mxc.refresh_margin",
                format!(
                    "must be shorter than mxc.assumed_token_ttl ({}), got {}",
                    fmt(self.assumed_token_ttl),
                    fmt(self.refresh_margin)
                ),
            );
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            error(
                "mxc.page_size",
                format!("must be 1 to {MAX_PAGE_SIZE}, got {}", self.page_size),
            );
        }
        if self.max_result_window < self.page_size {
            error(
                "mxc.max_result_window",
                format!(
                    "must be at least mxc.page_size ({}), got {}",
                    self.page_size, self.max_result_window
                ),
            );
        }
    }
}
