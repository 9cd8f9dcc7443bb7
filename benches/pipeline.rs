//! The pipeline's throughput and its cost per merchant, each beside a baseline of the same run.
//!
//! `cargo bench --bench pipeline`
//!
//! 1. End to end: records/s from the simulator (`mxc-relay sim`, its own process) through
//!    dedup and the outbox to the file sink, by grouping and durability policy, with the
//!    relay's CPU per record, beside the rate at which the bare client reads the same records
//!    with the relay's query (the ceiling).
//! 2. Fleet cost: 10,000 idle XMIDs polled by the real binary against the real simulator
//!    binary, by group size (1, 50, `"auto"` listed and from the roster, the default
//!    configuration): MXC calls per poll cycle and the process's RSS, at the end and at its
//!    peak. (`BENCH_SKIP_FLEET=1` skips this part; `BENCH_SKIP_END_TO_END=1` the first.)

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_relay::config::{Durability, GroupSize};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::Metrics;
use test_kit::PipelineConfigBuilder;

use common::{bare_client_read, cpu_seconds, load_live_records, sim_client, start_idle_sim, Guard};

const RECORDS: usize = 30_000;
const MERCHANTS: usize = 20;
const FLEET: usize = 10_000;
const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var("BENCH_SKIP_END_TO_END").is_err() {
        runtime.block_on(end_to_end());
    }
    if std::env::var("BENCH_SKIP_FLEET").is_err() {
        fleet_cost();
    }
}

async fn end_to_end() {
    // The simulator in its own process: this process's CPU in a run is the relay's alone.
    let (_sim, base) = start_idle_sim(BIN, MERCHANTS);
    let xmids: Vec<String> = sim_client(&base)
        .roster()
        .await
        .expect("roster")
        .into_iter()
        .map(|m| m.xmid)
        .take(MERCHANTS)
        .collect();
    let t0 = Utc::now();
    load_live_records(&base, &xmids, RECORDS, t0).await;

    // Baseline: the bare client reading every record with the relay's query.
    let (baseline, records) = bare_client_read(&base, &xmids, t0).await;
    assert_eq!(records.len(), RECORDS);

    let mut rows = vec![(
        "bare `mxc::Client` reading the simulator, the relay's query (baseline)".to_string(),
        baseline,
        None,
    )];
    // The default grouping (the 20 XMIDs in one group, one query), then each XMID polled
    // alone (20 queries a cycle), under both durability policies.
    for (durability, group_size) in [
        (Durability::Batch, GroupSize::Auto),
        (Durability::Batch, GroupSize::Fixed(1)),
        (Durability::Interval, GroupSize::Auto),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = PipelineConfigBuilder::new(&base, &xmids)
            .with(|c| c.pollers.group_size = group_size)
            .interval(Duration::from_millis(200))
            .look_back(Duration::from_secs(3600))
            .budget(10_000.0, 1_000)
            .start(t0 - chrono::Duration::minutes(40))
            .store(dir.path().join("store"))
            .with(|c| c.store.durability = durability)
            .archive(dir.path().join("out.jsonl"))
            .build();
        let metrics = Metrics::new();
        let cpu0 = cpu_seconds();
        let started = Instant::now();
        let pipeline = Pipeline::start(&config, metrics.clone())
            .await
            .expect("pipeline");
        while metrics.events("archive", "delivered") < RECORDS as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "pipeline too slow"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = RECORDS as f64 / started.elapsed().as_secs_f64();
        let cpu_us = (cpu_seconds() - cpu0) * 1e6 / RECORDS as f64;
        pipeline.shutdown().await.expect("shutdown");
        assert_eq!(count_lines(&dir.path().join("out.jsonl")), RECORDS);
        let grouping = match group_size {
            GroupSize::Auto => "`group_size = \"auto\"` (one group of 20)".to_string(),
            GroupSize::Fixed(n) => format!("`group_size = {n}`"),
        };
        rows.push((
            format!(
                "pipeline end to end, `store.durability = \"{}\"`, {grouping}",
                format!("{durability:?}").to_lowercase()
            ),
            rate,
            Some(cpu_us),
        ));
    }
    println!("end to end: {RECORDS} records of {MERCHANTS} XMIDs, `mxc-relay sim` (its own process) → dedup → outbox → file sink");
    println!("{}", common::machine());
    println!();
    println!("| measurement | records/s | vs baseline | relay's CPU µs per record |");
    println!("|---|---:|---:|---:|");
    for (name, rate, cpu_us) in &rows {
        let cpu = cpu_us.map(|c| format!("{c:.0}")).unwrap_or_default();
        println!("| {name} | {rate:.0} | {:.2} | {cpu} |", rate / baseline);
    }
    println!();
    if let Some((_, default, _)) = rows.get(1) {
        println!(
            "default configuration / bare client ({baseline:.0} records/s): {:.2} ({default:.0} records/s)",
            default / baseline
        );
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A figure of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`), 0 if unreadable.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fleet_cost() {
    let (_sim, base) = start_idle_sim(BIN, FLEET);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let xmids: Vec<String> = runtime
        .block_on(async { sim_client(&base).roster().await })
        .expect("roster")
        .into_iter()
        .map(|m| m.xmid)
        .collect();
    assert_eq!(xmids.len(), FLEET);

    // (what, [pollers] lines besides `xmids`, `xmids`, seconds). The first four poll every
    // 10 s with a budget that never holds them back, so a poll cycle is 10 s whatever the
    // grouping; the last is the default configuration as it is (interval 30 s, 10 requests/s).
    let listed = serde_json::to_string(&xmids).expect("json");
    let fast =
        "interval = \"10s\"\nlook_back = \"1m\"\nrequests_per_second = 5000.0\nburst = 500\n";
    let runs: [(&str, String, &str, u64); 5] = [
        (
            "`pollers.group_size = 1` (the default before `\"auto\"`)",
            format!("{fast}group_size = 1\n"),
            &listed,
            25,
        ),
        (
            "`pollers.group_size = 50`",
            format!("{fast}group_size = 50\n"),
            &listed,
            25,
        ),
        (
            "`pollers.group_size = \"auto\"` (default), XMIDs listed",
            fast.to_string(),
            &listed,
            25,
        ),
        (
            "`pollers.group_size = \"auto\"` (default), `xmids = \"roster\"`",
            fast.to_string(),
            "\"roster\"",
            25,
        ),
        (
            "default configuration (interval 30 s, 10 requests/s), `xmids = \"roster\"`",
            String::new(),
            "\"roster\"",
            65,
        ),
    ];
    println!(
        "fleet cost: {FLEET} idle XMIDs, real binaries (`mxc-relay run` against `mxc-relay sim`)"
    );
    println!();
    println!("| configuration | MXC calls per poll cycle | RSS at the end | peak RSS (VmHWM) | calls vs group size 1 |");
    println!("|---|---:|---:|---:|---:|");
    let mut first_calls = 0.0;
    for (name, pollers, xmids_value, secs) in runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "[mxc]\nbase_url = \"{base}\"\napi_key = \"{}\"\n[pollers]\nxmids = {xmids_value}\n{pollers}[store]\npath = \"{}\"\n[sinks.null]\nkind = \"file\"\npath = \"{}\"\n[[routes]]\nsink = \"null\"\n[log]\nlevel = \"warn\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            mxc_sim::DEFAULT_API_KEY,
            dir.path().join("store").display(),
            dir.path().join("out.jsonl").display(),
        );
        let path = dir.path().join("fleet.toml");
        std::fs::write(&path, config).expect("config");
        let before = queries(&runtime, &base);
        let run = Guard(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run"),
        );
        std::thread::sleep(Duration::from_secs(secs));
        let (rss, peak) = (
            status_kib(run.0.id(), "VmRSS:"),
            status_kib(run.0.id(), "VmHWM:"),
        );
        drop(run);
        let after = queries(&runtime, &base);
        let calls = (after.0 - before.0) as f64;
        // Each XMID is named once per cycle: cycles = mean queries per XMID.
        let cycles = (after.1 - before.1) as f64 / FLEET as f64;
        let per_cycle = calls / cycles.max(1e-9);
        if first_calls == 0.0 {
            first_calls = per_cycle;
        }
        println!(
            "| {name} | {per_cycle:.0} | {:.1} MiB | {:.1} MiB | {:.3} |",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            per_cycle / first_calls
        );
    }
}

/// (authorization requests, XMIDs named by them) so far, from the simulator's stats.
fn queries(runtime: &tokio::runtime::Runtime, base: &str) -> (u64, u64) {
    runtime.block_on(async {
        let stats: serde_json::Value = reqwest::get(format!("{base}/_sim/stats?by_xmid=true"))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        let requests = stats["requests"]["GET /report/v1/tsys/authorization"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        let named = stats["queries_by_xmid"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        (requests, named)
    })
}
