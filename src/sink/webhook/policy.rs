//! When to try again: each entry's retry schedule, and how long the whole endpoint pauses when
//! its receiver says it is overloaded. Pure: no I/O, no clock.

use std::time::Duration;

/// Shortest and longest endpoint pause after throttling answers without `Retry-After`.
const PAUSE_MIN: Duration = Duration::from_secs(1);
const PAUSE_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before each attempt; its length is the number of attempts.
    pub schedule: Vec<Duration>,
    /// ±fraction applied to each delay.
    pub jitter: f64,
    /// `Retry-After` values are cut to this.
    pub retry_after_max: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt that follows `failed` failed attempts, jittered by
    /// `unit` (a number in [-1, 1]); `None` when the schedule is used up.
    pub fn delay_after(&self, failed: u32, unit: f64) -> Option<Duration> {
        let base = *self.schedule.get(failed as usize)?;
        let factor = 1.0 + self.jitter * unit.clamp(-1.0, 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }

    /// The server's `Retry-After`, within bounds.
    pub fn retry_after(&self, asked: Duration) -> Duration {
        asked.min(self.retry_after_max)
    }

    /// How long the endpoint pauses after its `streak`-th throttling answer in a row
    /// (1 s, doubling to 1 min), unless the answer said how long itself.
    pub fn pause(&self, streak: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(asked) => self.retry_after(asked),
            None => PAUSE_MIN
                .saturating_mul(1u32 << streak.min(16))
                .min(PAUSE_MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_schedule;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: default_schedule(),
            jitter: 0.2,
            retry_after_max: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_default_schedule_is_the_specifications() {
        let p = policy();
        let delays: Vec<u64> = (0..8)
            .map(|n| p.delay_after(n, 0.0).unwrap().as_secs())
            .collect();
        assert_eq!(
            delays,
            [0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            "immediately, 5s, 5m, 30m, 2h, 5h, 10h, 10h"
        );
        assert_eq!(p.delay_after(8, 0.0), None, "eight attempts, then give up");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = policy();
        assert_eq!(p.delay_after(2, 1.0), Some(Duration::from_secs(360)));
        assert_eq!(p.delay_after(2, -1.0), Some(Duration::from_secs(240)));
        assert_eq!(p.delay_after(2, 7.0), Some(Duration::from_secs(360)));
    }

    #[test]
    fn pauses_grow_and_retry_after_is_bounded() {
        let p = policy();
        assert_eq!(p.pause(0, None), Duration::from_secs(1));
        assert_eq!(p.pause(3, None), Duration::from_secs(8));
        assert_eq!(p.pause(40, None), Duration::from_secs(60));
        assert_eq!(
            p.pause(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.pause(0, Some(Duration::from_secs(86_400))),
            Duration::from_secs(3600)
        );
    }
}
