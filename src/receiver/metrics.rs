//! The receiver's counts — requests by outcome, connections by fate — and their Prometheus
//! text, served on the receiver's own `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http_kit::ServerStats;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Signature and body good: answered with the configured behaviour.
    Verified,
    /// Signature missing, wrong or stale: 401.
    BadSignature,
    /// Signed, but the body is not a JSON object: 400.
    BadBody,
}

#[derive(Default)]
pub(super) struct Counts {
    verified: AtomicU64,
    bad_signature: AtomicU64,
    bad_body: AtomicU64,
}

impl Counts {
    fn counter(&self, outcome: Outcome) -> &AtomicU64 {
        match outcome {
            Outcome::Verified => &self.verified,
            Outcome::BadSignature => &self.bad_signature,
            Outcome::BadBody => &self.bad_body,
        }
    }

    pub(super) fn add(&self, outcome: Outcome) {
        self.counter(outcome).fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn get(&self, outcome: Outcome) -> u64 {
        self.counter(outcome).load(Ordering::Relaxed)
    }
}

/// The receiver's requests and its server's connections, at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverStats {
    pub verified: u64,
    pub bad_signature: u64,
    pub bad_body: u64,
    pub connections: ServerStats,
}

impl ReceiverStats {
    /// Prometheus text format.
    pub fn render(&self) -> String {
        let c = &self.connections;
        let mut text = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(text, "{name}{labels} {value}");
            }
        };
        family(
            "mxc_relay_receiver_requests_total",
            "counter",
            "Deliveries received, by outcome (bad_signature: 401; bad_body: signed but not a JSON object, 400).",
            &[
                ("{outcome=\"verified\"}", self.verified),
                ("{outcome=\"bad_signature\"}", self.bad_signature),
                ("{outcome=\"bad_body\"}", self.bad_body),
            ],
        );
        family(
            "mxc_relay_receiver_connections_total",
            "counter",
            "Connections accepted, and those closed by the receiver: shed to make room, or timed out.",
            &[
                ("{event=\"accepted\"}", c.accepted),
                ("{event=\"shed\"}", c.shed),
                ("{event=\"timed_out\"}", c.timed_out),
            ],
        );
        family(
            "mxc_relay_receiver_accept_errors_total",
            "counter",
            "Accepts that failed for want of descriptors or memory.",
            &[("", c.accept_errors)],
        );
        family(
            "mxc_relay_receiver_connections_open",
            "gauge",
            "Connections open now.",
            &[("", c.open)],
        );
        text
    }
}
