use mxc::{Clock, SystemClock};

use super::*;

fn record(amount: f64, declined: bool) -> SimRecord {
    SimRecord {
        id: "r1".into(),
        xmid: "X1".into(),
        tx_ms: 1_700_000_000_000,
        created_ms: 1_700_000_000_000,
        visible_ms: 1_700_000_000_000,
        seq: 0,
        amount,
        declined,
        resource: &AUTHORIZATIONS,
        json: format!(r#"{{"id":"r1","cardType":"Visa","cardNumber":{{"mask":"4242"}},"authorizedAmount":{amount}}}"#).into(),
    }
}

fn filter(text: &str) -> Filter {
    Filter::parse(&serde_json::from_str(text).unwrap()).unwrap()
}

#[test]
fn terms_range_exists_and_must_not() {
    let big_visa = record(700.0, false);
    let small_decline = record(5.0, true);
    let f = filter(
        r#"{"must":[{"terms":{"cardType":["Visa","Discover"]}},{"range":{"authorizedAmount":{"gte":500}}}]}"#,
    );
    assert!(f.matches(&big_visa));
    assert!(!f.matches(&small_decline));
    let f =
        filter(r#"{"bool":{"must_not":[{"term":{"authorizationResponseStatus":"Approved"}}]}}"#);
    assert!(f.matches(&small_decline));
    assert!(!f.matches(&big_visa));
    assert!(filter(r#"{"must":{"exists":{"field":"cardNumber.mask"}}}"#).matches(&big_visa));
    assert!(!filter(r#"{"must":{"exists":{"field":"nope"}}}"#).matches(&big_visa));
    let f = filter(
        r#"{"must":{"range":{"transactionDateAndTime":{"gte":"2023-11-14T22:13:20.000Z","lt":"2023-11-14T22:13:21Z"}}}}"#,
    );
    assert!(f.matches(&big_visa));
}

fn parse(pairs: &[(&str, &str)]) -> Result<ReportQuery, String> {
    let map = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ReportQuery::parse(&AUTHORIZATIONS, &map, SystemClock.now())
}

#[test]
fn a_created_range_is_planned_from_the_top_level_must() {
    let q = parse(&[(
        "filter",
        r#"{"must":[{"range":{"created":{"gte":"2026-11-30T05:00:00.000Z","lte":"2026-11-30T05:00:25.000Z"}}},{"term":{"cardType":"Visa"}}]}"#,
    )])
    .unwrap();
    let gte = DateTime::parse_from_rfc3339("2026-11-30T05:00:00Z")
        .unwrap()
        .timestamp_millis();
    assert_eq!(q.created_range, Some((gte, gte + 25_000)));
    assert!(q.on_created && !q.has_dr_type);
    // Exclusive bounds, epoch milliseconds, two ranges intersected, `filter` as `must`.
    let q = parse(&[(
        "filter",
        r#"{"filter":[{"range":{"created":{"gt":1000,"lt":"5000"}}},{"range":{"created":{"gte":2000}}}]}"#,
    )])
    .unwrap();
    assert_eq!(q.created_range, Some((2_000, 4_999)));
    // Under `should` it narrows nothing, but it is still a query on `created`.
    let q = parse(&[(
        "filter",
        r#"{"should":[{"range":{"created":{"gte":1000}}}]}"#,
    )])
    .unwrap();
    assert_eq!(q.created_range, None);
    assert!(q.on_created);
    let q = parse(&[("sort", "created:desc")]).unwrap();
    assert!(q.on_created && q.sorts_by("created") && q.created_range.is_none());
    assert!(
        !parse(&[("sort", "transactionDateAndTime:asc")])
            .unwrap()
            .on_created
    );
    assert!(
        parse(&[("filter", r#"{"must":{"range":{"created":{"gte":"soon"}}}}"#)])
            .unwrap_err()
            .contains("failed to parse date field")
    );
}

#[test]
fn a_filter_of_only_a_created_range_is_known_to_match_without_reading_it() {
    for (filter, only_created) in [
        (
            r#"{"must":[{"range":{"created":{"gte":"2023-11-14T22:13:20.000Z","lte":"2023-11-14T22:13:21.000Z"}}}]}"#,
            true,
        ),
        (
            r#"{"filter":{"range":{"created":{"gt":1700000000000,"lt":"1700000001000"}}}}"#,
            true,
        ),
        (
            r#"{"bool":{"must":[{"range":{"created":{"gte":1699999999000}}},{"range":{"created":{"lte":1700000001500,"format":"epoch_millis"}}}]}}"#,
            true,
        ),
        (
            r#"{"must":[{"range":{"created":{"gte":1699999999999.5}}}]}"#,
            false,
        ),
        (r#"{"must":[{"range":{"created":{"gte":1e300}}}]}"#, false),
        (
            r#"{"must":[{"range":{"created":{"gte":1700000000000}}},{"term":{"cardType":"Visa"}}]}"#,
            false,
        ),
        (
            r#"{"must":[{"range":{"created":{"gte":1700000000000}}}],"must_not":[{"term":{"cardType":"Amex"}}]}"#,
            false,
        ),
        (
            r#"{"should":[{"range":{"created":{"gte":1700000000000}}}]}"#,
            false,
        ),
    ] {
        let q = parse(&[("filter", filter)]).unwrap();
        assert_eq!(q.created_range_is_filter, only_created, "{filter}");
        for created_ms in (1_699_999_998_000..1_700_000_003_000).step_by(7) {
            let r = SimRecord {
                created_ms,
                ..record(1.0, false)
            };
            let surely = q.surely_matches_created(created_ms);
            assert!(!surely || q.matches(&r), "{filter} {created_ms}");
            if only_created {
                assert_eq!(surely, q.matches(&r), "{filter} {created_ms}");
            }
        }
    }
}

#[test]
fn sorting_by_created_then_id_orders_by_both() {
    let mk = |id: &str, created_ms: i64, seq: u64| {
        std::sync::Arc::new(SimRecord {
            id: id.into(),
            created_ms,
            seq,
            ..record(1.0, false)
        })
    };
    let mut records = vec![mk("b", 2, 0), mk("c", 1, 1), mk("a", 2, 2), mk("d", 1, 3)];
    parse(&[("sort", "created:asc, id:asc")])
        .unwrap()
        .sort(&mut records);
    let order: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(order, ["c", "d", "a", "b"]);
    parse(&[("sort", "created:DESC,id:desc")])
        .unwrap()
        .sort(&mut records);
    let order: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(order, ["b", "a", "d", "c"]);
}

#[test]
fn bad_queries_say_what_is_wrong() {
    let now = SystemClock.now();
    let q = |pairs: &[(&str, &str)]| {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ReportQuery::parse(&AUTHORIZATIONS, &map, now)
    };
    assert!(q(&[("size", "101")]).unwrap_err().contains("at most 100"));
    assert!(q(&[("dr_type", "abs"), ("dr_from", "yesterday")])
        .unwrap_err()
        .contains("dr_from"));
    assert!(q(&[("accountNumbers", "X1,X2")])
        .unwrap_err()
        .contains("JSON array"));
    assert!(q(&[("sort", "created:up")])
        .unwrap_err()
        .contains("asc or desc"));
    assert!(q(&[("filter", r#"{"must":[{"wildcard":{"a":"b"}}]}"#)])
        .unwrap_err()
        .contains("wildcard"));
    let ok = q(&[("dr_type", "q"), ("dr_quick", "last_24_h")]).unwrap();
    assert_eq!(ok.to_ms - ok.from_ms, 86_400_000);
}
