//! Operators' hold on merchants: polling of an XMID paused (and resumed) by hand, kept in the
//! store across restarts, and "poll now", which wakes the pollers of an XMID at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use mxc::Clock;

use tokio::sync::broadcast;

use crate::store::{Store, StoreError};

/// Shared by every poller of a pipeline (cheap to clone).
#[derive(Clone)]
pub struct MerchantControls {
    paused: Arc<RwLock<HashSet<String>>>,
    poll_now: broadcast::Sender<String>,
    /// Each failing XMID's last poll error and when, by resource and XMID (cleared by a poll
    /// that succeeds), for the admin API's state and `mxc-relay top`.
    failures: Arc<RwLock<HashMap<String, LastError>>>,
}

/// When a merchant's polls last failed, and why.
type LastError = (DateTime<Utc>, String);

impl Default for MerchantControls {
    fn default() -> Self {
        MerchantControls {
            paused: Arc::default(),
            poll_now: broadcast::channel(64).0,
            failures: Arc::default(),
        }
    }
}

impl MerchantControls {
    /// The pauses the store holds.
    pub fn load(store: &Store) -> Result<MerchantControls, StoreError> {
        let controls = MerchantControls::default();
        let paused = store.paused_merchants()?;
        if !paused.is_empty() {
            tracing::warn!(xmids = %paused.join(","), "polling of these merchants is paused by an operator (resume through the admin API)");
        }
        controls.write().extend(paused);
        Ok(controls)
    }

    pub fn is_paused(&self, xmid: &str) -> bool {
        self.read().contains(xmid)
    }

    pub fn paused(&self) -> Vec<String> {
        let mut out: Vec<String> = self.read().iter().cloned().collect();
        out.sort();
        out
    }

    /// The XMIDs of `xmids` that are not paused.
    pub fn active(&self, xmids: &[String]) -> Vec<String> {
        let paused = self.read();
        if paused.is_empty() {
            return xmids.to_vec();
        }
        xmids
            .iter()
            .filter(|x| !paused.contains(*x))
            .cloned()
            .collect()
    }

    /// Pauses or resumes an XMID's polling, durably first; whether it changed anything.
    pub fn set_paused(&self, store: &Store, xmid: &str, paused: bool) -> Result<bool, StoreError> {
        store.set_merchant_paused(xmid, paused)?;
        let changed = if paused {
            self.write().insert(xmid.to_string())
        } else {
            self.write().remove(xmid)
        };
        if changed && !paused {
            // Resumed: it catches up from its cursor now rather than at the next interval.
            self.poll_now(xmid);
        }
        Ok(changed)
    }

    /// A poll of `resource` for `xmids` failed with `error`.
    pub fn poll_failed(&self, resource: &str, xmids: &[String], error: &str) {
        let now = mxc::SystemClock.now();
        let mut failures = self.failures.write().unwrap_or_else(|e| e.into_inner());
        for xmid in xmids {
            failures.insert(format!("{resource}/{xmid}"), (now, error.to_string()));
        }
    }

    /// A poll of `resource` for `xmids` succeeded: their last errors are history.
    pub fn poll_succeeded(&self, resource: &str, xmids: &[String]) {
        let failing = !self
            .failures
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if failing {
            let mut failures = self.failures.write().unwrap_or_else(|e| e.into_inner());
            for xmid in xmids {
                failures.remove(&format!("{resource}/{xmid}"));
            }
        }
    }

    /// The last error of the polls of `resource` for `xmid`, while they fail.
    pub fn last_error(&self, resource: &str, xmid: &str) -> Option<LastError> {
        let failures = self.failures.read().unwrap_or_else(|e| e.into_inner());
        if failures.is_empty() {
            return None;
        }
        failures.get(&format!("{resource}/{xmid}")).cloned()
    }

    /// Wakes the pollers of `xmid` for a poll now.
    pub fn poll_now(&self, xmid: &str) {
        // No receiver: no poller runs (yet); nothing to wake.
        let _ = self.poll_now.send(xmid.to_string());
    }

    /// What a poller listens to for "poll now".
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.poll_now.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<String>> {
        self.paused.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.paused.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchants_last_error_lasts_until_a_poll_of_its_resource_succeeds() {
        let controls = MerchantControls::default();
        let group = ["X1".to_string(), "X2".to_string()];
        controls.poll_failed("authorizations", &group, "HTTP 503");
        controls.poll_failed("disputes", &group[..1], "HTTP 429");
        assert_eq!(
            controls.last_error("authorizations", "X2").unwrap().1,
            "HTTP 503"
        );
        controls.poll_succeeded("authorizations", &group);
        assert!(controls.last_error("authorizations", "X1").is_none());
        // Another resource's failure is its own.
        assert_eq!(controls.last_error("disputes", "X1").unwrap().1, "HTTP 429");
    }
}
