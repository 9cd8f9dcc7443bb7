//! What `mxc-relay top` costs the service it watches: the service (`mxc-relay run`, the
//! binary) polls 200 merchants of `mxc-relay sim` with live traffic (100 authorizations/s) into
//! a file sink; its CPU (from /proc) is measured over 30-second phases, alternately without
//! `top` and with the real `mxc-relay top --interval 1s` attached under tmux, three of each.
//! The baseline is the service without `top`, in the same run.
//!
//! `cargo bench --bench top` (needs tmux).

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_kit::SimProcess;

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");
const PHASE: Duration = Duration::from_secs(30);
const ROUNDS: usize = 3;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimProcess::start(
        BIN,
        [
            "--merchants",
            "200",
            "--closed-merchants",
            "0",
            "--rate",
            "100",
        ],
        Stdio::null(),
    );
    let base = sim.base_url().to_string();
    let telemetry = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            r#"[mxc]
base_url = "{base}"
username = "{username}"

[pollers]
xmids = "roster"
interval = "1s"

[store]
path = "{store}"

[sinks.file]
kind = "file"
path = "{out}"

[[routes]]
sink = "file"

[telemetry]
listen = "{telemetry}"

[admin]
listen = "127.0.0.1:0"

[log]
level = "warn"
"#,
            username = mxc_sim::DEFAULT_USERNAME,
            store = dir.path().join("store").display(),
            out = dir.path().join("events.jsonl").display(),
        ),
    )
    .expect("config");
    let service = common::Guard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
            .env("MXC_PASSWORD", mxc_sim::DEFAULT_PASSWORD)
            .stdout(Stdio::null())
            .spawn()
            .expect("mxc-relay run"),
    );
    let pid = service.0.id();
    // Warm: the roster read, every merchant's first poll.
    std::thread::sleep(Duration::from_secs(20));
    let session = format!("mxc-top-bench-{}", std::process::id());
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..ROUNDS {
        without.push(cpu_share(pid));
        let command = format!(
            "NO_COLOR=1 {BIN} top --config {} --interval 1s",
            config.display()
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "50",
            &command,
        ]);
        // Its first refreshes.
        std::thread::sleep(Duration::from_secs(2));
        let screen = tmux(&["capture-pane", "-p", "-t", &session]);
        assert!(
            screen.contains("connected"),
            "top is not attached:\n{screen}"
        );
        with.push(cpu_share(pid));
        tmux(&["kill-session", "-t", &session]);
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(service);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(without.clone()), median(with.clone()));
    println!("`mxc-relay top --interval 1s` attached to `mxc-relay run` (200 merchants, 100 authorizations/s live, file sink); {ROUNDS} phases of {}s each, alternating", PHASE.as_secs());
    println!("{}", common::machine());
    println!();
    println!("| service | CPU % of one core, each phase | median | vs without |");
    println!("|---|---|---:|---:|");
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| without top (baseline) | {} | {off:.2} | 1.00 |",
        list(&without)
    );
    println!(
        "| with top attached | {} | {on:.2} | {:.2} |",
        list(&with),
        on / off
    );
    println!();
    println!(
        "top adds {:+.2} percentage points of a core ({:+.1} %)",
        on - off,
        (on / off - 1.0) * 100.0
    );
}

/// The service's CPU over one phase, as a percentage of one core.
fn cpu_share(pid: u32) -> f64 {
    let before = common::process_cpu_seconds(pid);
    let started = Instant::now();
    std::thread::sleep(PHASE);
    (common::process_cpu_seconds(pid) - before) / started.elapsed().as_secs_f64() * 100.0
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
