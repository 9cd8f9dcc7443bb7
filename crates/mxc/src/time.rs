//! The time source. Code that stamps or schedules wall-clock times takes a [`Clock`] instead
//! of calling `Utc::now()`, so that tests can run it on paused time.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// A clock shared by the tasks of one program.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's clock: what production runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    // The one reading of the machine's wall clock: everything else takes a `Clock`.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        #[allow(clippy::disallowed_methods)]
        Utc::now()
    }
}

/// Wall time that follows tokio's clock from the moment it is made: under
/// `tokio::time::pause()` it stands still, and moves with `advance` (or the runtime's
/// auto-advance) together with every `sleep` and timeout.
#[derive(Debug, Clone)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the machine's now.
    pub fn new() -> Self {
        TokioClock::starting_at(SystemClock.now())
    }

    /// Starts at `wall`.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        TokioClock {
            wall,
            origin: tokio::time::Instant::now(),
        }
    }

    pub fn shared(self) -> SharedClock {
        Arc::new(self)
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.origin.elapsed()).unwrap_or_default();
        self.wall + elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time_only() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let clock = TokioClock::starting_at(start);
        assert_eq!(clock.now(), start);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), start, "real time passing does not move it");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), start + chrono::Duration::hours(1));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(clock.now(), start + chrono::Duration::minutes(61));
    }
}
