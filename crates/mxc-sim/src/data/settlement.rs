//! What follows authorizations in the simulator: disputes (each about an earlier approved
//! authorization), settlement batches (each summing one terminal's business day) and ACH
//! deposits (each paying one settled batch). Scheduled on a timeline and generated when
//! their time comes, so they appear in real time like the authorizations they follow.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use chrono::{Duration, SecondsFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::draw::uuid;
use super::index::{Entry, Timeline};
use super::timing::{local, visible_at, SALT_FOLLOW_UPS};
use super::{SimMerchant, SimRecord};
use mxc::{Resource, ACH, BATCHES, DISPUTES};

/// How follow-up records are generated (simulated time is real time).
#[derive(Debug, Clone)]
pub struct SettlementConfig {
    /// Share of approved authorizations that are disputed later.
    pub dispute_rate: f64,
    /// A dispute arrives between a tenth of this and this long after its authorization.
    pub dispute_delay_ms: i64,
    /// A terminal's business day: each merchant closes one batch per period.
    pub batch_every_ms: i64,
    /// A settled batch is deposited this long after it closes.
    pub deposit_delay_ms: i64,
    /// Share of batches the processor rejects (never deposited).
    pub reject_rate: f64,
    /// Share of deposits the bank returns.
    pub return_rate: f64,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            dispute_rate: 0.005,
            dispute_delay_ms: 300_000,
            batch_every_ms: 600_000,
            deposit_delay_ms: 120_000,
            reject_rate: 0.02,
            return_rate: 0.02,
        }
    }
}

/// Chargeback reasons by card brand: (code, description).
const REASONS: &[(&str, &[(&str, &str)])] = &[
    (
        "Visa",
        &[
            ("10.4", "Other Fraud - Card-Absent Environment"),
            ("13.1", "Merchandise/Services Not Received"),
            ("12.6.1", "Duplicate Processing"),
            ("13.3", "Not as Described or Defective Merchandise/Services"),
        ],
    ),
    (
        "Mastercard",
        &[
            ("4837", "No Cardholder Authorization"),
            ("4853", "Cardholder Dispute"),
            ("4834", "Point-of-Interaction Error"),
        ],
    ),
    (
        "",
        &[
            ("F29", "Card Not Present"),
            ("C08", "Goods/Services Not Received"),
        ],
    ),
];

const RETURNS: &[&str] = &[
    "R01 Insufficient Funds",
    "R02 Account Closed",
    "R03 No Account/Unable to Locate Account",
];

enum Pending {
    Dispute {
        merchant: usize,
        auth: Arc<SimRecord>,
    },
    BatchClose {
        merchant: usize,
    },
    Deposit {
        merchant: usize,
        batch: Arc<SimRecord>,
        count: u64,
    },
}

struct Due {
    at_ms: i64,
    seq: u64,
    what: Pending,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

/// The follow-up records, per resource and merchant, and what is still to come.
pub struct Settlement {
    config: SettlementConfig,
    rng: ChaCha8Rng,
    /// Disputes, batches, deposits: per merchant, (time, seq) → record.
    records: [Vec<Timeline>; 3],
    queue: BinaryHeap<Reverse<Due>>,
    /// Per merchant: the last batch's close and number.
    last_close: Vec<(i64, u32)>,
    /// A record is searchable this long after it is created (see `data::timing::visible_at`).
    index_delay_ms: i64,
    seq: u64,
    /// Records inserted into the timelines so far.
    inserted: u64,
}

impl Settlement {
    /// Starts each active merchant's business day at a random point of the period after
    /// `start_ms`.
    pub fn new(
        config: SettlementConfig,
        seed: u64,
        merchants: &[SimMerchant],
        start_ms: i64,
        index_delay_ms: i64,
    ) -> Self {
        let mut settlement = Settlement {
            index_delay_ms,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x005e_771e_3e47),
            records: [Vec::new(), Vec::new(), Vec::new()],
            queue: BinaryHeap::new(),
            last_close: Vec::new(),
            seq: 0,
            inserted: 0,
        };
        for merchant in merchants {
            settlement.add_merchant(merchant.active, start_ms);
        }
        settlement
    }

    /// Makes room for one more merchant (the next index), closing batches if it is active.
    pub fn add_merchant(&mut self, active: bool, now_ms: i64) {
        let merchant = self.last_close.len();
        for timelines in &mut self.records {
            timelines.push(BTreeMap::new());
        }
        let period = self.config.batch_every_ms.max(1_000);
        let first = now_ms + self.rng.gen_range(0..period);
        self.last_close.push((first - period, 0));
        if active {
            self.schedule(first, Pending::BatchClose { merchant });
        }
    }

    /// An authorization was generated: perhaps it will be disputed.
    pub fn on_authorization(&mut self, merchant: usize, auth: &Arc<SimRecord>) {
        if auth.declined || !self.rng.gen_bool(self.config.dispute_rate.clamp(0.0, 1.0)) {
            return;
        }
        let longest = self.config.dispute_delay_ms.max(10);
        let delay = self.rng.gen_range(longest / 10..=longest);
        let at = auth.created_ms.max(auth.tx_ms) + delay;
        self.schedule(
            at,
            Pending::Dispute {
                merchant,
                auth: auth.clone(),
            },
        );
    }

    /// Generates everything due by `now_ms`. `authorizations` are the merchants' timelines of
    /// authorizations by `created` (a batch sums its terminal's approved ones that reached
    /// the processor during its day).
    pub fn advance(&mut self, now_ms: i64, merchants: &[SimMerchant], authorizations: &[Timeline]) {
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(d)| d.at_ms <= now_ms)
        {
            let Some(Reverse(due)) = self.queue.pop() else {
                break;
            };
            match due.what {
                Pending::Dispute { merchant, auth } => {
                    let record = self.dispute(&merchants[merchant], &auth, due.at_ms);
                    self.insert(0, merchant, record);
                }
                Pending::BatchClose { merchant } => {
                    // A closed merchant's terminal closes no more batches.
                    if !merchants[merchant].active {
                        continue;
                    }
                    let (open_ms, number) = self.last_close[merchant];
                    // The sales that reached the processor during the day, however late after
                    // their transaction (one arriving after the close goes into the next
                    // day's batch).
                    let sales: Vec<&Arc<SimRecord>> = authorizations[merchant]
                        .range((open_ms.saturating_add(1), 0)..=(due.at_ms, u64::MAX))
                        .map(|(_, e)| &e.record)
                        .filter(|r| {
                            !r.declined && open_ms < r.created_ms && r.created_ms <= due.at_ms
                        })
                        .collect();
                    let number = number % 999 + 1;
                    self.last_close[merchant] = (due.at_ms, number);
                    let next = due.at_ms + self.config.batch_every_ms.max(1_000);
                    self.schedule(next, Pending::BatchClose { merchant });
                    if sales.is_empty() {
                        continue;
                    }
                    let count = sales.len() as u64;
                    let batch = Arc::new(self.batch(
                        &merchants[merchant],
                        &sales,
                        open_ms,
                        due.at_ms,
                        number,
                    ));
                    if !batch.declined {
                        let at = due.at_ms + self.config.deposit_delay_ms;
                        self.schedule(
                            at,
                            Pending::Deposit {
                                merchant,
                                batch: batch.clone(),
                                count,
                            },
                        );
                    }
                    self.insert_arc(1, merchant, batch);
                }
                Pending::Deposit {
                    merchant,
                    batch,
                    count,
                } => {
                    let record = self.deposit(&merchants[merchant], &batch, count, due.at_ms);
                    self.insert(2, merchant, record);
                }
            }
        }
    }

    /// The timelines of a follow-up resource, if `resource` is one.
    pub fn timelines(&self, resource: &Resource) -> Option<&[Timeline]> {
        let index = [&DISPUTES, &BATCHES, &ACH]
            .iter()
            .position(|r| *r == resource)?;
        Some(&self.records[index])
    }

    fn schedule(&mut self, at_ms: i64, what: Pending) {
        self.seq += 1;
        self.queue.push(Reverse(Due {
            at_ms,
            seq: self.seq,
            what,
        }));
    }

    fn insert(&mut self, index: usize, merchant: usize, record: SimRecord) {
        self.insert_arc(index, merchant, Arc::new(record));
    }

    fn insert_arc(&mut self, index: usize, merchant: usize, record: Arc<SimRecord>) {
        self.records[index][merchant].insert((record.tx_ms, record.seq), Entry::new(&record));
        self.inserted += 1;
    }

    /// How many records have been inserted into the timelines: it changes with them.
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn dispute(&mut self, m: &SimMerchant, auth: &SimRecord, at_ms: i64) -> SimRecord {
        let original: Value = serde_json::from_str(&auth.json).unwrap_or(Value::Null);
        let text = |pointer: &str| original.pointer(pointer).cloned().unwrap_or(Value::Null);
        let brand = original
            .pointer("/cardType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let reasons = REASONS
            .iter()
            .find(|(b, _)| *b == brand)
            .map_or(REASONS[REASONS.len() - 1].1, |(_, r)| *r);
        let (code, description) = reasons[self.rng.gen_range(0..reasons.len())];
        let chargeback = self.rng.gen_bool(0.7);
        let offset = m.utc_offset();
        let date = local(at_ms, offset);
        let due = date + Duration::days(if chargeback { 20 } else { 10 });
        let id = uuid(&mut self.rng);
        let case_number = format!("{:010}", self.rng.gen_range(0..10_000_000_000u64));
        let json = json!({
            "id": id,
            "accountNumber": m.xmid,
            "merchantName": m.name,
            "caseNumber": case_number,
            "disputeDate": date.to_rfc3339_opts(SecondsFormat::Millis, false),
            "disputeType": if chargeback { "Chargeback" } else { "Retrieval Request" },
            "status": "Open",
            "reasonCode": code,
            "reasonDescription": description,
            "disputeAmount": auth.amount,
            "currencyCode": "USD",
            "dueDate": due.format("%Y-%m-%d").to_string(),
            "cardType": brand,
            "cardNumber": { "hash": text("/cardNumber/hash"), "mask": text("/cardNumber/mask") },
            "authorizationId": auth.id,
            "transactionDateAndTime": text("/transactionDateAndTime"),
            "transactionAmount": auth.amount,
            "approvalCode": text("/approvalCode"),
            "retrievalReferenceNumber": text("/retrievalReferenceNumber"),
            "terminalNumber": text("/terminalNumber"),
            "uar": { "account": { "number": m.xmid }, "location": { "name": m.name } },
        });
        self.record(&DISPUTES, m, at_ms, auth.amount, false, json)
    }

    fn batch(
        &mut self,
        m: &SimMerchant,
        sales: &[&Arc<SimRecord>],
        open_ms: i64,
        close_ms: i64,
        number: u32,
    ) -> SimRecord {
        let amount = (sales.iter().map(|r| r.amount).sum::<f64>() * 100.0).round() / 100.0;
        let rejected = self.rng.gen_bool(self.config.reject_rate.clamp(0.0, 1.0));
        let offset = m.utc_offset();
        let id = uuid(&mut self.rng);
        let json = json!({
            "id": id,
            "accountNumber": m.xmid,
            "merchantName": m.name,
            "terminalNumber": m.terminal(),
            "batchNumber": format!("{number:03}"),
            "batchDate": local(close_ms, offset).to_rfc3339_opts(SecondsFormat::Millis, false),
            "openDate": local(open_ms, offset).to_rfc3339_opts(SecondsFormat::Millis, false),
            "transactionCount": sales.len(),
            "salesCount": sales.len(),
            "salesAmount": amount,
            "refundCount": 0,
            "refundAmount": 0.0,
            "netAmount": amount,
            "currencyCode": "USD",
            "rejected": rejected,
            "rejectReason": if rejected { Value::from("Batch out of balance") } else { Value::Null },
            "status": if rejected { "Rejected" } else { "Settled" },
            "authorizationIds": sales.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            "uar": { "account": { "number": m.xmid }, "location": { "name": m.name } },
        });
        // `declined` marks a rejected batch: it is never deposited.
        self.record(&BATCHES, m, close_ms, amount, rejected, json)
    }

    fn deposit(&mut self, m: &SimMerchant, batch: &SimRecord, count: u64, at_ms: i64) -> SimRecord {
        // Card fees: 2.9% and $0.10 per sale.
        let fees = ((batch.amount * 0.029 + 0.10 * count as f64) * 100.0).round() / 100.0;
        let net = ((batch.amount - fees) * 100.0).round() / 100.0;
        let returned = self.rng.gen_bool(self.config.return_rate.clamp(0.0, 1.0));
        let id = uuid(&mut self.rng);
        let trace = format!("{:015}", self.rng.gen_range(0..1_000_000_000_000_000u64));
        let json = json!({
            "id": id,
            "accountNumber": m.xmid,
            "merchantName": m.name,
            "depositDate": local(at_ms, m.utc_offset()).to_rfc3339_opts(SecondsFormat::Millis, false),
            "batchId": batch.id,
            "grossAmount": batch.amount,
            "feeAmount": fees,
            "amount": net,
            "currencyCode": "USD",
            "status": if returned { "Returned" } else { "Settled" },
            "returnReason": if returned {
                Value::from(RETURNS[self.rng.gen_range(0..RETURNS.len())])
            } else {
                Value::Null
            },
            "traceNumber": trace,
            "uar": { "account": { "number": m.xmid }, "location": { "name": m.name } },
        });
        self.record(&ACH, m, at_ms, net, returned, json)
    }

    fn record(
        &mut self,
        resource: &'static Resource,
        m: &SimMerchant,
        at_ms: i64,
        amount: f64,
        declined: bool,
        json: Value,
    ) -> SimRecord {
        let seq = self.next_seq();
        SimRecord {
            id: json["id"].as_str().unwrap_or_default().to_string(),
            xmid: m.xmid.clone(),
            tx_ms: at_ms,
            created_ms: at_ms,
            visible_ms: visible_at(at_ms, seq, SALT_FOLLOW_UPS, self.index_delay_ms),
            seq,
            amount,
            declined,
            resource,
            json: json.to_string().into_boxed_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::data::{Dataset, GenerationConfig};
    use mxc::AUTHORIZATIONS;

    const NOW: i64 = 1_700_000_000_000;

    fn dataset() -> Dataset {
        Dataset::new(
            GenerationConfig {
                seed: 3,
                merchants: 4,
                closed_merchants: 0,
                rate: 5.0,
                backlog_ms: 3_600_000,
                decline_rate: 0.1,
                late_fraction: 0.05,
                // The default long tail: batches go by `created`, however late.
                max_lateness_ms: 3 * 3_600_000,
                index_delay_ms: 0,
                settlement: SettlementConfig {
                    dispute_rate: 0.05,
                    dispute_delay_ms: 120_000,
                    batch_every_ms: 300_000,
                    deposit_delay_ms: 30_000,
                    ..SettlementConfig::default()
                },
            },
            NOW,
        )
    }

    fn json(r: &SimRecord) -> Value {
        serde_json::from_str(&r.json).unwrap()
    }

    fn ms(v: &Value) -> i64 {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn a_dispute_refers_to_an_earlier_approved_authorization() {
        let d = dataset();
        let all: Vec<usize> = (0..4).collect();
        let auths: HashMap<String, Arc<SimRecord>> = d
            .select(&AUTHORIZATIONS, &all, i64::MIN, i64::MAX)
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let disputes = d.select(&DISPUTES, &all, i64::MIN, i64::MAX);
        // 1 h at 5/s, 90% approved, 5% disputed: about 810.
        assert!((600..1000).contains(&disputes.len()), "{}", disputes.len());
        for dispute in &disputes {
            let v = json(dispute);
            let auth = &auths[v["authorizationId"].as_str().unwrap()];
            assert!(!auth.declined);
            assert_eq!(auth.xmid, dispute.xmid);
            assert_eq!(v["disputeAmount"], json(auth)["authorizedAmount"]);
            assert_eq!(
                v["transactionDateAndTime"],
                json(auth)["transactionDateAndTime"]
            );
            assert!(
                auth.tx_ms + 12_000 <= dispute.tx_ms,
                "a dispute comes later"
            );
            assert_eq!(ms(&v["disputeDate"]), dispute.tx_ms);
            assert!(dispute.tx_ms <= NOW, "none from the future");
        }
    }

    #[test]
    fn a_batch_sums_its_terminals_day_and_a_deposit_pays_it() {
        let d = dataset();
        let all: Vec<usize> = (0..4).collect();
        let auths = d.select(&AUTHORIZATIONS, &all, i64::MIN, i64::MAX);
        let amounts: HashMap<&str, &SimRecord> =
            auths.iter().map(|r| (r.id.as_str(), r.as_ref())).collect();
        let batches = d.select(&BATCHES, &all, i64::MIN, i64::MAX);
        // 4 merchants closing every 5 minutes for an hour.
        assert!((44..=52).contains(&batches.len()), "{}", batches.len());
        let mut batched = HashSet::new();
        for batch in &batches {
            let v = json(batch);
            let ids: Vec<String> = v["authorizationIds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            let (open, close) = (ms(&v["openDate"]), ms(&v["batchDate"]));
            assert_eq!(close - open, 300_000, "one business day each");
            let mut sum = 0.0;
            for id in &ids {
                let auth = amounts[id.as_str()];
                assert!(!auth.declined && auth.xmid == batch.xmid);
                assert!(open < auth.created_ms && auth.created_ms <= close);
                assert!(batched.insert(id.clone()), "{id} in two batches");
                sum += auth.amount;
            }
            assert_eq!(v["salesCount"], ids.len());
            assert!((v["netAmount"].as_f64().unwrap() - sum).abs() < 0.005);
        }
        // Every approved sale between the first opening and the last close is in a batch.
        let first_open = batches
            .iter()
            .map(|b| ms(&json(b)["openDate"]))
            .min()
            .unwrap();
        for auth in auths.iter().filter(|a| !a.declined) {
            let closes = batches
                .iter()
                .filter(|b| b.xmid == auth.xmid)
                .map(|b| b.tx_ms)
                .max()
                .unwrap();
            if auth.created_ms > first_open && auth.created_ms <= closes {
                assert!(batched.contains(&auth.id), "{} not batched", auth.id);
            }
        }
        let by_id: HashMap<&str, &Arc<SimRecord>> =
            batches.iter().map(|b| (b.id.as_str(), b)).collect();
        let deposits = d.select(&ACH, &all, i64::MIN, i64::MAX);
        assert!(
            deposits.len() + 4 >= batches.len() - 4,
            "{} deposits",
            deposits.len()
        );
        for deposit in &deposits {
            let v = json(deposit);
            let batch = by_id[v["batchId"].as_str().unwrap()];
            assert!(!batch.declined, "a rejected batch is not deposited");
            assert_eq!(deposit.tx_ms, batch.tx_ms + 30_000);
            let (gross, fee, net) = (
                v["grossAmount"].as_f64().unwrap(),
                v["feeAmount"].as_f64().unwrap(),
                v["amount"].as_f64().unwrap(),
            );
            assert_eq!(gross, batch.amount);
            assert!((gross - fee - net).abs() < 0.005 && fee > 0.0);
        }
    }
}
