//! The webhook sink: one endpoint, its outbox, and a dispatcher that gives every entry its own
//! retry schedule, so that one failing alert never holds back the next (webhooks are
//! at-least-once and not ordered, as in Standard Webhooks and Svix; each carries its
//! `webhook-id` and the authorization's time).
//!
//! Failed entries keep their attempt count and due time in the store, so a restart resumes
//! their schedules. Throttling answers pause the whole endpoint; `410 Gone`, or no success for
//! `disable_after`, disables it: its entries stay in the outbox until it is enabled again.
//!
//! Here the sink is made from its configuration; `endpoint` makes one attempt, `policy` says
//! when to try again, and `dispatcher` runs the schedules.

mod dispatcher;
mod endpoint;
mod policy;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

pub use endpoint::{body, Attempt, Endpoint, EndpointError, Verdict};
pub use policy::RetryPolicy;

use super::SinkError;
use crate::config::WebhookConfig;
use crate::store::Store;
use crate::telemetry::Metrics;
use dispatcher::Dispatcher;

/// A configured webhook endpoint, ready to run.
pub struct WebhookSink {
    name: String,
    endpoint: Arc<Endpoint>,
    policy: RetryPolicy,
    max_in_flight: usize,
    limiter: Option<(DefaultDirectRateLimiter, Duration)>,
    disable_after: Duration,
    /// Woken when an operator changed the endpoint's state in the store (enabled, paused or
    /// resumed it through the admin API): the dispatcher reads it again.
    control: Arc<tokio::sync::Notify>,
}

impl WebhookSink {
    /// The error names the sink and what is wrong, never a secret.
    pub fn new(name: &str, config: &WebhookConfig) -> Result<WebhookSink, SinkError> {
        let endpoint = Endpoint::new(config).map_err(|error| SinkError::Webhook {
            sink: name.to_string(),
            error,
        })?;
        let limiter = config.rate_limit.and_then(|rate| {
            let period = Duration::from_secs_f64(1.0 / rate);
            let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::MIN);
            Some((RateLimiter::direct(quota), period))
        });
        Ok(WebhookSink {
            name: name.to_string(),
            endpoint: Arc::new(endpoint),
            policy: RetryPolicy {
                schedule: config.schedule.clone(),
                jitter: config.jitter,
                retry_after_max: config.retry_after_max,
            },
            max_in_flight: config.max_in_flight,
            limiter,
            disable_after: config.disable_after,
            control: Arc::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Notify it after changing the endpoint's state in the store (see
    /// [`Store::set_disabled_endpoint`], [`Store::set_endpoint_paused`]).
    pub fn control(&self) -> Arc<tokio::sync::Notify> {
        self.control.clone()
    }

    /// Delivers the sink's outbox until `stop` is cancelled; attempts in flight then finish
    /// (the caller bounds how long).
    pub async fn run(self, store: Store, metrics: Metrics, stop: CancellationToken) {
        let notify = match store.notifier(&self.name) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "webhook dispatcher cannot start");
                return;
            }
        };
        let control = self.control.clone();
        let dispatcher = match Dispatcher::load(self, store, metrics) {
            Ok(d) => d,
            Err((sink, e)) => {
                tracing::error!(%sink, error = %e, "webhook dispatcher cannot read its state");
                return;
            }
        };
        dispatcher.run(notify, control, stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn refusal(config: &WebhookConfig) -> String {
        match WebhookSink::new("alerts", config) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn settings_that_make_no_endpoint_are_named_under_the_sink_without_secrets() {
        assert!(WebhookSink::new(
            "alerts",
            &WebhookConfig::new("https://example.com/hook", SECRET)
        )
        .is_ok());
        assert_eq!(
            refusal(&WebhookConfig::new("not a url", SECRET)),
            "sinks.alerts.url: relative URL without a base"
        );
        let text = refusal(&WebhookConfig::new(
            "https://example.com/hook",
            "whsec_c2hvcnQ=",
        ));
        assert_eq!(
            text,
            "sinks.alerts.secrets[0]: a webhook secret is `whsec_` followed by base64 of at least 24 bytes"
        );
        let mut config = WebhookConfig::new("https://example.com/hook", SECRET);
        config
            .headers
            .insert("bad header".into(), mxc::Secret::new("x"));
        assert_eq!(
            refusal(&config),
            "sinks.alerts.headers.bad header: not a header name"
        );
        let mut config = WebhookConfig::new("https://example.com/hook", SECRET);
        config
            .headers
            .insert("Authorization".into(), mxc::Secret::new("Bearer t0ken\n"));
        let text = refusal(&config);
        assert_eq!(
            text,
            "sinks.alerts.headers.Authorization: not a header value"
        );
        assert!(!text.contains("t0ken"));
    }
}
