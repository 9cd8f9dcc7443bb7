//! The next page of a query read page by page, served from where the previous page ended.
//!
//! A client pages through a report query by offset (up to the result window, then it
//! re-anchors). Every page counts and sums the whole answer and skips the records before its
//! offset, so merging every merchant's index from the start of the range: reading N records
//! cost O(N² / page size) merge steps, and the simulator, not the client, was what the
//! relay's benchmarks measured. So after a page answered in index order, the simulator keeps
//! the answer's count and total amount and a resume point (the offset of the next page and
//! the index key of the page's last record); a request for exactly that offset of the same
//! selection resumes each merchant's run strictly after that key and reads only its page.
//! A resume point holds while the data it was computed from is unchanged: no record inserted
//! anywhere ([`Dataset::version`]) and none it passed over unsearchable become searchable
//! since. Any other request takes the whole pass, as before, and leaves a resume point.

use std::sync::{Arc, Mutex};

use crate::data::{After, Dataset, Hit, Index};
use crate::query::ReportQuery;

use super::plan::{hidden, Answer, Plan};

/// Resume points kept at most; the least recently used goes first.
const CAPACITY: usize = 64;

/// Resume points of queries read page by page.
#[derive(Default)]
pub(super) struct Pages {
    points: Mutex<Points>,
}

#[derive(Default)]
struct Points {
    list: Vec<Point>,
    /// Counts the requests, to tell which point was used last.
    clock: u64,
    /// Pages served from a point.
    #[cfg(test)]
    resumed: u64,
}

/// What selects a query's records, all but its page: the same selection of the same data has
/// the same answer.
#[derive(Debug, Clone, PartialEq)]
struct Selection {
    plan: Plan,
    filter: Option<String>,
    /// Each named once.
    merchants: Vec<usize>,
    /// The `hide_from_created_rate` in effect, as bits.
    hide_rate: u64,
}

impl Selection {
    /// `None` if a merchant is named twice: its records come twice, each copy with the same
    /// key, and a scan resumed after one copy would skip the other.
    fn of(plan: Plan, query: &ReportQuery, merchants: &[usize], hide_rate: f64) -> Option<Self> {
        let mut sorted = merchants.to_vec();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        Some(Selection {
            plan,
            filter: query.filter_text().map(str::to_owned),
            merchants: merchants.to_vec(),
            hide_rate: hide_rate.to_bits(),
        })
    }
}

/// Where the next page of a selection starts, with its whole answer's count and total.
#[derive(Debug)]
struct Point {
    selection: Selection,
    /// [`Dataset::version`] when the answer was read.
    version: u64,
    /// The least `visible_ms` of the records the pass skipped as not yet searchable (of the
    /// range, whatever the filter): the answer holds while the index's clock is before it.
    horizon_ms: i64,
    total: usize,
    /// Rounded, as in the answer.
    total_amount: f64,
    /// The offset of the next page.
    next_offset: usize,
    /// The index key of the last record served.
    after: After,
    used: u64,
}

impl Pages {
    /// The answer of [`in_order`], resumed from a point when there is one for `offset`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer(
        &self,
        data: &Dataset,
        plan: Plan,
        query: &ReportQuery,
        merchants: &[usize],
        hide_rate: f64,
        offset: usize,
        size: usize,
    ) -> Answer {
        let selection = Selection::of(plan, query, merchants, hide_rate);
        let (Some(selection), Ok(mut points)) = (selection, self.points.lock()) else {
            return in_order(data, plan, query, merchants, hide_rate, offset, size);
        };
        let (version, now) = (data.version(), data.index_now_ms());
        points
            .list
            .retain(|p| p.version == version && now < p.horizon_ms);
        points.clock += 1;
        let clock = points.clock;
        let found = points
            .list
            .iter()
            .position(|p| p.next_offset == offset && p.selection == selection);
        if let Some(i) = found {
            let point = &mut points.list[i];
            let (records, last) = resume(data, &point.selection, query, &point.after, size);
            let answer = Answer {
                records,
                total: point.total,
                total_amount: point.total_amount,
            };
            point.next_offset += answer.records.len();
            point.used = clock;
            if let Some(last) = last {
                point.after = last.after(plan.index);
            }
            if point.next_offset >= point.total {
                points.list.swap_remove(i);
            }
            #[cfg(test)]
            {
                points.resumed += 1;
            }
            return answer;
        }
        let (answer, horizon_ms, last) =
            whole(data, plan, query, merchants, hide_rate, offset, size);
        let next_offset = offset.saturating_add(answer.records.len());
        if let Some(last) = last.filter(|_| next_offset < answer.total) {
            points
                .list
                .retain(|p| !(p.next_offset == next_offset && p.selection == selection));
            if points.list.len() >= CAPACITY {
                if let Some(oldest) = (0..points.list.len()).min_by_key(|&i| points.list[i].used) {
                    points.list.swap_remove(oldest);
                }
            }
            points.list.push(Point {
                selection,
                version,
                horizon_ms,
                total: answer.total,
                total_amount: answer.total_amount,
                next_offset,
                after: last.after(plan.index),
                used: clock,
            });
        }
        answer
    }

    /// How many pages were served from a point, and how many points are kept.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (u64, usize) {
        self.points
            .lock()
            .map(|p| (p.resumed, p.list.len()))
            .unwrap_or_default()
    }
}

/// Whether a searchable record the index of `plan` found is one of the query's.
fn selects(query: &ReportQuery, index: Index, hit: &Hit<'_>, hide_rate: f64) -> bool {
    // The key of the indexes by `created` is an authorization's `created`.
    let by_created = matches!(index, Index::Created | Index::CreatedId);
    ((by_created && query.surely_matches_created(hit.key_ms)) || query.matches(hit.record))
        && !hidden(hit.record, hide_rate)
}

/// Up to `size` records of the selection after `after`, and the last of them.
fn resume<'a>(
    data: &'a Dataset,
    selection: &Selection,
    query: &ReportQuery,
    after: &After,
    size: usize,
) -> (Vec<Arc<crate::data::SimRecord>>, Option<Hit<'a>>) {
    let now = data.index_now_ms();
    let plan = selection.plan;
    let hide_rate = f64::from_bits(selection.hide_rate);
    let mut last = None;
    let records = data
        .scan(
            plan.index,
            &selection.merchants,
            plan.from_ms,
            plan.to_ms,
            after,
        )
        .filter(|hit| hit.visible_ms <= now && selects(query, plan.index, hit, hide_rate))
        .take(size)
        .map(|hit| {
            last = Some(hit);
            Arc::clone(hit.record)
        })
        .collect();
    (records, last)
}

/// The same answer as `sorted(select(…))` from the index of `plan`, whose order is the
/// query's: one pass over the selected records, in order, that counts and sums them all
/// (in the same order, so to the same total) and copies only the page's. For the relay's
/// poll (and any query without a filter, the fault off) it reads the index only.
pub(super) fn in_order(
    data: &Dataset,
    plan: Plan,
    query: &ReportQuery,
    merchants: &[usize],
    hide_rate: f64,
    offset: usize,
    size: usize,
) -> Answer {
    whole(data, plan, query, merchants, hide_rate, offset, size).0
}

/// [`in_order`]'s answer, with the least `visible_ms` of the records of the range it passed
/// over as not yet searchable (`i64::MAX` if none) and the page's last record.
fn whole<'a>(
    data: &'a Dataset,
    plan: Plan,
    query: &ReportQuery,
    merchants: &[usize],
    hide_rate: f64,
    offset: usize,
    size: usize,
) -> (Answer, i64, Option<Hit<'a>>) {
    let now = data.index_now_ms();
    let end = offset.saturating_add(size);
    let mut records = Vec::with_capacity(size.min(128));
    let mut total = 0;
    let mut horizon_ms = i64::MAX;
    let mut last = None;
    let total_amount = data
        .scan(
            plan.index,
            merchants,
            plan.from_ms,
            plan.to_ms,
            &After::Start,
        )
        .filter(|hit| {
            if hit.visible_ms > now {
                horizon_ms = horizon_ms.min(hit.visible_ms);
                return false;
            }
            selects(query, plan.index, hit, hide_rate)
        })
        .inspect(|hit| {
            if (offset..end).contains(&total) {
                records.push(Arc::clone(hit.record));
                last = Some(*hit);
            }
            total += 1;
        })
        .map(|hit| hit.amount)
        .sum::<f64>();
    let answer = Answer {
        records,
        total,
        total_amount: (total_amount * 100.0).round() / 100.0,
    };
    (answer, horizon_ms, last)
}
