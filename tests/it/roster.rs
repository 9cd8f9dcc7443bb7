//! Discovery from the roster: `xmids = "roster"` polls every active merchant the simulator's
//! roster lists; a merchant boarded or closed is picked up within one refresh, with nothing
//! lost or duplicated for the others. By default the merchants are polled in groups, and
//! groups that shrink are merged again.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mxc_relay::config::{Config, GroupSize};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::Metrics;
use mxc_sim::{RunningSim, SimConfig, StatsSnapshot};
use test_kit::PipelineConfigBuilder;

use crate::support::*;

fn ids_of(lines: &[serde_json::Value], xmid: &str) -> usize {
    lines.iter().filter(|l| l["xmid"] == xmid).count()
}

/// `xmids = "roster"` against `sim`, refreshed every 2 s, from 10 minutes before `t0`, every
/// record to `dir/archive.jsonl`.
fn roster_config(sim: &RunningSim, dir: &std::path::Path, t0: DateTime<Utc>) -> Config {
    PipelineConfigBuilder::new(sim.base_url(), &["roster".into()])
        .interval(Duration::from_secs(1))
        .start(t0 - chrono::Duration::minutes(10))
        .with(|c| c.pollers.roster.refresh = Duration::from_secs(2))
        .store(dir.join("store"))
        .archive(dir.join("archive.jsonl"))
        .build_valid()
}

#[test]
fn xmids_may_be_the_roster_alone_or_with_listed_ones() {
    let env = |name: &str| (name == "MXC_API_KEY").then(|| "API_key".to_string());
    let sink = "[sinks.out]\nkind = \"stdout\"\n[[routes]]\nsink = \"out\"\n";
    let alone = Config::from_toml(
        &format!("[pollers]\nxmids = \"roster\"\n{sink}"),
        "t.toml",
        &env,
    )
    .unwrap();
    assert!(alone.pollers.uses_roster());
    assert!(alone.pollers.listed_xmids().is_empty());
    let both = Config::from_toml(
        &format!("[pollers]\nxmids = [\"roster\", \"887000000001\"]\n[pollers.roster]\nrefresh = \"1m\"\nexclude = [\"887000000002\"]\n{sink}"),
        "t.toml",
        &env,
    )
    .unwrap();
    assert!(both.pollers.uses_roster());
    assert_eq!(both.pollers.listed_xmids(), ["887000000001"]);
    assert_eq!(both.pollers.roster.refresh, Duration::from_secs(60));
    let errors = Config::from_toml(
        &format!("[pollers]\nxmids = 5\n[pollers.roster]\nrefresh = \"0s\"\nexclude = [\"887000000001\"]\nxmid = []\n{sink}"),
        "t.toml",
        &env,
    )
    .unwrap_err()
    .errors
    .iter()
    .map(|e| e.to_string())
    .collect::<Vec<_>>();
    assert_eq!(
        errors,
        [
            "pollers.roster.xmid: unknown key",
            "pollers.xmids: invalid type: integer `5`, expected a list of XMIDs or \"roster\"",
            // The wrong type hides nothing else of its table.
            "pollers.roster.refresh: must be at least 1s, got 0s",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_boarded_and_closed_are_picked_up_within_one_refresh_and_nothing_else_changes() {
    let sim = start_sim(SimConfig {
        merchants: 6,
        closed_merchants: Some(2),
        ..quiet_sim()
    })
    .await;
    let active: Vec<String> = sim.xmids()[..6].to_vec();
    let closed_before: Vec<String> = sim.xmids()[6..].to_vec();
    let t0 = Utc::now();
    sim.generate(300, &active, t0 - chrono::Duration::minutes(5), t0)
        .unwrap();
    sim.generate(20, &closed_before, t0 - chrono::Duration::minutes(5), t0)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.jsonl");
    let mut c = roster_config(&sim, dir.path(), t0);
    // Long enough for the records it gets just before it closes to settle (5 s) and be read.
    c.pollers.roster.grace = Duration::from_secs(8);
    c.pollers.roster.backfill = Duration::from_secs(10 * 60);
    let metrics = Metrics::new();
    let pipeline = Pipeline::start(&c, metrics.clone()).await.unwrap();

    assert!(
        wait_until(Duration::from_secs(20), || lines(&archive).len() >= 300).await,
        "the roster's 6 active merchants are polled: {} lines",
        lines(&archive).len()
    );
    assert_eq!(metrics.roster_merchants.get(), 6);
    assert_eq!(
        metrics.roster_added.get(),
        0,
        "the first read adds no change"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        lines(&archive).len(),
        300,
        "closed merchants are not polled"
    );

    // One merchant boards, with records from two minutes ago; another closes, with a last
    // record just before; the others go on.
    let boarded = sim.add_merchants(1).remove(0);
    let closing = active[0].clone();
    let closing_before = ids_of(&lines(&archive), &closing);
    let now = Utc::now();
    sim.generate(
        50,
        std::slice::from_ref(&boarded),
        now - chrono::Duration::minutes(2),
        now,
    )
    .unwrap();
    sim.generate(
        10,
        std::slice::from_ref(&closing),
        now - chrono::Duration::seconds(30),
        now,
    )
    .unwrap();
    assert!(sim.close_merchant(&closing));
    sim.generate(50, &active[1..], now - chrono::Duration::seconds(30), now)
        .unwrap();
    let changed = Instant::now();
    let arrived = |xmid: &str, n: usize| {
        let archive = archive.clone();
        let xmid = xmid.to_string();
        async move {
            wait_until(Duration::from_secs(10), || {
                ids_of(&lines(&archive), &xmid) >= n
            })
            .await;
            ids_of(&lines(&archive), &xmid)
        }
    };
    assert_eq!(
        arrived(&boarded, 50).await,
        50,
        "the boarded merchant's records, from its backfill window"
    );
    eprintln!(
        "boarded merchant's records all in after {:?}",
        changed.elapsed()
    );
    assert_eq!(metrics.roster_added.get(), 1);
    assert_eq!(
        arrived(&closing, closing_before + 10).await,
        closing_before + 10,
        "the closed merchant is polled during its grace period"
    );
    assert!(
        wait_until(Duration::from_secs(10), || lines(&archive).len() >= 410).await,
        "the others' records too: {} of 410",
        lines(&archive).len()
    );

    // After the grace period, the closed merchant is no longer polled.
    assert!(
        wait_until(Duration::from_secs(15), || metrics.roster_removed.get()
            == 1)
        .await,
        "the closed merchant stops after its grace period"
    );
    assert_eq!(
        metrics.roster_merchants.get(),
        6,
        "6 − 1 closed + 1 boarded"
    );
    let now = Utc::now();
    sim.generate(
        5,
        std::slice::from_ref(&closing),
        now - chrono::Duration::seconds(5),
        now,
    )
    .unwrap();
    sim.generate(30, &active[1..], now - chrono::Duration::seconds(5), now)
        .unwrap();
    let total = 300 + 50 + 10 + 50 + 30;
    assert!(wait_until(Duration::from_secs(10), || lines(&archive).len() >= total).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = lines(&archive);
    let ids = record_ids(&all);
    assert_eq!(
        (all.len(), ids.len()),
        (total, total),
        "every record once, none of the stopped merchant's new ones"
    );
    assert_eq!(ids_of(&all, &closing), closing_before + 10);
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_boarded_or_closed_while_the_service_was_down_lose_nothing() {
    let sim = start_sim(SimConfig {
        merchants: 4,
        closed_merchants: Some(0),
        ..quiet_sim()
    })
    .await;
    let active: Vec<String> = sim.xmids();
    let t0 = Utc::now();
    sim.generate(100, &active, t0 - chrono::Duration::minutes(5), t0)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.jsonl");
    let mut c = roster_config(&sim, dir.path(), t0);
    c.pollers.roster.backfill = Duration::from_secs(30 * 60);
    let pipeline = Pipeline::start(&c, Metrics::new()).await.unwrap();
    assert!(wait_until(Duration::from_secs(20), || lines(&archive).len() >= 100).await);
    tokio::time::sleep(Duration::from_secs(2)).await; // a roster read after the first polls
    pipeline.shutdown().await.unwrap();

    // While it is down: a merchant boards with records from 20 minutes ago (before
    // `pollers.start` would reach, within the 30-minute backfill); another has a last
    // sale and closes.
    let boarded = sim.add_merchants(1).remove(0);
    let closing = active[0].clone();
    let now = Utc::now();
    sim.generate(
        30,
        std::slice::from_ref(&boarded),
        now - chrono::Duration::minutes(21),
        now - chrono::Duration::minutes(19),
    )
    .unwrap();
    sim.generate(
        10,
        std::slice::from_ref(&closing),
        now - chrono::Duration::seconds(20),
        now,
    )
    .unwrap();
    assert!(sim.close_merchant(&closing));

    let metrics = Metrics::new();
    let pipeline = Pipeline::start(&c, metrics.clone()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || lines(&archive).len() >= 140).await,
        "{} of 140",
        lines(&archive).len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = lines(&archive);
    let ids = record_ids(&all);
    assert_eq!((all.len(), ids.len()), (140, 140));
    assert_eq!(
        ids_of(&all, &boarded),
        30,
        "boarded while down: read from its backfill window"
    );
    assert_eq!(metrics.roster_added.get(), 1);
    assert_eq!(
        metrics.roster_merchants.get(),
        5,
        "the closed merchant is still polled: its grace period started at the restart"
    );
    pipeline.shutdown().await.unwrap();
}

/// (authorization requests, XMIDs named by them) so far, from the simulator's stats.
async fn poll_counts(sim: &RunningSim) -> (u64, u64) {
    let stats: StatsSnapshot = reqwest::get(format!("{}/_sim/stats?by_xmid=true", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        stats.requests_to("GET /report/v1/tsys/authorization"),
        stats.queries_by_xmid.values().sum(),
    )
}

/// Requests per poll cycle of `merchants` merchants over `window`: a cycle names each of them
/// once, so cycles = XMIDs named / merchants (exact whatever the window's edges, as long as
/// the polls are idle: one request each).
async fn calls_per_cycle(sim: &RunningSim, merchants: usize, window: Duration) -> f64 {
    let (calls, named) = poll_counts(sim).await;
    tokio::time::sleep(window).await;
    let (calls_after, named_after) = poll_counts(sim).await;
    let cycles = (named_after - named) as f64 / merchants as f64;
    (calls_after - calls) as f64 / cycles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_fleet_is_polled_in_groups_by_default_and_groups_that_shrink_are_merged() {
    const MERCHANTS: usize = 230;
    let sim = start_sim(SimConfig {
        merchants: MERCHANTS,
        closed_merchants: Some(0),
        ..quiet_sim()
    })
    .await;
    let all = sim.xmids();
    assert_eq!(all.len(), MERCHANTS);
    let t0 = Utc::now();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.jsonl");
    let mut c = roster_config(&sim, dir.path(), t0);
    assert_eq!(c.pollers.group_size, GroupSize::Auto, "the default");
    // At least settle (5 s) + interval (1 s).
    c.pollers.roster.grace = Duration::from_secs(7);
    let metrics = Metrics::new();
    let pipeline = Pipeline::start(&c, metrics.clone()).await.unwrap();

    // 230 merchants in ceil(230 / 50) = 5 groups (of 46): 5 requests per cycle, not 230.
    let everyone_polled = async {
        for _ in 0..200 {
            let stats: StatsSnapshot =
                reqwest::get(format!("{}/_sim/stats?by_xmid=true", sim.base_url()))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
            if stats.queries_by_xmid.len() == MERCHANTS {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(everyone_polled.await, "every merchant of the roster polled");
    let groups = MERCHANTS.div_ceil(GroupSize::AUTO);
    let before = calls_per_cycle(&sim, MERCHANTS, Duration::from_secs(4)).await;
    eprintln!("{MERCHANTS} merchants: {before:.2} requests per cycle");
    assert!(
        (before - groups as f64).abs() < 0.5,
        "{MERCHANTS} merchants in {groups} requests per cycle, got {before:.2}"
    );

    // Records for everyone, then four merchants of five (of every group: the roster's groups
    // are formed in XMID order) close.
    let now = Utc::now();
    sim.generate(300, &all, now - chrono::Duration::minutes(2), now)
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || lines(&archive).len() >= 300).await,
        "{} of 300",
        lines(&archive).len()
    );
    let mut sorted = all.clone();
    sorted.sort();
    let stay: Vec<String> = sorted.iter().step_by(5).cloned().collect();
    let go: Vec<&String> = sorted.iter().filter(|x| !stay.contains(x)).collect();
    for xmid in &go {
        assert!(sim.close_merchant(xmid));
    }
    // Records keep coming for the merchants that stay, before, during and after the merge.
    let mut generated = 300;
    let mut merged_at = None;
    let churned = Instant::now();
    loop {
        let now = Utc::now();
        sim.generate(5, &stay, now - chrono::Duration::seconds(1), now)
            .unwrap();
        generated += 5;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if merged_at.is_none() && metrics.roster_removed.get() == go.len() as u64 {
            merged_at = Some(Instant::now());
        }
        if merged_at.is_some_and(|t| t.elapsed() > Duration::from_secs(4)) {
            break;
        }
        assert!(
            churned.elapsed() < Duration::from_secs(40),
            "the closed merchants stop after their grace period: {} of {} stopped",
            metrics.roster_removed.get(),
            go.len()
        );
    }
    assert!(
        wait_until(Duration::from_secs(20), || lines(&archive).len()
            >= generated)
        .await,
        "{} of {generated}",
        lines(&archive).len()
    );

    // The 46 that stay, spread over five groups of 9 or 10, are one group now.
    let after = calls_per_cycle(&sim, stay.len(), Duration::from_secs(4)).await;
    eprintln!(
        "{} merchants after the merge: {after:.2} requests per cycle; {generated} records",
        stay.len()
    );
    assert!(
        (after - 1.0).abs() < 0.5,
        "{} merchants in 1 request per cycle after the merge, got {after:.2}",
        stay.len()
    );
    assert_eq!(metrics.roster_merchants.get(), stay.len() as i64);

    // Nothing lost across the merge, nothing twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all_lines = lines(&archive);
    let ids = record_ids(&all_lines);
    assert_eq!(
        (all_lines.len(), ids.len()),
        (generated, generated),
        "every record once"
    );
    pipeline.shutdown().await.unwrap();
}
