//! Metric definitions: one place that names every series. Components get a [`Metrics`] handed
//! in and record through its methods, which also write the matching log line where one is due.

use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every series mxc-relay exports, on its own registry (no global state).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Poll cycles by outcome (`ok`, `error`).
    pub polls: IntCounterVec,
    /// Records by outcome: `fetched`, `new`, `duplicate`, `skipped_no_id`, `rejected`,
    /// `before_start`.
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
        Metrics {
            registry,
            webhook_disabled,
            polls,
            records,
            events,
            poll_lag,
            poll_lag_max,
            rate_limiter_waits,
        }
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
