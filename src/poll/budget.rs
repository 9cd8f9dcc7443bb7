//! The request budget every poller (and the sweep) spends: `pollers.requests_per_second`, the
//! API key's. Alone, an instance spends all of it; in a cluster, each instance spends the share
//! of the shards it owns, set again on every rebalance, so the fleet never asks more of the key
//! than the whole (shards are revoked before they are assigned elsewhere).
//!
//! A new share starts empty (its burst refills at its rate), and requests waiting on the old
//! one move to it: were either not so, every re-division would let an instance send its old
//! rate and its new burst at once, and five instances re-dividing together in a rolling
//! restart outran the key (429s).

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A rate limiter whose rate can be re-divided while it is used.
pub struct Budget {
    /// The key's whole budget.
    requests_per_second: f64,
    burst: u32,
    current: RwLock<Share>,
    /// Wakes the waiters of a share that was replaced.
    changed: tokio::sync::Notify,
}

struct Share {
    requests_per_second: f64,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl Budget {
    /// The whole budget, all of it spent here.
    pub fn new(requests_per_second: f64, burst: u32) -> Budget {
        Budget {
            requests_per_second,
            burst,
            current: RwLock::new(Share::of(requests_per_second, burst)),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// From now on, spends `owned / total` of the whole (a cluster's shards), starting with
    /// nothing in hand; waiters move to the new share.
    pub fn share(&self, owned: usize, total: usize) {
        let fraction = if total == 0 {
            1.0
        } else {
            owned.min(total) as f64 / total as f64
        };
        let rate = self.requests_per_second * fraction;
        let burst = ((f64::from(self.burst) * fraction).floor() as u32).max(1);
        if let Ok(mut current) = self.current.write() {
            if current.requests_per_second != rate {
                let share = Share::of(rate, burst);
                // Empty: what the old share had in hand may have been spent already.
                let _ = share
                    .limiter
                    .check_n(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
                *current = share;
                self.changed.notify_waiters();
            }
        }
    }

    /// Requests per second spent here now.
    pub fn requests_per_second(&self) -> f64 {
        self.current
            .read()
            .map_or(self.requests_per_second, |c| c.requests_per_second)
    }

    /// Takes one request now if the budget has it.
    pub fn try_take(&self) -> bool {
        self.limiter().check().is_ok()
    }

    /// Waits for one request of the budget (of the share in force when it is granted).
    pub async fn take(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the limiter is read: a change after this is not missed.
            changed.as_mut().enable();
            let limiter = self.limiter();
            tokio::select! {
                _ = limiter.until_ready() => return,
                _ = changed => {}
            }
        }
    }

    fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        match self.current.read() {
            Ok(current) => current.limiter.clone(),
            Err(poisoned) => poisoned.into_inner().limiter.clone(),
        }
    }
}

impl Share {
    fn of(requests_per_second: f64, burst: u32) -> Share {
        // No shard owned: nothing to poll; a trickle keeps a stray request from waiting forever.
        let rate = requests_per_second.max(1e-3);
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Share {
            requests_per_second,
            limiter: Arc::new(RateLimiter::direct(quota)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests the budget grants at once, from full.
    fn granted_at_once(budget: &Budget) -> usize {
        (0..1_000).take_while(|_| budget.try_take()).count()
    }

    #[test]
    fn a_share_of_the_shards_gets_that_share_of_the_rate_and_burst() {
        let budget = Budget::new(100.0, 40);
        assert_eq!(budget.requests_per_second(), 100.0);
        assert_eq!(granted_at_once(&budget), 40);
        budget.share(3, 12);
        assert_eq!(budget.requests_per_second(), 25.0);
        assert_eq!(granted_at_once(&budget), 0, "a new share starts empty");
        // Its burst, a quarter, refills in 0.4 s at 25/s.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(granted_at_once(&budget), 10);
        budget.share(12, 12);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(granted_at_once(&budget), 40);
        budget.share(0, 12);
        assert_eq!(budget.requests_per_second(), 0.0);
        assert_eq!(granted_at_once(&budget), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_move_to_a_new_share_and_never_spend_two_at_once() {
        // 20 waiters on a share of 1/s; the share becomes 50/s: they all go within a second
        // (on the old one they would take 20 s) …
        let budget = Arc::new(Budget::new(100.0, 1));
        budget.share(1, 100);
        let started = std::time::Instant::now();
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let b = budget.clone();
                tokio::spawn(async move { b.take().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        budget.share(50, 100);
        for w in waiters {
            w.await.unwrap();
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
        // … and at the new rate only: 20 at 50/s take at least 0.35 s after the change.
        assert!(took >= Duration::from_millis(450), "{took:?}");
    }

    #[tokio::test]
    async fn a_share_paces_requests_at_its_rate() {
        let budget = Budget::new(100.0, 1);
        budget.share(1, 10);
        let started = std::time::Instant::now();
        for _ in 0..6 {
            budget.take().await;
        }
        // A new share starts empty: 6 at 10/s (the whole budget would take 50 ms).
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(550), "{took:?}");
    }
}
