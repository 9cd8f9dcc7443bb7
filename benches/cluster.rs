//! Scale-out: 1, 2 and 3 instances (the real release binary) sharing 10,000 merchants through a
//! consumer group and one API key's request budget (`pollers.requests_per_second` is the key's;
//! each instance spends its shards' share). For each: how long the cluster takes to deliver a
//! backlog of 100,000 records (records/s), and the API calls per second it then makes in steady
//! state. The baseline is the run's own single instance.
//!
//! `cargo bench --bench cluster` (a Tansu broker started, as `.ci/test` installs it; or
//! `MXC_RELAY_BENCH_KAFKA=HOST:PORT` for another Kafka-protocol broker). Not part of CI.

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_sim::SimConfig;

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");
const MERCHANTS: usize = 10_000;
const BACKLOG: usize = 100_000;
/// The API key's request budget, shared by the instances: the bottleneck.
const BUDGET_RPS: f64 = 25.0;
const INTERVAL_S: u64 = 10;
const GROUP: usize = 50;

/// `CLUSTER_BENCH_SETTLE_S`: seconds between the backlog's delivery and the steady window.
fn settle_s() -> u64 {
    std::env::var("CLUSTER_BENCH_SETTLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2 * INTERVAL_S)
}

fn line_count(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

struct Run {
    instances: usize,
    deliver_s: f64,
    records_per_s: f64,
    calls_during_backlog: u64,
    steady_calls_per_s: f64,
}

async fn run(instances: usize, broker: &str) -> Run {
    let sim = mxc_sim::start(SimConfig {
        merchants: MERCHANTS,
        closed_merchants: Some(0),
        rate: 0.0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let xmids = sim.xmids();
    let t0 = Utc::now();
    sim.generate(BACKLOG, &xmids, t0 - chrono::Duration::minutes(10), t0)
        .expect("records");
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut children = Vec::new();
    let mut outputs = Vec::new();
    for i in 0..instances {
        let home = dir.path().join(format!("i{i}"));
        std::fs::create_dir_all(&home).expect("dir");
        let out = home.join("out.jsonl");
        let config = format!(
            r#"[mxc]
base_url = "{sim}"
[pollers]
xmids = {xmids}
interval = "{INTERVAL_S}s"
look_back = "1m"
group_size = {GROUP}
requests_per_second = {BUDGET_RPS}
burst = 25
start = "{start}"
[store]
path = "{home}/store"
durability = "interval"
[sinks.out]
kind = "file"
path = "{out}"
[[routes]]
sink = "out"
[telemetry]
listen = ""
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
[cluster]
brokers = "{broker}"
group = "{name}"
control_topic = "{name}-shards"
state_topic = "{name}-state"
shards = 12
instance = "i{i}"
session_timeout = "6s"
"#,
            sim = sim.base_url(),
            xmids = serde_json::to_string(&xmids).expect("json"),
            start = mxc::instant(t0 - chrono::Duration::minutes(11)),
            home = home.display(),
            out = out.display(),
        );
        let file = home.join("relay.toml");
        std::fs::write(&file, config).expect("config");
        children.push(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&file)
                .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(home.join("relay.log")).expect("log"))
                .spawn()
                .expect("relay starts"),
        );
        outputs.push(out);
    }
    let route = "GET /report/v1/tsys/authorization";
    let started = Instant::now();
    let calls_at_start = sim.stats().requests_to(route);
    loop {
        let delivered: usize = outputs.iter().map(|p| line_count(p)).sum();
        if delivered >= BACKLOG {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{delivered} of {BACKLOG} after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deliver_s = started.elapsed().as_secs_f64();
    let calls_during_backlog = sim.stats().requests_to(route) - calls_at_start;
    // Steady state: time to settle (the last catch-up polls end), then three intervals with
    // nothing new.
    tokio::time::sleep(Duration::from_secs(settle_s())).await;
    let before = sim.stats().requests_to(route);
    let window = Duration::from_secs(3 * INTERVAL_S);
    tokio::time::sleep(window).await;
    let steady = (sim.stats().requests_to(route) - before) as f64 / window.as_secs_f64();
    for child in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    let delivered: usize = outputs.iter().map(|p| line_count(p)).sum();
    assert!(delivered >= BACKLOG, "{delivered} delivered");
    let _ = sim.shutdown().await;
    Run {
        instances,
        deliver_s,
        records_per_s: BACKLOG as f64 / deliver_s,
        calls_during_backlog,
        steady_calls_per_s: steady,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let broker = common::broker();
    println!(
        "{MERCHANTS} merchants, {BACKLOG} records over the last 10 minutes; the key's budget {BUDGET_RPS} requests/s shared by the instances, groups of {GROUP}, every {INTERVAL_S} s"
    );
    let mut runs = Vec::new();
    // `CLUSTER_BENCH_MAX=1` measures the single instance alone.
    let max: usize = std::env::var("CLUSTER_BENCH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for n in 1..=max {
        let r = run(n, &broker.address).await;
        println!(
            "{} instance(s): backlog delivered in {:.1} s ({:.0} records/s), {} API calls meanwhile; steady state {:.1} calls/s",
            r.instances, r.deliver_s, r.records_per_s, r.calls_during_backlog, r.steady_calls_per_s
        );
        runs.push(r);
    }
    let base = &runs[0];
    println!();
    println!("| instances | backlog delivered | records/s | ratio | API calls (backlog) | steady calls/s | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.1} s | {:.0} | {:.2} | {} | {:.1} | {:.2} |",
            r.instances,
            r.deliver_s,
            r.records_per_s,
            r.records_per_s / base.records_per_s,
            r.calls_during_backlog,
            r.steady_calls_per_s,
            r.steady_calls_per_s / base.steady_calls_per_s.max(f64::MIN_POSITIVE)
        );
    }
}
