//! The JWT manager: obtains a token from the Security API, caches it, refreshes it ahead of
//! expiry, and makes concurrent callers share one authentication call (single-flight).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use super::clock::MxcClock;
use super::error::{excerpt, request_error, status_error, MxcError};
use super::observer::{failure_label, observe_call, Observer};
use crate::secret::Secret;

pub const AUTH_PATH: &str = "/security/v1/apiKey/authenticate";
const AUTH_ENDPOINT: &str = "POST /security/v1/apiKey/authenticate";

/// What the Security API needs.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The portal's `API_…` key, sent as `{"value": …}`.
    pub api_key: Secret,
    /// MXC user for the Basic header; the header is sent only when a username is set.
    pub username: Option<String>,
    pub password: Secret,
}

/// When tokens are refreshed and how long a refused credential is trusted to stay refused.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Refresh this long before `exp` (capped at half the token's lifetime).
    pub refresh_margin: Duration,
    /// Lifetime assumed when the JWT carries no readable `exp` (MXC documents ten minutes).
    pub assumed_ttl: Duration,
    /// After the Security API refused the credentials, answer with that refusal, without
    /// calling again, for this long.
    pub rejection_hold: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            refresh_margin: Duration::from_secs(60),
            assumed_ttl: Duration::from_secs(600),
            rejection_hold: Duration::from_secs(30),
        }
    }
}

/// A token and when to stop using it.
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) value: Secret,
    /// Refresh from this instant on.
    refresh_at: Instant,
    expires_at: Instant,
    /// Which authentication produced it; lets a 401 invalidate exactly this token.
    serial: u64,
}

/// After a transient failure of the Security API, callers get that failure, without a new
/// call, for this long: a down Security API sees one call a second, not one per caller.
const TRANSIENT_HOLD: Duration = Duration::from_secs(1);

/// Longest token lifetime believed, whatever `exp` says (an `exp` in milliseconds, say).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
struct Attempt {
    /// The last failed authentication, if the last one failed.
    failure: Option<Failure>,
}

struct Failure {
    /// When it ended.
    at: Instant,
    /// Until when it is the answer to every caller.
    held_until: Instant,
    error: MxcError,
}

pub(crate) struct TokenManager {
    http: reqwest::Client,
    url: String,
    credentials: Credentials,
    policy: TokenPolicy,
    current: RwLock<Option<Arc<Token>>>,
    /// Held while an authentication call is in flight: the single-flight gate.
    gate: tokio::sync::Mutex<Attempt>,
    /// Authentication calls made so far (also numbers the tokens).
    attempts: AtomicU64,
    timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
    /// MXC's clock, read from every answer (this one's too).
    clock: Arc<MxcClock>,
}

impl TokenManager {
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: &str,
        credentials: Credentials,
        policy: TokenPolicy,
        timeout: Duration,
        observer: Option<Arc<dyn Observer>>,
        clock: Arc<MxcClock>,
    ) -> Self {
        TokenManager {
            http,
            url: format!("{}{}", base_url.trim_end_matches('/'), AUTH_PATH),
            credentials,
            policy,
            current: RwLock::new(None),
            gate: tokio::sync::Mutex::new(Attempt::default()),
            attempts: AtomicU64::new(0),
            timeout,
            observer,
            clock,
        }
    }

    /// A token fit for use now: the cached one, or a new one from one shared call.
    pub(crate) async fn token(&self) -> Result<Arc<Token>, MxcError> {
        let arrived = Instant::now();
        if let Some(token) = self.cached() {
            if arrived < token.refresh_at {
                return Ok(token);
            }
        }
        let mut attempt = match self.gate.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Someone is refreshing; inside the refresh margin the cached token still works.
                if let Some(token) = self.usable() {
                    return Ok(token);
                }
                self.gate.lock().await
            }
        };
        let cached = self.cached();
        if let Some(token) = &cached {
            if Instant::now() < token.refresh_at {
                return Ok(token.clone());
            }
        }
        if let Some(failure) = &attempt.failure {
            // An attempt that ended after this caller arrived answered for it, and a recent
            // failure is held for a while: either way, no new call.
            if failure.at >= arrived || Instant::now() < failure.held_until {
                return match self.usable() {
                    Some(token) if !matches!(failure.error, MxcError::AuthRejected { .. }) => {
                        Ok(token)
                    }
                    _ => Err(failure.error.clone()),
                };
            }
        }
        let serial = self.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(observer) = &self.observer {
            observer.auth_requested();
        }
        match self.authenticate(serial).await {
            Ok(token) => {
                let token = Arc::new(token);
                self.store(Some(token.clone()));
                attempt.failure = None;
                tracing::debug!(
                    expires_in_s = token
                        .expires_at
                        .saturating_duration_since(Instant::now())
                        .as_secs(),
                    "obtained a new MXC token"
                );
                Ok(token)
            }
            Err(error) => {
                if let Some(observer) = &self.observer {
                    observer.auth_failed();
                }
                let hold = match &error {
                    MxcError::AuthRejected { .. } => self.policy.rejection_hold,
                    MxcError::Throttled { retry_after, .. } => retry_after
                        .unwrap_or(TRANSIENT_HOLD)
                        .min(self.policy.rejection_hold),
                    _ => TRANSIENT_HOLD,
                };
                let now = Instant::now();
                attempt.failure = Some(Failure {
                    at: now,
                    held_until: now + hold,
                    error: error.clone(),
                });
                // A token inside its refresh margin is still valid: keep using it while the
                // Security API has a bad moment, unless the credentials themselves were refused.
                match self.usable() {
                    Some(token) if !matches!(error, MxcError::AuthRejected { .. }) => {
                        tracing::warn!(%error, "token refresh failed; using the current token until it expires");
                        Ok(token)
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// The cached token if it has not expired yet (it may be inside its refresh margin).
    fn usable(&self) -> Option<Arc<Token>> {
        self.cached().filter(|t| Instant::now() < t.expires_at)
    }

    /// Forgets `token` after the server refused it (401), unless a newer one replaced it already.
    pub(crate) fn invalidate(&self, token: &Token) {
        if let Ok(mut current) = self.current.write() {
            if current.as_ref().is_some_and(|t| t.serial == token.serial) {
                *current = None;
            }
        }
    }

    /// Authentication calls made so far.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// Time left before the cached token expires, if there is one.
    pub(crate) fn expires_in(&self) -> Option<Duration> {
        self.cached()
            .map(|t| t.expires_at.saturating_duration_since(Instant::now()))
    }

    fn cached(&self) -> Option<Arc<Token>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn store(&self, token: Option<Arc<Token>>) {
        if let Ok(mut current) = self.current.write() {
            *current = token;
        }
    }

    async fn authenticate(&self, serial: u64) -> Result<Token, MxcError> {
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&serde_json::json!({ "value": self.credentials.api_key.expose() }));
        if let Some(username) = &self.credentials.username {
            request = request.basic_auth(username, Some(self.credentials.password.expose()));
        }
        let started = Instant::now();
        let observed = |status: &str| observe_call(&self.observer, AUTH_PATH, status, started);
        let failed = |e: reqwest::Error| {
            observed(failure_label(&e));
            request_error(AUTH_ENDPOINT, e, self.timeout)
        };
        let span = crate::span::request_span(&reqwest::Method::POST, &self.url);
        let exchange = async {
            let response = request.send().await.map_err(failed)?;
            let status = response.status();
            let retry_after = http_kit::client::retry_after(response.headers(), self.clock.ours());
            self.clock.observe(response.headers());
            let body = response.bytes().await.map_err(failed)?;
            Ok::<_, MxcError>((status, retry_after, body))
        };
        let exchanged = exchange.await;
        crate::span::ended_span(
            &span,
            exchanged.as_ref().map(|(status, _, _)| status.as_u16()),
        );
        let (status, retry_after, body) = exchanged?;
        observed(status.as_str());
        let received = Instant::now();
        // Scrub the whole body before cutting it: a secret across the cut must not leak half.
        let body_excerpt = || excerpt(self.scrub(&String::from_utf8_lossy(&body)).as_bytes());
        match status.as_u16() {
            200..=299 => {}
            401 | 403 => {
                return Err(MxcError::AuthRejected {
                    status: status.as_u16(),
                    check: if self.credentials.username.is_some() {
                        "the API key (mxc.api_key or MXC_API_KEY) and the user's credentials (mxc.username/mxc.password or MXC_USERNAME/MXC_PASSWORD)"
                    } else {
                        "the API key (mxc.api_key or MXC_API_KEY); no username is configured, so no Basic credentials were sent (mxc.username or MXC_USERNAME)"
                    },
                    excerpt: body_excerpt(),
                })
            }
            code => {
                return Err(status_error(
                    AUTH_ENDPOINT,
                    code,
                    retry_after,
                    body_excerpt(),
                ))
            }
        }
        #[derive(Deserialize)]
        struct AuthResponse {
            token: String,
        }
        let token = serde_json::from_slice::<AuthResponse>(&body)
            .map_err(|e| MxcError::Malformed {
                endpoint: AUTH_ENDPOINT.to_string(),
                status: status.as_u16(),
                detail: format!("expected {{\"token\": \"<JWT>\"}}: {e}"),
                // The body may hold a token: never quote it.
                excerpt: "(not shown: may contain a token)".to_string(),
            })?
            .token;
        let lifetime = self.lifetime(&token);
        let margin = self.policy.refresh_margin.min(lifetime / 2);
        Ok(Token {
            value: Secret::new(token),
            refresh_at: received + lifetime - margin,
            expires_at: received + lifetime,
            serial,
        })
    }

    /// How long a token just received lives: until its `exp` by our clock, the policy's
    /// assumed lifetime when it has none (or one already past), at most a day.
    fn lifetime(&self, token: &str) -> Duration {
        let lifetime = match jwt_expiry(token) {
            Some(exp) => {
                let now = self.clock.ours().timestamp_millis() as f64 / 1000.0;
                let left = exp as f64 - now;
                if left > 0.0 {
                    Duration::from_secs_f64(left)
                } else {
                    tracing::warn!(
                        "the MXC token's exp is already past (clock skew?); assuming {}",
                        humantime::format_duration(self.policy.assumed_ttl)
                    );
                    self.policy.assumed_ttl
                }
            }
            None => self.policy.assumed_ttl,
        };
        if lifetime > MAX_LIFETIME {
            tracing::warn!(
                "the MXC token's exp is more than a day away; refreshing as if it lived a day"
            );
        }
        lifetime.min(MAX_LIFETIME)
    }

    fn scrub(&self, text: &str) -> String {
        let text = self.credentials.api_key.scrub(text);
        self.credentials.password.scrub(&text)
    }
}

/// The `exp` claim (unix seconds) of a JWT, read without verifying the signature: the client
/// only needs to know when to refresh, the server does the verifying.
pub(crate) fn jwt_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"HS256"}"#),
            b64.encode(payload)
        )
    }

    #[test]
    fn reads_exp_when_present() {
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1700000600,"iat":1700000000}"#)),
            Some(1700000600)
        );
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1700000600.5}"#)),
            Some(1700000600)
        );
    }

    #[test]
    fn no_exp_or_no_jwt_gives_none() {
        assert_eq!(
            jwt_expiry(&jwt(r#"{"iat":1700000000,"domain":{"id":"1"}}"#)),
            None
        );
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
    }
}
