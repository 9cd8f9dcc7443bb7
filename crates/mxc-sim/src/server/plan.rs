//! How a report query is answered: the records it selects, filtered, sorted, counted and
//! summed, and the page asked for kept. The general way selects, then sorts; when an index
//! keeps the records in the query's order, a [`Plan`] reads the answer straight from it (see
//! `pages`, which does, and resumes where the previous page ended).

use std::sync::Arc;

use mxc::AUTHORIZATIONS;

use crate::data::{unit_hash, Dataset, Index, SimRecord, SALT_HIDDEN};
use crate::query::{ReportQuery, CREATED};

/// Records of a query's answer, with the count and total amount of the whole answer.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) records: Vec<Arc<SimRecord>>,
    pub(super) total: usize,
    /// Rounded to the cent.
    pub(super) total_amount: f64,
}

/// The merchants a query names (each time it names them), or all of them.
pub(super) fn merchants(data: &Dataset, query: &ReportQuery) -> Vec<usize> {
    match &query.xmids {
        Some(xmids) => xmids
            .iter()
            .filter_map(|x| data.merchant_index(x))
            .collect(),
        None => (0..data.merchants.len()).collect(),
    }
}

/// Whether a record is one the `hide_from_created_rate` fault hides.
pub(super) fn hidden(record: &SimRecord, hide_rate: f64) -> bool {
    hide_rate > 0.0
        && record.resource == &AUTHORIZATIONS
        && unit_hash(record.seq, SALT_HIDDEN) < hide_rate
}

/// A query answered from an index that keeps its records in the query's order: the index,
/// and the range of its key the query selects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plan {
    pub(super) index: Index,
    pub(super) from_ms: i64,
    pub(super) to_ms: i64,
}

impl Plan {
    /// The index of the records `select` would choose, if the query's sort is exactly the
    /// index's order (ascending, ties as `ReportQuery::sort` breaks them); otherwise `None`.
    pub(super) fn of(query: &ReportQuery) -> Option<Plan> {
        let (index, (from_ms, to_ms)) = match query.created_range {
            // Bounded by `created` only: the index by `created` answers.
            Some(range) if !query.has_dr_type && query.resource == &AUTHORIZATIONS => {
                if query.sorts_exactly(&[(CREATED, true), ("id", true)]) {
                    (Index::CreatedId, range)
                } else if query.sorts_exactly(&[(CREATED, true)]) {
                    (Index::Created, range)
                } else {
                    return None;
                }
            }
            _ if query.sorts_exactly(&[(query.resource.time_field, true)]) => {
                (Index::Time(query.resource), (query.from_ms, query.to_ms))
            }
            _ => return None,
        };
        Some(Plan {
            index,
            from_ms,
            to_ms,
        })
    }
}

/// The records a query selects (of `merchants`), in no particular order.
pub(super) fn select(
    data: &Dataset,
    query: &ReportQuery,
    merchants: &[usize],
) -> Vec<Arc<SimRecord>> {
    match query.created_range {
        // Bounded by `created` only: the index by `created` answers.
        Some((from, to)) if !query.has_dr_type && query.resource == &AUTHORIZATIONS => {
            data.select_created(merchants, from, to)
        }
        _ => data.select(query.resource, merchants, query.from_ms, query.to_ms),
    }
}

/// The answer from `select`ed records: filtered, sorted, counted and summed, and the page
/// at `[offset, offset + size)` kept.
pub(super) fn sorted(
    mut records: Vec<Arc<SimRecord>>,
    query: &ReportQuery,
    hide_rate: f64,
    offset: usize,
    size: usize,
) -> Answer {
    records.retain(|r| query.matches(r) && !hidden(r, hide_rate));
    query.sort(&mut records);
    let total_amount = records.iter().map(|r| r.amount).sum::<f64>();
    let total = records.len();
    let start = offset.min(total);
    records.truncate(start.saturating_add(size));
    records.drain(..start);
    Answer {
        records,
        total,
        total_amount: (total_amount * 100.0).round() / 100.0,
    }
}

#[cfg(test)]
mod tests;
