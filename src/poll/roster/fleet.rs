//! The XMIDs polled right now, listed and discovered: written by the roster watch, read by
//! housekeeping, health and the admin API.

use std::sync::{Arc, RwLock};

/// The XMIDs polled right now (listed and discovered), shared with housekeeping and health.
#[derive(Clone, Default)]
pub struct Fleet(Arc<RwLock<Arc<Vec<String>>>>);

impl Fleet {
    pub fn new(xmids: Vec<String>) -> Fleet {
        Fleet(Arc::new(RwLock::new(Arc::new(xmids))))
    }

    pub fn xmids(&self) -> Arc<Vec<String>> {
        match self.0.read() {
            Ok(x) => x.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, xmids: Vec<String>) {
        match self.0.write() {
            Ok(mut x) => *x = Arc::new(xmids),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(xmids),
        }
    }
}
