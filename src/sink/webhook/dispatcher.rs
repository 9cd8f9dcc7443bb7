//! The dispatcher of one webhook sink: its state (what retries and when, what is delivered and
//! waits to leave the outbox, whether the endpoint is paused or disabled), loaded from the
//! store at start, and the loop that drives it. `attempts` starts the attempts, `settle`
//! records their answers.

mod attempts;
mod settle;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::WebhookSink;
use crate::store::{AttemptState, DisabledEndpoint, Entry, Store, StoreError};
use crate::telemetry::Metrics;
use attempts::{InFlight, REMOVE_BATCH};

/// Delivers one sink's outbox: what each entry's schedule stands at, and the endpoint's.
pub(super) struct Dispatcher {
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
    /// The dispatcher as the store left it: retry schedules, and the endpoint's state.
    pub(super) fn load(
        sink: WebhookSink,
        store: Store,
        metrics: Metrics,
    ) -> Result<Dispatcher, (String, StoreError)> {
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
        let disabled = still_disabled(&sink, &store).map_err(fail)?;
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

    /// Delivers the sink's outbox until `stop` is cancelled; attempts in flight then finish
    /// (the caller bounds how long). `notify` says new entries are in the outbox, `control`
    /// that an operator changed the endpoint's state.
    pub(super) async fn run(
        mut self,
        notify: Arc<Notify>,
        control: Arc<Notify>,
        stop: CancellationToken,
    ) {
        let mut stopping = false;
        loop {
            if !stopping && !self.disabled && !self.paused_by_hand {
                self.dispatch();
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = stop.cancelled(), if !stopping => {
                    // From now on nothing waits to be removed: the caller may give up on the
                    // attempts still in flight, not on what was delivered.
                    stopping = true;
                    self.remove_delivered().await;
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    match done {
                        Ok((entry, attempt, span)) => self.settle(entry, attempt, &span).await,
                        // Attempts do not panic; were one to, its entry stays in the outbox.
                        Err(seq) => tracing::error!(sink = %self.sink.name, seq, "a webhook attempt panicked"),
                    }
                    if stopping {
                        self.remove_delivered().await;
                    } else {
                        self.remove_delivered_if_due().await;
                    }
                }
                _ = notify.notified(), if !stopping => self.fresh_exhausted = false,
                _ = control.notified(), if !stopping => self.reread_control(),
                _ = tokio::time::sleep_until(wake), if !stopping => self.remove_delivered_if_due().await,
            }
            if stopping && self.in_flight.is_empty() {
                return;
            }
        }
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

    /// Disables the endpoint (kept in the store): its entries wait in the outbox.
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

/// Whether the endpoint stays disabled at start: it was, at the same url (a new url enables
/// it again).
fn still_disabled(sink: &WebhookSink, store: &Store) -> Result<bool, StoreError> {
    let name = &sink.name;
    let Some(off) = store.disabled_endpoint(name)? else {
        return Ok(false);
    };
    if off.url == sink.endpoint.shown_url() {
        tracing::error!(sink = %name, url = %off.url, since = %off.disabled_at, reason = %off.reason,
            outbox = store.outbox_len(name).unwrap_or(0),
            "webhook endpoint is disabled; its events wait in the outbox. Enable it with `mxc-relay webhook enable --sink {name}`, or configure a new url");
        Ok(true)
    } else {
        store.set_disabled_endpoint(name, None)?;
        tracing::info!(sink = %name, old_url = %off.url, url = %sink.endpoint.shown_url(),
            "webhook endpoint enabled again: its url changed");
        Ok(false)
    }
}
