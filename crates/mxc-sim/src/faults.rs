//! Fault injection: what the simulator does wrong on purpose, settable at start and at run
//! time through `POST /_sim/faults`.

use serde::{Deserialize, Serialize};

/// The largest clock offset accepted: a week either way.
pub const MAX_CLOCK_OFFSET_MS: i64 = 7 * 86_400_000;

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
    /// Report queries (GET, or opening an export) that filter or sort on `created` get 400,
    /// as an index without that field would answer.
    pub refuse_created: bool,
    /// Report queries filtering on `created` are answered as if their `filter` were absent
    /// (sorted as asked): a server that ignores the range, which the relay must notice.
    pub ignore_created_filter: bool,
    /// Share of authorizations (chosen per record, always the same ones) that queries
    /// filtering or sorting on `created` never return; transaction-time queries and exports
    /// do.
    pub hide_from_created_rate: f64,
    /// The simulator's clock runs this far ahead (+) or behind (−) the machine's, in
    /// milliseconds: arrivals and their `created`, visibility, `dr_quick`, `/_sim/generate`
    /// and the `Date` header follow it (JWT `iat`/`exp` do not).
    pub clock_offset_ms: i64,
    /// Every Nth request continuing an export scroll finds it gone (404 "No search context
    /// found", as once MXC's keep-alive passed); 0: never.
    pub expire_scroll_every: u32,
}

/// A fault setting out of its range; the text names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("{name} must be between 0 and 1, got {rate}")]
    Rate { name: &'static str, rate: f64 },
    #[error("error_status must be 400 to 599, got {0}")]
    ErrorStatus(u16),
    #[error("clock_offset_ms must be between -{MAX_CLOCK_OFFSET_MS} and {MAX_CLOCK_OFFSET_MS} (a week), got {0}")]
    ClockOffset(i64),
}

impl Faults {
    /// Whether every setting is within its range.
    pub fn validate(&self) -> Result<(), FaultError> {
        for (name, rate) in [
            ("throttle_rate", self.throttle_rate),
            ("error_rate", self.error_rate),
            ("truncate_rate", self.truncate_rate),
            ("malformed_rate", self.malformed_rate),
            ("hide_from_created_rate", self.hide_from_created_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(FaultError::Rate { name, rate });
            }
        }
        if let Some(status) = self.error_status {
            if !(400..=599).contains(&status) {
                return Err(FaultError::ErrorStatus(status));
            }
        }
        if !(-MAX_CLOCK_OFFSET_MS..=MAX_CLOCK_OFFSET_MS).contains(&self.clock_offset_ms) {
            return Err(FaultError::ClockOffset(self.clock_offset_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_faults_are_validated() {
        let ok = Faults {
            refuse_created: true,
            hide_from_created_rate: 0.5,
            clock_offset_ms: -3_600_000,
            ..Faults::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad_rate = Faults {
            hide_from_created_rate: 1.5,
            ..Faults::default()
        };
        assert_eq!(
            bad_rate.validate().unwrap_err().to_string(),
            "hide_from_created_rate must be between 0 and 1, got 1.5"
        );
        let bad_offset = Faults {
            clock_offset_ms: MAX_CLOCK_OFFSET_MS + 1,
            ..Faults::default()
        };
        assert!(bad_offset
            .validate()
            .unwrap_err()
            .to_string()
            .contains("clock_offset_ms"));
    }
}
