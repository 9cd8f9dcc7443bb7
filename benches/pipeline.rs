//! The pipeline's throughput and its cost per merchant, each beside a baseline of the same run.
//!
//! `cargo bench --bench pipeline`
//!
//! 1. End to end: records/s from the simulator through dedup and the outbox to the file
//!    sink, for both durability policies, beside the rate at which the simulator alone serves
//!    the same records to the same client (the ceiling).
//! 2. Fleet cost: 10,000 idle XMIDs polled by the real binary against the real simulator
//!    binary, by group size (1, 50, `"auto"` listed and from the roster, the default
//!    configuration): MXC calls per poll cycle and the process's RSS, at the end and at its
//!    peak. (`BENCH_SKIP_FLEET=1` skips this part; `BENCH_SKIP_END_TO_END=1` the first.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc::Secret;
use mxc::{Client, ClientConfig, Credentials, ReportQuery};
use mxc_relay::config::{Config, Durability, GroupSize, RouteConfig, SinkConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::Metrics;
use mxc_sim::SimConfig;

use common::{start_idle_sim, Guard};

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

fn credentials() -> Credentials {
    Credentials {
        api_key: Secret::new(mxc_sim::DEFAULT_API_KEY),
        username: None,
        password: Secret::default(),
    }
}

async fn end_to_end() {
    let sim = mxc_sim::start(SimConfig {
        merchants: MERCHANTS,
        rate: 0.0,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let xmids: Vec<String> = sim.xmids()[..MERCHANTS].to_vec();
    let t0 = Utc::now();
    sim.generate(RECORDS, &xmids, t0 - chrono::Duration::minutes(30), t0)
        .expect("generate");
    // Their `created` is now: MXC's clock moves a minute on, past `pollers.settle`, so that
    // the run measures throughput and not the settle wait.
    sim.set_faults(mxc_sim::Faults {
        clock_offset_ms: 60_000,
        ..mxc_sim::Faults::default()
    });

    // Baseline: the simulator alone, serving every record to the real client, 4 at a time.
    let client = Client::new(ClientConfig::new(sim.base_url(), credentials())).expect("client");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in xmids.chunks(MERCHANTS / 4) {
        let (client, chunk) = (client.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for xmid in chunk {
                let q =
                    ReportQuery::new(vec![xmid], t0 - chrono::Duration::minutes(31), Utc::now());
                let mut pager = client.report_pages(q);
                while let Some(batch) = pager.next_page().await.expect("page") {
                    n += batch.records.len();
                }
            }
            n
        }));
    }
    let mut served = 0;
    for t in tasks {
        served += t.await.expect("task");
    }
    let baseline = served as f64 / started.elapsed().as_secs_f64();
    assert_eq!(served, RECORDS);

    let mut rows = vec![(
        "simulator alone → mxc::Client (baseline)".to_string(),
        baseline,
    )];
    // Each XMID polled alone (as the rows of earlier runs), then the default grouping: the 20
    // XMIDs in one group, one pager (the simulator gives one `generate` call's records one
    // ingestion instant: past the result window, that instant comes through the export form).
    for (durability, group_size) in [
        (Durability::Batch, GroupSize::Fixed(1)),
        (Durability::Interval, GroupSize::Fixed(1)),
        (Durability::Batch, GroupSize::Auto),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_simulator(sim.base_url(), xmids.clone());
        config.pollers.group_size = group_size;
        config.pollers.interval = Duration::from_millis(200);
        config.pollers.look_back = Duration::from_secs(3600);
        config.pollers.requests_per_second = 10_000.0;
        config.pollers.burst = 1_000;
        config.pollers.start = mxc::instant(t0 - chrono::Duration::minutes(40));
        config.store.path = dir.path().join("store");
        config.store.durability = durability;
        config.sinks.insert(
            "archive".into(),
            SinkConfig::File {
                path: dir.path().join("out.jsonl"),
            },
        );
        config
            .routes
            .push(RouteConfig::every_record("all", "archive"));
        let metrics = Metrics::new();
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
        ));
    }
    println!("end to end: {RECORDS} records of {MERCHANTS} XMIDs, simulator → dedup → outbox → file sink");
    println!();
    println!("| measurement | records/s | vs baseline |");
    println!("|---|---:|---:|");
    for (name, rate) in &rows {
        println!("| {name} | {rate:.0} | {:.2} |", rate / baseline);
    }
    println!();
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
        .block_on(async {
            Client::new(ClientConfig::new(base.clone(), credentials()))?
                .roster()
                .await
        })
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
