use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use mxc::{Clock, SystemClock, RESOURCES};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::pages::{in_order, Pages};
use super::*;
use crate::data::{GenerationConfig, SettlementConfig, Shape};

const NOW: i64 = 1_700_000_000_000;
/// The `created` of the bulk loads: hundreds of records each.
const BULK: [i64; 2] = [NOW - 300_000, NOW];

/// Authorizations arriving one by one (some late) for 20 minutes, then bulk loads that
/// share a `created` (some without an id, so equal ids too), some with `created` ahead of
/// the clock; an index delay keeps the newest unsearchable. Disputes, batches, deposits.
fn dataset() -> Dataset {
    let mut data = Dataset::new(
        GenerationConfig {
            seed: 11,
            merchants: 8,
            closed_merchants: 1,
            rate: 2.0,
            backlog_ms: 20 * 60_000,
            decline_rate: 0.07,
            late_fraction: 0.2,
            max_lateness_ms: 10 * 60_000,
            index_delay_ms: 1_000,
            settlement: SettlementConfig {
                dispute_rate: 0.05,
                ..SettlementConfig::default()
            },
        },
        NOW - 300_000,
    );
    let no_id = Shape {
        with_id: false,
        pad_bytes: 0,
        ..Shape::NORMAL
    };
    data.generate(
        700,
        &[0, 1, 2],
        NOW - 900_000,
        BULK[0],
        BULK[0],
        Shape::NORMAL,
    );
    data.generate(200, &[], NOW - 900_000, BULK[0], BULK[0], no_id);
    data.advance(NOW);
    data.generate(
        500,
        &[2, 3, 4],
        NOW - 60_000,
        NOW + 60_000,
        BULK[1],
        Shape::NORMAL,
    );
    data.generate(100, &[3], NOW - 60_000, NOW, BULK[1], no_id);
    data.advance(NOW + 500);
    data
}

/// Where two lists of records first differ (the same records: the same `Arc`s), if they do.
fn first_difference(a: &[Arc<SimRecord>], b: &[Arc<SimRecord>]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) => !Arc::ptr_eq(x, y),
        _ => true,
    })
}

fn at(ms: i64) -> String {
    mxc::instant(Utc.timestamp_millis_opt(ms).single().unwrap())
}

/// A random query, mostly of the relay's shapes: on `created` (the poll, with and
/// without its id tie-break, sometimes with an extra filter or odd bounds) or on
/// transaction time (of any resource); sometimes another sort, which no index answers.
fn random_query(rng: &mut ChaCha8Rng, xmids: &[String]) -> ReportQuery {
    let mut params = HashMap::new();
    if rng.gen_bool(0.9) {
        let n = rng.gen_range(1..=xmids.len());
        let mut group: Vec<String> = xmids.choose_multiple(rng, n).cloned().collect();
        if rng.gen_bool(0.1) {
            group.push(group[0].clone());
        }
        if rng.gen_bool(0.1) {
            group.push("899999999999".into());
        }
        params.insert(
            "accountNumbers".into(),
            serde_json::json!(group).to_string(),
        );
    }
    // Often exactly at a bulk instant, or from it: ties in `created`.
    let bound = |rng: &mut ChaCha8Rng| match rng.gen_range(0..4) {
        0 => BULK[rng.gen_range(0..2)],
        _ => NOW + rng.gen_range(-1_500_000..120_000),
    };
    let (mut from, mut to) = (bound(rng), bound(rng));
    if rng.gen_bool(0.9) && from > to {
        std::mem::swap(&mut from, &mut to);
    }
    if rng.gen_bool(0.15) {
        to = from;
    }
    let shape = rng.gen_range(0..10);
    let resource = if shape == 6 {
        RESOURCES[rng.gen_range(0..RESOURCES.len())]
    } else {
        &AUTHORIZATIONS
    };
    let sort = match shape {
        0..=2 => "created:asc,id:asc".to_string(),
        3 => " created : ASC ,id:asc".to_string(),
        4 | 5 => "created:asc".to_string(),
        6 | 7 => format!("{}:asc", resource.time_field),
        _ => [
            "created:desc,id:asc",
            "created:asc,id:desc",
            "id:asc",
            "authorizedAmount:asc",
        ][rng.gen_range(0..4)]
        .to_string(),
    };
    params.insert("sort".into(), sort);
    let range = match rng.gen_range(0..5) {
        0 => serde_json::json!({"range": {"created": {"gt": from - 1, "lt": to + 1}}}),
        1 => serde_json::json!({"range": {"created": {"gte": from as f64 - 0.5, "lte": to}}}),
        _ => serde_json::json!({"range": {"created": {"gte": at(from), "lte": at(to)}}}),
    };
    if shape == 6 || shape == 7 {
        params.insert("dr_type".into(), "abs".into());
        params.insert("dr_from".into(), at(from));
        params.insert("dr_to".into(), at(to));
        if rng.gen_bool(0.2) {
            params.insert(
                "filter".into(),
                serde_json::json!({"must": [range]}).to_string(),
            );
        }
    } else {
        let filter = match rng.gen_range(0..6) {
            0 => serde_json::json!({"must": [range, {"bool": {"must": [
                {"term": {"authorizationResponseStatus": "Approved"}}
            ]}}]}),
            1 => serde_json::json!({"filter": range}),
            _ => serde_json::json!({"must": [range]}),
        };
        params.insert("filter".into(), filter.to_string());
    }
    let now = Utc.timestamp_millis_opt(NOW).single().unwrap();
    ReportQuery::parse(resource, &params, now).unwrap()
}

#[test]
fn the_relays_poll_is_answered_from_the_index_by_created_then_id() {
    let mut params = HashMap::new();
    params.insert(
        "accountNumbers".into(),
        r#"["800000000001","800000000002"]"#.into(),
    );
    params.insert("sort".into(), "created:asc,id:asc".into());
    let range = serde_json::json!({"must": [{"range": {"created": {
        "gte": "2026-01-01T00:00:00.000Z", "lte": "2026-01-01T00:05:00.000Z"
    }}}]});
    params.insert("filter".into(), range.to_string());
    params.insert("size".into(), "100".into());
    let query = ReportQuery::parse(&AUTHORIZATIONS, &params, SystemClock.now()).unwrap();
    let plan = Plan::of(&query).unwrap();
    assert_eq!(plan.index, Index::CreatedId);
    assert_eq!(plan.to_ms - plan.from_ms, 300_000);
    params.insert("sort".into(), "created:asc".into());
    let query = ReportQuery::parse(&AUTHORIZATIONS, &params, SystemClock.now()).unwrap();
    assert_eq!(Plan::of(&query).unwrap().index, Index::Created);
    params.insert("sort".into(), "created:desc".into());
    let query = ReportQuery::parse(&AUTHORIZATIONS, &params, SystemClock.now()).unwrap();
    assert_eq!(Plan::of(&query), None);
}

/// The answer from an index in order is the answer of select-then-sort: the same
/// records in the same order, the same count and the same total, for every page (cut
/// from the whole sorted answer as the report endpoint used to cut it).
#[test]
fn answers_in_index_order_are_the_sorted_answers() {
    let data = dataset();
    let xmids: Vec<String> = data.merchants.iter().map(|m| m.xmid.clone()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut planned, mut ties, mut pages) = (HashMap::new(), 0, 0);
    for _ in 0..1_000 {
        let query = random_query(&mut rng, &xmids);
        let merchants = merchants(&data, &query);
        let hide_rate = if query.on_created && rng.gen_bool(0.3) {
            0.25
        } else {
            0.0
        };
        let general = |offset, size| {
            sorted(
                select(&data, &query, &merchants),
                &query,
                hide_rate,
                offset,
                size,
            )
        };
        let Some(plan) = Plan::of(&query) else {
            assert!(!query.sorts_exactly(&[(CREATED, true), ("id", true)]) || query.has_dr_type);
            continue;
        };
        *planned.entry(format!("{:?}", plan.index)).or_insert(0) += 1;
        let whole = general(0, usize::MAX);
        let total = whole.total;
        ties += whole
            .records
            .windows(2)
            .filter(|w| w[0].created_ms == w[1].created_ms)
            .count();
        let mut windows = vec![(0, usize::MAX), (0, 100), (total, 100), (total + 7, 10)];
        for _ in 0..4 {
            windows.push((rng.gen_range(0..=total), rng.gen_range(1..=100)));
        }
        for (i, (offset, size)) in windows.into_iter().enumerate() {
            let start = offset.min(total);
            let end = start.saturating_add(size).min(total);
            let expected = &whole.records[start..end];
            let got = in_order(&data, plan, &query, &merchants, hide_rate, offset, size);
            assert_eq!(
                first_difference(&got.records, expected),
                None,
                "{} records for {} at {offset} (size {size}) of {total}: {query:?}",
                got.records.len(),
                expected.len()
            );
            assert_eq!(got.total, total, "{query:?}");
            assert_eq!(
                got.total_amount.to_bits(),
                whole.total_amount.to_bits(),
                "{query:?}"
            );
            if i == 7 {
                // And the general path cuts pages the same way.
                let page = general(offset, size);
                assert_eq!(first_difference(&page.records, expected), None);
                assert_eq!(page.total, total);
                assert_eq!(page.total_amount.to_bits(), whole.total_amount.to_bits());
            }
            pages += 1;
        }
    }
    // Every index, many answers, and ties in `created` among them.
    for index in ["CreatedId", "Created", "Time(Resource"] {
        let n: usize = planned
            .iter()
            .filter(|(k, _)| k.starts_with(index))
            .map(|(_, n)| n)
            .sum();
        assert!(n > 100, "{index}: {planned:?}");
    }
    assert!(ties > 10_000, "{ties} ties");
    assert!(pages > 3_000, "{pages} pages");
}

/// Reading a query page by page, each page from where the previous one ended (so mostly
/// served from a resume point), gives the pages the general path gives at the same
/// moments: the same records, count and total amount, also when records are inserted or
/// become searchable between two pages (a resume point must not serve a stale answer).
#[test]
fn pages_read_in_sequence_are_the_pages_of_the_general_path() {
    let mut data = dataset();
    let xmids: Vec<String> = data.merchants.iter().map(|m| m.xmid.clone()).collect();
    let pages = Pages::default();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut now = NOW + 500;
    // Pages, and answers that changed between two pages with the data's version (records
    // inserted) or without (records that became searchable).
    let (mut served, mut inserted, mut became_searchable) = (0, 0, 0);
    let mut queries = 0;
    while queries < 120 {
        let query = random_query(&mut rng, &xmids);
        let Some(plan) = Plan::of(&query) else {
            continue;
        };
        // More of those whose range holds the clock, where records become searchable.
        if plan.to_ms < now && rng.gen_bool(0.7) {
            continue;
        }
        queries += 1;
        let hide_rate = if query.on_created && rng.gen_bool(0.3) {
            0.25
        } else {
            0.0
        };
        let mut offset = 0;
        let mut previous: Option<(u64, usize, u64)> = None;
        for _ in 0..300 {
            let merchants = merchants(&data, &query);
            let size = rng.gen_range(1..=100);
            let got = pages.answer(&data, plan, &query, &merchants, hide_rate, offset, size);
            let expected = sorted(
                select(&data, &query, &merchants),
                &query,
                hide_rate,
                offset,
                size,
            );
            assert_eq!(
                first_difference(&got.records, &expected.records),
                None,
                "{} records at {offset} (size {size}) of {}, expected {}: {query:?}",
                got.records.len(),
                expected.total,
                expected.records.len()
            );
            assert_eq!(got.total, expected.total, "at {offset}: {query:?}");
            assert_eq!(
                got.total_amount.to_bits(),
                expected.total_amount.to_bits(),
                "at {offset}: {query:?}"
            );
            served += 1;
            let now_answer = (data.version(), got.total, got.total_amount.to_bits());
            if let Some((version, total, amount)) = previous {
                if (total, amount) != (now_answer.1, now_answer.2) {
                    if version == now_answer.0 {
                        became_searchable += 1;
                    } else {
                        inserted += 1;
                    }
                }
            }
            previous = Some(now_answer);
            if got.records.is_empty() {
                break;
            }
            offset += got.records.len();
            match rng.gen_range(0..8) {
                // The clock moves on: records become searchable (and some arrive, to be
                // searchable a second later).
                0 | 1 => {
                    now += rng.gen_range(1..150);
                    data.advance(now);
                }
                // Records inserted into the range, searchable at once.
                2 => {
                    let (lo, hi) = (plan.from_ms.max(NOW - 1_500_000), plan.to_ms);
                    let hi = hi.min(data.index_now_ms() - 5_000);
                    if let (true, Some(&m)) = (lo <= hi, merchants.choose(&mut rng)) {
                        let tx = rng.gen_range(lo..=hi);
                        let n = rng.gen_range(1..=3);
                        data.generate(n, &[m], tx, tx, tx, Shape::NORMAL);
                    }
                }
                // A page asked again, or one before it: the general path.
                3 => offset = offset.saturating_sub(rng.gen_range(0..=got.records.len() + 9)),
                _ => {}
            }
        }
    }
    let (resumed, kept) = pages.counts();
    assert!(
        resumed * 10 > served * 4,
        "{resumed} of {served} pages resumed"
    );
    assert!(kept <= 64, "{kept} points");
    assert!(inserted > 100, "{inserted} answers changed by insertions");
    assert!(
        became_searchable > 20,
        "{became_searchable} answers changed by the clock alone"
    );
}
