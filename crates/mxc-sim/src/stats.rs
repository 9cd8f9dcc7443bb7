//! What the simulator counts, for tests and benchmarks: `GET /_sim/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

#[derive(Default)]
pub struct Stats {
    pub auth_calls: AtomicU64,
    pub auth_rejected: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub records_served: AtomicU64,
    /// "METHOD /route" → status → count.
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    /// XMID → report queries naming it.
    queries_by_xmid: Mutex<BTreeMap<String, u64>>,
    /// XMID → the clients (`User-Agent`) that queried it → how often.
    clients_by_xmid: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

/// The JSON of `GET /_sim/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub auth_calls: u64,
    pub auth_rejected: u64,
    pub tokens_issued: u64,
    pub records_generated: u64,
    pub records_served: u64,
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queries_by_xmid: BTreeMap<String, u64>,
    /// XMID → client (`User-Agent`: a cluster's instances name themselves) → queries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clients_by_xmid: BTreeMap<String, BTreeMap<String, u64>>,
}

impl StatsSnapshot {
    /// Requests to `route` ("GET /report/v1/tsys/authorization") with any status.
    pub fn requests_to(&self, route: &str) -> u64 {
        self.requests
            .get(route)
            .map(|s| s.values().sum())
            .unwrap_or(0)
    }

    /// Requests to `route` answered with `status`.
    pub fn requests_with(&self, route: &str, status: u16) -> u64 {
        self.requests
            .get(route)
            .and_then(|s| s.get(&status))
            .copied()
            .unwrap_or(0)
    }
}

impl Stats {
    pub fn count_request(&self, route: String, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests
                .entry(route)
                .or_default()
                .entry(status)
                .or_default() += 1;
        }
    }

    pub fn count_query(&self, xmids: &[String], client: &str) {
        if let Ok(mut counts) = self.queries_by_xmid.lock() {
            for xmid in xmids {
                *counts.entry(xmid.clone()).or_default() += 1;
            }
        }
        if let Ok(mut clients) = self.clients_by_xmid.lock() {
            for xmid in xmids {
                *clients
                    .entry(xmid.clone())
                    .or_default()
                    .entry(client.to_string())
                    .or_default() += 1;
            }
        }
    }

    pub fn snapshot(&self, records_generated: u64, by_xmid: bool) -> StatsSnapshot {
        StatsSnapshot {
            auth_calls: self.auth_calls.load(Ordering::Relaxed),
            auth_rejected: self.auth_rejected.load(Ordering::Relaxed),
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            records_generated,
            records_served: self.records_served.load(Ordering::Relaxed),
            requests: self.requests.lock().map(|r| r.clone()).unwrap_or_default(),
            queries_by_xmid: if by_xmid {
                self.queries_by_xmid
                    .lock()
                    .map(|q| q.clone())
                    .unwrap_or_default()
            } else {
                BTreeMap::new()
            },
            clients_by_xmid: if by_xmid {
                self.clients_by_xmid
                    .lock()
                    .map(|q| q.clone())
                    .unwrap_or_default()
            } else {
                BTreeMap::new()
            },
        }
    }
}
