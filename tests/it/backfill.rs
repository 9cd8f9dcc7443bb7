//! `mxc-relay backfill`: 100,000 records of history replayed into the sinks through the export
//! API, interrupted (SIGINT) and resumed, each record sent exactly once — including those the
//! service had already sent by polling.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_relay::config::Config;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::Metrics;

use crate::support::*;

fn ids(path: &Path) -> (usize, HashSet<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut n = 0;
    let mut ids = HashSet::new();
    for line in text.lines() {
        n += 1;
        // One line at a time: the whole file as JSON values would take gigabytes.
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        ids.insert(v["data"]["id"].as_str().unwrap().to_string());
    }
    (n, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_100_000_records_interrupted_and_resumed_sends_each_exactly_once() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..10].to_vec();
    let t0 = Utc::now();
    generate_history(&sim, &xmids, t0, 94_000, 6_000);

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.jsonl");
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "[mxc]\nbase_url = \"{}\"\n[pollers]\nxmids = {}\ninterval = \"1s\"\nlook_back = \"10m\"\nstart = \"{}\"\nrequests_per_second = 1000\nburst = 100\n[store]\npath = \"{}\"\n[delivery]\nbatch_size = 500\n[sinks.archive]\nkind = \"file\"\npath = \"{}\"\n[[routes]]\nsink = \"archive\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n",
            sim.base_url(),
            serde_json::to_string(&xmids).unwrap(),
            mxc::instant(t0 - chrono::Duration::minutes(160)),
            dir.path().join("store").display(),
            archive.display(),
        ),
    )
    .unwrap();

    // The service ran for a while: it sent the last 160 minutes.
    std::env::set_var("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY);
    let config = Config::load(&file).unwrap();
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while line_count(&archive) < 6_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pipeline.shutdown().await.unwrap();
    assert_eq!(line_count(&archive), 6_000);

    // Backfill 49 hours; interrupted after about a third.
    let backfill = |log: &str| {
        Command::new(BIN)
            .args(["backfill", "--config"])
            .arg(&file)
            .args(["--since", "49h"])
            .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let mut first = backfill("first.log");
    let deadline = Instant::now() + Duration::from_secs(300);
    while line_count(&archive) < 40_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status();
    let status = first.wait().unwrap();
    let first_log = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{first_log}");
    assert!(
        first_log.contains("run the same command to resume"),
        "{first_log}"
    );
    let interrupted_at = line_count(&archive);
    assert!(
        interrupted_at < 100_000,
        "interrupted before the end ({interrupted_at})"
    );

    let status = backfill("second.log").wait().unwrap();
    let second_log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(status.success(), "{second_log}");
    assert!(
        second_log.contains("(resumed from a checkpoint)"),
        "{second_log}"
    );
    assert!(second_log.contains("backfill complete"), "{second_log}");
    eprintln!(
        "interrupted at {interrupted_at} lines; second run: {}",
        second_log.lines().last().unwrap_or("")
    );

    let (lines, distinct) = ids(&archive);
    assert_eq!(distinct.len(), 100_000, "every record");
    assert_eq!(lines, 100_000, "each exactly once");
}
