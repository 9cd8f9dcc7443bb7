//! Rendering an authorization: the card brands, entry modes and decline codes it is drawn
//! from, and its JSON, the sample record with the drawn and the merchant's values set.

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, TimeZone, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use mxc::AUTHORIZATIONS;

use super::draw::{lognormal, pick, uuid};
use super::timing::{local, visible_at, SALT_AUTHORIZATIONS};
use super::{Dataset, Shape, SimMerchant, SimRecord};

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

/// What is drawn at random for one authorization, drawn in one go and always in the same
/// order, so that a seed gives the same records.
struct Sale {
    id: String,
    declined: bool,
    amount: f64,
    /// (brand, endpoint code)
    brand: (&'static str, &'static str),
    /// (posEntryMode1, its description, posCardDataInputMode, its description)
    entry: (&'static str, &'static str, &'static str, &'static str),
    /// (code, description, status)
    response: (&'static str, &'static str, &'static str),
    card_hash: String,
    approval: String,
    run_id: String,
    acquirer_bin: String,
    card_mask: String,
    expiration: String,
    retrieval_reference: String,
    trace_audit: String,
    transaction_identifier: String,
}

impl Sale {
    fn draw(rng: &mut ChaCha8Rng, ticket: f64, decline_rate: f64) -> Sale {
        let id = uuid(rng);
        let declined = rng.gen_bool(decline_rate.clamp(0.0, 1.0));
        let amount = amount(rng, ticket);
        let (brand, endpoint_code, bin, _) = *pick(rng, BRANDS, |b| b.3);
        let (entry, entry_desc, input, input_desc, _) = *pick(rng, ENTRY_MODES, |e| e.4);
        let response = if declined {
            let (c, d, _) = *pick(rng, DECLINES, |d| d.2);
            (c, d, "Declined")
        } else {
            ("00", "Approved or completed successfully", "Approved")
        };
        let card_hash = format!("{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>());
        let approval: String = if declined {
            String::new()
        } else {
            (0..6)
                .map(|_| char::from(b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"[rng.gen_range(0..34)]))
                .collect()
        };
        let run_id = uuid(rng);
        let acquirer_bin = format!(
            "{bin}{:0w$}",
            rng.gen_range(0..10u32.pow(6 - bin.len() as u32)),
            w = 6 - bin.len()
        );
        let card_mask = format!("{:04}", rng.gen_range(0..10_000));
        let expiration = format!("{:02}{:02}", rng.gen_range(1..=12), rng.gen_range(27..=31));
        let retrieval_reference = format!("{:012}", rng.gen_range(0..1_000_000_000_000u64));
        let trace_audit = format!("{:06}", rng.gen_range(0..1_000_000));
        let transaction_identifier = format!("{:015}", rng.gen_range(0..1_000_000_000_000_000u64));
        Sale {
            id,
            declined,
            amount,
            brand: (brand, endpoint_code),
            entry: (entry, entry_desc, input, input_desc),
            response,
            card_hash,
            approval,
            run_id,
            acquirer_bin,
            card_mask,
            expiration,
            retrieval_reference,
            trace_audit,
            transaction_identifier,
        }
    }

    /// The sale's fields, by JSON pointer.
    fn fields(&self) -> impl IntoIterator<Item = (&'static str, Value)> {
        let (brand, endpoint_code) = self.brand;
        let (entry, entry_desc, input, input_desc) = self.entry;
        let (code, description, status) = self.response;
        [
            ("/id", json!(self.id)),
            ("/runId", json!(self.run_id)),
            ("/authorizedAmount", json!(self.amount)),
            ("/cardholderBillingAmount", json!(self.amount)),
            ("/authorizationResponse", json!(code)),
            ("/authorizationResponseDescription", json!(description)),
            ("/authorizationResponseStatus", json!(status)),
            ("/approvalCode", json!(self.approval)),
            ("/cardType", json!(brand)),
            ("/endpointCode", json!(endpoint_code)),
            ("/endpointDescription", json!(brand)),
            ("/acquirerBin", json!(self.acquirer_bin)),
            ("/cardNumber/data", json!(self.card_hash)),
            ("/cardNumber/hash", json!(self.card_hash)),
            ("/cardNumber/mask", json!(self.card_mask)),
            ("/cardExpirationDate", json!(self.expiration)),
            ("/posEntryMode1", json!(entry)),
            ("/posEntryMode1Description", json!(entry_desc)),
            ("/posCardDataInputMode", json!(input)),
            ("/posCardDataInputModeDescription", json!(input_desc)),
            ("/retrievalReferenceNumber", json!(self.retrieval_reference)),
            ("/systemsTraceAuditNumber", json!(self.trace_audit)),
            ("/transactionIdentifier", json!(self.transaction_identifier)),
        ]
    }
}

/// The merchant's fields of its authorizations, by JSON pointer.
fn merchant_fields(m: &SimMerchant) -> impl IntoIterator<Item = (&'static str, Value)> {
    [
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
        ("/uar/account/number", json!(m.xmid)),
        ("/uar/account/id", json!(m.account_id)),
        ("/uar/account/entityId", json!(m.entity_id)),
        ("/uar/entity/id", json!(m.entity_id)),
        ("/uar/location/id", json!(m.location_id)),
        ("/uar/location/name", json!(m.name)),
        ("/uar/location/address/city", json!(m.city.name)),
        ("/uar/location/address/state", json!(m.city.state)),
    ]
}

/// The time fields of an authorization made at `tx` and ingested at `created` (both in the
/// merchant's time zone), by JSON pointer.
fn time_fields(
    tx: DateTime<FixedOffset>,
    created: DateTime<FixedOffset>,
) -> impl IntoIterator<Item = (&'static str, Value)> {
    let midnight = tx
        .offset()
        .with_ymd_and_hms(tx.year(), tx.month(), tx.day(), 0, 0, 0)
        .single()
        .unwrap_or(tx);
    let rfc3339 = |t: DateTime<FixedOffset>| t.to_rfc3339_opts(SecondsFormat::Millis, false);
    [
        ("/transactionDateAndTime", json!(rfc3339(tx))),
        ("/transactionDate", json!(rfc3339(midnight))),
        (
            "/transactionTime",
            json!(tx.with_timezone(&Utc).format("%H:%M:%S").to_string()),
        ),
        ("/created", json!(rfc3339(created))),
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
    ]
}

/// Sets the fields of `value` that the sample has (the others are left out).
fn set(value: &mut Value, fields: impl IntoIterator<Item = (&'static str, Value)>) {
    for (pointer, v) in fields {
        if let Some(slot) = value.pointer_mut(pointer) {
            *slot = v;
        }
    }
}

impl Dataset {
    /// Renders an authorization of `merchant` in the given shape: the sample record with the
    /// merchant's, the drawn and the time fields set.
    pub(super) fn render(
        &mut self,
        merchant: usize,
        tx_ms: i64,
        created_ms: i64,
        seq: u64,
        shape: Shape,
    ) -> SimRecord {
        let m = &self.merchants[merchant];
        let sale = Sale::draw(&mut self.rng, m.mcc.ticket, self.config.decline_rate);
        let offset = m.utc_offset();
        let mut value = self.template.clone();
        set(&mut value, sale.fields());
        set(&mut value, merchant_fields(m));
        set(
            &mut value,
            time_fields(local(tx_ms, offset), local(created_ms, offset)),
        );
        if shape.pad_bytes > 0 {
            if let Some(map) = value.as_object_mut() {
                map.insert("simPadding".into(), json!("x".repeat(shape.pad_bytes)));
            }
        }
        let id = if shape.with_id {
            sale.id
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
            amount: sale.amount,
            declined: sale.declined,
            resource: &AUTHORIZATIONS,
            json: value.to_string().into_boxed_str(),
        }
    }
}

/// A ticket around the merchant's typical one: log-normal, in cents, at least $0.50.
fn amount(rng: &mut ChaCha8Rng, ticket: f64) -> f64 {
    let dollars = ticket * lognormal(rng, -0.3, 0.8);
    (dollars.max(0.5) * 100.0).round() / 100.0
}
