//! MXC's rate limit on an API key, as an API gateway applies it: a token bucket of one second's
//! requests, refilled at the key's rate; a request that finds it empty is answered 429 with
//! `Retry-After` (whole seconds until a request is allowed again, at least 1). The simulator has
//! one API key, so the bucket covers every API request. Off unless configured.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) struct KeyLimit {
    rate: f64,
    burst: f64,
    /// Tokens left, as of the instant.
    bucket: Mutex<(f64, Instant)>,
}

impl KeyLimit {
    pub(super) fn new(requests_per_second: f64) -> KeyLimit {
        let burst = requests_per_second.max(1.0);
        KeyLimit {
            rate: requests_per_second,
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a request from the bucket, or says how long until one is there.
    pub(super) fn admit(&self) -> Result<(), Duration> {
        let Ok(mut bucket) = self.bucket.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let (tokens, since) = *bucket;
        let tokens = (tokens + now.duration_since(since).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(())
        } else {
            *bucket = (tokens, now);
            Err(Duration::from_secs_f64(
                (1.0 - tokens) / self.rate.max(1e-6),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_requests_at_once_then_the_rate() {
        let limit = KeyLimit::new(20.0);
        assert_eq!((0..100).filter(|_| limit.admit().is_ok()).count(), 20);
        let wait = limit.admit().unwrap_err();
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        std::thread::sleep(Duration::from_millis(260));
        let more = (0..100).filter(|_| limit.admit().is_ok()).count();
        assert!((4..=7).contains(&more), "{more} after 260 ms at 20/s");
    }
}
