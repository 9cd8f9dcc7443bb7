//! The pipeline end to end: simulator over HTTP → pollers → the store in a temp dir → file sinks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mxc::ReportQuery;
use mxc_relay::config::{Config, GroupSize, RedactConfig, RouteConfig, SinkConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::Metrics;
use mxc_sim::{Faults, RunningSim};
use serde_json::Value;

use crate::support::*;

/// A pipeline configuration against `sim` for `xmids`, with one file sink `archive` taking
/// every record, fast polling and a store in `dir`.
fn config(sim: &RunningSim, xmids: &[String], dir: &Path, start: DateTime<Utc>) -> Config {
    archiving_pipeline(&sim.base_url(), xmids, dir, start).build_valid()
}

fn route(name: &str, sink: &str, filter: Option<&str>) -> RouteConfig {
    RouteConfig {
        filter: filter.map(str::to_string),
        ..RouteConfig::every_record(name, sink)
    }
}

/// Every record id the simulator holds for `xmids` in `[from, to]`.
async fn sim_ids(
    sim: &RunningSim,
    xmids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> HashSet<String> {
    let client = client(sim);
    let mut ids = HashSet::new();
    for xmid in xmids {
        let mut pager = client.report_pages(ReportQuery::new(vec![xmid.clone()], from, to));
        while let Some(batch) = pager.next_page().await.unwrap() {
            ids.extend(
                batch
                    .records
                    .iter()
                    .filter_map(|r| r.id().map(str::to_string)),
            );
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_records_with_late_arrivals_reach_the_sink_exactly_once_in_order() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..20].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let pipeline = Pipeline::start(
        &config(&sim, &xmids, dir.path(), t0 - minutes(35)),
        Metrics::new(),
    )
    .await
    .unwrap();

    // In-order traffic: each chunk's transaction times follow the previous chunk's.
    let mut last = t0 - minutes(20);
    for _ in 0..5 {
        let now = Utc::now();
        sim.generate(500, &xmids, last + chrono::Duration::milliseconds(1), now)
            .unwrap();
        last = now;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Late traffic: records that appear long after their transaction time (20 to 30 minutes
    // before the start), ingested now: the cursor on `created` reads them as new.
    for _ in 0..5 {
        sim.generate(500, &xmids, t0 - minutes(30), t0 - minutes(21))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let archive = dir.path().join("archive.jsonl");
    let found = wait_for_lines(&archive, 5_000, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a few more polls: nothing more may come
    let found_after = lines(&archive);
    assert_eq!(found, found_after.len(), "no extra deliveries");
    let metrics = pipeline.metrics.clone();
    pipeline.shutdown().await.unwrap();

    let ids: Vec<String> = found_after.iter().map(record_id).collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), 5_000, "every record delivered once");
    assert_eq!(
        unique,
        sim_ids(&sim, &xmids, t0 - minutes(31), Utc::now()).await
    );
    assert_eq!(metrics.records("new"), 5_000);
    assert_eq!(metrics.records("reconciled"), 0);

    // Per XMID, records come out in the order MXC ingested them (`created`).
    let mut per_xmid: HashMap<String, Vec<String>> = HashMap::new();
    for line in &found_after {
        let created = line["data"]["created"].as_str().unwrap();
        let created = DateTime::parse_from_rfc3339(created)
            .unwrap()
            .with_timezone(&Utc);
        per_xmid
            .entry(line["xmid"].as_str().unwrap().to_string())
            .or_default()
            .push(mxc::instant(created));
    }
    assert_eq!(per_xmid.len(), 20);
    for (xmid, times) in per_xmid {
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{xmid} out of ingestion order"
        );
    }
}

/// Runs a pipeline on its own runtime until `archive` has `until_lines` lines, then drops the
/// runtime without any shutdown: tasks vanish mid-flight, like a crash.
fn run_then_crash(config: Config, archive: PathBuf, until_lines: usize) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
            wait_for_lines(&archive, until_lines, Duration::from_secs(30)).await;
            // No shutdown: the pipeline and every task are dropped mid-flight with the runtime.
            drop(pipeline);
        });
        rt.shutdown_timeout(Duration::from_secs(0));
    })
    .join()
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_run_loses_nothing_and_admits_nothing_twice() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..20].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    sim.generate(3_000, &xmids, t0 - minutes(20), t0).unwrap();
    let mut config = config(&sim, &xmids, dir.path(), t0 - minutes(30));
    config.delivery.batch_size = 50;
    // About 40 page requests at 8/s: the crash lands mid-run.
    config.pollers.requests_per_second = 8.0;
    config.pollers.burst = 1;
    let archive = dir.path().join("archive.jsonl");

    run_then_crash(config.clone(), archive.clone(), 300);
    let after_crash = lines(&archive).len();
    assert!(
        (300..3_000).contains(&after_crash),
        "crashed mid-run, after {after_crash} lines"
    );

    // Restart on the same store (its file is unlocked once the dropped tasks are gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    let pipeline = loop {
        match Pipeline::start(&config, Metrics::new()).await {
            Ok(p) => break p,
            Err(e) if e.to_string().contains("in use") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    // Generous: the guarantee is about loss, and the tests of this file share 2 cores.
    wait_for_lines(&archive, 3_000, Duration::from_secs(90)).await;
    let found = lines(&archive);
    let store = pipeline.store.clone();
    pipeline.shutdown().await.unwrap();

    let expected = sim_ids(&sim, &xmids, t0 - minutes(21), Utc::now()).await;
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for line in &found {
        by_id.entry(record_id(line)).or_default().push(line);
    }
    assert_eq!(
        by_id.keys().cloned().collect::<HashSet<_>>(),
        expected,
        "nothing lost ({} lines, {} of {} ids, {} admitted)",
        found.len(),
        by_id.len(),
        expected.len(),
        store.seen_len()
    );
    assert_eq!(store.seen_len(), 3_000, "each record admitted once");
    let repeats: Vec<_> = by_id.values().filter(|v| v.len() > 1).collect();
    assert!(
        found.len() - 3_000 <= 50,
        "only a batch in flight at the crash may repeat: {}",
        found.len() - 3_000
    );
    for copies in repeats {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "a repeat carries the same event id and body"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_request_budget_holds() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..20].to_vec();
    let dir = tempfile::tempdir().unwrap();
    // From a minute back: polls started at MXC's now would have nothing settled to read.
    let mut config = config(&sim, &xmids, dir.path(), Utc::now() - minutes(1));
    // 20 pollers would like 20 requests/s; the budget is 5/s with a burst of 2.
    config.pollers.group_size = GroupSize::Fixed(1);
    config.pollers.requests_per_second = 5.0;
    config.pollers.burst = 2;
    let started = Instant::now();
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = pipeline.metrics.clone();
    pipeline.shutdown().await.unwrap();
    let t = started.elapsed().as_secs_f64();
    let requests = sim.stats().requests_to("GET /report/v1/tsys/authorization") as f64;
    assert!(requests <= 5.0 * t + 2.0, "{requests} requests in {t:.2}s");
    // The pollers want 20/s: the limiter, not idleness, holds them (a loose lower bound, since
    // a loaded machine runs them late).
    assert!(
        requests >= 5.0 * t / 2.0,
        "the budget was used: {requests} in {t:.2}s"
    );
    assert!(metrics.rate_limiter_waits.get() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xmid_failing_with_500_does_not_delay_the_others() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..10].to_vec();
    sim.set_faults(Faults {
        fail_xmids: vec![xmids[0].clone()],
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let mut config = config(&sim, &xmids, dir.path(), t0 - minutes(10));
    // Each XMID polled on its own: in a group (the default), MXC's error for one member
    // fails the whole group's polls (docs/operating/polling.md, "Fleets").
    config.pollers.group_size = GroupSize::Fixed(1);
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    sim.generate(300, &xmids, t0 - minutes(5), t0).unwrap();
    let found = wait_for_lines(
        &dir.path().join("archive.jsonl"),
        1,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    pipeline.shutdown().await.unwrap();

    let found = lines(&dir.path().join("archive.jsonl")).len().max(found);
    let healthy = sim_ids(&sim, &xmids[1..], t0 - minutes(6), Utc::now()).await;
    let delivered: HashSet<String> = lines(&dir.path().join("archive.jsonl"))
        .iter()
        .map(record_id)
        .collect();
    assert_eq!(
        delivered, healthy,
        "every record of the healthy XMIDs, none of the failing one ({found} lines)"
    );
    let counts = sim_queries(&sim).await;
    let failing = counts.get(&xmids[0]).copied().unwrap_or(0);
    let others_min = xmids[1..]
        .iter()
        .map(|x| counts.get(x).copied().unwrap_or(0))
        .min()
        .unwrap();
    assert!(
        others_min >= 4,
        "healthy XMIDs kept their 1 s interval: {others_min} polls"
    );
    assert!(
        failing < others_min,
        "the failing XMID backed off: {failing} polls vs {others_min}"
    );
}

/// Queries per XMID, from the simulator's control surface.
async fn sim_queries(sim: &RunningSim) -> HashMap<String, u64> {
    let stats: Value = reqwest::get(format!("{}/_sim/stats?by_xmid=true", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["queries_by_xmid"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_filter_and_redact_and_records_without_id_are_counted_and_skipped() {
    let sim = start_sim(mxc_sim::SimConfig {
        decline_rate: 0.2,
        ..quiet_sim()
    })
    .await;
    let xmids: Vec<String> = sim.xmids()[..5].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let mut config = config(&sim, &xmids, dir.path(), t0 - minutes(10));
    config.routes[0].redact = RedactConfig {
        drop: vec!["cardNumber.data".into(), "uar.entity.taxId".into()],
        mask: vec!["cardNumber.hash".into()],
    };
    config.sinks.insert(
        "alerts".into(),
        SinkConfig::File {
            path: dir.path().join("alerts.jsonl"),
        },
    );
    let mut declines = route(
        "declines",
        "alerts",
        Some(r#"authorizationResponseStatus != "Approved""#),
    );
    declines.event_type = Some("authorization.declined".into());
    let mut large = route("large", "alerts", Some("authorizedAmount >= 500"));
    large.event_type = Some("authorization.large".into());
    config.routes.extend([declines, large]);
    assert_eq!(config.validate(), vec![]);
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    sim.generate(400, &xmids, t0 - minutes(5), t0).unwrap();
    let no_id = mxc_sim::Shape {
        with_id: false,
        pad_bytes: 0,
        ..mxc_sim::Shape::NORMAL
    };
    sim.generate_shaped(7, &xmids, t0 - minutes(5), t0, no_id)
        .unwrap();
    wait_for_lines(
        &dir.path().join("archive.jsonl"),
        400,
        Duration::from_secs(15),
    )
    .await;
    let archive = lines(&dir.path().join("archive.jsonl"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = pipeline.metrics.clone();
    pipeline.shutdown().await.unwrap();

    assert_eq!(
        archive.len(),
        400,
        "records without an id are not delivered"
    );
    // Counted each time a poll fetches them (the look-back re-reads them).
    assert!(
        metrics.records("skipped_no_id") >= 7,
        "{}",
        metrics.records("skipped_no_id")
    );
    // Every event matches its schema, as this configuration's routes shape it.
    let contract = crate::support::contract::Contract::of(&config);
    for line in archive
        .iter()
        .chain(&lines(&dir.path().join("alerts.jsonl")))
    {
        contract.check(line);
    }
    for line in &archive {
        let card = &line["data"]["cardNumber"];
        assert!(card.get("data").is_none(), "dropped");
        let hash = card["hash"].as_str().unwrap();
        assert!(
            hash.starts_with("****") && hash.len() == 32,
            "masked: {hash}"
        );
        assert!(line["data"]["uar"]["entity"].get("taxId").is_none());
        assert_eq!(line["type"], "authorization.created");
    }
    let expected: BTreeMap<(String, String), ()> = archive
        .iter()
        .flat_map(|l| {
            let id = record_id(l);
            let d = &l["data"];
            let mut types = Vec::new();
            if d["authorizationResponseStatus"] != "Approved" {
                types.push((id.clone(), "authorization.declined".to_string()));
            }
            if d["authorizedAmount"].as_f64().unwrap() >= 500.0 {
                types.push((id, "authorization.large".to_string()));
            }
            types
        })
        .map(|k| (k, ()))
        .collect();
    let alerts = lines(&dir.path().join("alerts.jsonl"));
    let got: BTreeMap<(String, String), ()> = alerts
        .iter()
        .map(|l| ((record_id(l), l["type"].as_str().unwrap().to_string()), ()))
        .collect();
    assert!(
        expected.len() > 40,
        "enough declines and large amounts to mean something: {}",
        expected.len()
    );
    assert_eq!(got, expected);
    assert_eq!(alerts.len(), expected.len());
    // Alerts are not redacted: that route did not ask for it.
    assert!(alerts
        .iter()
        .all(|l| l["data"]["cardNumber"].get("data").is_some()));
}
