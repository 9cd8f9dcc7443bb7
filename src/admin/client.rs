//! The CLI's side of the admin API: finds the running service (its `admin.json` beside the
//! store, its pid alive) and calls it with the token (`MXC_ADMIN_TOKEN`, `admin.token_file`, or
//! the one the service made up for a loopback listener).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::ApiError;
use super::discovery::{Discovery, DiscoveryError};
use crate::config::{Config, ADMIN_TOKEN_ENV};
use mxc::Secret;

/// Why the CLI cannot use the running service's admin API, or what it answered instead. The
/// texts name the request (method and URL) and never hold the token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `admin.json` beside the store cannot be read.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The service runs with a configured token and this command was given none.
    #[error("the service runs (pid {pid}) with an admin token; give it to this command too ({env} or admin.token_file)", env = ADMIN_TOKEN_ENV)]
    TokenNeeded { pid: u32 },
    /// reqwest cannot make its client (its TLS backend, say).
    #[error("cannot build an HTTP client: {0}")]
    Build(reqwest::Error),
    /// The request got no answer (connection refused, timeout …); `cause` is reqwest's
    /// innermost error, without the URL it repeats.
    #[error(
        "the service runs (pid {pid}) but its admin API does not answer: {method} {url}: {cause}"
    )]
    Unreachable {
        pid: u32,
        method: reqwest::Method,
        url: String,
        cause: String,
    },
    /// The answer's body could not be read.
    #[error("{method} {url}: reading the answer: {cause}")]
    Read {
        method: reqwest::Method,
        url: String,
        cause: String,
    },
    /// The API refused: its status, and its `error` (or the body as it came, if not JSON).
    #[error("{method} {url}: HTTP {status}: {said}")]
    Status {
        method: reqwest::Method,
        url: String,
        status: u16,
        said: String,
    },
    /// A successful answer this version cannot decode (a service of another version).
    #[error("{method} {url}: an answer this version does not read ({error})")]
    Decode {
        method: reqwest::Method,
        url: String,
        error: serde_json::Error,
    },
}

pub struct AdminClient {
    base: String,
    token: Secret,
    http: reqwest::Client,
    pid: u32,
}

impl AdminClient {
    /// The running service's API, or `None` when no service runs on this store.
    pub fn find(config: &Config) -> Result<Option<AdminClient>, ClientError> {
        let Some(found) = Discovery::find(&config.store.path)? else {
            return Ok(None);
        };
        let token = if config.admin.token.is_empty() {
            found
                .generated_token()
                .ok_or(ClientError::TokenNeeded { pid: found.pid })?
        } else {
            config.admin.token.clone()
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Some(AdminClient {
            base: format!("http://{}", found.address),
            token,
            http,
            pid: found.pid,
        }))
    }

    /// The admin API at `base` (`http://HOST:PORT`), with `token`, for a service on another
    /// machine or store (`mxc-relay top --url`); its pid is unknown (0).
    pub fn at(base: &str, token: Secret) -> Result<AdminClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(ClientError::Build)?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            pid: 0,
        })
    }

    /// Where the API is (`http://HOST:PORT`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The running service's pid, for messages.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(reqwest::Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(reqwest::Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Err(ClientError::Unreachable {
                    pid: self.pid,
                    method,
                    url,
                    cause: without_url(&e),
                })
            }
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => {
                return Err(ClientError::Read {
                    method,
                    url,
                    cause: without_url(&e),
                })
            }
        };
        if !status.is_success() {
            let said = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.error);
            return Err(ClientError::Status {
                method,
                url,
                status: status.as_u16(),
                said,
            });
        }
        serde_json::from_str(&text).map_err(|error| ClientError::Decode { method, url, error })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_texts_name_the_request_and_what_went_wrong() {
        let url = "http://127.0.0.1:9/v1/state".to_string();
        assert_eq!(
            ClientError::TokenNeeded { pid: 42 }.to_string(),
            "the service runs (pid 42) with an admin token; give it to this command too (MXC_ADMIN_TOKEN or admin.token_file)"
        );
        assert_eq!(
            ClientError::Unreachable {
                pid: 42,
                method: reqwest::Method::GET,
                url: url.clone(),
                cause: "Connection refused (os error 111)".into(),
            }
            .to_string(),
            "the service runs (pid 42) but its admin API does not answer: GET http://127.0.0.1:9/v1/state: Connection refused (os error 111)"
        );
        assert_eq!(
            ClientError::Status {
                method: reqwest::Method::POST,
                url: url.clone(),
                status: 409,
                said: "a backfill runs already".into(),
            }
            .to_string(),
            "POST http://127.0.0.1:9/v1/state: HTTP 409: a backfill runs already"
        );
        let error = serde_json::from_str::<ApiError>("[]").unwrap_err();
        let text = format!("GET {url}: an answer this version does not read ({error})");
        assert_eq!(
            ClientError::Decode {
                method: reqwest::Method::GET,
                url,
                error,
            }
            .to_string(),
            text
        );
    }
}
