//! The indexes of the records: each merchant's records in the order a query reads them
//! (by time, by `created`, by `created` then `id`), what an index entry holds of its record,
//! and the k-way merge of the merchants' runs into one ordered scan.

use std::cmp::{Ordering, Reverse};
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::collections::btree_map::{self, BTreeMap};
use std::sync::Arc;

use mxc::Resource;

use super::SimRecord;

/// A record in an index, with what a scan of the index reads, so that it need not visit
/// the record (scattered in memory among the JSON of the others).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record's `visible_ms`.
    pub(super) visible_ms: i64,
    /// The record's `amount`.
    amount: f64,
    pub record: Arc<SimRecord>,
}

impl Entry {
    pub fn new(record: &Arc<SimRecord>) -> Entry {
        Entry {
            visible_ms: record.visible_ms,
            amount: record.amount,
            record: record.clone(),
        }
    }
}

/// A timeline: (time, seq) → record, one per merchant.
pub(crate) type Timeline = BTreeMap<(i64, u64), Entry>;

/// A key of the index by `created` then `id`: (created_ms, the id's first 16 bytes, id, seq).
/// The prefix (see [`id_prefix`]) orders as the id does, so the key orders as
/// (created_ms, id, seq); it spares reading the id itself, but for ids that share 16 bytes.
pub(super) type CreatedIdKey = (i64, u128, Box<str>, u64);

/// The key of an authorization in the index by `created` then `id`.
pub(super) fn created_id_key(created_ms: i64, id: &str, seq: u64) -> CreatedIdKey {
    (created_ms, id_prefix(id), id.into(), seq)
}

/// The first 16 bytes of an id, big-endian, zero-padded: of two ids whose prefixes differ,
/// the one with the lesser prefix is the lesser (a shorter id that ends where the other has
/// a non-zero byte is its prefix, so the lesser too); equal prefixes leave it to the ids.
pub(super) fn id_prefix(id: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// A record found by [`Dataset::scan`](super::Dataset::scan), with what its index holds of it.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    /// The index's instant: `tx_ms` ([`Index::Time`]) or `created_ms` (the others).
    pub key_ms: i64,
    /// The last part of its key in the index: the record's `seq`.
    pub(super) seq: u64,
    /// The record's `amount`.
    pub amount: f64,
    /// The record's `visible_ms`: it is searchable from then on.
    pub visible_ms: i64,
    pub record: &'a Arc<SimRecord>,
}

impl<'a> Hit<'a> {
    fn new(key_ms: i64, seq: u64, entry: &'a Entry) -> Hit<'a> {
        Hit {
            key_ms,
            seq,
            amount: entry.amount,
            visible_ms: entry.visible_ms,
            record: &entry.record,
        }
    }
}

/// An index of the records, and the order it keeps each merchant's records in. Each order
/// is the one `ReportQuery::sort` gives when it sorts by exactly these fields, ascending:
/// it breaks the last ties by `seq`, and `id` compares as `String` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// The records of a resource by its time field (`tx_ms`), then `seq`: what `select`
    /// reads (`transactionDateAndTime:asc` for authorizations).
    Time(&'static Resource),
    /// Authorizations by `created`, then `seq` (`created:asc`): what `select_created` reads.
    Created,
    /// Authorizations by `created`, then `id`, then `seq` (`created:asc,id:asc`).
    CreatedId,
}

/// The merchants' runs of one index, merged.
pub(super) enum Runs<'a> {
    Empty,
    Seq(Merge<'a, (i64, u64)>),
    Id(Merge<'a, CreatedIdKey>),
}

impl<'a> Iterator for Runs<'a> {
    type Item = Hit<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Runs::Empty => None,
            Runs::Seq(merge) => merge
                .next()
                .map(|(key, entry)| Hit::new(key.0, key.1, entry)),
            Runs::Id(merge) => merge
                .next()
                .map(|(key, entry)| Hit::new(key.0, key.3, entry)),
        }
    }
}

/// A k-way merge of sorted runs: the least key first; of equal keys (a merchant named twice),
/// the earlier run's first.
pub(super) struct Merge<'a, K> {
    runs: Vec<btree_map::Range<'a, K, Entry>>,
    /// Each unfinished run's next entry; the least on top.
    heads: BinaryHeap<Reverse<Head<'a, K>>>,
}

struct Head<'a, K> {
    key: &'a K,
    run: usize,
    entry: &'a Entry,
}

impl<K: Ord> PartialEq for Head<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Head<'_, K> {}
impl<K: Ord> PartialOrd for Head<'_, K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> Ord for Head<'_, K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .cmp(other.key)
            .then_with(|| self.run.cmp(&other.run))
    }
}

impl<'a, K: Ord> Merge<'a, K> {
    pub(super) fn new(mut runs: Vec<btree_map::Range<'a, K, Entry>>) -> Self {
        let heads = runs
            .iter_mut()
            .enumerate()
            .filter_map(|(run, entries)| {
                entries
                    .next()
                    .map(|(key, entry)| Reverse(Head { key, run, entry }))
            })
            .collect();
        Merge { runs, heads }
    }
}

impl<'a, K: Ord> Iterator for Merge<'a, K> {
    type Item = (&'a K, &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        let mut top = self.heads.peek_mut()?;
        let Reverse(head) = &mut *top;
        let least = (head.key, head.entry);
        match self.runs.get_mut(head.run).and_then(Iterator::next) {
            // The run's next entry takes its place (and sinks to where it belongs).
            Some((key, entry)) => {
                head.key = key;
                head.entry = entry;
            }
            None => {
                PeekMut::pop(top);
            }
        }
        Some(least)
    }
}
