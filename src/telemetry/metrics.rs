//! Metric definitions: one place that names every series. Components get a [`Metrics`] handed
//! in and record through its methods, which also write the matching log line where one is due.

use prometheus::core::Collector;
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
    /// `rejected`, `outside_window`.
    pub records: IntCounterVec,
    /// Events by sink and outcome: `delivered`, `failed` (will retry), `dead_lettered`.
    pub events: IntCounterVec,
    /// Seconds between now and each XMID's cursor.
    pub poll_lag: GaugeVec,
    /// The largest poll lag over all XMIDs.
    pub poll_lag_max: Gauge,
    /// Requests that waited for the global rate limiter.
    pub rate_limiter_waits: IntCounter,
    /// 1 for each webhook sink whose endpoint is disabled (410 Gone, or failing too long).
    pub webhook_disabled: IntGaugeVec,
    /// Poll lag quantiles over all XMIDs (`quantile` = 0.5, 0.9, 0.99).
    pub poll_lag_quantiles: GaugeVec,
    /// Events waiting in each sink's outbox.
    pub outbox_events: IntGaugeVec,
    /// Dead letters per sink.
    pub dead_letters: IntGaugeVec,
    /// Record ids remembered for deduplication.
    pub seen_ids: IntGauge,
    /// Seconds until the cached MXC token expires (0 without one).
    pub token_expiry: Gauge,
    /// Calls made to the MXC Security API for a token.
    pub auth_requests: IntCounter,
    /// Always 1, labelled with the version.
    pub build_info: IntGaugeVec,
}

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
        let poll_lag_quantiles = register(
            r,
            GaugeVec::new(
                Opts::new(
                    "mxc_relay_poll_lag_quantile_seconds",
                    "Poll lag quantiles over all XMIDs.",
                ),
                &["quantile"],
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
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            registry,
            poll_lag_quantiles,
            outbox_events,
            dead_letters,
            seen_ids,
            token_expiry,
            auth_requests,
            build_info,
            webhook_disabled,
            polls,
            records,
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

    /// Count of records with `outcome`.
    pub fn records(&self, outcome: &str) -> u64 {
        self.records.with_label_values(&[outcome]).get()
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
