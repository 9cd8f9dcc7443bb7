//! The name, help text and labels of every series, grouped by what they watch, and the
//! registering of one from its definition.

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// One series: its name, help text and labels (none for a plain counter or gauge).
pub(super) struct Def {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const fn def(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Def {
    Def { name, help, labels }
}

impl Def {
    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    pub(super) fn int_counter(&self, r: &Registry) -> IntCounter {
        register(r, IntCounter::with_opts(self.opts()))
    }

    pub(super) fn int_counter_vec(&self, r: &Registry) -> IntCounterVec {
        register(r, IntCounterVec::new(self.opts(), self.labels))
    }

    pub(super) fn int_gauge(&self, r: &Registry) -> IntGauge {
        register(r, IntGauge::with_opts(self.opts()))
    }

    pub(super) fn int_gauge_vec(&self, r: &Registry) -> IntGaugeVec {
        register(r, IntGaugeVec::new(self.opts(), self.labels))
    }

    pub(super) fn gauge(&self, r: &Registry) -> Gauge {
        register(r, Gauge::with_opts(self.opts()))
    }

    pub(super) fn gauge_vec(&self, r: &Registry) -> GaugeVec {
        register(r, GaugeVec::new(self.opts(), self.labels))
    }

    pub(super) fn histogram_vec(&self, r: &Registry, buckets: &[f64]) -> HistogramVec {
        let opts = HistogramOpts::new(self.name, self.help).buckets(buckets.to_vec());
        register(r, HistogramVec::new(opts, self.labels))
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

// Polling.
pub(super) const POLLS: Def = def(
    "mxc_relay_polls_total",
    "Poll cycles by outcome.",
    &["outcome"],
);
pub(super) const RECORDS: Def = def(
    "mxc_relay_records_total",
    "Records by outcome.",
    &["outcome"],
);
pub(super) const CURSOR_FALLBACK: Def = def(
    "mxc_relay_cursor_fallback",
    "1 for a resource polled by transaction time because MXC refused its created queries.",
    &["resource"],
);
pub(super) const CREATED_FILTER_IGNORED: Def = def(
    "mxc_relay_created_filter_ignored",
    "1 for a resource whose created queries MXC answered with records outside their range (it ignores the filter).",
    &["resource"],
);
pub(super) const SWEEPS: Def = def(
    "mxc_relay_reconcile_sweeps_total",
    "Reconciliation sweeps by outcome: ok, partial (stopped at its share of the request budget; the next goes on from there), error.",
    &["outcome"],
);
pub(super) const POLL_LAG: Def = def(
    "mxc_relay_poll_lag_seconds",
    "Seconds between now and the XMID's cursor.",
    &["xmid"],
);
pub(super) const POLL_LAG_MAX: Def = def(
    "mxc_relay_poll_lag_max_seconds",
    "The largest poll lag over all XMIDs.",
    &[],
);
pub(super) const POLL_LAG_PERCENTILES: Def = def(
    "mxc_relay_poll_lag_percentile_seconds",
    "Poll lag percentiles over all XMIDs.",
    &["percentile"],
);
pub(super) const RATE_LIMITER_WAITS: Def = def(
    "mxc_relay_rate_limiter_waits_total",
    "MXC requests that waited for the global rate limiter.",
    &[],
);

// Sinks and their outboxes.
pub(super) const EVENTS: Def = def(
    "mxc_relay_events_total",
    "Events by sink and outcome.",
    &["sink", "outcome"],
);
pub(super) const EVENTS_ENQUEUED: Def = def(
    "mxc_relay_events_enqueued_total",
    "Events queued for a sink, by event type.",
    &["sink", "event_type"],
);
pub(super) const DELIVERY_LATENCY: Def = def(
    "mxc_relay_delivery_latency_seconds",
    "From fetching a record to the sink confirming its event.",
    &["sink"],
);
pub(super) const WEBHOOK_DISABLED: Def = def(
    "mxc_relay_webhook_endpoint_disabled",
    "1 when the webhook sink's endpoint is disabled (410 Gone, or failing too long).",
    &["sink"],
);
pub(super) const SINK_UNREACHABLE: Def = def(
    "mxc_relay_sink_unreachable",
    "1 while the sink's destination does not answer its probe.",
    &["sink"],
);
pub(super) const OUTBOX_EVENTS: Def = def(
    "mxc_relay_outbox_events",
    "Events waiting in the sink's outbox.",
    &["sink"],
);
pub(super) const DEAD_LETTERS: Def = def(
    "mxc_relay_dead_letters",
    "Events the sink refused for good or gave up on.",
    &["sink"],
);

// The store.
pub(super) const SEEN_IDS: Def = def(
    "mxc_relay_seen_ids",
    "Record ids remembered for deduplication.",
    &[],
);
pub(super) const STORE_FREE_BYTES: Def = def(
    "mxc_relay_store_free_bytes",
    "Free space on the store's file system; polling pauses below store.min_free_mib.",
    &[],
);
pub(super) const STORE_DISK_BYTES: Def = def(
    "mxc_relay_store_disk_bytes",
    "Disk space the store's database file takes, sampled every 10 s.",
    &[],
);

// The roster and the cluster.
pub(super) const ROSTER_MERCHANTS: Def = def(
    "mxc_relay_roster_merchants",
    "Merchants polled because the roster lists them (grace periods included).",
    &[],
);
pub(super) const ROSTER_LAST_READ: Def = def(
    "mxc_relay_roster_last_read_timestamp_seconds",
    "When the roster was last read successfully (Unix seconds; 0: never).",
    &[],
);
pub(super) const ROSTER_ADDED: Def = def(
    "mxc_relay_roster_added_total",
    "Merchants that joined the roster and started polling.",
    &[],
);
pub(super) const ROSTER_REMOVED: Def = def(
    "mxc_relay_roster_removed_total",
    "Merchants that left the roster (or closed) and stopped polling after the grace period.",
    &[],
);
pub(super) const CLUSTER_SHARDS: Def = def(
    "mxc_relay_cluster_shards",
    "In a cluster: the shards this instance owns (0 outside one).",
    &[],
);
pub(super) const CLUSTER_SHARD_CHANGES: Def = def(
    "mxc_relay_cluster_shard_changes_total",
    "In a cluster: shards assigned to this instance, and revoked from it (handed over).",
    &["change"],
);

// The MXC client.
pub(super) const API_REQUESTS: Def = def(
    "mxc_relay_api_requests_total",
    "MXC calls by endpoint and status (HTTP code, timeout or error).",
    &["endpoint", "status"],
);
pub(super) const API_LATENCY: Def = def(
    "mxc_relay_api_request_duration_seconds",
    "MXC call latency by endpoint.",
    &["endpoint"],
);
pub(super) const TOKEN_EXPIRY: Def = def(
    "mxc_relay_token_expiry_seconds",
    "Seconds until the cached MXC token expires (0 without one).",
    &[],
);
pub(super) const AUTH_REQUESTS: Def = def(
    "mxc_relay_auth_requests_total",
    "Calls made to the MXC Security API for a token.",
    &[],
);
pub(super) const AUTH_FAILURES: Def = def(
    "mxc_relay_auth_failures_total",
    "Security API calls that did not yield a token.",
    &[],
);

// The process.
pub(super) const TRACE_SPANS: Def = def(
    "mxc_relay_trace_spans_total",
    "Trace spans by outcome: exported, or dropped (queue full, export failed).",
    &["outcome"],
);
pub(super) const BUILD_INFO: Def = def(
    "mxc_relay_build_info",
    "Always 1, labelled with the version.",
    &["version"],
);
