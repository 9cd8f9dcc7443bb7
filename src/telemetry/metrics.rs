//! Metric definitions: one place that names every series. Components get a [`Metrics`] handed
//! in and record through its methods, which also write the matching log line where one is due.

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
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("{name}: {e}"));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let polls = counter_vec(
            "mxc_relay_polls_total",
            "Poll cycles by outcome.",
            &["outcome"],
        );
        let records = counter_vec(
            "mxc_relay_records_total",
            "Records by outcome.",
            &["outcome"],
        );
        let events = counter_vec(
            "mxc_relay_events_total",
            "Events by sink and outcome.",
            &["sink", "outcome"],
        );
        let poll_lag = GaugeVec::new(
            Opts::new(
                "mxc_relay_poll_lag_seconds",
                "Seconds between now and the XMID's cursor.",
            ),
            &["xmid"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = registry.register(Box::new(poll_lag.clone()));
        let poll_lag_max = Gauge::new(
            "mxc_relay_poll_lag_max_seconds",
            "The largest poll lag over all XMIDs.",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = registry.register(Box::new(poll_lag_max.clone()));
        let rate_limiter_waits = IntCounter::new(
            "mxc_relay_rate_limiter_waits_total",
            "MXC requests that waited for the global rate limiter.",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = registry.register(Box::new(rate_limiter_waits.clone()));
        let webhook_disabled = IntGaugeVec::new(
            Opts::new(
                "mxc_relay_webhook_endpoint_disabled",
                "1 when the webhook sink's endpoint is disabled (410 Gone, or failing too long).",
            ),
            &["sink"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = registry.register(Box::new(webhook_disabled.clone()));
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("{name}: {e}"));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let int_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("{name}: {e}"));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let poll_lag_quantiles = gauge_vec(
            "mxc_relay_poll_lag_quantile_seconds",
            "Poll lag quantiles over all XMIDs.",
            &["quantile"],
        );
        let outbox_events = int_gauge_vec(
            "mxc_relay_outbox_events",
            "Events waiting in the sink's outbox.",
            &["sink"],
        );
        let dead_letters = int_gauge_vec(
            "mxc_relay_dead_letters",
            "Events the sink refused for good or gave up on.",
            &["sink"],
        );
        let seen_ids = IntGauge::new(
            "mxc_relay_seen_ids",
            "Record ids remembered for deduplication.",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = registry.register(Box::new(seen_ids.clone()));
        let token_expiry = Gauge::new(
            "mxc_relay_token_expiry_seconds",
            "Seconds until the cached MXC token expires (0 without one).",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = registry.register(Box::new(token_expiry.clone()));
        let auth_requests = IntCounter::new(
            "mxc_relay_auth_requests_total",
            "Calls made to the MXC Security API for a token.",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = registry.register(Box::new(auth_requests.clone()));
        let build_info = int_gauge_vec(
            "mxc_relay_build_info",
            "Always 1, labelled with the version.",
            &["version"],
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
