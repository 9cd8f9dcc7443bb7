use mxc::AUTHORIZATIONS;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::index::id_prefix;
use super::timing::{late_lateness_ms, visible_at, SALT_AUTHORIZATIONS};
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
    let instants: std::collections::BTreeSet<i64> = spread.iter().map(|r| r.created_ms).collect();
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
