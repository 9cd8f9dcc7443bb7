//! The tasks a pipeline runs beside polling and delivery, until polling stops: probing the
//! sinks, forgetting old record ids, counting them, and sampling the gauges.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::poll::Fleet;
use crate::sink::Sink;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use mxc::{Client, Resource};

/// Probes each sink's destination every 10 s (Kafka: the brokers' metadata), for `/readyz` and
/// `mxc_relay_sink_unreachable`; logs each change.
pub(super) async fn probe_sinks(
    sinks: Vec<(String, Arc<dyn Sink>)>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    loop {
        for (name, sink) in &sinks {
            let result = sink.probe().await;
            let gauge = metrics.sink_unreachable.with_label_values(&[name]);
            match (&result, gauge.get()) {
                (Err(e), 0) => tracing::warn!(sink = %name, error = %e, "sink unreachable"),
                (Ok(()), 1) => tracing::info!(sink = %name, "sink reachable again"),
                _ => {}
            }
            gauge.set(result.is_err() as i64);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Forgets record ids older than the retention, regularly — but never ids that a poll could
/// still re-read: those admitted after the earliest configured cursor less the look-back
/// (a poller stuck for days keeps its ids until it catches up).
pub(super) async fn prune_seen(
    store: Store,
    fleet: Fleet,
    resources: Vec<&'static Resource>,
    retention: Duration,
    look_back: Duration,
    stop: CancellationToken,
) {
    let every = (retention / 10).clamp(Duration::from_secs(10), Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let (store, resources) = (store.clone(), resources.clone());
        let xmids = fleet.xmids();
        let pruned = tokio::task::spawn_blocking(move || {
            let now = store.clock().now();
            let mut before = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|r| now.checked_sub_signed(r))
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let look_back = chrono::Duration::from_std(look_back).unwrap_or_default();
            for xmid in xmids.iter() {
                if let Some(position) = oldest_position(&store, &resources, xmid)? {
                    before = before.min(position - look_back);
                }
            }
            store.prune_seen(before)
        })
        .await;
        match pruned {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(pruned = n, "forgot record ids past the retention"),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot prune seen ids"),
            Err(e) => tracing::error!(error = %e, "prune task failed"),
        }
    }
}

/// The position of the XMID's cursor that lags most, over the resources polled.
fn oldest_position(
    store: &Store,
    resources: &[&'static Resource],
    xmid: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut oldest = None;
    for resource in resources {
        if let Some(cursor) = store.cursor(&resource.cursor_key(xmid))? {
            oldest =
                Some(oldest.map_or(cursor.position, |o: DateTime<Utc>| o.min(cursor.position)));
        }
    }
    Ok(oldest)
}

/// Counts the record ids remembered (`mxc_relay_seen_ids`) a minute after start, then every
/// five minutes, on a blocking thread: a read of the store, kept out of the start and off the
/// runtime's workers.
pub(super) async fn count_seen(store: Store, metrics: Metrics, stop: CancellationToken) {
    let mut wait = SEEN_COUNT_FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = SEEN_COUNT_EVERY;
        let counting = store.clone();
        match tokio::task::spawn_blocking(move || counting.seen_len()).await {
            Ok(n) => metrics.seen_ids.set(n as i64),
            Err(e) => tracing::error!(error = %e, "counting the seen ids failed"),
        }
    }
}

/// When the seen ids are first counted, and how often after that.
const SEEN_COUNT_FIRST: Duration = Duration::from_secs(60);
const SEEN_COUNT_EVERY: Duration = Duration::from_secs(300);

/// Samples the gauges: poll lag (MXC's now − the end of the XMID's last completed poll, its
/// most lagging cursor) every second, per XMID when `per_xmid`, and its fleet-wide max and
/// percentiles; the token's expiry; the disk's free space; every 10 s, the outboxes' and dead
/// letters' sizes (counting them reads whole trees; they are small when the sinks keep up) and
/// the store's disk use. The seen ids are counted apart (`count_seen`).
pub(super) async fn sample_gauges(
    store: Store,
    fleet: Fleet,
    resources: Vec<&'static Resource>,
    client: Client,
    metrics: Metrics,
    per_xmid: bool,
    stop: CancellationToken,
) {
    let mut previous = fleet.xmids();
    for tick in 0u64.. {
        // Cursors are on MXC's clock: the lag is measured on it too.
        let now = client.mxc_now();
        let xmids = fleet.xmids();
        if per_xmid && !Arc::ptr_eq(&previous, &xmids) {
            // A merchant no longer polled leaves no stale lag behind.
            let now_polled: std::collections::HashSet<&String> = xmids.iter().collect();
            for gone in previous.iter().filter(|x| !now_polled.contains(x)) {
                let _ = metrics.poll_lag.remove_label_values(&[gone]);
            }
            previous = xmids.clone();
        }
        let mut lags = Vec::with_capacity(xmids.len());
        for xmid in xmids.iter() {
            if let Ok(Some(position)) = oldest_position(&store, &resources, xmid) {
                let lag = (now - position).num_milliseconds().max(0) as f64 / 1000.0;
                if per_xmid {
                    metrics.poll_lag.with_label_values(&[xmid]).set(lag);
                }
                lags.push(lag);
            }
        }
        lags.sort_by(f64::total_cmp);
        metrics
            .poll_lag_max
            .set(lags.last().copied().unwrap_or(0.0));
        for (label, q) in [("50", 0.5), ("90", 0.9), ("99", 0.99)] {
            let at = ((lags.len() as f64 * q).ceil() as usize).saturating_sub(1);
            metrics
                .poll_lag_percentiles
                .with_label_values(&[label])
                .set(lags.get(at).copied().unwrap_or(0.0));
        }
        metrics
            .token_expiry
            .set(client.token_expires_in().map_or(0.0, |d| d.as_secs_f64()));
        if tick % 10 == 0 {
            for sink in store.sinks() {
                let gauge = |v: Result<usize, _>| v.map_or(0, |n| n as i64);
                metrics
                    .outbox_events
                    .with_label_values(&[sink])
                    .set(gauge(store.outbox_len(sink)));
                metrics
                    .dead_letters
                    .with_label_values(&[sink])
                    .set(gauge(store.dead_len(sink)));
            }
            if let Ok(used) = store.disk_bytes() {
                metrics.store_disk_bytes.set(used as i64);
            }
        }
        if let Ok(free) = store.free_bytes() {
            metrics.store_free_bytes.set(free as i64);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::store::Admission;
    use mxc::TokioClock;

    fn ids(names: &[&str]) -> Vec<Admission> {
        names
            .iter()
            .map(|id| Admission {
                record_id: id.to_string(),
                xmid: "X1".into(),
                events: Vec::new(),
            })
            .collect()
    }

    /// The running pruner forgets ids once they are older than the retention, and only those:
    /// three hours of a paused clock pass in no time.
    #[tokio::test(start_paused = true)]
    async fn ids_past_the_retention_are_forgotten_by_the_running_pruner() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            path: dir.path().join("store"),
            ..StoreConfig::default()
        };
        let store = Store::open_with_clock(&config, &[], TokioClock::new().shared()).unwrap();
        let retention = Duration::from_secs(2 * 3600);
        store.admit(&ids(&["old-1", "old-2"]), &[]).await.unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        store.admit(&ids(&["recent"]), &[]).await.unwrap();
        let stop = CancellationToken::new();
        let pruner = tokio::spawn(prune_seen(
            store.clone(),
            Fleet::default(),
            Vec::new(),
            retention,
            Duration::ZERO,
            stop.clone(),
        ));
        // Hour 1 to 2: every id is within the retention; the pruner runs (every 12 minutes)
        // and keeps them all.
        tokio::time::sleep(Duration::from_secs(3600 - 60)).await;
        assert_eq!(store.seen_len(), 3);
        // Past hour 2 and one pruning interval: the two oldest go, the recent one stays.
        tokio::time::sleep(Duration::from_secs(60 + 13 * 60)).await;
        let mut waited = 0;
        while store.seen_len() != 1 && waited < 100 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += 1;
        }
        assert_eq!(
            store.seen_len(),
            1,
            "only the id within the retention is left"
        );
        assert!(!store.is_seen("old-1").unwrap() && !store.is_seen("old-2").unwrap());
        assert!(store.is_seen("recent").unwrap());
        stop.cancel();
        pruner.await.unwrap();
    }
}
