//! The HTTP side of the client: one place that sends a call with the bearer token, retries it
//! once after a 401, and turns every non-2xx answer into a typed [`MxcError`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};

use chrono::{DateTime, Utc};

use super::auth::{Credentials, TokenManager, TokenPolicy};
use super::clock::MxcClock;
use super::error::{excerpt, request_error, status_error, MxcError};
use super::observer::{failure_label, observe_call, Observer};
use super::record::Page;
use super::time::{SharedClock, SystemClock};
use http_kit::client::retry_after;

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://api.mxconnect.com";

/// Everything the client needs to reach MXC.
#[derive(Clone)]
pub struct ClientConfig {
    /// `https://api.mxconnect.com`, or a simulator's address. The only difference between them.
    pub base_url: String,
    pub credentials: Credentials,
    pub tokens: TokenPolicy,
    /// Whole-request timeout (connect, send, read the body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Who is told of each call and authentication, if anyone (the relay counts them).
    pub observer: Option<Arc<dyn Observer>>,
    /// Our clock, which MXC's is reckoned from (the machine's unless a test pauses time).
    pub clock: SharedClock,
    /// The `User-Agent` header: `mxc-relay/VERSION`, and the instance in a cluster.
    pub user_agent: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &display_url(&self.base_url))
            .field("credentials", &self.credentials)
            .field("tokens", &self.tokens)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("observer", &self.observer.as_ref().map(|_| "…"))
            .field("clock", &self.clock)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            credentials,
            tokens: TokenPolicy::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            observer: None,
            clock: SystemClock::shared(),
            user_agent: concat!("mxc-relay/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// The MX Connect client. Cheap to clone; clones share the token and the connection pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    tokens: TokenManager,
    timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
    clock: Arc<MxcClock>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &display_url(&self.inner.base_url))
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, MxcError> {
        let base = url::Url::parse(&config.base_url).map_err(|e| {
            MxcError::InvalidRequest(format!("base URL {:?}: {e}", config.base_url))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(MxcError::InvalidRequest(format!(
                "base URL {:?}: scheme must be http or https",
                config.base_url
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| MxcError::InvalidRequest(format!("cannot build the HTTP client: {e}")))?;
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let clock = Arc::new(MxcClock::new(config.clock.clone()));
        let tokens = TokenManager::new(
            http.clone(),
            &base_url,
            config.credentials,
            config.tokens,
            config.timeout,
            config.observer.clone(),
            clock.clone(),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                tokens,
                timeout: config.timeout,
                observer: config.observer,
                clock,
            }),
        })
    }

    /// The base URL, without any `user:password@` it may carry: fit for a log line.
    pub fn base_url(&self) -> String {
        display_url(&self.inner.base_url)
    }

    /// Obtains a token now (or checks the cached one), e.g. to fail fast at start-up.
    pub async fn authenticate(&self) -> Result<(), MxcError> {
        self.inner.tokens.token().await.map(|_| ())
    }

    /// MXC's now, from the `Date` of its last answer (ours until one has told it): where a
    /// poll on `created` must stop.
    pub fn mxc_now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Calls made to the Security API so far.
    pub fn auth_calls(&self) -> u64 {
        self.inner.tokens.attempts()
    }

    /// How long the cached token has left, if there is one.
    pub fn token_expires_in(&self) -> Option<Duration> {
        self.inner.tokens.expires_in()
    }

    /// Sends one call and parses the answer as a page. `endpoint` names it in errors.
    pub(crate) async fn page(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Page, MxcError> {
        let endpoint = format!("{method} {path}");
        let (status, bytes) = self.send(method, path, query, body, &endpoint).await?;
        Page::parse_bytes(bytes.clone()).map_err(|detail| MxcError::Malformed {
            endpoint,
            status,
            detail: detail.to_string(),
            excerpt: excerpt(&bytes),
        })
    }

    /// Sends with the bearer token; on 401 forgets the token and tries once more with a new one.
    /// Returns the status and the body unparsed (the export's raw pages read only part of it).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        endpoint: &str,
    ) -> Result<(u16, bytes::Bytes), MxcError> {
        let url = format!("{}{}", self.inner.base_url, path);
        let mut retried = false;
        loop {
            let token = self.inner.tokens.token().await?;
            let mut request = self
                .inner
                .http
                .request(method.clone(), &url)
                .query(query)
                .bearer_auth(token.value.expose())
                .header(ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let started = std::time::Instant::now();
            let observed = |status: &str| observe_call(&self.inner.observer, path, status, started);
            let failed = |e: reqwest::Error| {
                observed(failure_label(&e));
                request_error(endpoint, e, self.inner.timeout)
            };
            // The request's span (traces on): its URL without the query, which names the
            // merchants' account numbers.
            let span = crate::span::request_span(&method, &url);
            let exchange = async {
                let response = request.send().await.map_err(failed)?;
                let status = response.status();
                let retry_after = retry_after(response.headers(), self.inner.clock.ours());
                self.inner.clock.observe(response.headers());
                let bytes = response.bytes().await.map_err(failed)?;
                Ok::<_, MxcError>((status, retry_after, bytes))
            };
            // Not entered: the span times the exchange from its creation to its drop, and is
            // the current poll's child; entering it on every wake of a long body costs more.
            let exchanged = exchange.await;
            crate::span::ended_span(
                &span,
                exchanged.as_ref().map(|(status, _, _)| status.as_u16()),
            );
            let (status, retry_after, bytes) = exchanged?;
            observed(status.as_str());
            if status.is_success() {
                return Ok((status.as_u16(), bytes));
            }
            // A body that echoes the request must not carry the token into a log.
            let excerpt = || {
                excerpt(
                    token
                        .value
                        .scrub(&String::from_utf8_lossy(&bytes))
                        .as_bytes(),
                )
            };
            if status == StatusCode::UNAUTHORIZED {
                if !retried {
                    self.inner.tokens.invalidate(&token);
                    tracing::debug!(endpoint, "MXC answered 401; re-authenticating once");
                    retried = true;
                    continue;
                }
                // A fresh token refused too: not a token problem, so keep the token.
                return Err(MxcError::Unauthorized {
                    endpoint: endpoint.to_string(),
                    excerpt: excerpt(),
                });
            }
            return Err(status_error(
                endpoint,
                status.as_u16(),
                retry_after,
                excerpt(),
            ));
        }
    }
}

/// A URL fit for messages: without its userinfo, and with its query (which may carry a
/// token) shown as `?…`.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.username().is_empty() && u.password().is_none() && u.query().is_none() => {
            url.to_string()
        }
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let hidden = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            if hidden {
                format!("{u}?…")
            } else {
                u.to_string()
            }
        }
        Err(_) => "(unparseable URL)".to_string(),
    }
}
