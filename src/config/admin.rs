//! `[admin]`: the authenticated HTTP API that operates the running service (see `crate::admin`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use mxc::Secret;

/// The environment variable holding the admin API's bearer token.
pub const ADMIN_TOKEN_ENV: &str = "MXC_ADMIN_TOKEN";

/// Tokens shorter than this are refused: the API can replay and re-enable deliveries.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[admin]`: where the admin API listens and the token every request must carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// `IP:PORT`; `""` serves no admin API. Off loopback a token is required.
    /// Default: `"127.0.0.1:9465"`.
    pub listen: String,
    /// A file whose content (trimmed) is the bearer token. `MXC_ADMIN_TOKEN` wins over it.
    /// Default: none.
    pub token_file: Option<PathBuf>,
    /// The token, from `MXC_ADMIN_TOKEN` or `token_file` (never from the file itself, where it
    /// would sit in clear beside the other settings).
    #[serde(skip)]
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9465".to_string(),
            token_file: None,
            token: Secret::default(),
        }
    }
}

impl AdminConfig {
    /// The listen address, if any (validation has checked it).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.trim().parse().ok()
    }

    /// Reads the token from `env` or `token_file`; what went wrong, with its key path.
    pub(super) fn resolve_token(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<ConfigError> {
        if let Some(token) = env(ADMIN_TOKEN_ENV).filter(|v| !v.trim().is_empty()) {
            self.token = Secret::new(token.trim());
            return None;
        }
        let path = self.token_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Some(ConfigError {
                path: "admin.token_file".into(),
                message: format!("{} is empty", path.display()),
            }),
            Ok(text) => {
                self.token = Secret::new(text.trim());
                None
            }
            Err(e) => Some(ConfigError {
                path: "admin.token_file".into(),
                message: format!("cannot read {}: {e}", path.display()),
            }),
        }
    }

    /// Everything wrong with `[admin]`, each with its key path; never the token itself.
    pub(super) fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let listen = self.listen.trim();
        if listen.is_empty() {
            return errors;
        }
        let Ok(addr) = listen.parse::<SocketAddr>() else {
            errors.push(ConfigError {
                path: "admin.listen".into(),
                message: format!(
                    "an IP:PORT such as 127.0.0.1:9465 (or \"\" for none), got {listen:?}"
                ),
            });
            return errors;
        };
        if !self.token.is_empty() && self.token.expose().len() < MIN_TOKEN_LEN {
            errors.push(ConfigError {
                path: "admin.token".into(),
                message: format!(
                    "the token ({ADMIN_TOKEN_ENV} or admin.token_file) is {} characters; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                    self.token.expose().len()
                ),
            });
        }
        if self.token.is_empty() && !addr.ip().is_loopback() {
            errors.push(ConfigError {
                path: "admin.listen".into(),
                message: format!(
                    "{addr} is reachable from other hosts: set a token ({ADMIN_TOKEN_ENV} or admin.token_file), or listen on 127.0.0.1"
                ),
            });
        }
        errors
    }
}
