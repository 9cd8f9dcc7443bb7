//! Metric definitions: one place that names every series. Components get a [`Metrics`] handed
//! in and record through its methods, which also write the matching log line where one is due.

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec};

use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

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
        let registry = Registry::new();
        let r = &registry;
        let polls = register(
            r,
            IntCounterVec::new(
                Opts::new("mxc_relay_polls_total", "Poll cycles by outcome."),
                &["outcome"],
            ),
        );
        let records = register(
            r,
            IntCounterVec::new(
                Opts::new("mxc_relay_records_total", "Records by outcome."),
                &["outcome"],
            ),
        );
        let events = register(
            r,
            IntCounterVec::new(
                Opts::new("mxc_relay_events_total", "Events by sink and outcome."),
                &["sink", "outcome"],
            ),
        );
        let cursor_fallback = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "mxc_relay_cursor_fallback",
                    "1 for a resource polled by transaction time because MXC refused its created queries.",
                ),
                &["resource"],
            ),
        );
        let created_filter_ignored = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "mxc_relay_created_filter_ignored",
                    "1 for a resource whose created queries MXC answered with records outside their range (it ignores the filter).",
                ),
                &["resource"],
            ),
        );
        let sweeps = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "mxc_relay_reconcile_sweeps_total",
                    "Reconciliation sweeps by outcome: ok, partial (stopped at its share of the request budget; the next goes on from there), error.",
                ),
                &["outcome"],
            ),
        );
        let poll_lag = register(
            r,
            GaugeVec::new(
                Opts::new(
                    "mxc_relay_poll_lag_seconds",
                    "Seconds between now and the XMID's cursor.",
                ),
                &["xmid"],
            ),
        );
        let poll_lag_max = register(
            r,
            Gauge::new(
                "mxc_relay_poll_lag_max_seconds",
                "The largest poll lag over all XMIDs.",
            ),
        );
        let rate_limiter_waits = register(
            r,
            IntCounter::new(
                "mxc_relay_rate_limiter_waits_total",
                "MXC requests that waited for the global rate limiter.",
            ),
        );
        let webhook_disabled = register(r, IntGaugeVec::new(Opts::new("mxc_relay_webhook_endpoint_disabled", "1 when the webhook sink's endpoint is disabled (410 Gone, or failing too long)."), &["sink"]));
        let poll_lag_percentiles = register(
            r,
            GaugeVec::new(
                Opts::new(
                    "mxc_relay_poll_lag_percentile_seconds",
                    "Poll lag percentiles over all XMIDs.",
                ),
                &["percentile"],
            ),
        );
        let outbox_events = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "mxc_relay_outbox_events",
                    "Events waiting in the sink's outbox.",
                ),
                &["sink"],
            ),
        );
        let dead_letters = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "mxc_relay_dead_letters",
                    "Events the sink refused for good or gave up on.",
                ),
                &["sink"],
            ),
        );
        let seen_ids = register(
            r,
            IntGauge::new(
                "mxc_relay_seen_ids",
                "Record ids remembered for deduplication.",
            ),
        );
        let cluster_shards = register(
            r,
            IntGauge::new(
                "mxc_relay_cluster_shards",
                "In a cluster: the shards this instance owns (0 outside one).",
            ),
        );
        let cluster_shard_changes = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "mxc_relay_cluster_shard_changes_total",
                    "In a cluster: shards assigned to this instance, and revoked from it (handed over).",
                ),
                &["change"],
            ),
        );
        for change in ["assigned", "revoked"] {
            cluster_shard_changes.with_label_values(&[change]);
        }
        let roster_merchants = register(
            r,
            IntGauge::new(
                "mxc_relay_roster_merchants",
                "Merchants polled because the roster lists them (grace periods included).",
            ),
        );
        let roster_last_read = register(
            r,
            Gauge::new(
                "mxc_relay_roster_last_read_timestamp_seconds",
                "When the roster was last read successfully (Unix seconds; 0: never).",
            ),
        );
        let roster_added = register(
            r,
            IntCounter::new(
                "mxc_relay_roster_added_total",
                "Merchants that joined the roster and started polling.",
            ),
        );
        let roster_removed = register(
            r,
            IntCounter::new(
                "mxc_relay_roster_removed_total",
                "Merchants that left the roster (or closed) and stopped polling after the grace period.",
            ),
        );
        let store_free_bytes = register(
            r,
            IntGauge::new(
                "mxc_relay_store_free_bytes",
                "Free space on the store's file system; polling pauses below store.min_free_mib.",
            ),
        );
        let store_disk_bytes = register(
            r,
            IntGauge::new(
                "mxc_relay_store_disk_bytes",
                "Disk space the store's database file takes, sampled every 10 s.",
            ),
        );
        let token_expiry = register(
            r,
            Gauge::new(
                "mxc_relay_token_expiry_seconds",
                "Seconds until the cached MXC token expires (0 without one).",
            ),
        );
        let auth_requests = register(
            r,
            IntCounter::new(
                "mxc_relay_auth_requests_total",
                "Calls made to the MXC Security API for a token.",
            ),
        );
        let build_info = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "mxc_relay_build_info",
                    "Always 1, labelled with the version.",
                ),
                &["version"],
            ),
        );
        let auth_failures = register(
            r,
            IntCounter::new(
                "mxc_relay_auth_failures_total",
                "Security API calls that did not yield a token.",
            ),
        );
        let api_requests = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "mxc_relay_api_requests_total",
                    "MXC calls by endpoint and status (HTTP code, timeout or error).",
                ),
                &["endpoint", "status"],
            ),
        );
        let api_latency = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "mxc_relay_api_request_duration_seconds",
                    "MXC call latency by endpoint.",
                ),
                &["endpoint"],
            ),
        );
        let delivery_latency = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "mxc_relay_delivery_latency_seconds",
                    "From fetching a record to the sink confirming its event.",
                )
                .buckets(DELIVERY_BUCKETS.to_vec()),
                &["sink"],
            ),
        );
        let events_enqueued = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "mxc_relay_events_enqueued_total",
                    "Events queued for a sink, by event type.",
                ),
                &["sink", "event_type"],
            ),
        );
        let trace_spans = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "mxc_relay_trace_spans_total",
                    "Trace spans by outcome: exported, or dropped (queue full, export failed).",
                ),
                &["outcome"],
            ),
        );
        // Exported from the start (0 with traces off), so dashboards find the series.
        for outcome in ["exported", "dropped_queue_full", "dropped_export_failed"] {
            trace_spans.with_label_values(&[outcome]);
        }
        let sink_unreachable = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "mxc_relay_sink_unreachable",
                    "1 while the sink's destination does not answer its probe.",
                ),
                &["sink"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            registry,
            trace_spans,
            auth_failures,
            api_requests,
            api_latency,
            delivery_latency,
            events_enqueued,
            sink_unreachable,
            poll_lag_percentiles,
            outbox_events,
            dead_letters,
            seen_ids,
            store_free_bytes,
            store_disk_bytes,
            cluster_shards,
            cluster_shard_changes,
            roster_merchants,
            roster_last_read,
            roster_added,
            roster_removed,
            token_expiry,
            auth_requests,
            build_info,
            webhook_disabled,
            polls,
            records,
            cursor_fallback,
            created_filter_ignored,
            sweeps,
            events,
            poll_lag,
            poll_lag_max,
            rate_limiter_waits,
        }
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
        let now = chrono::Utc::now().timestamp_millis();
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

/// Registers a metric whose definition is ours: its name and labels are constants, so an
/// error is a programming mistake, caught by every test.
fn register<C: Collector + Clone + 'static>(registry: &Registry, made: prometheus::Result<C>) -> C {
    let metric = made.unwrap_or_else(|e| unreachable!("invalid metric definition: {e}"));
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        unreachable!("metric registered twice: {e}");
    }
    metric
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
