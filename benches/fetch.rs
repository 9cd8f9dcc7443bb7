//! `mxc-relay fetch --export` against a Python client of the same API, in the same run.
//!
//! `cargo bench --bench fetch` (about 5 minutes; `MXC_BENCH_RECORDS`, `MXC_BENCH_ROUNDS` and
//! `MXC_BENCH_LATENCY_MS` change the size, the rounds and the added latency). Not part of CI:
//! it needs python3, and installs `requests` (pinned) from PyPI into a temporary directory.
//!
//! A real `mxc-relay sim` process holds `MXC_BENCH_RECORDS` (100,000) authorizations of 20
//! XMIDs, all with transaction times in one 6-hour window of the past. Each round runs, one
//! after the other, and times as a whole process (start to exit, authentication included):
//!
//! - the baseline, `benches/mxc_export.py`: what the public Python code that calls MXC does
//!   (requests.Session, the Security API's JWT, the export scroll of the window, every page
//!   parsed into dicts with full records, each record written back out with json.dumps);
//! - `mxc-relay fetch --export --parallel 1`: one scroll over the window;
//! - `mxc-relay fetch --export` (the default, 4 slices of the window at once).
//!
//! Each writes its records, one per line, to a file (on /dev/shm where there is one). All of
//! them must hold exactly the records of the window, in the same order (compared by id); the
//! two `mxc-relay` runs must be byte-identical. Reported: the median records/s of the rounds,
//! and the ratio to the baseline; then one round more with `MXC_BENCH_LATENCY_MS` (20) added
//! to every request by the simulator, as a request to MXC across the internet costs (0 skips
//! it).

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::machine;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{DateTime, Duration, DurationRound, Utc};
use mxc::Secret;
use mxc::{self, Client, ClientConfig, Credentials, ReportQuery};
use test_kit::SimProcess;

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");
const MERCHANTS: usize = 20;
/// The Python client's one dependency, pinned.
const REQUESTS: &str = "requests==2.32.3";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records = env_number("MXC_BENCH_RECORDS", 100_000);
    let rounds = env_number("MXC_BENCH_ROUNDS", 3).max(1);
    let latency_ms = env_number("MXC_BENCH_LATENCY_MS", 20);
    // Outputs in memory where there is a tmpfs: disk write-back would time the disk.
    let dir = match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let python_path = python_deps(dir.path());

    let (sim, base) = spawn_sim(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (xmids, from, to) = runtime.block_on(seed(&base, records));
    let (since, until) = (mxc::instant(from), mxc::instant(to));
    eprintln!(
        "{records} records of {} XMIDs between {since} and {until}",
        xmids.len()
    );

    let fetch = |parallel: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["fetch", "--export", "--base-url", &base, "--xmid"])
            .arg(xmids.join(","))
            .args(["--since", &since, "--until", &until]);
        if let Some(n) = parallel {
            c.args(["--parallel", n]);
        }
        c
    };
    let python = || {
        let mut c = Command::new("python3");
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mxc_export.py"))
            .args([&base, &xmids.join(","), &since, &until]);
        if let Some(path) = &python_path {
            c.env("PYTHONPATH", path);
        }
        c
    };
    let runs: Runs = [
        ("Python client, export scroll (baseline)", Box::new(python)),
        (
            "`mxc-relay fetch --export --parallel 1`",
            Box::new(|| fetch(Some("1"))),
        ),
        (
            "`mxc-relay fetch --export` (default: 4 slices at once)",
            Box::new(|| fetch(None)),
        ),
    ];

    let mut tables = vec![(
        "the simulator on the same machine".to_string(),
        rounds,
        measure(&runs, rounds, records, dir.path()),
    )];
    if latency_ms > 0 {
        // What a request to MXC across the internet costs on top: the simulator's latency fault.
        runtime.block_on(set_latency(&base, latency_ms));
        tables.push((
            format!("{latency_ms} ms added to every request (the simulator's `latency_ms`)"),
            1,
            measure(&runs, 1, records, dir.path()),
        ));
    }
    drop(sim);

    println!("\n{}", machine());
    for (what, rounds, rates) in tables {
        println!(
            "\n{records} authorizations of {MERCHANTS} XMIDs (~7.5 KB each), {what}, median of {rounds} round(s):\n"
        );
        println!("| measurement | records/s | vs baseline |");
        println!("|---|---:|---:|");
        let baseline = median(&rates[0]);
        for ((name, _), rates) in runs.iter().zip(&rates) {
            let m = median(rates);
            println!("| {name} | {} | {:.2} |", thousands(m), m / baseline);
        }
        if rounds > 1 {
            println!(
                "\nall rounds, records/s: {}",
                runs.iter()
                    .zip(&rates)
                    .map(|((name, _), r)| format!(
                        "{name}: {}",
                        r.iter()
                            .map(|x| thousands(*x))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
}

/// The commands timed, each with its name; the first is the baseline.
type Runs<'a> = [(&'static str, Box<dyn Fn() -> Command + 'a>); 3];

/// Runs each command `rounds` times, checking every output; records/s of each, per round.
fn measure(runs: &Runs, rounds: usize, records: usize, dir: &Path) -> Vec<Vec<f64>> {
    let mut rates = vec![Vec::new(); runs.len()];
    let mut expected: Option<Vec<String>> = None;
    for round in 0..rounds {
        for (i, (name, command)) in runs.iter().enumerate() {
            let out = dir.join(format!("run-{i}.jsonl"));
            let seconds = timed(command(), &out);
            let ids = ids_of(&out);
            assert_eq!(ids.len(), records, "{name}: every record of the window");
            assert_eq!(
                ids.iter().collect::<HashSet<_>>().len(),
                records,
                "{name}: each record once"
            );
            match &expected {
                None => expected = Some(ids),
                Some(e) => assert!(*e == ids, "{name}: the same records in the same order"),
            }
            let rate = records as f64 / seconds;
            eprintln!(
                "round {}: {name}: {seconds:.2} s, {rate:.0} records/s",
                round + 1
            );
            rates[i].push(rate);
        }
        assert!(
            std::fs::read(dir.join("run-1.jsonl")).expect("output")
                == std::fs::read(dir.join("run-2.jsonl")).expect("output"),
            "--parallel 1 and the default print the same bytes"
        );
    }
    for i in 0..runs.len() {
        let _ = std::fs::remove_file(dir.join(format!("run-{i}.jsonl")));
    }
    rates
}

async fn set_latency(base: &str, ms: usize) {
    let answer = reqwest::Client::new()
        .post(format!("{base}/_sim/faults"))
        .json(&serde_json::json!({ "latency_ms": ms }))
        .send()
        .await
        .expect("faults");
    assert!(answer.status().is_success(), "faults: {}", answer.status());
}

/// Runs `command` with its stdout to `out`; the seconds from start to exit.
fn timed(mut command: Command, out: &Path) -> f64 {
    let file = std::fs::File::create(out).expect("output file");
    let started = Instant::now();
    let result = command
        .stdout(file)
        .stderr(Stdio::piped())
        .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
        .env("MXC_USERNAME", mxc_sim::DEFAULT_USERNAME)
        .env("MXC_PASSWORD", mxc_sim::DEFAULT_PASSWORD)
        .output()
        .expect("the command starts");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        result.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    seconds
}

/// The `id` of each line, in order.
fn ids_of(path: &Path) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let file = std::fs::File::open(path).expect("output file");
    BufReader::with_capacity(1 << 20, file)
        .lines()
        .map(|line| {
            let line = line.expect("a line");
            serde_json::from_str::<Id>(&line)
                .expect("a record with an id")
                .id
        })
        .collect()
}

/// Installs the pinned `requests` under `dir` and returns the path for PYTHONPATH; without
/// PyPI, the installed one (if any) is used and the run says so.
fn python_deps(dir: &Path) -> Option<PathBuf> {
    let target = dir.join("python");
    let installed = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&target)
        .arg(REQUESTS)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .status()
        .is_ok_and(|s| s.success());
    let path = installed.then_some(target);
    let mut version = Command::new("python3");
    version.args([
        "-c",
        "import sys, requests; print('Python', sys.version.split()[0], 'requests', requests.__version__)",
    ]);
    if let Some(path) = &path {
        version.env("PYTHONPATH", path);
    }
    let out = version.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python client needs requests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    if installed {
        eprintln!("{}", version.trim());
    } else {
        eprintln!(
            "{} (could not install {REQUESTS}: using the one installed)",
            version.trim()
        );
    }
    path
}

/// Starts `mxc-relay sim` with no traffic of its own and returns it with its base URL.
fn spawn_sim(dir: &Path) -> (SimProcess, String) {
    let merchants = MERCHANTS.to_string();
    let args = [
        "--merchants",
        &merchants,
        "--rate",
        "0",
        "--late-fraction",
        "0",
    ];
    let log = std::fs::File::create(dir.join("sim.log")).expect("sim log");
    let sim = SimProcess::start(BIN, args, log.into());
    let base = sim.base_url().to_string();
    (sim, base)
}

/// Generates the records over a 6-hour window ending an hour ago and waits until all are
/// searchable; returns the active XMIDs and the window, a minute wider on each side.
async fn seed(base: &str, records: usize) -> (Vec<String>, DateTime<Utc>, DateTime<Utc>) {
    let end = (Utc::now() - Duration::hours(1))
        .duration_trunc(Duration::seconds(1))
        .expect("a whole second");
    let start = end - Duration::hours(6);
    let answer = reqwest::Client::new()
        .post(format!("{base}/_sim/generate"))
        .json(&serde_json::json!({ "count": records, "from": start, "to": end }))
        .send()
        .await
        .expect("generate");
    assert!(
        answer.status().is_success(),
        "generate: {}",
        answer.status()
    );

    let client = Client::new(ClientConfig::new(
        base,
        Credentials {
            api_key: Secret::new(mxc_sim::DEFAULT_API_KEY),
            username: Some(mxc_sim::DEFAULT_USERNAME.to_string()),
            password: Secret::new(mxc_sim::DEFAULT_PASSWORD),
        },
    ))
    .expect("client");
    let xmids: Vec<String> = client
        .roster()
        .await
        .expect("roster")
        .into_iter()
        .filter(|m| m.active)
        .map(|m| m.xmid)
        .collect();
    assert_eq!(xmids.len(), MERCHANTS);
    let (from, to) = (start - Duration::minutes(1), end + Duration::minutes(1));
    let mut query = ReportQuery::new(xmids.clone(), from, to);
    query.page_size = 1;
    // Records become searchable up to 5 index delays (5 s) after they are generated.
    for _ in 0..120 {
        let total = client.report(&query, 0).await.expect("count").total_records;
        if total == Some(records as u64) {
            return (xmids, from, to);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("the simulator never made all {records} records searchable");
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
