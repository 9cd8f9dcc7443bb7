//! The simulator's data: a roster of merchants and their authorizations, generated from a seed
//! so the same seed gives the same merchants, ids and amounts. This module owns the dataset
//! and its life (arrivals, generation on demand, selection); `merchants` draws the roster,
//! `authorization` renders a record, `index` keeps the records in the orders queries read,
//! `timing` says when a record is created and searchable, and `settlement` adds what follows
//! the authorizations (disputes, batches, deposits).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use mxc::Resource;
use settlement::Settlement;

mod authorization;
mod draw;
mod index;
mod merchants;
mod resume;
mod settlement;
#[cfg(test)]
mod tests;
mod timing;

use index::{created_id_key, CreatedIdKey, Entry, Timeline};
use merchants::{active_weights, new_merchant};
use timing::late_lateness_ms;

pub use index::{Hit, Index};
pub use merchants::SimMerchant;
pub use resume::After;
pub use settlement::SettlementConfig;
pub(crate) use timing::{unit_hash, SALT_HIDDEN};

/// One record (an authorization, dispute, batch or deposit), rendered to JSON once when it
/// is generated.
#[derive(Debug)]
pub struct SimRecord {
    pub id: String,
    pub xmid: String,
    /// Its resource's time field (`transactionDateAndTime` …), unix milliseconds.
    pub tx_ms: i64,
    /// When MXC ingested it (`created`), unix milliseconds of the simulator's clock.
    pub created_ms: i64,
    /// When it becomes searchable (`created` plus the index delay): no query returns it
    /// before, unix milliseconds of the simulator's clock.
    pub visible_ms: i64,
    /// Generation order; breaks ties between equal times.
    pub seq: u64,
    pub amount: f64,
    /// A declined authorization, a rejected batch, a returned deposit.
    pub declined: bool,
    pub resource: &'static Resource,
    pub json: Box<str>,
}

/// What a generated record looks like, beyond its random content.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// `false` leaves the `id` field out (a broken record).
    pub with_id: bool,
    /// Adds a `simPadding` field of this many bytes (an oversize record).
    pub pad_bytes: usize,
    /// When MXC ingested it (its `created`).
    pub created: Created,
}

impl Shape {
    pub const NORMAL: Shape = Shape {
        with_id: true,
        pad_bytes: 0,
        created: Created::Now,
    };
}

/// When a generated record was ingested (its `created`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Created {
    /// All at once, now (or at the transaction's time if later): a bulk load.
    #[default]
    Now,
    /// Each within 2 s after its transaction, as live traffic is ingested (never after now).
    WithTransaction,
}

/// How records are generated.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub seed: u64,
    pub merchants: usize,
    /// Closed merchants listed in the roster besides the active ones; they get no new records.
    pub closed_merchants: usize,
    /// Records per second over the whole portfolio, in real time.
    pub rate: f64,
    /// History present at start, in milliseconds (generated at `rate`).
    pub backlog_ms: i64,
    /// Share of declines.
    pub decline_rate: f64,
    /// Share of records ingested long after their transaction time.
    pub late_fraction: f64,
    pub max_lateness_ms: i64,
    /// A record is searchable this long after its `created` (5 % of them up to 5 times it).
    pub index_delay_ms: i64,
    /// Disputes, batches and deposits.
    pub settlement: SettlementConfig,
}

/// Merchants and their records, ordered by transaction time per merchant.
pub struct Dataset {
    pub merchants: Vec<SimMerchant>,
    by_xmid: HashMap<String, usize>,
    /// Per merchant: (tx_ms, seq) → authorization.
    records: Vec<Timeline>,
    /// Per merchant: (created_ms, seq) → authorization, for queries on `created`.
    by_created: Vec<Timeline>,
    /// Per merchant: authorizations by `created`, then `id`, then `seq`: the order of
    /// `sort=created:asc,id:asc`, the relay's poll.
    by_created_id: Vec<BTreeMap<CreatedIdKey, Entry>>,
    /// The latest clock reading seen: records visible by then are searchable. Never goes
    /// back, so a clock set back does not hide records already served.
    index_now_ms: i64,
    /// Insertions into the authorizations' indexes and merchants boarded; with the
    /// settlement's insertions, [`Dataset::version`].
    changes: u64,
    /// The disputes, batches and deposits that follow them.
    settlement: Settlement,
    /// Cumulative traffic weights of the active merchants, for picking one.
    active_weights: Vec<(f64, usize)>,
    config: GenerationConfig,
    rng: ChaCha8Rng,
    template: Value,
    next_arrival_ms: f64,
    pub generated: u64,
}

impl Dataset {
    /// Builds the roster and the backlog up to `now_ms`.
    pub fn new(config: GenerationConfig, now_ms: i64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let template: Value =
            serde_json::from_str(mxc::AUTHORIZATION_SAMPLE).unwrap_or_else(|_| json!({}));
        let total = config.merchants + config.closed_merchants;
        let mut merchants = Vec::with_capacity(total);
        let mut by_xmid = HashMap::with_capacity(total);
        while merchants.len() < total {
            let xmid = format!("8{:011}", rng.gen_range(0..100_000_000_000u64));
            if by_xmid.contains_key(&xmid) {
                continue;
            }
            let active = merchants.len() < config.merchants;
            let merchant = new_merchant(&mut rng, xmid.clone(), active);
            by_xmid.insert(xmid, merchants.len());
            merchants.push(merchant);
        }
        let active_weights = active_weights(&merchants);
        let records = vec![BTreeMap::new(); merchants.len()];
        let by_created = records.clone();
        let by_created_id = vec![BTreeMap::new(); merchants.len()];
        let start = (now_ms - config.backlog_ms) as f64;
        let settlement = Settlement::new(
            config.settlement.clone(),
            config.seed,
            &merchants,
            start as i64,
            config.index_delay_ms.max(0),
        );
        let mut dataset = Dataset {
            merchants,
            by_xmid,
            records,
            by_created,
            by_created_id,
            index_now_ms: i64::MIN,
            changes: 0,
            settlement,
            active_weights,
            config,
            rng,
            template,
            next_arrival_ms: start,
            generated: 0,
        };
        dataset.advance(now_ms);
        dataset
    }

    pub fn merchant_index(&self, xmid: &str) -> Option<usize> {
        self.by_xmid.get(xmid).copied()
    }

    /// Boards a new active merchant (it gets live traffic from now on); returns its XMID.
    pub fn add_merchant(&mut self) -> String {
        loop {
            let xmid = format!("8{:011}", self.rng.gen_range(0..100_000_000_000u64));
            if self.by_xmid.contains_key(&xmid) {
                continue;
            }
            let merchant = new_merchant(&mut self.rng, xmid.clone(), true);
            self.by_xmid.insert(xmid.clone(), self.merchants.len());
            self.merchants.push(merchant);
            self.records.push(BTreeMap::new());
            self.by_created.push(BTreeMap::new());
            self.by_created_id.push(BTreeMap::new());
            self.changes += 1;
            self.settlement
                .add_merchant(true, self.next_arrival_ms as i64);
            self.active_weights = active_weights(&self.merchants);
            return xmid;
        }
    }

    /// Closes a merchant: still in the roster (inactive, "Closed"), no new traffic; its
    /// records stay queryable. False if there is no such merchant.
    pub fn close_merchant(&mut self, xmid: &str) -> bool {
        let Some(&i) = self.by_xmid.get(xmid) else {
            return false;
        };
        self.merchants[i].active = false;
        self.merchants[i].status = "Closed";
        self.active_weights = active_weights(&self.merchants);
        true
    }

    /// Generates every record that has arrived by `now_ms` at the configured rate.
    /// The disputes, batches and deposits due by then follow, in time order.
    pub fn advance(&mut self, now_ms: i64) {
        self.index_now_ms = self.index_now_ms.max(now_ms);
        if self.config.rate <= 0.0 || self.active_weights.is_empty() {
            self.settlement
                .advance(now_ms, &self.merchants, &self.by_created);
            return;
        }
        let mean_gap_ms = 1000.0 / self.config.rate;
        while self.next_arrival_ms <= now_ms as f64 {
            let arrival = self.next_arrival_ms as i64;
            self.settlement
                .advance(arrival, &self.merchants, &self.by_created);
            let lateness = if self.rng.gen_bool(self.config.late_fraction.clamp(0.0, 1.0)) {
                let u: f64 = self.rng.gen();
                late_lateness_ms(u, self.config.max_lateness_ms)
            } else {
                self.rng.gen_range(0..2_000)
            };
            let merchant = self.pick_merchant();
            let record = self.insert(merchant, arrival - lateness, arrival, Shape::NORMAL);
            self.settlement.on_authorization(merchant, &record);
            // Poisson arrivals: exponential gaps with the configured mean.
            let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
            self.next_arrival_ms += -u.ln() * mean_gap_ms;
        }
        self.settlement
            .advance(now_ms, &self.merchants, &self.by_created);
    }

    /// The simulator's clock was set `delta_ms` forward (or back): arrivals go on at the
    /// same rate, stamped on the new clock.
    pub fn shift_clock(&mut self, delta_ms: i64) {
        self.next_arrival_ms += delta_ms as f64;
    }

    /// Adds `count` records for `merchants` (all active ones if empty) with transaction times
    /// spread evenly at random over `[from_ms, to_ms]`, `created` as `shape` says (at `now_ms`,
    /// or soon after each transaction) and searchable after the index delay; `with_id: false`
    /// leaves their `id` out.
    pub fn generate(
        &mut self,
        count: usize,
        merchants: &[usize],
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
        shape: Shape,
    ) {
        self.index_now_ms = self.index_now_ms.max(now_ms);
        if merchants.is_empty() && self.active_weights.is_empty() {
            return;
        }
        for _ in 0..count {
            let merchant = if merchants.is_empty() {
                self.pick_merchant()
            } else {
                merchants[self.rng.gen_range(0..merchants.len())]
            };
            let tx = self.rng.gen_range(from_ms..=to_ms.max(from_ms));
            let created = match shape.created {
                Created::Now => now_ms.max(tx),
                Created::WithTransaction => (tx + self.rng.gen_range(0..2_000)).min(now_ms.max(tx)),
            };
            self.insert(merchant, tx, created, shape);
        }
    }

    /// Searchable records of `resource` of the given merchants with times in
    /// `[from_ms, to_ms]`.
    pub fn select(
        &self,
        resource: &Resource,
        merchants: &[usize],
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<Arc<SimRecord>> {
        let timelines = self.settlement.timelines(resource).unwrap_or(&self.records);
        self.select_in(timelines, merchants, from_ms, to_ms)
    }

    /// Searchable authorizations of the given merchants with `created` in `[from_ms, to_ms]`,
    /// from the index by `created`.
    pub fn select_created(
        &self,
        merchants: &[usize],
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<Arc<SimRecord>> {
        self.select_in(&self.by_created, merchants, from_ms, to_ms)
    }

    fn select_in(
        &self,
        timelines: &[Timeline],
        merchants: &[usize],
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<Arc<SimRecord>> {
        let mut out = Vec::new();
        if from_ms > to_ms {
            return out;
        }
        let now = self.index_now_ms;
        for &m in merchants {
            let Some(timeline) = timelines.get(m) else {
                continue;
            };
            out.extend(
                timeline
                    .range((from_ms, 0)..=(to_ms, u64::MAX))
                    .filter(|(_, e)| e.visible_ms <= now)
                    .map(|(_, e)| e.record.clone()),
            );
        }
        out
    }

    fn pick_merchant(&mut self) -> usize {
        let total = self.active_weights.last().map(|w| w.0).unwrap_or(0.0);
        let x = self.rng.gen_range(0.0..total.max(f64::MIN_POSITIVE));
        let at = self.active_weights.partition_point(|(c, _)| *c <= x);
        self.active_weights[at.min(self.active_weights.len() - 1)].1
    }

    fn insert(
        &mut self,
        merchant: usize,
        tx_ms: i64,
        created_ms: i64,
        shape: Shape,
    ) -> Arc<SimRecord> {
        let seq = self.generated;
        self.generated += 1;
        let record = Arc::new(self.render(merchant, tx_ms, created_ms, seq, shape));
        self.records[merchant].insert((tx_ms, seq), Entry::new(&record));
        self.by_created[merchant].insert((created_ms, seq), Entry::new(&record));
        let key = created_id_key(created_ms, &record.id, seq);
        self.by_created_id[merchant].insert(key, Entry::new(&record));
        self.changes += 1;
        record
    }
}
