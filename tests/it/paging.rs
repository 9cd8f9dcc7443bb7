//! Paging through windows, several XMIDs per call, the export form and the roster, against
//! the simulator over HTTP.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use mxc::{Client, Record, ReportQuery, TimeBasis};
use mxc_sim::SimConfig;

use crate::support::*;

async fn all_pages(client: &Client, query: ReportQuery, window: u32) -> Vec<Record> {
    let mut pager = client.report_pages(query).with_max_result_window(window);
    let mut out = Vec::new();
    while let Some(batch) = pager.next_page().await.expect("page") {
        assert!(batch.rejected.is_empty());
        out.extend(batch.records);
    }
    out
}

fn assert_once_in_time_order(records: &[Record], expected: usize) {
    let ids: HashSet<&str> = records.iter().map(|r| r.id().unwrap()).collect();
    assert_eq!(records.len(), expected, "every record fetched");
    assert_eq!(ids.len(), expected, "no record fetched twice");
    let times: Vec<DateTime<Utc>> = records.iter().map(|r| r.time().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
}

#[tokio::test]
async fn a_window_of_1234_records_is_fetched_exactly_once_in_time_order() {
    let sim = start_sim(quiet_sim()).await;
    let xmid = sim.xmids()[3].clone();
    let to = Utc::now() - Duration::minutes(1);
    let from = to - Duration::hours(2);
    sim.generate(1234, std::slice::from_ref(&xmid), from, to)
        .unwrap();
    // Records outside the window, before and after, must not come back.
    sim.generate(
        50,
        std::slice::from_ref(&xmid),
        from - Duration::hours(1),
        from - Duration::seconds(1),
    )
    .unwrap();
    sim.generate(
        50,
        std::slice::from_ref(&xmid),
        to + Duration::milliseconds(1),
        Utc::now(),
    )
    .unwrap();

    let client = client(&sim);
    let records = all_pages(
        &client,
        ReportQuery::new(vec![xmid.clone()], from, to),
        10_000,
    )
    .await;
    assert_once_in_time_order(&records, 1234);
    assert!(records.iter().all(|r| r.xmid() == Some(xmid.as_str())));
    assert_eq!(
        sim.stats()
            .requests_with("GET /report/v1/tsys/authorization", 200),
        13,
        "ceil(1234 / 100) pages"
    );
}

#[tokio::test]
async fn a_window_larger_than_the_result_window_is_re_anchored_without_loss() {
    let sim = start_sim(SimConfig {
        max_result_window: 500,
        ..quiet_sim()
    })
    .await;
    let xmid = sim.xmids()[0].clone();
    let to = Utc::now();
    let from = to - Duration::hours(1);
    sim.generate(1234, std::slice::from_ref(&xmid), from, to)
        .unwrap();
    let client = client(&sim);
    let records = all_pages(&client, ReportQuery::new(vec![xmid], from, to), 500).await;
    assert_once_in_time_order(&records, 1234);
    assert_eq!(
        sim.stats()
            .requests_with("GET /report/v1/tsys/authorization", 400),
        0,
        "never asked past the window"
    );
}

#[tokio::test]
async fn more_records_than_the_result_window_at_one_instant_are_read_through_the_export_form() {
    let sim = start_sim(SimConfig {
        max_result_window: 500,
        ..quiet_sim()
    })
    .await;
    let xmids: Vec<String> = sim.xmids()[..3].to_vec();
    let t0 = Utc::now();
    // One call's records reach the simulator at one instant (`created`): 1,234 of a group of
    // three merchants, ingested in bulk, with 20 more before and after.
    sim.generate(20, &xmids, t0 - Duration::hours(2), t0 - Duration::hours(1))
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sim.generate(1234, &xmids, t0 - Duration::hours(1), t0)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sim.generate(20, &xmids, t0 - Duration::minutes(5), t0)
        .unwrap();
    let client = client(&sim);
    let query =
        ReportQuery::new(xmids, t0 - Duration::minutes(1), Utc::now()).by(TimeBasis::Ingestion);
    let records = all_pages(&client, query, 500).await;
    let ids: HashSet<&str> = records.iter().map(|r| r.id().unwrap()).collect();
    assert_eq!(
        (records.len(), ids.len()),
        (1274, 1274),
        "every record once"
    );
    let created: Vec<DateTime<Utc>> = records
        .iter()
        .map(|r| TimeBasis::Ingestion.of(r).unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "in ingestion order"
    );
    let stats = sim.stats();
    assert!(
        stats.requests_with("POST /report/v1/tsys/authorization/export", 200) >= 13,
        "the crowded instant through the export form: {:?}",
        stats.requests
    );
    assert_eq!(
        stats.requests_with("GET /report/v1/tsys/authorization", 400),
        0,
        "never asked past the window"
    );
}

#[tokio::test]
async fn several_xmids_in_one_call() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..3].to_vec();
    let to = Utc::now();
    let from = to - Duration::minutes(30);
    for (i, xmid) in xmids.iter().enumerate() {
        sim.generate(40 + i * 10, std::slice::from_ref(xmid), from, to)
            .unwrap();
    }
    let client = client(&sim);
    let query = ReportQuery::new(xmids[..2].to_vec(), from, to);
    let page = client.report(&query, 0).await.unwrap();
    assert_eq!(
        page.total_records,
        Some(90),
        "40 + 50 for the two XMIDs asked, not the third"
    );
    let seen: HashSet<&str> = page.records.iter().filter_map(|r| r.xmid()).collect();
    assert_eq!(seen, xmids[..2].iter().map(String::as_str).collect());
    let sum: f64 = all_pages(&client, query, 10_000)
        .await
        .iter()
        .map(|r| r.view().authorized_amount.unwrap())
        .sum();
    assert!(
        (page.total_amount.unwrap() - sum).abs() < 0.01,
        "aggregations.totalAmount is the window's sum"
    );
}

#[tokio::test]
async fn the_export_form_scrolls_through_everything() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..2].to_vec();
    let to = Utc::now();
    let from = to - Duration::hours(3);
    sim.generate(777, &xmids, from, to).unwrap();
    let client = client(&sim);
    let mut pager = client.report_export(ReportQuery::new(xmids, from, to));
    let mut records = Vec::new();
    while let Some(batch) = pager.next_page().await.unwrap() {
        assert_eq!(batch.total_records, Some(777));
        records.extend(batch.records);
    }
    assert_once_in_time_order(&records, 777);
    assert_eq!(
        sim.stats()
            .requests_with("POST /report/v1/tsys/authorization/export", 200),
        9,
        "8 pages and the empty one"
    );
}

#[tokio::test]
async fn the_roster_lists_active_and_closed_merchants() {
    let sim = start_sim(SimConfig {
        merchants: 230,
        closed_merchants: Some(12),
        ..quiet_sim()
    })
    .await;
    let roster = client(&sim).roster().await.unwrap();
    assert_eq!(roster.len(), 242, "three pages of 100");
    assert_eq!(roster.iter().filter(|m| m.active).count(), 230);
    let closed: Vec<_> = roster.iter().filter(|m| !m.active).collect();
    assert_eq!(closed.len(), 12);
    assert!(closed.iter().all(|m| m.status.as_deref() == Some("Closed")));
    assert!(roster
        .iter()
        .all(|m| m.product_id.as_deref() == Some("3") && m.name.is_some()));
    assert_eq!(
        roster.iter().map(|m| m.xmid.clone()).collect::<Vec<_>>(),
        sim.xmids()
    );
}

#[tokio::test]
async fn live_traffic_with_late_records_is_caught_by_a_look_back_window() {
    // 200 records/s, 20 % of them visible minutes after their transaction time.
    let sim = start_sim(SimConfig {
        rate: 200.0,
        late_fraction: 0.2,
        ..SimConfig::default()
    })
    .await;
    let client = client(&sim);
    let xmids = sim.xmids()[..20].to_vec();
    let start = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let first_to = Utc::now();
    let first = all_pages(
        &client,
        ReportQuery::new(xmids.clone(), start - Duration::minutes(15), first_to),
        10_000,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The second poll re-reads the look-back: it finds records older than the first poll's end.
    let second = all_pages(
        &client,
        ReportQuery::new(xmids, start - Duration::minutes(15), Utc::now()),
        10_000,
    )
    .await;
    let first_ids: HashSet<&str> = first.iter().filter_map(|r| r.id()).collect();
    let late: Vec<&Record> = second
        .iter()
        .filter(|r| !first_ids.contains(r.id().unwrap()) && r.time().unwrap() < first_to)
        .collect();
    assert!(!first.is_empty());
    assert!(
        !late.is_empty(),
        "some records appeared after a poll that covered their time"
    );
    assert!(second.len() > first.len());
}
