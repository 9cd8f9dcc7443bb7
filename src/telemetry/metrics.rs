//! The relay's metrics: every series on one registry, named (with its help text and labels)
//! in one place, `series`. Components get a [`Metrics`] handed in and record through its
//! methods, which also write the matching log line where one is due.

use mxc::Clock;
use prometheus::{
    Gauge, GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

mod series;

/// Every series mxc-relay exports, on its own registry (no global state).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Poll cycles by outcome (`ok`, `error`).
    pub polls: IntCounterVec,
    /// Records by outcome: `fetched`, `new`, `duplicate`, `skipped_no_id`, `wrong_type`,
    /// `oversize`, `rejected`, `outside_window`, `reconciled` (missed by the cursor, found by
    /// the sweep: 0 in a healthy run).
    pub records: IntCounterVec,
    /// 1 for a resource polled by transaction time because MXC refused its `created` queries
    /// (`pollers.cursor = "auto"`).
    pub cursor_fallback: IntGaugeVec,
    pub created_filter_ignored: IntGaugeVec,
    /// Reconciliation sweeps by outcome (`ok`, `error`).
    pub sweeps: IntCounterVec,
    /// Events by sink and outcome: `delivered`, `failed` (will retry), `dead_lettered`.
    pub events: IntCounterVec,
    /// Trace spans by outcome: `exported`, `dropped_queue_full` (the exporter behind),
    /// `dropped_export_failed` (the collector down, slow or refusing). Traces off: all 0.
    pub trace_spans: IntCounterVec,
    /// Seconds between now and each XMID's cursor.
    pub poll_lag: GaugeVec,
    /// The largest poll lag over all XMIDs.
    pub poll_lag_max: Gauge,
    /// Requests that waited for the global rate limiter.
    pub rate_limiter_waits: IntCounter,
    /// 1 for each webhook sink whose endpoint is disabled (410 Gone, or failing too long).
    pub webhook_disabled: IntGaugeVec,
    /// Poll lag percentiles over all XMIDs (`percentile` = 50, 90, 99). Not `quantile`: that
    /// label belongs to summaries.
    pub poll_lag_percentiles: GaugeVec,
    /// Events waiting in each sink's outbox.
    pub outbox_events: IntGaugeVec,
    /// Dead letters per sink.
    pub dead_letters: IntGaugeVec,
    /// Record ids remembered for deduplication.
    pub seen_ids: IntGauge,
    /// Merchants polled because the roster lists them (grace periods included).
    pub roster_merchants: IntGauge,
    /// When the roster was last read successfully (Unix seconds; 0: never).
    pub roster_last_read: Gauge,
    /// Merchants that joined the roster (after the first read) and started polling.
    pub roster_added: IntCounter,
    /// Merchants that left the roster (or closed) and stopped polling after the grace period.
    pub roster_removed: IntCounter,
    /// Free space on the store's file system (polling pauses below `store.min_free_mib`).
    pub store_free_bytes: IntGauge,
    pub store_disk_bytes: IntGauge,
    /// In a cluster: the shards this instance owns (0 outside one).
    pub cluster_shards: IntGauge,
    /// In a cluster: shards assigned to this instance, and revoked from it (handed over).
    pub cluster_shard_changes: IntCounterVec,
    /// Seconds until the cached MXC token expires (0 without one).
    pub token_expiry: Gauge,
    /// Calls made to the MXC Security API for a token.
    pub auth_requests: IntCounter,
    /// Always 1, labelled with the version.
    pub build_info: IntGaugeVec,
    /// Security API calls that did not yield a token.
    pub auth_failures: IntCounter,
    /// MXC calls by endpoint (its path) and status (the HTTP code, `timeout` or `error`).
    pub api_requests: IntCounterVec,
    /// MXC call latency by endpoint, in seconds.
    pub api_latency: HistogramVec,
    /// Seconds from fetching a record to the sink confirming its event.
    pub delivery_latency: HistogramVec,
    /// Events queued for a sink, by event type (`authorization.declined` …).
    pub events_enqueued: IntCounterVec,
    /// 1 while the sink's destination does not answer its probe (Kafka: broker metadata).
    pub sink_unreachable: IntGaugeVec,
}

/// Delivery latency buckets: from sub-second (Kafka, files) to hours (webhook retries).
const DELIVERY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 36000.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        use series::*;
        let registry = Registry::new();
        let r = &registry;
        let metrics = Metrics {
            polls: POLLS.int_counter_vec(r),
            records: RECORDS.int_counter_vec(r),
            cursor_fallback: CURSOR_FALLBACK.int_gauge_vec(r),
            created_filter_ignored: CREATED_FILTER_IGNORED.int_gauge_vec(r),
            sweeps: SWEEPS.int_counter_vec(r),
            poll_lag: POLL_LAG.gauge_vec(r),
            poll_lag_max: POLL_LAG_MAX.gauge(r),
            poll_lag_percentiles: POLL_LAG_PERCENTILES.gauge_vec(r),
            rate_limiter_waits: RATE_LIMITER_WAITS.int_counter(r),
            events: EVENTS.int_counter_vec(r),
            events_enqueued: EVENTS_ENQUEUED.int_counter_vec(r),
            delivery_latency: DELIVERY_LATENCY.histogram_vec(r, DELIVERY_BUCKETS),
            webhook_disabled: WEBHOOK_DISABLED.int_gauge_vec(r),
            sink_unreachable: SINK_UNREACHABLE.int_gauge_vec(r),
            outbox_events: OUTBOX_EVENTS.int_gauge_vec(r),
            dead_letters: DEAD_LETTERS.int_gauge_vec(r),
            seen_ids: SEEN_IDS.int_gauge(r),
            store_free_bytes: STORE_FREE_BYTES.int_gauge(r),
            store_disk_bytes: STORE_DISK_BYTES.int_gauge(r),
            roster_merchants: ROSTER_MERCHANTS.int_gauge(r),
            roster_last_read: ROSTER_LAST_READ.gauge(r),
            roster_added: ROSTER_ADDED.int_counter(r),
            roster_removed: ROSTER_REMOVED.int_counter(r),
            cluster_shards: CLUSTER_SHARDS.int_gauge(r),
            cluster_shard_changes: CLUSTER_SHARD_CHANGES.int_counter_vec(r),
            api_requests: API_REQUESTS.int_counter_vec(r),
            api_latency: API_LATENCY.histogram_vec(r, prometheus::DEFAULT_BUCKETS),
            token_expiry: TOKEN_EXPIRY.gauge(r),
            auth_requests: AUTH_REQUESTS.int_counter(r),
            auth_failures: AUTH_FAILURES.int_counter(r),
            trace_spans: TRACE_SPANS.int_counter_vec(r),
            build_info: BUILD_INFO.int_gauge_vec(r),
            registry,
        };
        // Exported from the start (0 until they happen; with traces off, always), so
        // dashboards find the series.
        for change in ["assigned", "revoked"] {
            metrics.cluster_shard_changes.with_label_values(&[change]);
        }
        for outcome in ["exported", "dropped_queue_full", "dropped_export_failed"] {
            metrics.trace_spans.with_label_values(&[outcome]);
        }
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }

    /// Every series in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding our own registry into a String cannot fail.
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }

    /// Events confirmed by `sink`, given by when each was fetched (`Event::fetched_at_ms`):
    /// counted, and their latency since fetching observed.
    pub fn delivered(&self, sink: &str, fetched_at_ms: impl IntoIterator<Item = i64>) {
        let now = mxc::SystemClock.now().timestamp_millis();
        let latency = self.delivery_latency.with_label_values(&[sink]);
        let mut n = 0;
        for fetched_at_ms in fetched_at_ms {
            n += 1;
            // Entries queued before fetch times were recorded carry none.
            if fetched_at_ms > 0 {
                latency.observe(now.saturating_sub(fetched_at_ms).max(0) as f64 / 1000.0);
            }
        }
        self.events
            .with_label_values(&[sink, "delivered"])
            .inc_by(n);
    }

    /// Counts the outbox entries one admission wrote, per sink and event type.
    pub fn count_enqueued(&self, enqueued: &std::collections::BTreeMap<(String, String), usize>) {
        for ((sink, event_type), n) in enqueued {
            self.events_enqueued
                .with_label_values(&[sink, event_type])
                .inc_by(*n as u64);
        }
    }

    /// Count of records with `outcome`.
    pub fn records(&self, outcome: &str) -> u64 {
        self.records.with_label_values(&[outcome]).get()
    }

    /// The trace exporter's counters (see `traces::Traces`).
    pub fn span_counters(&self) -> super::traces::SpanCounters {
        let of = |outcome: &str| self.trace_spans.with_label_values(&[outcome]);
        super::traces::SpanCounters {
            exported: of("exported"),
            dropped_queue_full: of("dropped_queue_full"),
            dropped_export_failed: of("dropped_export_failed"),
        }
    }

    /// Count of events for `sink` with `outcome`.
    pub fn events(&self, sink: &str, outcome: &str) -> u64 {
        self.events.with_label_values(&[sink, outcome]).get()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The MXC client's reports, counted: `mxc_relay_api_*` and `mxc_relay_auth_*`.
impl mxc::Observer for Metrics {
    fn api_call(&self, path: &str, status: &str, elapsed: std::time::Duration) {
        self.api_requests.with_label_values(&[path, status]).inc();
        self.api_latency
            .with_label_values(&[path])
            .observe(elapsed.as_secs_f64());
    }

    fn auth_requested(&self) {
        self.auth_requests.inc();
    }

    fn auth_failed(&self) {
        self.auth_failures.inc();
    }
}
