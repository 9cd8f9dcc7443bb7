//! What becomes of an attempt's answer: delivered (to leave the outbox), a retry scheduled
//! (persisted, so a restart resumes it) or given up (dead-lettered), a throttled endpoint
//! paused, a failing or gone one disabled.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::Dispatcher;
use crate::sink::webhook::{Attempt, Verdict};
use crate::sink::{round, Outcome};
use crate::store::{AttemptState, Entry};
use crate::telemetry::events::{
    DeliveryFailed, DeliveryPath, EventDeadLettered, EventsDelivered, InternalEvent,
};

impl Dispatcher {
    /// Records what became of an attempt.
    pub(super) async fn settle(&mut self, entry: Entry, attempt: Attempt, span: &tracing::Span) {
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

    /// A failed attempt: the endpoint paused if throttled, the entry retried later or given up,
    /// and the endpoint disabled once it has failed for `disable_after`.
    async fn failed(
        &mut self,
        entry: &Entry,
        attempt: &Attempt,
        throttle: bool,
        now: Instant,
        span: &tracing::Span,
    ) {
        let attempts = self.retrying.get(&entry.seq).map_or(0, |s| s.attempts) + 1;
        DeliveryFailed {
            sink: &self.sink.name,
        }
        .emit(&self.metrics);
        let failing_since = match self.failing_since {
            Some(since) => since,
            None => {
                self.set_failing_since(Some(now));
                now
            }
        };
        if throttle {
            self.throttled(attempt, now);
        }
        let unit = rand::thread_rng().gen_range(-1.0..=1.0);
        match self.sink.policy.delay_after(attempts, unit) {
            None => self.give_up(entry, attempt, attempts, span).await,
            Some(delay) => self.retry_later(entry, attempt, attempts, delay, now),
        }
        if !self.disabled && now.duration_since(failing_since) >= self.sink.disable_after {
            self.disable(format!(
                "no successful delivery for {}; last: {}",
                humantime::format_duration(round(now.duration_since(failing_since))),
                attempt.detail
            ));
        }
    }

    /// The receiver is overloaded: the whole endpoint pauses.
    fn throttled(&mut self, attempt: &Attempt, now: Instant) {
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
                tracing::warn!(sink = %self.sink.name, pause = %humantime::format_duration(pause), reason = %attempt.detail,
                    "webhook endpoint throttled: pausing all deliveries to it");
            }
        }
    }

    /// The schedule is over: the entry goes to the dead letters.
    async fn give_up(
        &mut self,
        entry: &Entry,
        attempt: &Attempt,
        attempts: u32,
        span: &tracing::Span,
    ) {
        let name = &self.sink.name;
        let event = &entry.event;
        self.retrying.remove(&entry.seq);
        let reason = format!(
            "gave up after {attempts} attempts; last: {}",
            attempt.detail
        );
        Outcome::Dead(reason.clone()).end_span(span);
        EventDeadLettered {
            path: DeliveryPath::Webhook,
            sink: name,
            event_id: &event.id,
            record_id: &event.record_id,
            xmid: &event.xmid,
            reason: &reason,
        }
        .emit(&self.metrics);
        if let Err(e) = self
            .store
            .bury(name, entry, &reason, attempts, attempt.status)
            .await
        {
            tracing::error!(sink = %name, error = %e, "cannot dead-letter an event; it stays in the outbox");
        }
    }

    /// The entry is tried again after `delay` (or what the receiver asked, if longer); its
    /// schedule is recorded so that a restart resumes it.
    fn retry_later(
        &mut self,
        entry: &Entry,
        attempt: &Attempt,
        attempts: u32,
        delay: Duration,
        now: Instant,
    ) {
        let name = &self.sink.name;
        let (event, seq) = (&entry.event, entry.seq);
        let delay = match attempt.retry_after {
            Some(asked) => delay.max(self.sink.policy.retry_after(asked)),
            None => delay,
        };
        let state = AttemptState {
            attempts,
            next_at_ms: self.store.clock().now().timestamp_millis() + delay.as_millis() as i64,
            last_status: attempt.status,
            last_error: attempt.detail.clone(),
        };
        tracing::warn!(sink = %name, event_id = %event.id, record_id = %event.record_id, xmid = %event.xmid,
            attempt = attempts, reason = %attempt.detail, retry_in = %humantime::format_duration(round(delay)),
            "webhook delivery failed");
        if let Err(e) = self.store.record_attempt(name, seq, &state) {
            // The schedule goes on in memory; after a restart it would start over.
            tracing::error!(sink = %name, error = %e, "cannot record a failed attempt");
        }
        self.retrying.insert(seq, state);
        self.due.insert((now + delay, seq));
    }
}
