//! What the simulator counts, for tests and benchmarks: `GET /_sim/stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// XMID → its last query and the longest time between two of its queries.
    gaps: Mutex<HashMap<String, Gap>>,
}

struct Gap {
    last: Instant,
    longest: Duration,
}

/// The JSON of `GET /_sim/gaps`: how long merchants went between two report queries naming
/// them (a poller's blind spots), over every merchant ever queried, the time since its last
/// query counting as a gap too. `POST /_sim/gaps` answers the same and starts a new
/// measurement (the longest gaps forgotten, the last queries kept).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GapsSnapshot {
    pub merchants: usize,
    pub longest_ms: u64,
    pub p99_ms: u64,
    pub p50_ms: u64,
    /// The merchant with the longest gap.
    pub worst: Option<String>,
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
        if let Ok(mut gaps) = self.gaps.lock() {
            let now = Instant::now();
            for xmid in xmids {
                match gaps.get_mut(xmid) {
                    Some(gap) => {
                        gap.longest = gap.longest.max(now - gap.last);
                        gap.last = now;
                    }
                    None => {
                        gaps.insert(
                            xmid.clone(),
                            Gap {
                                last: now,
                                longest: Duration::ZERO,
                            },
                        );
                    }
                }
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

    /// The gaps so far; with `reset`, a new measurement starts.
    pub fn gaps(&self, reset: bool) -> GapsSnapshot {
        let now = Instant::now();
        let Ok(mut gaps) = self.gaps.lock() else {
            return GapsSnapshot {
                merchants: 0,
                longest_ms: 0,
                p99_ms: 0,
                p50_ms: 0,
                worst: None,
            };
        };
        let mut all: Vec<(u64, &String)> = gaps
            .iter()
            .map(|(xmid, g)| (g.longest.max(now - g.last).as_millis() as u64, xmid))
            .collect();
        all.sort_unstable();
        let at = |q: f64| {
            all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
                .map_or(0, |(ms, _)| *ms)
        };
        let snapshot = GapsSnapshot {
            merchants: all.len(),
            longest_ms: all.last().map_or(0, |(ms, _)| *ms),
            p99_ms: at(0.99),
            p50_ms: at(0.50),
            worst: all.last().map(|(_, x)| (*x).clone()),
        };
        if reset {
            for gap in gaps.values_mut() {
                gap.longest = Duration::ZERO;
            }
        }
        snapshot
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
