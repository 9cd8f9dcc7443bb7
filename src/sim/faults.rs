//! Fault injection: what the simulator does wrong on purpose, settable at start and at run
//! time through `POST /_sim/faults`.

use serde::{Deserialize, Serialize};

/// Faults applied to the API endpoints (`/report/…`, `/boarding/…`). Rates are probabilities
/// per request, from 0 to 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    pub retry_after_secs: u64,
    /// Share of requests answered with `error_status` (default 503).
    pub error_rate: f64,
    pub error_status: Option<u16>,
    /// Delay added before answering, in milliseconds.
    pub latency_ms: u64,
    /// Share of 200 answers whose body is cut in half.
    pub truncate_rate: f64,
    /// Share of 200 answers replaced by a proxy's HTML page.
    pub malformed_rate: f64,
    /// Tokens older than this many seconds are refused with 401, before their `exp`.
    pub jwt_max_age_secs: Option<u64>,
    /// Authorization queries naming any of these XMIDs get 500.
    pub fail_xmids: Vec<String>,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("throttle_rate", self.throttle_rate),
            ("error_rate", self.error_rate),
            ("truncate_rate", self.truncate_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if let Some(status) = self.error_status {
            if !(400..=599).contains(&status) {
                return Err(format!("error_status must be 400 to 599, got {status}"));
            }
        }
        Ok(())
    }
}
