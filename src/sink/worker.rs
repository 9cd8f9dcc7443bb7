//! The delivery worker: drains one sink's outbox in order, forever, with backoff on failure.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use super::{round, Outcome, Sink};
use crate::store::Store;
use crate::telemetry::Metrics;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub batch_size: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Delivers `sink_name`'s outbox until `stop` is cancelled; a delivery in progress is finished
/// first (the caller bounds how long it may take).
pub async fn run_worker(
    sink_name: String,
    sink: Arc<dyn Sink>,
    store: Store,
    config: WorkerConfig,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let notify = match store.notifier(&sink_name) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(sink = %sink_name, error = %e, "delivery worker cannot start");
            return;
        }
    };
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(config.retry_min)
            .with_max_delay(config.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    let mut attempts: u32 = 0;
    while !stop.is_cancelled() {
        let entries = match store.peek(&sink_name, config.batch_size) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(sink = %sink_name, error = %e, "cannot read the outbox");
                pause(&stop, delays.next().unwrap_or(config.retry_max)).await;
                continue;
            }
        };
        if entries.is_empty() {
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => {}
            }
            continue;
        }
        let events: Vec<_> = entries.iter().map(|e| e.event.clone()).collect();
        let outcomes = sink.deliver(&events).await;
        attempts += 1;
        let mut delivered = Vec::new();
        let mut retry = None;
        // XMIDs with an earlier entry still waiting in this batch: their later entries stay in
        // the outbox even if delivered, so that a retry cannot be overtaken (a repeat, with the
        // same id, is allowed; a reordering is not).
        let mut waiting: HashSet<String> = HashSet::new();
        for (entry, outcome) in entries.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered if waiting.contains(&entry.event.xmid) => {}
                Outcome::Delivered => delivered.push(entry),
                Outcome::Dead(reason) => {
                    tracing::warn!(sink = %sink_name, event_id = %entry.event.id, record_id = %entry.event.record_id,
                        xmid = %entry.event.xmid, %reason, "event dead-lettered");
                    metrics
                        .events
                        .with_label_values(&[&sink_name, "dead_lettered"])
                        .inc();
                    if let Err(e) = store.bury(&sink_name, entry, &reason, attempts, None) {
                        tracing::error!(sink = %sink_name, error = %e, "cannot dead-letter an event; it stays in the outbox");
                        retry.get_or_insert((e.to_string(), entry.event.clone()));
                        waiting.insert(entry.event.xmid.clone());
                    }
                }
                Outcome::Retry(reason) => {
                    metrics
                        .events
                        .with_label_values(&[&sink_name, "failed"])
                        .inc();
                    retry.get_or_insert((reason, entry.event.clone()));
                    waiting.insert(entry.event.xmid.clone());
                }
            }
        }
        if !delivered.is_empty() {
            metrics.delivered(&sink_name, delivered.iter().map(|e| e.event.fetched_at_ms));
            let seqs: Vec<u64> = delivered.iter().map(|e| e.seq).collect();
            if let Err(e) = store.remove(&sink_name, &seqs) {
                // They were delivered: at worst they are delivered again, with the same ids.
                tracing::error!(sink = %sink_name, error = %e, "cannot remove delivered events");
            }
        }
        match retry {
            None => {
                delays = backoff();
                attempts = 0;
            }
            Some((reason, event)) => {
                let delay = delays.next().unwrap_or(config.retry_max);
                tracing::warn!(sink = %sink_name, event_id = %event.id, record_id = %event.record_id, xmid = %event.xmid,
                    %reason, retry_in = %humantime::format_duration(round(delay)), "delivery failed");
                pause(&stop, delay).await;
            }
        }
    }
}

async fn pause(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => {}
    }
}
