//! A started pipeline until it ends: a reload (stop, then start on the same store), a
//! backfill beside the polls, draining the outboxes, and the graceful stop.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::assemble::Start;
use super::{Pipeline, PipelineError};
use crate::config::Config;
use crate::poll::{BackfillProgress, BackfillRequest, PollError};
use crate::store::StoreError;
use crate::telemetry::Metrics;

impl Pipeline {
    /// Applies a new configuration without leaving the process: this pipeline stops
    /// gracefully (polling at once, in-flight deliveries finished: the outboxes, cursors and
    /// retry states are in the store) and one built from `new` starts on the same store. If
    /// `new` cannot start (a sink its client library refuses, say), `current` starts again
    /// and the error is returned beside it; `Err` only if neither can start.
    pub async fn reload(
        self,
        current: &Config,
        new: &Config,
    ) -> Result<(Pipeline, Result<(), PipelineError>), PipelineError> {
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        if let Err(e) = self.shutdown().await {
            tracing::error!(error = %e, "stopping for the reload did not flush the store");
        }
        let started = match store.reconfigure(new) {
            Ok(view) => {
                Pipeline::start_on(new, metrics.clone(), BTreeMap::new(), view, Start::Reload).await
            }
            Err(e) => Err(e.into()),
        };
        match started {
            Ok(pipeline) => {
                forget_dropped_series(&pipeline.metrics, current, new);
                Ok((pipeline, Ok(())))
            }
            Err(error) => {
                let restarted = match store.reconfigure(current) {
                    Ok(view) => {
                        Pipeline::start_on(current, metrics, BTreeMap::new(), view, Start::Restore)
                            .await
                    }
                    Err(e) => Err(e.into()),
                };
                match restarted {
                    Ok(pipeline) => Ok((pipeline, Err(error))),
                    Err(again) => Err(PipelineError::Reload {
                        error: Box::new(error),
                        again: Box::new(again),
                    }),
                }
            }
        }
    }

    /// Replays history into the sinks (see [`Pollers::backfill`]), beside whatever polls.
    pub async fn backfill(
        &self,
        request: &BackfillRequest,
        stop: &CancellationToken,
        on_page: impl FnMut(&BackfillProgress),
    ) -> Result<BackfillProgress, PollError> {
        self.polling.backfill(request, stop, on_page).await
    }

    /// Stops polling at once: an interrupted cycle is redone after a restart (its pages were
    /// admitted atomically or not at all).
    async fn stop_pollers(&mut self) {
        self.stop_polling.cancel();
        if let Some(cluster) = self.cluster.take() {
            // The sharding task leaves the group, polls until the others claim its shards, and
            // hands each over (deliveries finished, states published), so the others resume
            // where it stopped without a gap.
            let within = cluster.stop_within;
            let pollers = &mut self.pollers;
            let _ = tokio::time::timeout(within, async {
                while pollers.join_next().await.is_some() {}
            })
            .await;
            cluster.handover.stop();
            let mut membership = cluster.membership;
            let _ = tokio::task::spawn_blocking(move || membership.leave()).await;
        }
        self.pollers.abort_all();
        while self.pollers.join_next().await.is_some() {}
    }

    /// Stops polling and waits (up to `within`) until every outbox is empty: for a demo or a
    /// test that wants what it admitted delivered before [`Pipeline::shutdown`]. Returns
    /// whether they emptied.
    pub async fn drain(&mut self, within: Duration) -> bool {
        self.stop_pollers().await;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // An aborted poller's admission may still be committing into the outboxes: count
            // those first, then the outboxes, so that none lands unseen in between.
            let under_way = self.store.admissions_under_way();
            let waiting: usize = self
                .store
                .sinks()
                .map(|s| self.store.outbox_len(s).unwrap_or(0))
                .sum();
            if under_way == 0 && waiting == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop: polling stops at once (an interrupted cycle is redone after a restart:
    /// its pages were admitted atomically or not at all); in-flight deliveries get up to
    /// `delivery.shutdown_timeout` to finish; the store is flushed.
    pub async fn shutdown(mut self) -> Result<(), StoreError> {
        self.stop_pollers().await;
        self.housekeeping.abort_all();
        while self.housekeeping.join_next().await.is_some() {}
        self.stop_delivering.cancel();
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(timeout = %humantime::format_duration(self.shutdown_timeout),
                "deliveries still in flight at the deadline; they are redelivered after a restart");
            self.workers.abort_all();
        }
        self.backfills.finish().await;
        self.store.flush().await?;
        self.stop_telemetry.cancel();
        if let Some(task) = self.admin_task.take() {
            // Its requests in flight finish (a few seconds at most); then the store is free
            // for the next pipeline (a reload, a restart in the same process).
            let _ = task.await;
        }
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Series of the sinks and listed XMIDs a reload dropped would otherwise keep their last value
/// (an alert on a sink that no longer exists).
fn forget_dropped_series(metrics: &Metrics, current: &Config, new: &Config) {
    for sink in current.sinks.keys().filter(|s| !new.sinks.contains_key(*s)) {
        let _ = metrics.sink_unreachable.remove_label_values(&[sink]);
        let _ = metrics.webhook_disabled.remove_label_values(&[sink]);
        let _ = metrics.outbox_events.remove_label_values(&[sink]);
        let _ = metrics.dead_letters.remove_label_values(&[sink]);
    }
    let listed = new.pollers.listed_xmids();
    for xmid in current.pollers.listed_xmids() {
        if !listed.contains(&xmid) {
            let _ = metrics.poll_lag.remove_label_values(&[&xmid]);
        }
    }
}
