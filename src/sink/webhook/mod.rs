//! The webhook sink: one endpoint, its outbox, and a dispatcher that gives every entry its own
//! retry schedule, so that one failing alert never holds back the next (webhooks are
//! at-least-once and not ordered, as in Standard Webhooks and Svix; each carries its
//! `webhook-id` and the authorization's time).
//!
//! Failed entries keep their attempt count and due time in the store, so a restart resumes
//! their schedules. Throttling answers pause the whole endpoint; `410 Gone`, or no success for
//! `disable_after`, disables it: its entries stay in the outbox until it is enabled again.

mod endpoint;
mod policy;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use endpoint::{body, Attempt, Endpoint, EndpointError, Verdict};
pub use policy::RetryPolicy;

use super::{round, Outcome, SinkError};
use crate::config::WebhookConfig;
use crate::store::{AttemptState, DisabledEndpoint, Entry, Store};
use crate::telemetry::events::{
    DeliveryFailed, DeliveryPath, EventDeadLettered, EventsDelivered, InternalEvent,
};
use crate::telemetry::Metrics;

/// Fresh outbox entries read at a time.
const READ_AHEAD: usize = 64;
/// Even without a notification, look for new entries this often.
const RESCAN: Duration = Duration::from_secs(5);
/// Delivered entries leave the outbox together, this many at most, and none waits longer than
/// `REMOVE_WITHIN` (nor once nothing else is in flight). Each removal is a store transaction
/// (and under `durability = "batch"` an fsync), which costs more than the deliveries themselves
/// when done for every answer or two.
const REMOVE_BATCH: usize = 64;
const REMOVE_WITHIN: Duration = Duration::from_millis(2);

/// One attempt in flight; `Err` if it panicked (its entry then stays in the outbox).
/// An attempt under way: its entry, the answer, and the attempt's span (traces on).
type InFlight = Pin<Box<dyn Future<Output = Result<(Entry, Attempt, tracing::Span), u64>> + Send>>;

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
        let mut dispatcher = match Dispatcher::load(self, store, metrics) {
            Ok(d) => d,
            Err((sink, e)) => {
                tracing::error!(%sink, error = %e, "webhook dispatcher cannot read its state");
                return;
            }
        };
        let mut stopping = false;
        loop {
            if !stopping && !dispatcher.disabled && !dispatcher.paused_by_hand {
                dispatcher.dispatch();
            }
            let wake = dispatcher.next_wake();
            tokio::select! {
                biased;
                _ = stop.cancelled(), if !stopping => {
                    // From now on nothing waits to be removed: the caller may give up on the
                    // attempts still in flight, not on what was delivered.
                    stopping = true;
                    dispatcher.remove_delivered().await;
                }
                Some(done) = dispatcher.in_flight.next(), if !dispatcher.in_flight.is_empty() => {
                    match done {
                        Ok((entry, attempt, span)) => dispatcher.settle(entry, attempt, &span).await,
                        // Attempts do not panic; were one to, its entry stays in the outbox.
                        Err(seq) => tracing::error!(sink = %dispatcher.sink.name, seq, "a webhook attempt panicked"),
                    }
                    if stopping {
                        dispatcher.remove_delivered().await;
                    } else {
                        dispatcher.remove_delivered_if_due().await;
                    }
                }
                _ = notify.notified(), if !stopping => dispatcher.fresh_exhausted = false,
                _ = control.notified(), if !stopping => dispatcher.reread_control(),
                _ = tokio::time::sleep_until(wake), if !stopping => dispatcher.remove_delivered_if_due().await,
            }
            if stopping && dispatcher.in_flight.is_empty() {
                return;
            }
        }
    }
}

/// Where the next attempt comes from.
enum Next {
    Retry(u64),
    Fresh,
}

struct Dispatcher {
    sink: WebhookSink,
    store: Store,
    metrics: Metrics,
    /// Entries that failed at least once and wait for their due time.
    retrying: HashMap<u64, AttemptState>,
    due: BTreeSet<(Instant, u64)>,
    /// Entries never attempted, read ahead from the outbox in order.
    fresh: VecDeque<Entry>,
    next_fresh: u64,
    fresh_exhausted: bool,
    last_scan: Instant,
    /// Polled by the dispatcher's own task: an answer wakes it directly, with no task to spawn
    /// per attempt nor a second wake-up to hand the result over.
    in_flight: FuturesUnordered<InFlight>,
    in_flight_seqs: BTreeSet<u64>,
    /// Delivered, to be removed from the outbox, and since when the first of them waits.
    delivered: Vec<u64>,
    delivered_since: Option<Instant>,
    /// No attempt before this instant (throttled by the receiver, or by our rate limit).
    paused_until: Option<Instant>,
    throttle_streak: u32,
    /// The first failure since the last success (also in the store: a restart keeps counting
    /// toward `disable_after` from it).
    failing_since: Option<Instant>,
    disabled: bool,
    /// Paused by an operator (kept in the store): nothing is attempted until resumed.
    paused_by_hand: bool,
}

impl Dispatcher {
    fn load(
        sink: WebhookSink,
        store: Store,
        metrics: Metrics,
    ) -> Result<Dispatcher, (String, crate::store::StoreError)> {
        let name = sink.name.clone();
        let fail = |e| (name.clone(), e);
        let fail = &fail;
        let now = Instant::now();
        let wall_now = store.clock().now().timestamp_millis();
        let mut retrying = HashMap::new();
        let mut due = BTreeSet::new();
        for (seq, state) in store.attempt_states(&name).map_err(fail)? {
            let wait =
                Duration::from_millis(state.next_at_ms.saturating_sub(wall_now).max(0) as u64);
            due.insert((now + wait, seq));
            retrying.insert(seq, state);
        }
        let mut disabled = false;
        if let Some(off) = store.disabled_endpoint(&name).map_err(fail)? {
            if off.url == sink.endpoint.shown_url() {
                disabled = true;
                tracing::error!(sink = %name, url = %off.url, since = %off.disabled_at, reason = %off.reason,
                    outbox = store.outbox_len(&name).unwrap_or(0),
                    "webhook endpoint is disabled; its events wait in the outbox. Enable it with `mxc-relay webhook enable --sink {name}`, or configure a new url");
            } else {
                store.set_disabled_endpoint(&name, None).map_err(fail)?;
                tracing::info!(sink = %name, old_url = %off.url, url = %sink.endpoint.shown_url(),
                    "webhook endpoint enabled again: its url changed");
            }
        }
        metrics
            .webhook_disabled
            .with_label_values(&[&name])
            .set(disabled as i64);
        // The failing period goes on across a restart, on the wall clock.
        let failing_since = store.endpoint_failing_since(&name).map_err(fail)?.map(|t| {
            let ago = (store.clock().now() - t).to_std().unwrap_or_default();
            now.checked_sub(ago).unwrap_or(now)
        });
        let paused_by_hand = store.endpoint_paused(&name).map_err(fail)?;
        if paused_by_hand {
            tracing::warn!(sink = %name, "webhook endpoint paused by an operator; its events wait in the outbox until it is resumed");
        }
        if !retrying.is_empty() {
            tracing::info!(sink = %name, retrying = retrying.len(), "resuming the retry schedules of failed webhook deliveries");
        }
        Ok(Dispatcher {
            sink,
            store,
            metrics,
            retrying,
            due,
            fresh: VecDeque::new(),
            next_fresh: 0,
            fresh_exhausted: false,
            last_scan: now,
            in_flight: FuturesUnordered::new(),
            in_flight_seqs: BTreeSet::new(),
            delivered: Vec::with_capacity(REMOVE_BATCH),
            delivered_since: None,
            paused_until: None,
            throttle_streak: 0,
            failing_since,
            disabled,
            paused_by_hand,
        })
    }

    /// An operator changed the endpoint's state in the store: take it up.
    fn reread_control(&mut self) {
        let name = self.sink.name.clone();
        match self.store.disabled_endpoint(&name) {
            Ok(None) if self.disabled => {
                self.disabled = false;
                // A fresh start: the failing period that disabled it is over.
                self.set_failing_since(None);
                // The entries answered 410 stayed in the outbox behind the read-ahead: read it
                // again from its start (what is retrying or in flight is skipped).
                self.fresh.clear();
                self.next_fresh = 0;
                self.fresh_exhausted = false;
                self.metrics
                    .webhook_disabled
                    .with_label_values(&[&name])
                    .set(0);
                tracing::info!(sink = %name, "webhook endpoint enabled; its waiting events go out");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(sink = %name, error = %e, "cannot read the endpoint's state"),
        }
        match self.store.endpoint_paused(&name) {
            Ok(paused) if paused != self.paused_by_hand => {
                self.paused_by_hand = paused;
                self.fresh_exhausted = false;
                if paused {
                    tracing::warn!(sink = %name, "webhook endpoint paused by an operator; its events wait in the outbox");
                } else {
                    tracing::info!(sink = %name, "webhook endpoint resumed by an operator");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(sink = %name, error = %e, "cannot read the endpoint's pause"),
        }
    }

    /// Records the start (or the end) of a failing period, in memory and in the store.
    fn set_failing_since(&mut self, since: Option<Instant>) {
        if self.failing_since.is_some() == since.is_some() {
            self.failing_since = since;
            return;
        }
        self.failing_since = since;
        let wall = since.map(|t| {
            self.store.clock().now() - chrono::Duration::from_std(t.elapsed()).unwrap_or_default()
        });
        if let Err(e) = self.store.set_endpoint_failing_since(&self.sink.name, wall) {
            tracing::error!(sink = %self.sink.name, error = %e, "cannot record the endpoint's failing period (a restart would count it from then)");
        }
    }
    /// Starts attempts while there is room, something due, and no pause.
    fn dispatch(&mut self) {
        while self.in_flight.len() < self.sink.max_in_flight {
            let now = Instant::now();
            if self.paused_until.is_some_and(|t| t > now) {
                return;
            }
            let Some(next) = self.peek_next(now) else {
                return;
            };
            if let Some((limiter, period)) = &self.sink.limiter {
                if limiter.check().is_err() {
                    self.paused_until = Some(now + *period);
                    return;
                }
            }
            let entry = match next {
                Next::Fresh => self.fresh.pop_front(),
                Next::Retry(seq) => {
                    self.due.pop_first();
                    match self.store.entry(&self.sink.name, seq) {
                        Ok(entry) => entry,
                        Err(e) => {
                            tracing::error!(sink = %self.sink.name, error = %e, "cannot read an outbox entry; retrying in a minute");
                            self.due.insert((now + Duration::from_secs(60), seq));
                            None
                        }
                    }
                }
            };
            let Some(entry) = entry else { continue };
            let seq = entry.seq;
            self.in_flight_seqs.insert(seq);
            let endpoint = self.sink.endpoint.clone();
            let number = self.retrying.get(&seq).map_or(0, |s| s.attempts) + 1;
            let span = endpoint.attempt_span(&entry.event, &self.sink.name, number);
            let attempt = async move {
                let attempt = endpoint.attempt(&entry.event).await;
                attempt.end_span(&span);
                (entry, attempt, span)
            };
            self.in_flight.push(Box::pin(
                AssertUnwindSafe(attempt)
                    .catch_unwind()
                    .map(move |r| r.map_err(|_| seq)),
            ));
        }
    }

    /// What to attempt next, if anything is ready: retries that are due first (they are
    /// older), then fresh entries in outbox order.
    fn peek_next(&mut self, now: Instant) -> Option<Next> {
        if let Some(&(at, seq)) = self.due.first() {
            if at <= now {
                return Some(Next::Retry(seq));
            }
        }
        if self.fresh.is_empty() && (!self.fresh_exhausted || now >= self.last_scan + RESCAN) {
            self.read_fresh(now);
        }
        (!self.fresh.is_empty()).then_some(Next::Fresh)
    }

    fn read_fresh(&mut self, now: Instant) {
        self.last_scan = now;
        match self
            .store
            .peek_from(&self.sink.name, self.next_fresh, READ_AHEAD)
        {
            Ok(entries) => {
                self.fresh_exhausted = entries.len() < READ_AHEAD;
                if let Some(last) = entries.last() {
                    self.next_fresh = last.seq + 1;
                }
                self.fresh.extend(entries.into_iter().filter(|e| {
                    !self.retrying.contains_key(&e.seq) && !self.in_flight_seqs.contains(&e.seq)
                }));
            }
            Err(e) => {
                self.fresh_exhausted = true;
                tracing::error!(sink = %self.sink.name, error = %e, "cannot read the outbox");
            }
        }
    }

    /// When the loop must look again even if nothing happens.
    fn next_wake(&self) -> Instant {
        let wake = self.next_start();
        match self.delivered_since {
            Some(since) => wake.min(since + REMOVE_WITHIN),
            None => wake,
        }
    }

    /// When an attempt might start.
    fn next_start(&self) -> Instant {
        let mut wake = Instant::now() + RESCAN;
        if self.disabled || self.paused_by_hand || self.in_flight.len() >= self.sink.max_in_flight {
            // Nothing can start now; a finished attempt wakes the loop anyway.
            return wake;
        }
        if let Some(&(at, _)) = self.due.first() {
            wake = wake.min(at);
        }
        // Nothing can start before a pause ends.
        match self.paused_until {
            Some(until) => wake.max(until),
            None => wake,
        }
    }

    /// Removes the delivered entries once `REMOVE_BATCH` of them wait, the first has waited
    /// `REMOVE_WITHIN`, or nothing else is in flight. Until then a crash would deliver them again
    /// under the same webhook-ids, as it would the attempts in flight.
    async fn remove_delivered_if_due(&mut self) {
        let Some(since) = self.delivered_since else {
            return;
        };
        if self.delivered.len() >= REMOVE_BATCH
            || self.in_flight.is_empty()
            || since.elapsed() >= REMOVE_WITHIN
        {
            self.remove_delivered().await;
        }
    }

    async fn remove_delivered(&mut self) {
        self.delivered_since = None;
        if self.delivered.is_empty() {
            return;
        }
        if let Err(e) = self.store.remove(&self.sink.name, &self.delivered).await {
            // Delivered: at worst they are delivered again, with the same webhook-ids.
            tracing::error!(sink = %self.sink.name, error = %e, "cannot remove delivered events");
        }
        self.delivered.clear();
    }

    /// Records what became of an attempt.
    async fn settle(&mut self, entry: Entry, attempt: Attempt, span: &tracing::Span) {
        let name = self.sink.name.clone();
        let (event, seq) = (&entry.event, entry.seq);
        self.in_flight_seqs.remove(&seq);
        let now = Instant::now();
        match attempt.verdict {
            Verdict::Delivered => {
                self.retrying.remove(&seq);
                self.set_failing_since(None);
                self.throttle_streak = 0;
                EventsDelivered {
                    sink: &name,
                    fetched_at_ms: [event.fetched_at_ms],
                }
                .emit(&self.metrics);
                tracing::debug!(sink = %name, event_id = %event.id, record_id = %event.record_id, xmid = %event.xmid, "webhook delivered");
                self.delivered.push(seq);
                self.delivered_since.get_or_insert(now);
            }
            // Not the event's fault: it stays in the outbox, this attempt not counted, until
            // the endpoint is enabled again.
            Verdict::Gone => self.disable(format!("the receiver answered {}", attempt.detail)),
            Verdict::Retry { throttle } => self.failed(&entry, &attempt, throttle, now, span).await,
        }
    }

    async fn failed(
        &mut self,
        entry: &Entry,
        attempt: &Attempt,
        throttle: bool,
        now: Instant,
        span: &tracing::Span,
    ) {
        let name = self.sink.name.clone();
        let (event, seq) = (&entry.event, entry.seq);
        let attempts = self.retrying.get(&seq).map_or(0, |s| s.attempts) + 1;
        DeliveryFailed { sink: &name }.emit(&self.metrics);
        let failing_since = match self.failing_since {
            Some(since) => since,
            None => {
                self.set_failing_since(Some(now));
                now
            }
        };
        if throttle {
            match self.paused_until.filter(|t| *t > now) {
                // Answers to attempts sent before the pause began do not lengthen it, unless
                // they ask for longer themselves.
                Some(until) => {
                    if let Some(asked) = attempt.retry_after {
                        let asked = now + self.sink.policy.retry_after(asked);
                        self.paused_until = Some(until.max(asked));
                    }
                }
                None => {
                    let pause = self
                        .sink
                        .policy
                        .pause(self.throttle_streak, attempt.retry_after);
                    self.throttle_streak = self.throttle_streak.saturating_add(1);
                    self.paused_until = Some(now + pause);
                    tracing::warn!(sink = %name, pause = %humantime::format_duration(pause), reason = %attempt.detail,
                        "webhook endpoint throttled: pausing all deliveries to it");
                }
            }
        }
        let unit = rand::thread_rng().gen_range(-1.0..=1.0);
        match self.sink.policy.delay_after(attempts, unit) {
            None => {
                self.retrying.remove(&seq);
                let reason = format!(
                    "gave up after {attempts} attempts; last: {}",
                    attempt.detail
                );
                Outcome::Dead(reason.clone()).end_span(span);
                EventDeadLettered {
                    path: DeliveryPath::Webhook,
                    sink: &name,
                    event_id: &event.id,
                    record_id: &event.record_id,
                    xmid: &event.xmid,
                    reason: &reason,
                }
                .emit(&self.metrics);
                if let Err(e) = self
                    .store
                    .bury(&name, entry, &reason, attempts, attempt.status)
                    .await
                {
                    tracing::error!(sink = %name, error = %e, "cannot dead-letter an event; it stays in the outbox");
                }
            }
            Some(delay) => {
                let delay = match attempt.retry_after {
                    Some(asked) => delay.max(self.sink.policy.retry_after(asked)),
                    None => delay,
                };
                let state = AttemptState {
                    attempts,
                    next_at_ms: self.store.clock().now().timestamp_millis()
                        + delay.as_millis() as i64,
                    last_status: attempt.status,
                    last_error: attempt.detail.clone(),
                };
                tracing::warn!(sink = %name, event_id = %event.id, record_id = %event.record_id, xmid = %event.xmid,
                    attempt = attempts, reason = %attempt.detail, retry_in = %humantime::format_duration(round(delay)),
                    "webhook delivery failed");
                if let Err(e) = self.store.record_attempt(&name, seq, &state) {
                    // The schedule goes on in memory; after a restart it would start over.
                    tracing::error!(sink = %name, error = %e, "cannot record a failed attempt");
                }
                self.retrying.insert(seq, state);
                self.due.insert((now + delay, seq));
            }
        }
        if !self.disabled && now.duration_since(failing_since) >= self.sink.disable_after {
            self.disable(format!(
                "no successful delivery for {}; last: {}",
                humantime::format_duration(round(now.duration_since(failing_since))),
                attempt.detail
            ));
        }
    }

    fn disable(&mut self, reason: String) {
        if self.disabled {
            return;
        }
        self.disabled = true;
        let name = &self.sink.name;
        let state = DisabledEndpoint {
            disabled_at: self.store.clock().now(),
            reason: reason.clone(),
            url: self.sink.endpoint.shown_url().to_string(),
        };
        if let Err(e) = self.store.set_disabled_endpoint(name, Some(&state)) {
            tracing::error!(sink = %name, error = %e, "cannot record that the endpoint is disabled (it is, until a restart)");
        }
        self.metrics
            .webhook_disabled
            .with_label_values(&[name])
            .set(1);
        tracing::error!(sink = %name, url = %state.url, %reason,
            outbox = self.store.outbox_len(name).unwrap_or(0),
            "webhook endpoint disabled; its events wait in the outbox. Enable it with `mxc-relay webhook enable --sink {name}`, or configure a new url");
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
