//! The simulator's data: a roster of merchants and their authorizations, generated from a seed
//! so the same seed gives the same merchants, ids and amounts; `settlement` adds what follows
//! the authorizations (disputes, batches, deposits).

use std::cmp::{Ordering, Reverse};
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::collections::btree_map::{self, BTreeMap};
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use mxc::{Resource, AUTHORIZATIONS};
use settlement::Settlement;

mod resume;
mod settlement;

pub use resume::After;
pub use settlement::SettlementConfig;

/// One merchant account (XMID) of the roster.
#[derive(Debug, Clone)]
pub struct SimMerchant {
    pub xmid: String,
    pub name: String,
    pub active: bool,
    pub status: &'static str,
    account_id: String,
    entity_id: String,
    location_id: String,
    domain_id: String,
    mcc: &'static Mcc,
    city: &'static City,
    terminal: String,
    store: String,
    /// Share of the portfolio's traffic.
    weight: f64,
}

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

impl SimMerchant {
    /// The UTC offset of the merchant's city: its records' local times use it.
    pub fn utc_offset(&self) -> FixedOffset {
        FixedOffset::east_opt(self.city.utc_offset_hours * 3600)
            .unwrap_or_else(|| FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()))
    }

    pub fn terminal(&self) -> &str {
        &self.terminal
    }
}

#[derive(Debug)]
struct Mcc {
    code: &'static str,
    industry: &'static str,
    sector: &'static str,
    business_type: &'static str,
    nouns: &'static [&'static str],
    /// Typical ticket in dollars.
    ticket: f64,
}

const MCCS: &[Mcc] = &[
    Mcc {
        code: "5411",
        industry: "Grocery Stores",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Market", "Grocers", "Foods"],
        ticket: 48.0,
    },
    Mcc {
        code: "5812",
        industry: "Restaurants",
        sector: "Accommodation and Food Services",
        business_type: "Restaurant",
        nouns: &["Grill", "Kitchen", "Bistro", "Diner"],
        ticket: 36.0,
    },
    Mcc {
        code: "5814",
        industry: "Fast Food Restaurants",
        sector: "Accommodation and Food Services",
        business_type: "Restaurant",
        nouns: &["Burgers", "Tacos", "Pizza"],
        ticket: 14.0,
    },
    Mcc {
        code: "5541",
        industry: "Service Stations",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Fuel", "Gas & Go"],
        ticket: 42.0,
    },
    Mcc {
        code: "5462",
        industry: "Bakeries",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Bakery", "Bake Shop"],
        ticket: 11.0,
    },
    Mcc {
        code: "5732",
        industry: "Electronics Stores",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Electronics", "Computers"],
        ticket: 190.0,
    },
    Mcc {
        code: "7011",
        industry: "Hotels and Motels",
        sector: "Accommodation and Food Services",
        business_type: "Lodging",
        nouns: &["Inn", "Hotel", "Suites"],
        ticket: 240.0,
    },
    Mcc {
        code: "5912",
        industry: "Drug Stores and Pharmacies",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Pharmacy", "Drugs"],
        ticket: 32.0,
    },
    Mcc {
        code: "7538",
        industry: "Automotive Service Shops",
        sector: "Other Services",
        business_type: "Service",
        nouns: &["Auto Repair", "Tire & Lube"],
        ticket: 310.0,
    },
    Mcc {
        code: "8011",
        industry: "Doctors",
        sector: "Health Care and Social Assistance",
        business_type: "Healthcare",
        nouns: &["Family Medicine", "Clinic"],
        ticket: 150.0,
    },
    Mcc {
        code: "5691",
        industry: "Clothing Stores",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Outfitters", "Apparel"],
        ticket: 85.0,
    },
    Mcc {
        code: "5999",
        industry: "Miscellaneous Retail",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Goods", "Supply Co"],
        ticket: 60.0,
    },
];

const PREFIXES: &[&str] = &[
    "Blue Ridge",
    "Harbor",
    "Maple",
    "Summit",
    "Riverside",
    "Golden Gate",
    "Lakeside",
    "Pine Street",
    "Sunset",
    "Oak Hill",
    "Cedar",
    "Main Street",
    "Red Rock",
    "Silver Lake",
    "Bayview",
    "Prairie",
];

#[derive(Debug)]
struct City {
    name: &'static str,
    state: &'static str,
    postal: &'static str,
    utc_offset_hours: i32,
}

const CITIES: &[City] = &[
    City {
        name: "Atlanta",
        state: "GA",
        postal: "30303",
        utc_offset_hours: -5,
    },
    City {
        name: "Austin",
        state: "TX",
        postal: "78701",
        utc_offset_hours: -6,
    },
    City {
        name: "Denver",
        state: "CO",
        postal: "80202",
        utc_offset_hours: -7,
    },
    City {
        name: "Seattle",
        state: "WA",
        postal: "98101",
        utc_offset_hours: -8,
    },
    City {
        name: "Chicago",
        state: "IL",
        postal: "60601",
        utc_offset_hours: -6,
    },
    City {
        name: "Boston",
        state: "MA",
        postal: "02108",
        utc_offset_hours: -5,
    },
    City {
        name: "Phoenix",
        state: "AZ",
        postal: "85004",
        utc_offset_hours: -7,
    },
    City {
        name: "Miami",
        state: "FL",
        postal: "33130",
        utc_offset_hours: -5,
    },
    City {
        name: "Portland",
        state: "OR",
        postal: "97204",
        utc_offset_hours: -8,
    },
    City {
        name: "Nashville",
        state: "TN",
        postal: "37203",
        utc_offset_hours: -6,
    },
];

/// (brand, endpoint code, BIN prefix, share of traffic)
const BRANDS: &[(&str, &str, &str, f64)] = &[
    ("Visa", "V", "4", 0.52),
    ("Mastercard", "M", "5", 0.30),
    ("American Express", "A", "37", 0.10),
    ("Discover", "D", "6011", 0.08),
];

/// (posEntryMode1, its description, posCardDataInputMode, its description, share)
const ENTRY_MODES: &[(&str, &str, &str, &str, f64)] = &[
    (
        "05",
        "Integrated circuit card read; CVV data reliable.",
        "C",
        "Online Chip",
        0.45,
    ),
    (
        "07",
        "Contactless integrated circuit card read.",
        "M",
        "PAN auto-entry via contactless chip",
        0.30,
    ),
    (
        "01",
        "Manual (key entry).",
        "S",
        "Electronic commerce",
        0.15,
    ),
    (
        "90",
        "Magnetic stripe read; full track data.",
        "B",
        "Magnetic stripe reader",
        0.10,
    ),
];

/// ISO 8583 decline codes with their descriptions and relative frequency.
const DECLINES: &[(&str, &str, f64)] = &[
    ("05", "Do not honor", 0.30),
    ("51", "Insufficient funds", 0.25),
    ("N7", "Decline for CVV2 failure", 0.08),
    ("54", "Expired card", 0.08),
    ("14", "Invalid card number (no such number)", 0.07),
    ("61", "Exceeds withdrawal amount limit", 0.06),
    ("57", "Transaction not permitted to cardholder", 0.06),
    ("91", "Issuer or switch inoperative", 0.04),
    ("41", "Lost card, pick up", 0.03),
    ("43", "Stolen card, pick up", 0.03),
];

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

    /// Renders a record in the given shape.
    fn render(
        &mut self,
        merchant: usize,
        tx_ms: i64,
        created_ms: i64,
        seq: u64,
        shape: Shape,
    ) -> SimRecord {
        let rng = &mut self.rng;
        let m = &self.merchants[merchant];
        let id = uuid(rng);
        let declined = rng.gen_bool(self.config.decline_rate.clamp(0.0, 1.0));
        let amount = amount(rng, m.mcc.ticket);
        let (brand, endpoint_code, bin, _) = *pick(rng, BRANDS, |b| b.3);
        let (entry, entry_desc, input, input_desc, _) = *pick(rng, ENTRY_MODES, |e| e.4);
        let (code, description, status) = if declined {
            let (c, d, _) = *pick(rng, DECLINES, |d| d.2);
            (c, d, "Declined")
        } else {
            ("00", "Approved or completed successfully", "Approved")
        };
        let offset = m.utc_offset();
        let tx = local(tx_ms, offset);
        let created = local(created_ms, offset);
        let card_hash = format!("{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>());
        let approval: String = if declined {
            String::new()
        } else {
            (0..6)
                .map(|_| char::from(b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"[rng.gen_range(0..34)]))
                .collect()
        };
        let midnight = offset
            .with_ymd_and_hms(tx.year(), tx.month(), tx.day(), 0, 0, 0)
            .single()
            .unwrap_or(tx);
        let fields = [
            ("/id", json!(id)),
            ("/runId", json!(uuid(rng))),
            ("/accountNumber", json!(m.xmid)),
            ("/accountId", json!(m.account_id)),
            ("/entityId", json!(m.entity_id)),
            ("/locationId", json!(m.location_id)),
            ("/merchantName", json!(m.name)),
            ("/name", json!(m.name)),
            ("/businessType", json!(m.mcc.business_type)),
            ("/industry", json!(m.mcc.industry)),
            ("/sector", json!(m.mcc.sector)),
            ("/mccCode", json!(m.mcc.code)),
            ("/sic", json!(m.mcc.code)),
            ("/cardAcceptorCity", json!(m.city.name)),
            ("/cardAcceptorState", json!(m.city.state)),
            ("/locationAddressCity", json!(m.city.name)),
            ("/locationAddressState", json!(m.city.state)),
            ("/locationAddressPostalCode", json!(m.city.postal)),
            ("/terminalNumber", json!(m.terminal)),
            ("/storeNumber", json!(m.store)),
            ("/domain/id", json!(m.domain_id)),
            ("/domain/name", json!(m.name)),
            ("/authorizedAmount", json!(amount)),
            ("/cardholderBillingAmount", json!(amount)),
            ("/authorizationResponse", json!(code)),
            ("/authorizationResponseDescription", json!(description)),
            ("/authorizationResponseStatus", json!(status)),
            ("/approvalCode", json!(approval)),
            ("/cardType", json!(brand)),
            ("/endpointCode", json!(endpoint_code)),
            ("/endpointDescription", json!(brand)),
            (
                "/acquirerBin",
                json!(format!(
                    "{bin}{:0w$}",
                    rng.gen_range(0..10u32.pow(6 - bin.len() as u32)),
                    w = 6 - bin.len()
                )),
            ),
            ("/cardNumber/data", json!(card_hash)),
            ("/cardNumber/hash", json!(card_hash)),
            (
                "/cardNumber/mask",
                json!(format!("{:04}", rng.gen_range(0..10_000))),
            ),
            (
                "/cardExpirationDate",
                json!(format!(
                    "{:02}{:02}",
                    rng.gen_range(1..=12),
                    rng.gen_range(27..=31)
                )),
            ),
            ("/posEntryMode1", json!(entry)),
            ("/posEntryMode1Description", json!(entry_desc)),
            ("/posCardDataInputMode", json!(input)),
            ("/posCardDataInputModeDescription", json!(input_desc)),
            (
                "/transactionDateAndTime",
                json!(tx.to_rfc3339_opts(SecondsFormat::Millis, false)),
            ),
            (
                "/transactionDate",
                json!(midnight.to_rfc3339_opts(SecondsFormat::Millis, false)),
            ),
            (
                "/transactionTime",
                json!(tx.with_timezone(&Utc).format("%H:%M:%S").to_string()),
            ),
            (
                "/created",
                json!(created.to_rfc3339_opts(SecondsFormat::Millis, false)),
            ),
            (
                "/localTransactionDate",
                json!(tx.format("%m%d").to_string()),
            ),
            (
                "/localTransactionTime",
                json!(tx.format("%H%M%S").to_string()),
            ),
            ("/settlementDate", json!(tx.format("%m%d").to_string())),
            ("/julianDay", json!(format!("{:03}", tx.ordinal()))),
            (
                "/retrievalReferenceNumber",
                json!(format!("{:012}", rng.gen_range(0..1_000_000_000_000u64))),
            ),
            (
                "/systemsTraceAuditNumber",
                json!(format!("{:06}", rng.gen_range(0..1_000_000))),
            ),
            (
                "/transactionIdentifier",
                json!(format!(
                    "{:015}",
                    rng.gen_range(0..1_000_000_000_000_000u64)
                )),
            ),
            ("/uar/account/number", json!(m.xmid)),
            ("/uar/account/id", json!(m.account_id)),
            ("/uar/account/entityId", json!(m.entity_id)),
            ("/uar/entity/id", json!(m.entity_id)),
            ("/uar/location/id", json!(m.location_id)),
            ("/uar/location/name", json!(m.name)),
            ("/uar/location/address/city", json!(m.city.name)),
            ("/uar/location/address/state", json!(m.city.state)),
        ];
        let mut value = self.template.clone();
        for (pointer, v) in fields {
            if let Some(slot) = value.pointer_mut(pointer) {
                *slot = v;
            }
        }
        if shape.pad_bytes > 0 {
            if let Some(map) = value.as_object_mut() {
                map.insert("simPadding".into(), json!("x".repeat(shape.pad_bytes)));
            }
        }
        let id = if shape.with_id {
            id
        } else {
            if let Some(map) = value.as_object_mut() {
                map.shift_remove("id");
            }
            String::new()
        };
        SimRecord {
            id,
            xmid: m.xmid.clone(),
            tx_ms,
            created_ms,
            visible_ms: visible_at(
                created_ms,
                seq,
                SALT_AUTHORIZATIONS,
                self.config.index_delay_ms,
            ),
            seq,
            amount,
            declined,
            resource: &AUTHORIZATIONS,
            json: value.to_string().into_boxed_str(),
        }
    }

    /// The roster entry of a merchant, as `/boarding/v1/uar` returns it.
    pub fn roster_entry(merchant: &SimMerchant) -> Value {
        json!({
            "account": {
                "id": merchant.account_id,
                "number": merchant.xmid,
                "entityId": merchant.entity_id,
                "platform": "crm",
                "active": merchant.active,
                "status": merchant.status,
                "businessType": merchant.mcc.business_type,
                "product": { "id": "3", "name": "TSYS" },
            },
            "entity": { "id": merchant.entity_id, "name": merchant.name },
            "location": {
                "id": merchant.location_id,
                "name": merchant.name,
                "sic": merchant.mcc.code,
                "industry": merchant.mcc.industry,
                "address": {
                    "city": merchant.city.name,
                    "state": merchant.city.state,
                    "postalCode": merchant.city.postal,
                    "country": "United States",
                },
            },
        })
    }
}

/// A record in an index, with what a scan of the index reads, so that it need not visit
/// the record (scattered in memory among the JSON of the others).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record's `visible_ms`.
    visible_ms: i64,
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
type CreatedIdKey = (i64, u128, Box<str>, u64);

/// The key of an authorization in the index by `created` then `id`.
fn created_id_key(created_ms: i64, id: &str, seq: u64) -> CreatedIdKey {
    (created_ms, id_prefix(id), id.into(), seq)
}

/// The first 16 bytes of an id, big-endian, zero-padded: of two ids whose prefixes differ,
/// the one with the lesser prefix is the lesser (a shorter id that ends where the other has
/// a non-zero byte is its prefix, so the lesser too); equal prefixes leave it to the ids.
fn id_prefix(id: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// A record found by [`Dataset::scan`], with what its index holds of it.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    /// The index's instant: `tx_ms` ([`Index::Time`]) or `created_ms` (the others).
    pub key_ms: i64,
    /// The last part of its key in the index: the record's `seq`.
    seq: u64,
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
enum Runs<'a> {
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
struct Merge<'a, K> {
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
    fn new(mut runs: Vec<btree_map::Range<'a, K, Entry>>) -> Self {
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

/// Salts of [`unit_hash`]: authorizations and the follow-up records number their `seq`
/// separately.
pub(super) const SALT_AUTHORIZATIONS: u64 = 0x0a07_0c1e_0a11;
pub(super) const SALT_FOLLOW_UPS: u64 = 0x0f01_10e0_04b5;
/// Salt of the records hidden from queries on `created` (the `hide_from_created_rate` fault).
pub(super) const SALT_HIDDEN: u64 = 0x0b1d_de00_c4e7;
/// Share of records indexed later than the index delay.
const SLOW_INDEX_SHARE: f64 = 0.05;

/// A number in [0, 1) fixed by `seq` and `salt` (splitmix64): chooses, always the same way,
/// which records get a trait without drawing from the data's random stream.
pub(super) fn unit_hash(seq: u64, salt: u64) -> f64 {
    let mut z = seq ^ salt.rotate_left(17);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// When a record `created` at `created_ms` becomes searchable: after `delay_ms`, or for
/// 5 % of records uniformly between `delay_ms` and 5 times it.
pub(super) fn visible_at(created_ms: i64, seq: u64, salt: u64, delay_ms: i64) -> i64 {
    let delay = delay_ms.max(0);
    if delay == 0 {
        return created_ms;
    }
    let u = unit_hash(seq, salt);
    if u < SLOW_INDEX_SHARE {
        // Reuse the same hash for the extra delay: uniform over [delay, 5 × delay].
        let v = u / SLOW_INDEX_SHARE;
        created_ms + delay + (v * 4.0 * delay as f64) as i64
    } else {
        created_ms + delay
    }
}

/// The lateness of a late record, from a uniform `u` in [0, 1): log-uniform between a minute
/// (a tenth of `max_ms` if that is shorter) and `max_ms`, so 98 minutes is as ordinary as 9.
pub(super) fn late_lateness_ms(u: f64, max_ms: i64) -> i64 {
    let max = max_ms.max(1) as f64;
    let min = 60_000f64.min(max / 10.0).max(1.0);
    (min * (max / min).powf(u.clamp(0.0, 1.0))).round() as i64
}

/// Cumulative traffic weights of the active merchants.
fn active_weights(merchants: &[SimMerchant]) -> Vec<(f64, usize)> {
    let mut cumulative = 0.0;
    merchants
        .iter()
        .enumerate()
        .filter(|(_, m)| m.active)
        .map(|(i, m)| {
            cumulative += m.weight;
            (cumulative, i)
        })
        .collect()
}

fn new_merchant(rng: &mut ChaCha8Rng, xmid: String, active: bool) -> SimMerchant {
    let mcc = &MCCS[rng.gen_range(0..MCCS.len())];
    let city = &CITIES[rng.gen_range(0..CITIES.len())];
    let name = format!(
        "{} {}",
        PREFIXES[rng.gen_range(0..PREFIXES.len())],
        mcc.nouns[rng.gen_range(0..mcc.nouns.len())]
    );
    SimMerchant {
        xmid,
        name,
        active,
        status: if active { "Approved" } else { "Closed" },
        account_id: format!("{:024x}", rng.gen::<u128>() >> 32),
        entity_id: format!("{:010}", rng.gen_range(0..10_000_000_000u64)),
        location_id: format!("{:024x}", rng.gen::<u128>() >> 32),
        domain_id: format!("{:011}", rng.gen_range(0..100_000_000_000u64)),
        mcc,
        city,
        terminal: format!("{:04}", rng.gen_range(1..100)),
        store: format!("{:04}", rng.gen_range(1..1000)),
        weight: lognormal(rng, 0.0, 0.7),
    }
}

pub(super) fn uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A ticket around the merchant's typical one: log-normal, in cents, at least $0.50.
fn amount(rng: &mut ChaCha8Rng, ticket: f64) -> f64 {
    let dollars = ticket * lognormal(rng, -0.3, 0.8);
    (dollars.max(0.5) * 100.0).round() / 100.0
}

fn lognormal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mu + sigma * z).exp()
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T], weight: impl Fn(&T) -> f64) -> &'a T {
    let total: f64 = items.iter().map(&weight).sum();
    let mut x = rng.gen_range(0.0..total);
    for item in items {
        x -= weight(item);
        if x < 0.0 {
            return item;
        }
    }
    &items[items.len() - 1]
}

pub(super) fn local(ms: i64, offset: FixedOffset) -> DateTime<FixedOffset> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: f64) -> GenerationConfig {
        GenerationConfig {
            seed: 7,
            merchants: 5,
            closed_merchants: 1,
            rate,
            backlog_ms: 600_000,
            decline_rate: 0.07,
            late_fraction: 0.05,
            max_lateness_ms: 600_000,
            index_delay_ms: 0,
            settlement: SettlementConfig::default(),
        }
    }

    #[test]
    fn lateness_has_a_long_tail_up_to_the_maximum() {
        let three_hours = 3 * 3_600_000;
        let late: Vec<i64> = (0..10_000)
            .map(|i| late_lateness_ms(i as f64 / 10_000.0, three_hours))
            .collect();
        assert!(late.iter().all(|l| (60_000..=three_hours).contains(l)));
        let beyond_98_minutes = late.iter().filter(|l| **l >= 98 * 60_000).count();
        // Log-uniform over 1 min to 3 h: ln(180/98) / ln(180) ≈ 12 % beyond 98 minutes.
        assert!(
            (1_000..1_400).contains(&beyond_98_minutes),
            "{beyond_98_minutes}"
        );
        // A maximum under a minute: between a tenth of it and it.
        assert!((0..100)
            .map(|i| late_lateness_ms(i as f64 / 100.0, 20_000))
            .all(|l| (2_000..=20_000).contains(&l)));

        let mut c = config(5.0);
        c.late_fraction = 0.2;
        c.max_lateness_ms = three_hours;
        c.backlog_ms = 4 * 3_600_000;
        let d = Dataset::new(c, 1_700_000_000_000);
        let all: Vec<usize> = (0..6).collect();
        let recs = d.select(&AUTHORIZATIONS, &all, i64::MIN, i64::MAX);
        let lateness: Vec<i64> = recs.iter().map(|r| r.created_ms - r.tx_ms).collect();
        let instant = lateness.iter().filter(|l| **l < 2_000).count() as f64;
        assert!((0.77..0.83).contains(&(instant / recs.len() as f64)));
        assert!(lateness.iter().all(|l| (0..=three_hours).contains(l)));
        assert!(lateness.iter().any(|l| *l > 2 * 3_600_000), "beyond 2 h");
    }

    #[test]
    fn records_are_searchable_after_the_index_delay_some_later() {
        let delays: Vec<i64> = (0..20_000)
            .map(|seq| visible_at(1_000, seq, SALT_AUTHORIZATIONS, 1_000) - 1_000)
            .collect();
        assert!(delays.iter().all(|d| (1_000..=5_000).contains(d)));
        let later = delays.iter().filter(|d| **d > 1_000).count();
        assert!((800..1_200).contains(&later), "{later} of 20,000 later");
        assert!(delays.iter().any(|d| *d > 4_500));
        assert_eq!(visible_at(1_000, 3, SALT_AUTHORIZATIONS, 0), 1_000);

        let mut c = config(0.0);
        c.index_delay_ms = 1_000;
        let now = 1_700_000_000_000;
        let mut d = Dataset::new(c, now);
        d.generate(500, &[0, 1], now - 60_000, now, now, Shape::NORMAL);
        let visible = |d: &Dataset| d.select(&AUTHORIZATIONS, &[0, 1], i64::MIN, i64::MAX).len();
        assert_eq!(visible(&d), 0);
        assert!(d.select_created(&[0, 1], now, now).is_empty());
        d.advance(now + 999);
        assert_eq!(visible(&d), 0, "not a millisecond early");
        d.advance(now + 1_000);
        let most = visible(&d);
        assert!((440..500).contains(&most), "{most}");
        d.advance(now + 5_000);
        assert_eq!(visible(&d), 500);
        assert_eq!(d.select_created(&[0, 1], now, now).len(), 500);
    }

    #[test]
    fn generated_records_are_created_now_or_soon_after_their_transaction() {
        let now = 1_700_000_000_000;
        let mut d = Dataset::new(config(0.0), now);
        let live = Shape {
            created: Created::WithTransaction,
            ..Shape::NORMAL
        };
        d.generate(500, &[0], now - 600_000, now, now, live);
        d.generate(500, &[1], now - 600_000, now, now, Shape::NORMAL);
        let records = |m: usize| d.select_created(&[m], i64::MIN, i64::MAX);
        let (spread, bulk) = (records(0), records(1));
        assert_eq!((spread.len(), bulk.len()), (500, 500));
        assert!(bulk.iter().all(|r| r.created_ms == now));
        assert!(spread
            .iter()
            .all(|r| (r.tx_ms..=(r.tx_ms + 2_000).min(now)).contains(&r.created_ms)));
        let instants: std::collections::BTreeSet<i64> =
            spread.iter().map(|r| r.created_ms).collect();
        assert!(instants.len() > 450, "{} instants", instants.len());
    }

    #[test]
    fn the_index_by_created_selects_a_created_range() {
        let mut c = config(3.0);
        c.late_fraction = 0.3;
        let now = 1_700_000_000_000;
        let d = Dataset::new(c, now);
        let all: Vec<usize> = (0..6).collect();
        let (from, to) = (now - 400_000, now - 200_000);
        let mut expected: Vec<u64> = d
            .select(&AUTHORIZATIONS, &all, i64::MIN, i64::MAX)
            .iter()
            .filter(|r| (from..=to).contains(&r.created_ms))
            .map(|r| r.seq)
            .collect();
        expected.sort();
        let mut got: Vec<u64> = d
            .select_created(&all, from, to)
            .iter()
            .map(|r| r.seq)
            .collect();
        got.sort();
        assert!(expected.len() > 400);
        assert_eq!(got, expected);
    }

    #[test]
    fn the_id_prefix_orders_as_the_id() {
        let mut ids: Vec<String> = [
            "",
            "\0",
            "\0\0",
            "a",
            "a\0",
            "a\0b",
            "ab",
            "abc",
            "0123456789abcdef",
            "0123456789abcdef\0",
            "0123456789abcdefg",
            "0123456789abcdeg",
            "0123456789abcde",
            "0123456789abcdf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Short alphabets, so that many share their first 16 bytes.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..300 {
            let len = rng.gen_range(0..24);
            let id: String = (0..len)
                .map(|_| ['\0', 'a', 'b', 'é'][rng.gen_range(0..4)])
                .collect();
            ids.push(id);
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(
                    (id_prefix(a), a).cmp(&(id_prefix(b), b)),
                    a.cmp(b),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_data() {
        let a = Dataset::new(config(2.0), 1_700_000_000_000);
        let b = Dataset::new(config(2.0), 1_700_000_000_000);
        let all: Vec<usize> = (0..6).collect();
        let ids = |d: &Dataset| {
            d.select(&AUTHORIZATIONS, &all, 0, i64::MAX)
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        assert!(a.generated > 1000, "10 min at 2/s, got {}", a.generated);
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn records_have_the_full_field_set_and_closed_merchants_get_none() {
        let d = Dataset::new(config(2.0), 1_700_000_000_000);
        let template: Value = serde_json::from_str(mxc::AUTHORIZATION_SAMPLE).unwrap();
        let recs = d.select(&AUTHORIZATIONS, &(0..5).collect::<Vec<_>>(), 0, i64::MAX);
        let v: Value = serde_json::from_str(&recs[0].json).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            template.as_object().unwrap().keys().collect::<Vec<_>>()
        );
        assert!(d.select(&AUTHORIZATIONS, &[5], 0, i64::MAX).is_empty());
        assert!(!d.merchants[5].active);
        let declines = recs.iter().filter(|r| r.declined).count() as f64 / recs.len() as f64;
        assert!((0.04..0.11).contains(&declines), "decline share {declines}");
    }
}
