//! Starting attempts: retries that are due first, then fresh entries in outbox order, while
//! there is room, no pause and the rate limit allows; and removing the delivered entries from
//! the outbox in batches.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use super::Dispatcher;
use crate::sink::webhook::Attempt;
use crate::store::Entry;

/// Fresh outbox entries read at a time.
const READ_AHEAD: usize = 64;
/// Even without a notification, look for new entries this often.
const RESCAN: Duration = Duration::from_secs(5);
/// Delivered entries leave the outbox together, this many at most, and none waits longer than
/// `REMOVE_WITHIN` (nor once nothing else is in flight). Each removal is a store transaction
/// (and under `durability = "batch"` an fsync), which costs more than the deliveries themselves
/// when done for every answer or two.
pub(super) const REMOVE_BATCH: usize = 64;
const REMOVE_WITHIN: Duration = Duration::from_millis(2);

/// One attempt in flight; `Err` if it panicked (its entry then stays in the outbox).
/// An attempt under way: its entry, the answer, and the attempt's span (traces on).
pub(super) type InFlight =
    Pin<Box<dyn Future<Output = Result<(Entry, Attempt, tracing::Span), u64>> + Send>>;

/// Where the next attempt comes from.
enum Next {
    Retry(u64),
    Fresh,
}

impl Dispatcher {
    /// Starts attempts while there is room, something due, and no pause.
    pub(super) fn dispatch(&mut self) {
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
    pub(super) fn next_wake(&self) -> Instant {
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
    pub(super) async fn remove_delivered_if_due(&mut self) {
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

    pub(super) async fn remove_delivered(&mut self) {
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
}
