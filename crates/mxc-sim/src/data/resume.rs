//! Scanning an index from a point inside it, and what says whether a scan made earlier still
//! holds: so that the report endpoint can serve the next page of a query where the previous
//! one ended, instead of merging every merchant's records again from the start of the range
//! to skip the pages already served (reading a query page by page was quadratic).

use std::ops::Bound;

use super::index::{created_id_key, CreatedIdKey, Hit, Index, Merge, Runs, Timeline};
use super::Dataset;

/// Where a scan of an index starts: at the start of the range, or strictly after a record's
/// key (see [`Hit::after`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Start,
    /// After (time, seq) in [`Index::Time`] or [`Index::Created`].
    Seq(i64, u64),
    /// After a key of [`Index::CreatedId`].
    Id(CreatedIdKey),
}

impl Dataset {
    /// Changes with every record inserted into any index (authorizations, disputes, batches,
    /// deposits, however they came: arrivals, `generate`, settlement) and every merchant
    /// boarded; never goes back. A scan made at one version holds at the same version, as
    /// long as no record it passed over unsearchable has become searchable (see
    /// [`Dataset::index_now_ms`]).
    pub fn version(&self) -> u64 {
        self.changes.wrapping_add(self.settlement.inserted())
    }

    /// The clock of the index: a record is searchable once its `visible_ms` is at most this.
    /// Never goes back.
    pub fn index_now_ms(&self) -> i64 {
        self.index_now_ms
    }

    /// The records of `merchants` whose key in `index` lies in `[from_ms, to_ms]`, searchable
    /// or not (see [`Hit::visible_ms`]), in the index's order over all of them, from `after`
    /// on: each merchant's run is already in that order, and the runs are merged. Its
    /// searchable ones are the records of `select` (`select_created` for the indexes by
    /// `created`), in the order `ReportQuery::sort` gives them when it sorts by exactly the
    /// index's fields, ascending (see [`Index`]); a merchant named twice gives its records
    /// twice, each next to its copy (then resuming `after` one of them skips its copy too).
    /// Reads the index only, not the records.
    pub fn scan<'a>(
        &'a self,
        index: Index,
        merchants: &[usize],
        from_ms: i64,
        to_ms: i64,
        after: &After,
    ) -> impl Iterator<Item = Hit<'a>> + 'a {
        if from_ms > to_ms {
            return Runs::Empty;
        }
        match index {
            Index::Time(resource) => seq_runs(
                self.settlement.timelines(resource).unwrap_or(&self.records),
                merchants,
                from_ms,
                to_ms,
                after,
            ),
            Index::Created => seq_runs(&self.by_created, merchants, from_ms, to_ms, after),
            Index::CreatedId => {
                // From the least key at `from_ms` (empty id, seq 0) to before the least key
                // after `to_ms`.
                let least: CreatedIdKey = (from_ms, 0, Box::default(), 0);
                let start = match after {
                    After::Id(key) if *key >= least => Bound::Excluded(key),
                    _ => Bound::Included(&least),
                };
                let after_to = to_ms
                    .checked_add(1)
                    .map(|after| created_id_key(after, "", 0));
                if let (Bound::Excluded(key), Some(end)) = (start, &after_to) {
                    if key >= end {
                        return Runs::Empty;
                    }
                }
                let end = match &after_to {
                    Some(end) => Bound::Excluded(end),
                    None => Bound::Unbounded,
                };
                Runs::Id(Merge::new(
                    merchants
                        .iter()
                        .filter_map(|&m| self.by_created_id.get(m))
                        .map(|t| t.range::<CreatedIdKey, _>((start, end)))
                        .collect(),
                ))
            }
        }
    }
}

/// The merged runs of an index keyed by (time, seq), over `[from_ms, to_ms]`, after `after`.
fn seq_runs<'a>(
    timelines: &'a [Timeline],
    merchants: &[usize],
    from_ms: i64,
    to_ms: i64,
    after: &After,
) -> Runs<'a> {
    let (least, most) = ((from_ms, 0), (to_ms, u64::MAX));
    let start = match after {
        After::Seq(ms, seq) if (*ms, *seq) >= least => {
            if (*ms, *seq) >= most {
                return Runs::Empty;
            }
            Bound::Excluded((*ms, *seq))
        }
        _ => Bound::Included(least),
    };
    Runs::Seq(Merge::new(
        merchants
            .iter()
            .filter_map(|&m| timelines.get(m))
            .map(|t| t.range((start, Bound::Included(most))))
            .collect(),
    ))
}

impl Hit<'_> {
    /// The point of `index` (the index the hit was found in) just after this record: a scan
    /// from there goes on with the record that followed it.
    pub fn after(&self, index: Index) -> After {
        match index {
            Index::Time(_) | Index::Created => After::Seq(self.key_ms, self.seq),
            Index::CreatedId => After::Id(created_id_key(self.key_ms, &self.record.id, self.seq)),
        }
    }
}
