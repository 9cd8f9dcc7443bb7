//! The simulator's state behind every handler: its data, faults, statistics, open export
//! scrolls, and the checks every API request goes through; `plan` computes the answers.

use crate::data::{Dataset, Shape, SimRecord};
use crate::faults::Faults;
use crate::jwt::{JwtKey, Rejection};
use crate::query::ReportQuery;
use crate::stats::{Stats, StatsSnapshot};
use crate::SimConfig;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::answer::ApiError;
use super::key_limit::KeyLimit;
use super::pages::Pages;
use super::plan::{merchants, select, sorted, Answer, Plan};

/// An export scroll is forgotten after this long without use.
pub(super) const SCROLL_IDLE: Duration = Duration::from_secs(300);

pub(super) struct SimState {
    pub(super) config: SimConfig,
    pub(super) jwt: JwtKey,
    pub(super) data: Mutex<Dataset>,
    pub(super) faults: RwLock<Faults>,
    pub(super) stats: Stats,
    pub(super) scrolls: Mutex<HashMap<String, Scroll>>,
    /// Requests that continued a scroll (for `Faults::expire_scroll_every`).
    pub(super) continuations: AtomicU64,
    pub(super) next_id: AtomicU64,
    /// Where the next page of a query read page by page starts.
    pub(super) pages: Pages,
    pub(super) key_limit: Option<KeyLimit>,
}

pub(super) struct Scroll {
    pub(super) query: ReportQuery,
    pub(super) records: Vec<Arc<SimRecord>>,
    pub(super) position: usize,
    pub(super) total_amount: f64,
    pub(super) last_used: Instant,
}

/// Why records could not be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("unknown XMID {0:?}")]
    UnknownXmid(String),
    #[error("from {from} is after to {to}")]
    Backwards {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// A thread panicked while it held the simulator's data.
    #[error("simulator state is poisoned")]
    Poisoned,
}

impl SimState {
    /// The simulator's clock, in unix milliseconds: the machine's plus the offset fault.
    pub(super) fn now_ms(&self) -> i64 {
        let offset = self.faults.read().map(|f| f.clock_offset_ms).unwrap_or(0);
        self.config
            .clock
            .now()
            .timestamp_millis()
            .saturating_add(offset)
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_else(|| self.config.clock.now())
    }

    /// Sets the faults; a changed clock offset moves the clock of the data with it.
    pub(super) fn set_faults(&self, faults: Faults) {
        // Data first, then faults: the order every other path takes them in.
        let mut data = self.data.lock().ok();
        let Ok(mut current) = self.faults.write() else {
            return;
        };
        let delta = faults.clock_offset_ms - current.clock_offset_ms;
        if let Some(data) = data.as_mut().filter(|_| delta != 0) {
            // What arrived on the old clock first, then arrivals go on from the new reading.
            data.advance(self.config.clock.now().timestamp_millis() + current.clock_offset_ms);
            data.shift_clock(delta);
        }
        *current = faults;
    }

    pub(super) fn snapshot(&self, by_xmid: bool) -> StatsSnapshot {
        let now = self.now_ms();
        let generated = self
            .data
            .lock()
            .map(|mut d| {
                d.advance(now);
                d.generated
            })
            .unwrap_or(0);
        self.stats.snapshot(generated, by_xmid)
    }

    pub(super) fn faults(&self) -> Faults {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// Checks the bearer token; the error is the 401 answer.
    pub(super) fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let rejection = match token {
            None => Some(Rejection::Missing),
            Some(token) => {
                let max_age = self.faults().jwt_max_age_secs.map(|s| s as i64);
                self.jwt
                    .verify(token.trim(), self.config.clock.now().timestamp(), max_age)
                    .err()
            }
        };
        match rejection {
            None => Ok(()),
            Some(r) => Err(ApiError::new(StatusCode::UNAUTHORIZED, r.message())),
        }
    }

    /// The records a report query selects, in its order, with their total amount: only
    /// those already searchable, and none the `hide_from_created_rate` fault hides from a
    /// query on `created`.
    /// A poisoned lock is a 500, never an empty page a client would take for "no records".
    pub(super) fn matching(
        &self,
        query: &ReportQuery,
    ) -> Result<(Vec<Arc<SimRecord>>, f64), ApiError> {
        let answer = self.answer(query, 0, usize::MAX)?;
        Ok((answer.records, answer.total_amount))
    }

    /// One page of what [`SimState::matching`] returns: its records at positions
    /// `[offset, offset + size)`, with the count and total amount of all of them.
    pub(super) fn page(
        &self,
        query: &ReportQuery,
        offset: usize,
        size: usize,
    ) -> Result<Answer, ApiError> {
        self.answer(query, offset, size)
    }

    /// The query's answer, of which only the records at `[offset, offset + size)` are kept.
    fn answer(&self, query: &ReportQuery, offset: usize, size: usize) -> Result<Answer, ApiError> {
        let now = self.now_ms();
        let hide_rate = if query.on_created {
            self.faults().hide_from_created_rate
        } else {
            0.0
        };
        let records = match self.data.lock() {
            Ok(mut data) => {
                data.advance(now);
                let merchants = merchants(&data, query);
                if let Some(plan) = Plan::of(query) {
                    // In order already: no sort, and only the page's records are copied.
                    return Ok(self
                        .pages
                        .answer(&data, plan, query, &merchants, hide_rate, offset, size));
                }
                select(&data, query, &merchants)
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "simulator state is poisoned",
                ))
            }
        };
        Ok(sorted(records, query, hide_rate, offset, size))
    }

    pub(super) fn generate(
        &self,
        count: usize,
        xmids: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        shape: Shape,
    ) -> Result<(), GenerateError> {
        let mut data = self.data.lock().map_err(|_| GenerateError::Poisoned)?;
        let mut merchants = Vec::with_capacity(xmids.len());
        for xmid in xmids {
            merchants.push(
                data.merchant_index(xmid)
                    .ok_or_else(|| GenerateError::UnknownXmid(xmid.clone()))?,
            );
        }
        if from > to {
            return Err(GenerateError::Backwards { from, to });
        }
        let now = self.now_ms();
        data.generate(
            count,
            &merchants,
            from.timestamp_millis(),
            to.timestamp_millis(),
            now,
            shape,
        );
        Ok(())
    }
}
