//! What the client reports about its own work, for the program that runs it to count: the
//! client itself keeps no metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receives the client's reports. Every method has an empty default.
pub trait Observer: Send + Sync {
    /// One HTTP call to MXC: its path (a bounded set of values), the status it got (`"200"`,
    /// or `"timeout"`/`"error"` when no answer came) and how long it took.
    fn api_call(&self, _path: &str, _status: &str, _elapsed: Duration) {}
    /// An authentication call is about to be made.
    fn auth_requested(&self) {}
    /// An authentication call failed.
    fn auth_failed(&self) {}
}

/// Reports one call to `observer`, if there is one.
pub(crate) fn observe_call(
    observer: &Option<Arc<dyn Observer>>,
    path: &str,
    status: &str,
    started: Instant,
) {
    if let Some(observer) = observer {
        observer.api_call(path, status, started.elapsed());
    }
}

/// The status label of a call that got no answer.
pub(crate) fn failure_label(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else {
        "error"
    }
}
