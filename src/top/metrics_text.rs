//! The few series `top` reads from the service's `/metrics` (Prometheus text), summed.

use std::collections::BTreeMap;

/// The counters and gauges of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub records_new: f64,
    pub records_duplicate: f64,
    pub records_reconciled: f64,
    /// Events queued of a `*.declined` type.
    pub declines: f64,
    /// MXC requests that waited for the request budget.
    pub budget_waits: f64,
    /// MXC answers with status 429.
    pub throttled: f64,
    pub lag_p50: f64,
    pub lag_p99: f64,
    pub lag_max: f64,
    /// Until the MXC token expires (0: none held).
    pub token_expiry: f64,
    /// In a cluster, the shards this instance owns.
    pub shards: f64,
    /// Events queued, by event type (each resource's types: `authorization.created`,
    /// `dispute.created` …).
    pub enqueued: BTreeMap<String, f64>,
    /// Per sink: events delivered, and attempts that failed.
    pub delivered: BTreeMap<String, f64>,
    pub failed: BTreeMap<String, f64>,
}

impl Counters {
    /// Reads what it knows from Prometheus text; other series are ignored.
    pub fn parse(text: &str) -> Counters {
        let mut c = Counters::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            match name {
                "mxc_relay_records_total" => match label("outcome") {
                    "new" => c.records_new += value,
                    "duplicate" => c.records_duplicate += value,
                    "reconciled" => c.records_reconciled += value,
                    _ => {}
                },
                "mxc_relay_events_enqueued_total" => {
                    let event_type = label("event_type");
                    if event_type.ends_with(".declined") {
                        c.declines += value;
                    }
                    *c.enqueued.entry(event_type.to_string()).or_default() += value;
                }
                "mxc_relay_rate_limiter_waits_total" => c.budget_waits += value,
                "mxc_relay_api_requests_total" if label("status") == "429" => c.throttled += value,
                "mxc_relay_poll_lag_percentile_seconds" => match label("percentile") {
                    "50" => c.lag_p50 = value,
                    "99" => c.lag_p99 = value,
                    _ => {}
                },
                "mxc_relay_poll_lag_max_seconds" => c.lag_max = value,
                "mxc_relay_token_expiry_seconds" => c.token_expiry = value,
                "mxc_relay_cluster_shards" => c.shards = value,
                "mxc_relay_events_total" => {
                    let sink = label("sink").to_string();
                    match label("outcome") {
                        "delivered" => *c.delivered.entry(sink).or_default() += value,
                        "failed" => *c.failed.entry(sink).or_default() += value,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        c
    }
}

/// `a="x",b="y"` as pairs (values unescaped).
fn labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(match next {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => value.push(ch),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_top_reads_are_summed_and_others_ignored() {
        let text = r#"# HELP mxc_relay_records_total Records by outcome.
mxc_relay_records_total{outcome="new"} 120
mxc_relay_records_total{outcome="duplicate"} 7
mxc_relay_events_enqueued_total{event_type="authorization.declined",sink="alerts"} 4
mxc_relay_events_enqueued_total{event_type="authorization.created",sink="kafka"} 120
mxc_relay_events_total{outcome="delivered",sink="kafka"} 100
mxc_relay_events_total{outcome="failed",sink="alerts"} 2
mxc_relay_api_requests_total{endpoint="/report",status="429"} 3
mxc_relay_api_requests_total{endpoint="/report",status="200"} 30
mxc_relay_poll_lag_percentile_seconds{percentile="99"} 8.5
mxc_relay_poll_lag_max_seconds 12
mxc_relay_other{a="b,\"c"} 1
"#;
        let c = Counters::parse(text);
        assert_eq!((c.records_new, c.records_duplicate), (120.0, 7.0));
        assert_eq!(c.declines, 4.0);
        assert_eq!(c.enqueued["authorization.created"], 120.0);
        assert_eq!(c.delivered["kafka"], 100.0);
        assert_eq!(c.failed["alerts"], 2.0);
        assert_eq!(c.throttled, 3.0);
        assert_eq!((c.lag_p99, c.lag_max), (8.5, 12.0));
        assert_eq!(
            labels(r#"a="b,\"c",d="e""#),
            vec![("a".into(), "b,\"c".into()), ("d".into(), "e".into())]
        );
    }
}
