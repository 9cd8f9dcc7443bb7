//! The CLI's side of the admin API: finds the running service (its `admin.json` beside the
//! store, its pid alive) and calls it with the token (`MXC_ADMIN_TOKEN`, `admin.token_file`, or
//! the one the service made up for a loopback listener).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::ApiError;
use super::discovery::Discovery;
use crate::config::{Config, ADMIN_TOKEN_ENV};
use mxc::Secret;

pub struct AdminClient {
    base: String,
    token: Secret,
    http: reqwest::Client,
    pid: u32,
}

impl AdminClient {
    /// The running service's API, or `None` when no service runs on this store.
    pub fn find(config: &Config) -> Result<Option<AdminClient>, String> {
        let Some(found) = Discovery::find(&config.store.path)? else {
            return Ok(None);
        };
        let token = if config.admin.token.is_empty() {
            found.generated_token().ok_or_else(|| {
                format!(
                    "the service runs (pid {}) with an admin token; give it to this command too ({ADMIN_TOKEN_ENV} or admin.token_file)",
                    found.pid
                )
            })?
        } else {
            config.admin.token.clone()
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Some(AdminClient {
            base: format!("http://{}", found.address),
            token,
            http,
            pid: found.pid,
        }))
    }

    /// The running service's pid, for messages.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.call(reqwest::Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.call(reqwest::Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, String> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            format!(
                "the service runs (pid {}) but its admin API does not answer: {method} {url}: {}",
                self.pid,
                without_url(&e)
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {url}: reading the answer: {}", without_url(&e)))?;
        if !status.is_success() {
            let said = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.error);
            return Err(format!("{method} {url}: HTTP {}: {said}", status.as_u16()));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("{method} {url}: an answer this version does not read ({e})"))
    }
}

/// reqwest's error text without the URL it repeats (ours says it once).
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut text = String::new();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if text.is_empty() {
        e.to_string()
    } else {
        text
    }
}
