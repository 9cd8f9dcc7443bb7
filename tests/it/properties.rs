//! Property tests (fuzz-like, on the stable toolchain) for three input surfaces that take
//! text from outside: the MXC page/record parser, webhook signature verification and the
//! route filter language.
//!
//! Each property runs a fixed number of cases so that CI stays short; `PROPTEST_CASES=N`
//! runs every property N times instead (e.g. `PROPTEST_CASES=100000 cargo test --release
//! --test it properties::` for a long fuzzing session). No failure-persistence files are written:
//! a failure prints its minimal input, and each real bug found here has a plain `#[test]`
//! regression (`regression_*`) in its section.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use mxc::{instant, Page};
use mxc_relay::route::{Filter, Path};
use mxc_relay::signature::{signature_header, verify, SignatureError, WebhookSecret};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Map, Number, Value};

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/authorization-page.json"
));

/// `cases` per property, or `PROPTEST_CASES` when it is set; never writes persistence files.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared strategies
// ---------------------------------------------------------------------------------------------

const ID_FIELDS: &[&str] = &["id"];
const STRING_FIELDS: &[&str] = &[
    "accountNumber",
    "authorizationResponse",
    "authorizationResponseStatus",
    "authorizationResponseDescription",
    "cardType",
    "merchantName",
    "mccCode",
    "posEntryMode1",
];
const TIME_FIELDS: &[&str] = &["transactionDateAndTime", "created"];
const AMOUNT_FIELDS: &[&str] = &["authorizedAmount"];
/// Keys of the page envelope, so that generated objects sometimes look like a page.
const ENVELOPE_FIELDS: &[&str] = &["records", "totalRecords", "_scroll_id", "aggregations"];

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64;
    f64::POSITIVE | f64::NEGATIVE | f64::NORMAL | f64::SUBNORMAL | f64::ZERO
}

/// Text that is sometimes a date, sometimes a number, sometimes anything.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _.:-]{0,12}",
        "\\PC{0,12}",
        ".{0,12}",
        "-?[0-9]{1,6}(\\.[0-9]{1,4})?",
        "(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|z|[+-][01][0-9]:?[0-5][0-9])?",
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = ID_FIELDS
        .iter()
        .chain(STRING_FIELDS)
        .chain(TIME_FIELDS)
        .chain(AMOUNT_FIELDS)
        .chain(ENVELOPE_FIELDS)
        .copied()
        .collect();
    prop_oneof![
        2 => select(known).prop_map(str::to_string),
        1 => "[a-zA-Z_]{0,8}",
        1 => ".{0,6}",
    ]
}

/// Any JSON value (finite numbers only: JSON has no others), a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(|f| Value::Number(Number::from_f64(f).expect("finite"))),
        arb_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((arb_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Something in the place of one record: anything, an object with known fields of any type,
/// or an array shaped like the record's field list (serde's derived structs also read arrays).
fn arb_record_value() -> impl Strategy<Value = Value> {
    let known_field_value = prop_oneof![
        Just(Value::Null),
        arb_text().prop_map(Value::String),
        finite_f64().prop_map(|f| Value::Number(Number::from_f64(f).expect("finite"))),
        any::<i64>().prop_map(Value::from),
        arb_json(),
    ];
    prop_oneof![
        3 => vec((arb_key(), known_field_value), 0..10)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        2 => arb_json(),
        1 => vec(
            prop_oneof![Just(Value::Null), "[a-z0-9]{0,4}".prop_map(Value::String)],
            10..=14
        )
        .prop_map(Value::Array),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. The page / record parser (`Page::parse`, `Record`)
// ---------------------------------------------------------------------------------------------

/// What holds for any page that parsed, whatever its input.
fn check_page_invariants(page: &Page) -> Result<(), TestCaseError> {
    for record in &page.records {
        prop_assert!(
            record.to_value().is_object(),
            "a kept record is a JSON object: {}",
            record.json()
        );
        prop_assert!(serde_json::from_str::<Value>(record.json()).is_ok());
    }
    for rejected in &page.rejected {
        prop_assert!(!rejected.reason.is_empty());
    }
    let indices: Vec<usize> = page.rejected.iter().map(|r| r.index).collect();
    prop_assert!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "rejected indices ascend, no repeats: {:?}",
        indices
    );
    Ok(())
}

/// Whether `value`, read back from JSON text, is of the type `RecordView` expects for `key`.
fn field_reads(key: &str, value: &Value) -> bool {
    if value.is_null() {
        return true;
    }
    if ID_FIELDS.contains(&key) || STRING_FIELDS.contains(&key) {
        value.is_string()
    } else if TIME_FIELDS.contains(&key) {
        value
            .as_str()
            .is_some_and(|s| s.parse::<DateTime<FixedOffset>>().is_ok())
    } else if AMOUNT_FIELDS.contains(&key) {
        value.is_number()
    } else {
        true
    }
}

/// Whether an arbitrary value in the place of the page should parse.
fn envelope_reads(value: &Value) -> bool {
    let Some(o) = value.as_object() else {
        return false;
    };
    o.get("records").is_some_and(Value::is_array)
        && o.get("totalRecords")
            .is_none_or(|t| t.is_null() || t.as_u64().is_some())
        && o.get("_scroll_id")
            .is_none_or(|s| s.is_null() || s.is_string())
}

proptest! {
    #![proptest_config(config(2000))]

    /// 1a. Arbitrary bytes: `Ok` or an error, never a panic.
    #[test]
    fn page_parse_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(page) = Page::parse(&bytes) {
            check_page_invariants(&page)?;
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// 1a. The real page with a few bytes overwritten, inserted or removed.
    #[test]
    fn page_parse_never_panics_on_a_mutated_fixture(
        edits in vec((0u8..3, any::<Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = FIXTURE.as_bytes().to_vec();
        for (kind, at, byte) in edits {
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        if let Ok(page) = Page::parse(&bytes) {
            check_page_invariants(&page)?;
        }
    }

    /// 1b. Any JSON value as the page: it parses exactly when it is an object with a
    /// `records` array (and `totalRecords`, `_scroll_id` of their types), and then no record
    /// is lost: each one is kept or rejected.
    #[test]
    fn page_parse_reads_exactly_the_well_formed_envelopes(
        value in prop_oneof![
            arb_json(),
            (vec(arb_record_value(), 0..6), arb_json(), arb_json()).prop_map(|(r, t, s)| {
                json!({"records": r, "totalRecords": t, "_scroll_id": s})
            }),
        ]
    ) {
        let text = serde_json::to_vec(&value).unwrap();
        match Page::parse(&text) {
            Ok(page) => {
                prop_assert!(envelope_reads(&value), "accepted {value}");
                check_page_invariants(&page)?;
                let n = value["records"].as_array().unwrap().len();
                prop_assert_eq!(page.records.len() + page.rejected.len(), n);
            }
            Err(e) => {
                prop_assert!(!envelope_reads(&value), "refused {value}: {e}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// 1b. Any JSON values as the records of a valid envelope: the page parses; each
    /// non-object is rejected at its index; each object is kept with its exact JSON, and a
    /// known field of the wrong type is flagged by `type_problem` (and reads as absent).
    #[test]
    fn page_parse_keeps_or_rejects_every_record(
        records in vec(arb_record_value(), 0..8),
        total in proptest::option::of(any::<u64>()),
    ) {
        let body = json!({"totalRecords": total, "records": records});
        let text = serde_json::to_string(&body).unwrap();
        let page = Page::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_page_invariants(&page)?;
        prop_assert_eq!(page.total_records, total);
        prop_assert_eq!(page.records.len() + page.rejected.len(), records.len());

        let mut kept = page.records.iter();
        let mut rejected = page.rejected.iter();
        for (index, value) in records.iter().enumerate() {
            let json = serde_json::to_string(value).unwrap();
            // The oracle reads the record back from its text, as the parser does (floats
            // need not round-trip bit for bit without serde_json's `float_roundtrip`).
            let reread: Value = serde_json::from_str(&json).unwrap();
            let Some(object) = reread.as_object() else {
                let r = rejected.next();
                prop_assert!(r.is_some(), "non-object record {} was not rejected", json);
                let r = r.unwrap();
                prop_assert_eq!(r.index, index);
                prop_assert_eq!(&r.id, &None, "a non-object has no id");
                continue;
            };
            let record = kept.next();
            prop_assert!(record.is_some(), "object record {} was lost", json);
            let record = record.unwrap();
            prop_assert_eq!(record.json(), json.as_str(), "the exact JSON is kept");

            let broken: Vec<&String> =
                object.iter().filter(|(k, v)| !field_reads(k, v)).map(|(k, _)| k).collect();
            prop_assert_eq!(
                record.type_problem().is_some(),
                !broken.is_empty(),
                "type_problem {:?} for wrongly typed fields {:?} in {}",
                record.type_problem(),
                broken,
                json
            );

            // Each field reads as its value when of its type, else as absent (ids given as
            // numbers are taken as text).
            let expect_id = match object.get("id") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            prop_assert_eq!(&record.view().id, &expect_id);
            let text_field = |k: &str| {
                object.get(k).and_then(|v| v.as_str()).map(str::to_string)
            };
            prop_assert_eq!(&record.view().account_number, &text_field("accountNumber"));
            prop_assert_eq!(&record.view().card_type, &text_field("cardType"));
            prop_assert_eq!(
                record.view().authorized_amount,
                object.get("authorizedAmount").and_then(Value::as_f64)
            );
            prop_assert_eq!(
                record.view().transaction_date_and_time,
                object
                    .get("transactionDateAndTime")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<DateTime<FixedOffset>>().ok())
            );
        }
        prop_assert!(kept.next().is_none());
        prop_assert!(rejected.next().is_none());
    }
}

/// A well-formed authorization: id, amount (whole cents), transaction time.
#[derive(Debug, Clone)]
struct Generated {
    id: String,
    amount: f64,
    time: DateTime<FixedOffset>,
    utc_text: bool,
    extra: Vec<(String, Value)>,
}

fn arb_generated_record() -> impl Strategy<Value = Generated> {
    (
        prop_oneof!["[0-9a-f-]{1,36}", "\\PC{1,16}"],
        0u64..100_000_000_000,
        0i64..4_102_444_800,
        0u32..1000,
        -14 * 60..=14 * 60,
        any::<bool>(),
        vec(("x_[a-z]{1,6}", arb_json()), 0..3),
    )
        .prop_map(|(id, cents, secs, millis, offset, utc_text, extra)| {
            let amount: f64 = format!("{}.{:02}", cents / 100, cents % 100)
                .parse()
                .unwrap();
            // Whole minutes: RFC 3339 offsets have no seconds.
            let offset = FixedOffset::east_opt(offset * 60).unwrap();
            let time = offset.from_utc_datetime(
                &DateTime::from_timestamp(secs, millis * 1_000_000)
                    .unwrap()
                    .naive_utc(),
            );
            Generated {
                id,
                amount,
                time,
                utc_text,
                extra,
            }
        })
}

/// A page of generated records, as compact or pretty JSON (neither ends in whitespace).
fn arb_valid_page() -> impl Strategy<Value = (Vec<Generated>, String)> {
    (vec(arb_generated_record(), 0..6), any::<bool>()).prop_map(|(records, pretty)| {
        let values: Vec<Value> = records
            .iter()
            .map(|g| {
                let mut o = Map::new();
                for (k, v) in &g.extra {
                    o.insert(k.clone(), v.clone());
                }
                o.insert("id".into(), json!(g.id));
                o.insert("accountNumber".into(), json!("xmid_1"));
                o.insert("authorizedAmount".into(), json!(g.amount));
                let time = if g.utc_text {
                    instant(g.time.with_timezone(&Utc))
                } else {
                    g.time.to_rfc3339()
                };
                o.insert("transactionDateAndTime".into(), json!(time));
                Value::Object(o)
            })
            .collect();
        let total: f64 = records.iter().map(|g| g.amount).sum();
        let body = json!({
            "aggregations": {"totalAmount": {"value": total}},
            "totalRecords": records.len(),
            "recordCount": records.len(),
            "records": values,
        });
        let text = if pretty {
            serde_json::to_string_pretty(&body).unwrap()
        } else {
            serde_json::to_string(&body).unwrap()
        };
        (records, text)
    })
}

proptest! {
    #![proptest_config(config(500))]

    /// 1c. A valid page of generated records parses back to the same ids, amounts and
    /// times, in order, with nothing rejected or flagged.
    #[test]
    fn a_generated_page_parses_back((records, text) in arb_valid_page()) {
        let page = Page::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_page_invariants(&page)?;
        prop_assert!(page.rejected.is_empty());
        prop_assert_eq!(page.total_records, Some(records.len() as u64));
        let ids: Vec<Option<&str>> = page.records.iter().map(|r| r.id()).collect();
        let expected: Vec<Option<&str>> = records.iter().map(|g| Some(g.id.as_str())).collect();
        prop_assert_eq!(ids, expected);
        for (record, g) in page.records.iter().zip(&records) {
            prop_assert_eq!(record.type_problem(), None);
            prop_assert_eq!(record.view().authorized_amount, Some(g.amount));
            prop_assert_eq!(record.time(), Some(g.time.with_timezone(&Utc)));
            prop_assert_eq!(record.xmid(), Some("xmid_1"));
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// 1d. A valid page cut short anywhere is an error: no panic, no partial page.
    #[test]
    fn a_truncated_generated_page_is_an_error(
        (_records, text) in arb_valid_page(),
        cut in any::<Index>(),
    ) {
        let at = cut.index(text.len());
        let result = Page::parse(&text.as_bytes()[..at]);
        prop_assert!(result.is_err(), "a page cut at byte {} of {} parsed", at, text.len());
    }

    /// 1d. The same for the vendor's documented page.
    #[test]
    fn a_truncated_fixture_is_an_error(cut in any::<Index>()) {
        let bytes = FIXTURE.trim_end().as_bytes();
        let at = cut.index(bytes.len());
        prop_assert!(Page::parse(&bytes[..at]).is_err(), "the fixture cut at byte {} parsed", at);
    }
}

#[test]
fn the_whole_fixture_parses() {
    let page = Page::parse(FIXTURE.as_bytes()).unwrap();
    assert_eq!(page.records.len(), 1);
    assert!(page.rejected.is_empty());
}

/// Found by `page_parse_keeps_or_rejects_every_record`: serde's derived `Deserialize` also
/// reads a struct from an array of its fields in order, so a record sent as a 12-element
/// array was kept as a record (with `id` its first element) instead of being rejected.
#[test]
fn regression_an_array_record_is_rejected_not_read_field_by_field() {
    let array = json!(["a1", "XMID", null, null, 5.0, null, null, null, null, null, null, null]);
    let body = json!({"totalRecords": 1, "records": [array, ["only-id"]]}).to_string();
    let page = Page::parse(body.as_bytes()).unwrap();
    assert!(page.records.is_empty(), "{:?}", page.records);
    assert_eq!(page.rejected.len(), 2);
    assert_eq!(page.rejected[0].index, 0);
    assert_eq!(page.rejected[0].id, None);
    assert_eq!(page.rejected[1].id, None, "the id of a one-element array");
}

/// Found by `page_parse_reads_exactly_the_well_formed_envelopes`: likewise an array in the
/// place of the page (`[aggregations, totalRecords, records]`) parsed as an empty page.
#[test]
fn regression_an_array_page_is_an_error() {
    assert!(Page::parse(b"[null,null,[]]").is_err());
    assert!(Page::parse(br#"[null,7,[{"id":"a"}],null]"#).is_err());
    assert!(Page::parse(b" \n{\"records\":[]}").is_ok());
}

// ---------------------------------------------------------------------------------------------
// 2. Webhook signatures (Standard Webhooks)
// ---------------------------------------------------------------------------------------------

fn secret_from(key: &[u8]) -> WebhookSecret {
    WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode(key))).expect("a valid secret")
}

fn arb_key_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 24..=64)
}

fn arb_secret() -> impl Strategy<Value = WebhookSecret> {
    arb_key_bytes().prop_map(|k| secret_from(&k))
}

fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof!["msg_[a-zA-Z0-9]{1,28}", "\\PC{0,32}", ".{0,32}"]
}

/// A plausible clock: up to ~30,000 years either side of the epoch.
fn arb_now() -> impl Strategy<Value = i64> {
    -1_000_000_000_000i64..1_000_000_000_000
}

proptest! {
    #![proptest_config(config(1000))]

    /// 2a. Sign then verify round-trips for any body, id, secret and a timestamp within the
    /// tolerance (boundaries included).
    #[test]
    fn signatures_round_trip(
        secret in arb_secret(),
        id in arb_id(),
        body in vec(any::<u8>(), 0..512),
        now in arb_now(),
        tolerance in 0i64..1_000_000,
        skew in prop_oneof![Just(-1.0), Just(1.0), Just(0.0), -1.0f64..=1.0],
    ) {
        let timestamp = now + (skew * tolerance as f64) as i64;
        let header = signature_header(std::slice::from_ref(&secret), &id, timestamp, &body);
        prop_assert_eq!(&header, &secret.sign(&id, timestamp, &body));
        let ts = timestamp.to_string();
        prop_assert_eq!(
            verify(std::slice::from_ref(&secret), &id, &ts, &header, &body, Some((now, tolerance))),
            Ok(0)
        );
        // Whitespace around the timestamp header is ignored; no clock check accepts it too.
        prop_assert_eq!(
            verify(std::slice::from_ref(&secret), &id, &format!(" {ts}\t"), &header, &body, None),
            Ok(0)
        );
    }

    /// 2a. Any i64 timestamp round-trips when the clock is not checked.
    #[test]
    fn signatures_round_trip_for_any_timestamp(
        secret in arb_secret(),
        id in arb_id(),
        body in vec(any::<u8>(), 0..64),
        timestamp in prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), any::<i64>()],
    ) {
        let header = secret.sign(&id, timestamp, &body);
        prop_assert_eq!(
            verify(&[secret], &id, &timestamp.to_string(), &header, &body, None),
            Ok(0)
        );
    }

    /// 2b. Changing any single byte of the body, the id, the signature header, or the
    /// timestamp makes verification fail.
    #[test]
    fn any_single_byte_change_fails(
        secret in arb_secret(),
        id in "[ -~]{1,40}",
        body in vec(any::<u8>(), 1..256),
        timestamp in arb_now(),
        which in 0u8..4,
        at in any::<Index>(),
        mask in 1u8..=127,
    ) {
        let header = secret.sign(&id, timestamp, &body);
        let (mut id2, mut body2, mut header2, mut ts2) =
            (id.clone(), body.clone(), header.clone(), timestamp.to_string());
        // ASCII xor a mask below 128 stays ASCII, so the strings stay UTF-8.
        let flip = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            let i = at.index(b.len());
            b[i] ^= mask;
            String::from_utf8(b).unwrap()
        };
        match which {
            0 => {
                let i = at.index(body2.len());
                body2[i] ^= mask;
            }
            1 => id2 = flip(&id2),
            2 => header2 = flip(&header2),
            _ => ts2 = flip(&ts2),
        }
        let result = verify(std::slice::from_ref(&secret), &id2, &ts2, &header2, &body2, None);
        if which == 3 {
            prop_assert!(result.is_err(), "timestamp {:?} -> {:?} verified", timestamp, ts2);
        } else {
            prop_assert_eq!(result, Err(SignatureError::NoMatch(1)));
        }
    }

    /// 2c. Any secret text parses or is refused as `BadSecret`; it parses exactly when it is
    /// `whsec_` and base64 of at least 24 bytes; a parsed secret is never printed.
    #[test]
    fn secret_parsing_never_panics(
        text in prop_oneof![
            ".{0,80}",
            "\\s*whsec_[A-Za-z0-9+/=]{0,100}\\s*",
            vec(any::<u8>(), 0..70).prop_map(|k| format!("whsec_{}", STANDARD.encode(k))),
        ]
    ) {
        match WebhookSecret::parse(&text) {
            Ok(secret) => {
                prop_assert_eq!(secret.expose(), text.trim());
                let key = STANDARD.decode(&text.trim()["whsec_".len()..]).unwrap();
                prop_assert!(key.len() >= 24);
                prop_assert_eq!(format!("{secret:?}"), "[redacted]");
            }
            Err(e) => {
                prop_assert_eq!(e, SignatureError::BadSecret);
                let valid = text
                    .trim()
                    .strip_prefix("whsec_")
                    .and_then(|b| STANDARD.decode(b).ok())
                    .is_some_and(|k| k.len() >= 24);
                prop_assert!(!valid);
            }
        }
    }

    /// 2d. With two active secrets (rotation) both sign, and a receiver holding either one,
    /// or either one among others, verifies; one holding neither does not.
    #[test]
    fn either_rotated_secret_verifies(
        a in arb_key_bytes(),
        b in arb_key_bytes(),
        c in arb_key_bytes(),
        id in arb_id(),
        body in vec(any::<u8>(), 0..256),
        timestamp in arb_now(),
    ) {
        prop_assume!(c != a && c != b);
        let (a, b, c) = (secret_from(&a), secret_from(&b), secret_from(&c));
        let header = signature_header(&[a.clone(), b.clone()], &id, timestamp, &body);
        prop_assert_eq!(header.split(' ').count(), 2);
        let ts = timestamp.to_string();
        let check = |secrets: &[WebhookSecret]| verify(secrets, &id, &ts, &header, &body, None);
        prop_assert_eq!(check(std::slice::from_ref(&a)), Ok(0));
        prop_assert_eq!(check(std::slice::from_ref(&b)), Ok(0));
        prop_assert_eq!(check(&[c.clone(), b.clone()]), Ok(1));
        prop_assert_eq!(check(&[c.clone(), a.clone()]), Ok(1));
        prop_assert_eq!(check(std::slice::from_ref(&c)), Err(SignatureError::NoMatch(1)));
        // And a header signed by one verifies with the pair in either order.
        let only_b = b.sign(&id, timestamp, &body);
        prop_assert_eq!(verify(&[a.clone(), b.clone()], &id, &ts, &only_b, &body, None), Ok(1));
        prop_assert_eq!(verify(&[b, a], &id, &ts, &only_b, &body, None), Ok(0));
    }

    /// 2e. A timestamp outside the tolerance is refused, even with a valid signature, and
    /// the error says how far off it is.
    #[test]
    fn timestamps_outside_the_tolerance_are_refused(
        secret in arb_secret(),
        id in arb_id(),
        body in vec(any::<u8>(), 0..128),
        now in arb_now(),
        tolerance in 0i64..10_000_000,
        beyond in 1i64..1_000_000_000,
        future in any::<bool>(),
    ) {
        let age = if future { -(tolerance + beyond) } else { tolerance + beyond };
        let timestamp = now - age;
        let header = secret.sign(&id, timestamp, &body);
        prop_assert_eq!(
            verify(&[secret], &id, &timestamp.to_string(), &header, &body, Some((now, tolerance))),
            Err(SignatureError::OutsideTolerance { age_s: age, tolerance_s: tolerance })
        );
    }
}

fn arb_header() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,120}",
        "((v1|v2|V1|v1a)?,[A-Za-z0-9+/=]{0,48}[ \t]{0,2}){0,4}",
        vec(any::<u8>(), 0..40).prop_map(|b| format!("v1,{}", STANDARD.encode(b))),
    ]
}

fn arb_timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|t| t.to_string()),
        Just(i64::MIN.to_string()),
        Just(i64::MAX.to_string()),
        "\\s{0,2}[+-]?[0-9]{0,21}\\s{0,2}",
        ".{0,24}",
    ]
}

fn arb_clock() -> impl Strategy<Value = Option<(i64, i64)>> {
    let edge = || prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), Just(-1i64)];
    proptest::option::of((
        prop_oneof![edge(), any::<i64>(), arb_now()],
        prop_oneof![edge(), any::<i64>(), 0i64..1_000_000],
    ))
}

proptest! {
    #![proptest_config(config(2000))]

    /// 2c. Arbitrary headers, timestamps, clocks and secrets never panic `verify`; success
    /// names one of the secrets; a within-tolerance check passes and a beyond-tolerance one
    /// fails, by exact arithmetic.
    #[test]
    fn verify_never_panics(
        secret_texts in vec(prop_oneof![
            arb_key_bytes().prop_map(|k| format!("whsec_{}", STANDARD.encode(k))),
            ".{0,40}",
        ], 0..3),
        id in arb_id(),
        timestamp in arb_timestamp_text(),
        header in arb_header(),
        body in vec(any::<u8>(), 0..64),
        clock in arb_clock(),
    ) {
        let secrets: Vec<WebhookSecret> =
            secret_texts.iter().filter_map(|t| WebhookSecret::parse(t).ok()).collect();
        let result = verify(&secrets, &id, &timestamp, &header, &body, clock);
        match &result {
            Ok(i) => prop_assert!(*i < secrets.len()),
            Err(SignatureError::NoMatch(n)) => prop_assert_eq!(*n, secrets.len()),
            Err(SignatureError::BadTimestamp(t)) => {
                prop_assert!(timestamp.trim().parse::<i64>().is_err());
                prop_assert!(t.chars().count() <= 32);
            }
            Err(SignatureError::OutsideTolerance { .. }) => prop_assert!(clock.is_some()),
            Err(SignatureError::BadSecret) => prop_assert!(false, "verify never says BadSecret"),
        }
        if let (Ok(ts), Some((now, tolerance))) = (timestamp.trim().parse::<i64>(), clock) {
            let distance = (i128::from(now) - i128::from(ts)).abs();
            let refused = matches!(result, Err(SignatureError::OutsideTolerance { .. }));
            if distance <= i128::from(tolerance) {
                prop_assert!(!refused, "{} s off, tolerance {}", distance, tolerance);
            } else if distance <= i128::from(i64::MAX) || tolerance < i64::MAX {
                prop_assert!(refused, "{} s off, tolerance {}: {:?}", distance, tolerance, result);
            }
        }
    }
}

/// Found by `verify_never_panics`: `now - timestamp` saturates to `i64::MIN` for a far-past
/// clock and a far-future timestamp, and `i64::MIN.abs()` overflowed (a panic in debug builds;
/// in release the negative "age" would have passed the tolerance check).
#[test]
fn regression_a_saturated_age_is_refused_not_a_panic() {
    let secret = secret_from(&[7; 32]);
    let header = secret.sign("msg_1", i64::MAX, b"{}");
    let result = verify(
        &[secret],
        "msg_1",
        &i64::MAX.to_string(),
        &header,
        b"{}",
        Some((i64::MIN, 300)),
    );
    assert!(
        matches!(result, Err(SignatureError::OutsideTolerance { .. })),
        "{result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The route filter language
// ---------------------------------------------------------------------------------------------

const KEYWORDS: &[&str] = &["and", "or", "not", "in", "exists", "true", "false", "null"];
const VOCABULARY: &[&str] = &["a", "b", "amount", "cardType", "x_1", "status-code"];

/// A field path, as `Path` and as text.
fn arb_path() -> impl Strategy<Value = (Path, String)> {
    let first = prop_oneof![
        select(VOCABULARY).prop_map(str::to_string),
        "[A-Za-z_][A-Za-z0-9_-]{0,6}",
    ];
    let rest = prop_oneof![
        select(VOCABULARY).prop_map(str::to_string),
        "[A-Za-z0-9_-]{1,6}",
    ];
    (first, vec(rest, 0..3))
        .prop_map(|(first, rest)| {
            let mut segments = vec![first];
            segments.extend(rest);
            segments.join(".")
        })
        .prop_filter("a keyword is not a path", |t| {
            !KEYWORDS.contains(&t.as_str())
        })
        .prop_map(|t| (Path::parse(&t).expect("a generated path parses"), t))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A literal, as the value it stands for and as text.
fn arb_literal() -> impl Strategy<Value = (Value, String)> {
    prop_oneof![
        prop_oneof![
            ".{0,8}",
            "[a-zA-Z0-9 \"\\\\]{0,8}",
            select(VOCABULARY).prop_map(str::to_string)
        ]
        .prop_map(|s| (Value::String(s.clone()), quote(&s))),
        (finite_f64(), any::<bool>()).prop_map(|(n, exp)| {
            let text = if exp {
                format!("{n:e}")
            } else {
                format!("{n}")
            };
            (Value::Number(Number::from_f64(n).unwrap()), text)
        }),
        (-1000i64..1000).prop_map(|n| (
            Value::Number(Number::from_f64(n as f64).unwrap()),
            n.to_string()
        )),
        Just((Value::Bool(true), "true".to_string())),
        Just((Value::Bool(false), "false".to_string())),
        Just((Value::Null, "null".to_string())),
    ]
}

/// A parsed filter's structure. (`Op` is not exported from the crate, so an operator is named
/// by its `Debug` text.)
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Compare(Vec<String>, String, Value),
    In(Vec<String>, Vec<Value>),
    NotIn(Vec<String>, Vec<Value>),
    Exists(Vec<String>),
    Not(Box<Shape>),
    And(Box<Shape>, Box<Shape>),
    Or(Box<Shape>, Box<Shape>),
}

fn shape(f: &Filter) -> Shape {
    let segs = |p: &Path| p.segments().to_vec();
    match f {
        Filter::Compare(p, op, v) => Shape::Compare(segs(p), format!("{op:?}"), v.clone()),
        Filter::In(p, vs) => Shape::In(segs(p), vs.clone()),
        Filter::NotIn(p, vs) => Shape::NotIn(segs(p), vs.clone()),
        Filter::Exists(p) => Shape::Exists(segs(p)),
        Filter::Not(x) => Shape::Not(Box::new(shape(x))),
        Filter::And(a, b) => Shape::And(Box::new(shape(a)), Box::new(shape(b))),
        Filter::Or(a, b) => Shape::Or(Box::new(shape(a)), Box::new(shape(b))),
    }
}

/// A generated filter: its structure and its tokens; `Paren` adds parentheses the parser
/// drops.
#[derive(Debug, Clone)]
enum Expr {
    Atom(Shape, Vec<String>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Paren(Box<Expr>),
}

impl Expr {
    fn shape(&self) -> Shape {
        match self {
            Expr::Atom(s, _) => s.clone(),
            Expr::Not(x) => Shape::Not(Box::new(x.shape())),
            Expr::And(a, b) => Shape::And(Box::new(a.shape()), Box::new(b.shape())),
            Expr::Or(a, b) => Shape::Or(Box::new(a.shape()), Box::new(b.shape())),
            Expr::Paren(x) => x.shape(),
        }
    }

    /// Tokens with the fewest parentheses the precedence (`not` > `and` > `or`, both
    /// left-associative) needs, plus the generated ones. `level`: 0 any, 1 and-operand,
    /// 2 unary operand.
    fn tokens(&self, level: u8, out: &mut Vec<String>) {
        let mut binary = |wrap: bool, l: &Expr, word: &str, r: &Expr, ll: u8, rl: u8| {
            if wrap {
                out.push("(".into());
            }
            l.tokens(ll, out);
            out.push(word.into());
            r.tokens(rl, out);
            if wrap {
                out.push(")".into());
            }
        };
        match self {
            Expr::Atom(_, t) => out.extend(t.iter().cloned()),
            Expr::And(l, r) => binary(level > 1, l, "and", r, 1, 2),
            Expr::Or(l, r) => binary(level > 0, l, "or", r, 0, 1),
            Expr::Not(x) => {
                out.push("not".into());
                x.tokens(2, out);
            }
            Expr::Paren(x) => {
                out.push("(".into());
                x.tokens(0, out);
                out.push(")".into());
            }
        }
    }

    fn text(&self, separator: &str) -> String {
        let mut tokens = Vec::new();
        self.tokens(0, &mut tokens);
        tokens.join(separator)
    }
}

const OPS: &[(&str, &str)] = &[
    ("==", "Eq"),
    ("!=", "Ne"),
    ("<", "Lt"),
    ("<=", "Le"),
    (">", "Gt"),
    (">=", "Ge"),
];

fn arb_atom() -> impl Strategy<Value = Expr> {
    prop_oneof![
        3 => (arb_path(), select(OPS), arb_literal()).prop_map(|((p, pt), (op, name), (v, vt))| {
            Expr::Atom(
                Shape::Compare(p.segments().to_vec(), name.to_string(), v),
                vec![pt, op.to_string(), vt],
            )
        }),
        2 => (arb_path(), any::<bool>(), vec(arb_literal(), 1..4)).prop_map(
            |((p, pt), negated, literals)| {
                let mut tokens = vec![pt];
                if negated {
                    tokens.push("not".into());
                }
                tokens.extend(["in".to_string(), "[".to_string()]);
                for (i, (_, t)) in literals.iter().enumerate() {
                    if i > 0 {
                        tokens.push(",".into());
                    }
                    tokens.push(t.clone());
                }
                tokens.push("]".into());
                let values = literals.into_iter().map(|(v, _)| v).collect();
                let segments = p.segments().to_vec();
                let shape = if negated {
                    Shape::NotIn(segments, values)
                } else {
                    Shape::In(segments, values)
                };
                Expr::Atom(shape, tokens)
            }
        ),
        1 => (arb_path(), any::<bool>()).prop_map(|((p, pt), prefix)| {
            let tokens = if prefix {
                vec!["exists".to_string(), pt]
            } else {
                vec![pt, "exists".to_string()]
            };
            Expr::Atom(Shape::Exists(p.segments().to_vec()), tokens)
        }),
    ]
}

fn arb_expr() -> impl Strategy<Value = Expr> {
    arb_atom().prop_recursive(5, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|x| Expr::Not(Box::new(x))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|x| Expr::Paren(Box::new(x))),
        ]
    })
}

fn arb_separator() -> impl Strategy<Value = &'static str> {
    select(&[" ", "  ", "\t", "\n", " \r\n ", "\u{3000}"][..])
}

/// Records whose keys are often the ones generated paths use.
fn arb_filter_record() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1000i64..1000).prop_map(Value::from),
        finite_f64().prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        arb_text().prop_map(Value::String),
        select(VOCABULARY).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            vec((select(VOCABULARY).prop_map(str::to_string), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A filter text that sometimes parses: characters, valid filters with a few characters
/// changed, and soups of the language's tokens.
fn arb_filter_text() -> impl Strategy<Value = String> {
    const SOUP: &[&str] = &[
        "a",
        "a.b",
        "x_1",
        "and",
        "or",
        "not",
        "in",
        "exists",
        "true",
        "false",
        "null",
        "(",
        ")",
        "[",
        "]",
        ",",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "=",
        "!",
        "\"s\"",
        "\"",
        "\\",
        "\"a\\\"b\"",
        "\"\\x\"",
        "5",
        "-",
        "-5",
        "1e999",
        "1.5.5",
        "0x10",
        "1e",
        "nan",
        "-inf",
        "NaN",
        "~",
        "é",
        ".",
        "..",
        "a..b",
        ".a",
        "a.",
        "_",
        "-a",
        "\u{0}",
        "\u{3000}",
        "🦀",
    ];
    const CHARS: &[char] = &[
        '(', ')', '[', ']', ',', '=', '!', '<', '>', '"', '\\', ' ', '.', '-', '_', 'a', '1', 'é',
        '~', '\t',
    ];
    let deep = (
        select(&["(", "not ", "( not ", "a == 1 and ", "a == 1 or "][..]),
        0usize..3000,
        select(&["a == 1", ")", ""][..]),
    )
        .prop_map(|(unit, n, tail)| format!("{}{tail}", unit.repeat(n)));
    prop_oneof![
        ".{0,40}",
        any::<String>(),
        deep,
        (vec(select(SOUP), 0..16), select(&["", " ", "  "][..]))
            .prop_map(|(tokens, sep)| tokens.join(sep)),
        (
            arb_expr(),
            arb_separator(),
            vec((0u8..3, any::<Index>(), select(CHARS)), 1..3)
        )
            .prop_map(|(expr, sep, edits)| {
                let mut chars: Vec<char> = expr.text(sep).chars().collect();
                for (kind, at, c) in edits {
                    let i = at.index(chars.len().max(1)).min(chars.len());
                    match kind {
                        0 if i < chars.len() => chars[i] = c,
                        1 if i < chars.len() => {
                            chars.remove(i);
                        }
                        _ => chars.insert(i, c),
                    }
                }
                chars.into_iter().collect()
            }),
    ]
}

/// What a filter error guarantees: a 1-based column within the text (one past its end for
/// "found the end"), at the offending character or token, which the message names.
fn check_filter_error(text: &str, e: &mxc_relay::route::FilterError) -> Result<(), TestCaseError> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let (column, message) = (e.column, e.message.as_str());
    prop_assert_eq!(e.to_string(), format!("{message} at column {column}"));
    prop_assert!(
        (1..=n + 1).contains(&column),
        "column {} of {} chars",
        column,
        n
    );
    prop_assert_eq!(
        column == n + 1,
        message.ends_with("found the end"),
        "only the end is past the text: {}",
        message
    );
    if column > n {
        return Ok(());
    }
    let at = &chars[column - 1..];
    let here: String = at.iter().collect();
    prop_assert!(
        !at[0].is_whitespace(),
        "column {} is whitespace: {}",
        column,
        message
    );
    let take = |f: fn(char) -> bool| -> String {
        std::iter::once(at[0])
            .chain(at[1..].iter().copied().take_while(|c| f(*c)))
            .collect()
    };
    // A token as `Token`'s Display names it: 'ident' / 'op' / 'punct', "string", or a number.
    let check_token = |t: &str| -> Result<(), TestCaseError> {
        if let Some(quoted) = t.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
            prop_assert!(
                here.starts_with(quoted),
                "{} names {} but column {} is at {:?}",
                message,
                quoted,
                column,
                here
            );
        } else if t.starts_with('"') {
            prop_assert_eq!(at[0], '"', "{}", message);
        } else {
            prop_assert!(t.parse::<f64>().is_ok(), "{}", message);
            prop_assert!(at[0].is_ascii_digit() || at[0] == '-', "{}", message);
        }
        Ok(())
    };
    if let Some(c) = message.strip_prefix("unexpected character ") {
        prop_assert_eq!(c, format!("{:?}", at[0]));
    } else if let Some(t) = message
        .strip_prefix("unexpected ")
        .and_then(|m| m.strip_suffix(" after a complete expression"))
    {
        check_token(t)?;
    } else if let Some((_, t)) = message.rsplit_once(", found ") {
        prop_assert!(message.starts_with("expected "), "{}", message);
        check_token(t)?;
    } else if let Some((t, _)) = message.split_once(" makes more than ") {
        check_token(t)?;
    } else if message.ends_with(" is not a field path") {
        let ident = take(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        prop_assert_eq!(message, format!("{ident:?} is not a field path"));
    } else if message.ends_with(" is not a number") {
        let number = take(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
        prop_assert_eq!(message, format!("{number:?} is not a number"));
    } else if message == "unterminated string" {
        prop_assert_eq!(at[0], '"');
    } else if message.starts_with("only \\\" and \\\\ are escapes") {
        prop_assert_eq!(at[0], '\\');
    } else if message.starts_with("'=' is not an operator") {
        prop_assert_eq!(at[0], '=');
    } else if message.starts_with("'!' is not an operator") {
        prop_assert_eq!(at[0], '!');
    } else {
        prop_assert!(false, "an error of an unknown form: {}", message);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    /// 3a + 3c. Any text: a filter or an error, never a panic; an error is at a column of the
    /// text, on the offending character or token, which its message names. A filter that
    /// parses evaluates against any record.
    #[test]
    fn filter_parse_never_panics_and_errors_point_at_the_problem(
        text in arb_filter_text(),
        records in vec(arb_filter_record(), 0..3),
    ) {
        match Filter::parse(&text) {
            Ok(filter) => {
                for record in &records {
                    let _ = filter.matches(record);
                }
            }
            Err(e) => check_filter_error(&text, &e)?,
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// 3b. There is no Display for `Filter`, so filters are generated from the grammar with
    /// their structure: each parses to exactly that structure (precedence, associativity,
    /// parentheses, any whitespace) and evaluates against any record; `not (…)` negates.
    #[test]
    fn generated_filters_parse_to_their_structure(
        expr in arb_expr(),
        separator in arb_separator(),
        records in vec(arb_filter_record(), 1..4),
    ) {
        let text = expr.text(separator);
        let filter = Filter::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(shape(&filter), expr.shape(), "{:?}", text);
        let negated = Filter::parse(&format!("not ({text})")).unwrap();
        for record in &records {
            prop_assert_eq!(negated.matches(record), !filter.matches(record));
        }
    }

    /// 3b. The documented semantics of one comparison: a record holding the literal at the
    /// path equals it, and a record without the field is "not equal" to anything.
    #[test]
    fn a_field_holding_the_literal_matches_it(
        (path, path_text) in arb_path(),
        (value, literal) in arb_literal(),
    ) {
        let record = path
            .segments()
            .iter()
            .rev()
            .fold(value.clone(), |inner, key| json!({ key: inner }));
        let on = |f: &str, r: &Value| -> Result<bool, TestCaseError> {
            // A path has no braces; the literal goes in last.
            let text = f.replace("{p}", &path_text).replace("{l}", &literal);
            Ok(Filter::parse(&text)
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?
                .matches(r))
        };
        let empty = json!({});
        for (f, holding, missing) in [
            ("{p} == {l}", true, false),
            ("{p} != {l}", false, true),
            ("{p} in [{l}]", true, false),
            ("{p} not in [{l}]", false, true),
            ("{p} <= {l}", true, false),
            ("{p} >= {l}", true, false),
            ("{p} < {l}", false, false),
            ("{p} > {l}", false, false),
            ("not ({p} == {l})", false, true),
        ] {
            prop_assert_eq!(on(f, &record)?, holding, "{} on {}", f, record);
            prop_assert_eq!(on(f, &empty)?, missing, "{} on {{}}", f);
        }
        prop_assert_eq!(on("exists {p}", &record)?, !value.is_null());
        let exists_on_empty = on("exists {p}", &empty)?;
        prop_assert!(!exists_on_empty);
    }
}

/// Found while writing `filter_parse_never_panics_and_errors_point_at_the_problem`, whose
/// deep-nesting inputs abort the test binary without the limit: parsing recursed once per parenthesis or `not` and evaluation once per `and`/`or`,
/// so ~400 nested parentheses (debug build, 2 MiB thread stack) or ~10,000 `and`s aborted the
/// process with a stack overflow. The parser now refuses them with an error at the token.
#[test]
fn regression_deep_filters_are_refused_not_a_stack_overflow() {
    let parens = |n: usize| format!("{}a == 1{}", "(".repeat(n), ")".repeat(n));
    let nots = |n: usize| format!("{}a == 1", "not ".repeat(n));
    let ands = |n: usize| vec!["a == 1"; n].join(" and ");
    let record = json!({"a": 1});
    assert!(Filter::parse(&parens(64)).unwrap().matches(&record));
    assert!(Filter::parse(&nots(64)).unwrap().matches(&record));
    assert!(Filter::parse(&ands(1001)).unwrap().matches(&record));
    let e = Filter::parse(&parens(100_000)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "'(' makes more than 64 nested parentheses and 'not' at column 65"
    );
    let e = Filter::parse(&nots(100_000)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "'not' makes more than 64 nested parentheses and 'not' at column 257"
    );
    let e = Filter::parse(&ands(100_000)).unwrap_err();
    assert_eq!(
        e.message,
        "'and' makes more than 1000 'and'/'or' in one filter"
    );
    assert_eq!(e.column, 1000 * "a == 1 and ".len() + "a == 1 ".len() + 1);
}
