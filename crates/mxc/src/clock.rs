//! MXC's clock, as its answers tell it: the `Date` header of every response. A cursor on
//! `created` must stop short of MXC's "now", not ours: a relay whose clock runs ahead would
//! move its cursor past records MXC has not ingested yet, and never read them.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

use crate::time::{SharedClock, SystemClock};
use reqwest::header::{HeaderMap, DATE};

/// The offset of MXC's clock from ours, learnt from the last answer that carried a `Date`.
///
/// `Date` has whole seconds and is written after the server's clock read it, so the offset
/// it gives is at most a second behind the truth: an upper bound taken from it errs on the
/// safe side (a little earlier than MXC's now).
#[derive(Debug)]
pub struct MxcClock {
    /// Ours.
    local: SharedClock,
    offset_ms: AtomicI64,
}

impl Default for MxcClock {
    fn default() -> Self {
        MxcClock::new(SystemClock::shared())
    }
}

impl MxcClock {
    pub fn new(local: SharedClock) -> Self {
        MxcClock {
            local,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Reads the `Date` header of an answer received just now.
    pub fn observe(&self, headers: &HeaderMap) {
        let Some(date) = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        else {
            return;
        };
        let offset = date.timestamp_millis() - self.local.now().timestamp_millis();
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// Our now: what MXC's is reckoned from.
    pub fn ours(&self) -> DateTime<Utc> {
        self.local.now()
    }

    /// MXC's now: ours plus the last offset seen (ours alone until an answer carried a date).
    pub fn now(&self) -> DateTime<Utc> {
        self.local.now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Clock;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_date_header_sets_the_offset() {
        let clock = MxcClock::default();
        let off = |clock: &MxcClock| (clock.now() - SystemClock.now()).num_milliseconds();
        assert!(off(&clock).abs() < 100, "ours until an answer tells");
        let ahead = SystemClock.now() + chrono::Duration::seconds(3600);
        let mut headers = HeaderMap::new();
        headers.insert(
            DATE,
            HeaderValue::from_str(&ahead.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).unwrap(),
        );
        clock.observe(&headers);
        let offset = off(&clock);
        assert!((3_598_900..=3_600_100).contains(&offset), "{offset}");
        // A missing or unreadable date leaves it as it was.
        headers.insert(DATE, HeaderValue::from_static("yesterday"));
        clock.observe(&headers);
        assert!((off(&clock) - offset).abs() < 100);
    }
}
