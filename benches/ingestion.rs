//! The polling cursor, side by side: two real `mxc-relay run` processes (release binary) in one
//! run, one with `pollers.cursor = "created"` (MXC's ingestion time), one with
//! `"transaction_time"` (windows of the record's own time re-reading `look_back`), each against
//! its own `mxc-relay sim` (same seed, so the same merchants, ids and lateness; two simulators
//! because the relay names itself in its `User-Agent` only in a cluster, so one simulator could
//! not tell the two apart). Default configuration apart from `start`, `group_size = 50`, the
//! roster's 200 active merchants, the cursor and a file sink.
//!
//! `cargo bench --bench ingestion` (5 minutes); `MXC_BENCH_SECS=60` for a shorter run. The
//! simulators start with 10 minutes of history (`--backlog`, the default look-back, so that a
//! transaction-time poll re-reads a full look-back from the start; `MXC_BENCH_BACKLOG_SECS=0`
//! starts them empty) and `pollers.start` is 10 minutes back, where that history begins: both
//! relays first catch up on it. Not part of CI.
//!
//! Measured per mode over the whole run and over its second half (the steady part): MXC
//! requests/s (the simulator's own counts), requests per 100 new records, duplicates fetched per
//! new record, the p99 poll lag (sampled every 5 s in the second half), merchants without a
//! completed poll at the end, and whether every record MXC ingested between `start` and the
//! end less (interval + settle) reached the file sink (the simulator's records, read on
//! `created` with the crate's own client, against the ids in the file).

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{env_or, metric};
use mxc::Secret;
use mxc::{self, Client, ClientConfig, Credentials, ReportQuery, TimeBasis};
use mxc_relay::config::PollersConfig;
use mxc_sim::StatsSnapshot;
use test_kit::SimProcess;

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");
const MERCHANTS: usize = 200;
const RATE: f64 = 100.0;
const GROUP: usize = 50;
/// `pollers.start`, this long before the run begins: as far back as the default look-back and
/// the simulators' default backlog, so the transaction-time relay's floor is never above its
/// look-back.
const START_BACK: Duration = Duration::from_secs(600);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// After the last sample the relays run this much longer before they are stopped, so the records
/// the delivery check covers have had their poll (and their delivery).
const GRACE: Duration = Duration::from_secs(15);
const MODES: [&str; 2] = ["created", "transaction_time"];

/// Every child process, killed when this is dropped (also on a panic).
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn push(&mut self, child: Child) -> usize {
        self.0.push(child);
        self.0.len() - 1
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// `MXC_BENCH_SECS`: the run's length (5 minutes).
fn bench_secs() -> u64 {
    env_or("MXC_BENCH_SECS", 300)
}

/// `MXC_BENCH_BACKLOG_SECS`: history the simulators hold at start (`--backlog`), 10 minutes by
/// default: without it, a transaction-time poll's look-back (10 minutes) is never full within a
/// 5-minute run, and its cost would be under-stated. 0 starts them empty.
fn backlog_secs() -> u64 {
    env_or("MXC_BENCH_BACKLOG_SECS", START_BACK.as_secs())
}

/// Starts `mxc-relay sim`, its stderr to `log`.
fn spawn_sim(log: &Path) -> SimProcess {
    let (merchants, rate) = (MERCHANTS.to_string(), RATE.to_string());
    let backlog = format!("{}s", backlog_secs());
    let args = [
        "--merchants",
        &merchants,
        "--rate",
        &rate,
        "--backlog",
        &backlog,
    ];
    let log = std::fs::File::create(log).expect("sim log");
    SimProcess::start(BIN, args, log.into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Every sample of a per-XMID series: XMID → value.
fn per_xmid(text: &str, name: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{xmid=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (xmid, rest) = rest.split_once('"')?;
            let value = rest.rsplit(' ').next()?.parse().ok()?;
            Some((xmid.to_string(), value))
        })
        .collect()
}

struct Relay {
    mode: &'static str,
    sim: String,
    metrics_url: String,
    child: usize,
    out: PathBuf,
}

/// Counters at one instant.
#[derive(Clone, Copy, Default)]
struct Counters {
    at_s: f64,
    /// Every API request (Security API, roster, reports), not the simulator's control routes.
    api: u64,
    report: u64,
    new: f64,
    duplicate: f64,
    fetched: f64,
    limiter_waits: f64,
}

impl Counters {
    fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            at_s: self.at_s - earlier.at_s,
            api: self.api - earlier.api,
            report: self.report - earlier.report,
            new: self.new - earlier.new,
            duplicate: self.duplicate - earlier.duplicate,
            fetched: self.fetched - earlier.fetched,
            limiter_waits: self.limiter_waits - earlier.limiter_waits,
        }
    }
    fn requests_per_s(&self) -> f64 {
        self.api as f64 / self.at_s.max(1e-9)
    }
    fn per_100_new(&self) -> f64 {
        100.0 * self.api as f64 / self.new.max(1.0)
    }
    fn dup_per_new(&self) -> f64 {
        self.duplicate / self.new.max(1.0)
    }
}

async fn sim_stats(http: &reqwest::Client, sim: &str) -> StatsSnapshot {
    http.get(format!("{sim}/_sim/stats"))
        .send()
        .await
        .expect("simulator stats")
        .json()
        .await
        .expect("stats JSON")
}

async fn metrics_text(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn counters(http: &reqwest::Client, relay: &Relay, started: Instant) -> (Counters, String) {
    let stats = sim_stats(http, &relay.sim).await;
    let text = metrics_text(http, &relay.metrics_url).await;
    let count = |keep: &dyn Fn(&str) -> bool| -> u64 {
        stats
            .requests
            .iter()
            .filter(|(route, _)| keep(route))
            .map(|(_, by_status)| by_status.values().sum::<u64>())
            .sum()
    };
    let records = |outcome: &str| {
        metric(
            &text,
            "mxc_relay_records_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    let c = Counters {
        at_s: started.elapsed().as_secs_f64(),
        api: count(&|r| !r.contains(" /_sim/")),
        report: count(&|r| r.starts_with("GET /report/")),
        new: records("new"),
        duplicate: records("duplicate"),
        fetched: records("fetched"),
        limiter_waits: metric(&text, "mxc_relay_rate_limiter_waits_total", &[]),
    };
    (c, text)
}

/// What each mode measured.
#[derive(Default)]
struct Outcome {
    whole: Counters,
    steady: Counters,
    lag_p99_samples: Vec<f64>,
    never_polled: usize,
    lag_series: usize,
    max_xmid_lag_end: f64,
    expected: usize,
    missed: usize,
    missed_late: usize,
    delivered_lines: usize,
    delivered_twice: usize,
}

/// The ids in a file sink's output (the record's `id` in each envelope's `data`), and how many
/// lines it holds.
fn delivered_ids(path: &Path) -> (HashSet<String>, usize) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        id: String,
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return (HashSet::new(), 0),
    };
    let mut ids = HashSet::new();
    let mut lines = 0;
    for line in BufReader::new(file).lines() {
        let line = line.expect("sink output");
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let envelope: Envelope = serde_json::from_str(&line).expect("an event envelope");
        ids.insert(envelope.data.id);
    }
    (ids, lines)
}

/// The records the simulator ingested (`created`) in `[from, to]`: id and lateness
/// (`created − transaction time`) when both times are there.
async fn ingested(sim: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(String, i64)> {
    let client = Client::new(ClientConfig::new(
        sim.to_string(),
        Credentials {
            api_key: Secret::new(mxc_sim::DEFAULT_API_KEY),
            username: None,
            password: Secret::default(),
        },
    ))
    .expect("client");
    let xmids: Vec<String> = client
        .roster()
        .await
        .expect("roster")
        .into_iter()
        .map(|m| m.xmid)
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for chunk in xmids.chunks(GROUP) {
        let mut pages = client
            .report_pages(ReportQuery::new(chunk.to_vec(), from, to).by(TimeBasis::Ingestion));
        while let Some(batch) = pages.next_page().await.expect("a page") {
            for record in batch.records {
                let Some(id) = record.id() else { continue };
                if !seen.insert(id.to_string()) {
                    continue;
                }
                let late = match (record.created(), record.time()) {
                    (Some(c), Some(t)) => (c - t).num_milliseconds(),
                    _ => 0,
                };
                out.push((id.to_string(), late));
            }
        }
    }
    out
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    format!("{cpus} CPUs ({model}), {mem_gib:.1} GiB memory")
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || !a.is_finite() || !b.is_finite() {
        "–".into()
    } else {
        format!("{:.3}", a / b)
    }
}

fn check(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = bench_secs();
    let defaults = PollersConfig::default();
    let interval = defaults.interval;
    let settle = defaults.settle;
    let lag_target = (interval + settle + Duration::from_secs(1)).as_secs_f64();
    let dir = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let mut children = Children::default();

    // Two simulators, same (default) seed: the same merchants, ids and lateness.
    let sim_processes: Vec<SimProcess> = MODES
        .iter()
        .map(|mode| spawn_sim(&dir.path().join(format!("sim-{mode}.log"))))
        .collect();
    let sims: Vec<String> = sim_processes
        .iter()
        .map(|s| s.base_url().to_string())
        .collect();
    let t0 = Utc::now();
    let started = Instant::now();
    let start = t0 - chrono::Duration::from_std(START_BACK).expect("start");
    let mut relays = Vec::new();
    for (mode, sim) in MODES.iter().zip(&sims) {
        let home = dir.path().join(mode);
        std::fs::create_dir_all(&home).expect("dir");
        let out = home.join("out.jsonl");
        let telemetry = format!("127.0.0.1:{}", free_port());
        let config = format!(
            r#"[mxc]
base_url = "{sim}"
[pollers]
xmids = "roster"
group_size = {GROUP}
cursor = "{mode}"
start = "{start}"
[store]
path = "{store}"
[sinks.out]
kind = "file"
path = "{out}"
[[routes]]
sink = "out"
[telemetry]
listen = "{telemetry}"
[admin]
listen = "127.0.0.1:0"
"#,
            start = mxc::instant(start),
            store = home.join("store").display(),
            out = out.display(),
        );
        let file = home.join("relay.toml");
        std::fs::write(&file, config).expect("config");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&file)
            .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("relay.log")).expect("log"))
            .spawn()
            .expect("the relay starts");
        relays.push(Relay {
            mode,
            sim: sim.clone(),
            metrics_url: format!("http://{telemetry}/metrics"),
            child: children.push(child),
            out,
        });
    }
    eprintln!(
        "ingestion: {secs} s, {MERCHANTS} merchants at {RATE} authorizations/s ({} s of backlog), groups of {GROUP}, start {} ({} s back); simulators {}; work dir {}",
        backlog_secs(),
        mxc::instant(start),
        START_BACK.as_secs(),
        sims.join(", "),
        dir.path().display()
    );

    let duration = Duration::from_secs(secs);
    let half = duration / 2;
    let mut at_half: Option<Vec<Counters>> = None;
    let mut outcomes: Vec<Outcome> = relays.iter().map(|_| Outcome::default()).collect();
    let mut next = Instant::now();
    loop {
        next += SAMPLE_EVERY;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
        for relay in &relays {
            if let Ok(Some(status)) = children.0[relay.child].try_wait() {
                panic!("the {} relay exited: {status}", relay.mode);
            }
        }
        let elapsed = started.elapsed();
        let done = elapsed >= duration;
        if (elapsed >= half && at_half.is_none()) || done {
            let mut snapshot = Vec::new();
            for (relay, outcome) in relays.iter().zip(&mut outcomes) {
                let (c, text) = counters(&http, relay, started).await;
                if done {
                    outcome.whole = c;
                    let base = at_half
                        .as_ref()
                        .map_or(Counters::default(), |h| h[snapshot.len()]);
                    outcome.steady = c.since(&base);
                    let lags = per_xmid(&text, "mxc_relay_poll_lag_seconds");
                    // A merchant never polled lags by the time since `start` (its cursor's floor).
                    let since_start = (Utc::now() - start).num_milliseconds() as f64 / 1000.0;
                    outcome.lag_series = lags.len();
                    outcome.never_polled = MERCHANTS.saturating_sub(lags.len())
                        + lags.values().filter(|l| **l >= since_start - 5.0).count();
                    outcome.max_xmid_lag_end = lags.values().copied().fold(0.0, f64::max);
                }
                snapshot.push(c);
            }
            if at_half.is_none() {
                at_half = Some(snapshot);
            }
        }
        if elapsed >= half {
            for (relay, outcome) in relays.iter().zip(&mut outcomes) {
                let text = metrics_text(&http, &relay.metrics_url).await;
                if !text.is_empty() {
                    outcome.lag_p99_samples.push(metric(
                        &text,
                        "mxc_relay_poll_lag_percentile_seconds",
                        &["percentile=\"99\""],
                    ));
                }
            }
        }
        let line: Vec<String> = relays
            .iter()
            .zip(&outcomes)
            .map(|(r, o)| {
                format!(
                    "{} p99 lag {}",
                    r.mode,
                    o.lag_p99_samples
                        .last()
                        .map_or("(first half)".into(), |l| format!("{l:.1} s"))
                )
            })
            .collect();
        eprintln!("{:>4.0} s: {}", elapsed.as_secs_f64(), line.join("; "));
        if done {
            break;
        }
    }
    let end = Utc::now();

    // The relays poll (and deliver) a little longer, then stop gracefully.
    tokio::time::sleep(GRACE).await;
    for relay in &relays {
        let pid = children.0[relay.child].id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    for relay in &relays {
        let _ = children.0[relay.child].wait();
    }

    // Every record ingested between `start` and the end less (interval + settle): delivered?
    let until = end - chrono::Duration::from_std(interval + settle).expect("span");
    let look_back_ms = defaults.look_back.as_millis() as i64;
    for (relay, outcome) in relays.iter().zip(&mut outcomes) {
        let records = ingested(&relay.sim, start, until).await;
        let (ids, lines) = delivered_ids(&relay.out);
        outcome.expected = records.len();
        outcome.delivered_lines = lines;
        outcome.delivered_twice = lines - ids.len();
        for (id, late_ms) in &records {
            if !ids.contains(id) {
                outcome.missed += 1;
                if *late_ms > look_back_ms {
                    outcome.missed_late += 1;
                }
            }
        }
    }
    drop(children);
    drop(sim_processes);

    let [c, t] = [&outcomes[0], &outcomes[1]];
    let row = |figure: &str, cv: f64, target: &str, tv: f64, digits: usize| {
        println!(
            "| {figure} | {cv:.digits$} | {target} | {tv:.digits$} | {} |",
            ratio(cv, tv)
        );
    };
    println!();
    println!("Machine: {}", machine());
    println!(
        "Command: `{}cargo bench --bench ingestion` — two `mxc-relay sim --listen 127.0.0.1:0 --merchants {MERCHANTS} --rate {RATE} --backlog {}s` (default seed, lateness and index delay), two `mxc-relay run` with default configuration but `pollers.start` = {} s before the run, `group_size = {GROUP}`, `xmids = \"roster\"`, a file sink, and `pollers.cursor` as named; {secs} s, steady part = second half",
        ["MXC_BENCH_SECS", "MXC_BENCH_BACKLOG_SECS"]
            .iter()
            .filter_map(|v| std::env::var(v).ok().map(|s| format!("{v}={s} ")))
            .collect::<String>(),
        backlog_secs(),
        START_BACK.as_secs(),
    );
    println!();
    println!("| figure | created | target (created) | transaction_time | ratio |");
    println!("|---|---:|---|---:|---:|");
    row(
        "MXC requests/s, whole run",
        c.whole.requests_per_s(),
        "",
        t.whole.requests_per_s(),
        2,
    );
    row(
        "MXC requests/s, second half",
        c.steady.requests_per_s(),
        "",
        t.steady.requests_per_s(),
        2,
    );
    row(
        "MXC requests per 100 new records, whole run",
        c.whole.per_100_new(),
        &format!("≤ 1.5 {}", check(c.whole.per_100_new() <= 1.5)),
        t.whole.per_100_new(),
        2,
    );
    row(
        "MXC requests per 100 new records, second half",
        c.steady.per_100_new(),
        &format!("≤ 1.5 {}", check(c.steady.per_100_new() <= 1.5)),
        t.steady.per_100_new(),
        2,
    );
    row(
        "duplicates fetched per new record, whole run",
        c.whole.dup_per_new(),
        &format!("≤ 0.25 {}", check(c.whole.dup_per_new() <= 0.25)),
        t.whole.dup_per_new(),
        3,
    );
    row(
        "duplicates fetched per new record, second half",
        c.steady.dup_per_new(),
        &format!("≤ 0.25 {}", check(c.steady.dup_per_new() <= 0.25)),
        t.steady.dup_per_new(),
        3,
    );
    let (cm, tm) = (median(&c.lag_p99_samples), median(&t.lag_p99_samples));
    let cx = c.lag_p99_samples.iter().copied().fold(0.0, f64::max);
    let tx = t.lag_p99_samples.iter().copied().fold(0.0, f64::max);
    row(
        &format!(
            "p99 poll lag, s, median of {} samples (second half)",
            c.lag_p99_samples.len()
        ),
        cm,
        &format!("≤ {lag_target:.0} {}", check(cm <= lag_target)),
        tm,
        1,
    );
    row(
        "p99 poll lag, s, max of samples (second half)",
        cx,
        &format!("≤ {lag_target:.0} {}", check(cx <= lag_target)),
        tx,
        1,
    );
    row(
        "largest per-merchant poll lag at the end, s",
        c.max_xmid_lag_end,
        "",
        t.max_xmid_lag_end,
        1,
    );
    row(
        "merchants without a completed poll at the end",
        c.never_polled as f64,
        &format!("0 {}", check(c.never_polled == 0)),
        t.never_polled as f64,
        0,
    );
    row(
        "new records admitted, whole run",
        c.whole.new,
        "",
        t.whole.new,
        0,
    );
    row(
        "records fetched, whole run",
        c.whole.fetched,
        "",
        t.whole.fetched,
        0,
    );
    row(
        "report requests, whole run",
        c.whole.report as f64,
        "",
        t.whole.report as f64,
        0,
    );
    row(
        "report requests that waited for the budget, second half (share)",
        c.steady.limiter_waits / (c.steady.report as f64).max(1.0),
        "",
        t.steady.limiter_waits / (t.steady.report as f64).max(1.0),
        2,
    );
    row(
        "records ingested in [start, end − interval − settle]",
        c.expected as f64,
        "",
        t.expected as f64,
        0,
    );
    row(
        "… of them not delivered",
        c.missed as f64,
        &format!("0 {}", check(c.missed == 0 && c.expected > 0)),
        t.missed as f64,
        0,
    );
    row(
        &format!(
            "… of those, ingested over {} s after their transaction time",
            defaults.look_back.as_secs()
        ),
        c.missed_late as f64,
        "",
        t.missed_late as f64,
        0,
    );
    row(
        "events in the file sink (all, incl. after the window)",
        c.delivered_lines as f64,
        "",
        t.delivered_lines as f64,
        0,
    );
    row(
        "… delivered more than once",
        c.delivered_twice as f64,
        "",
        t.delivered_twice as f64,
        0,
    );
    println!();
    println!(
        "interval {} s, settle {} s, overlap {} s, look_back {} s, requests_per_second {}, reconcile_every {} s (the sweep does not run within the benchmark); requests count every MXC API call (token, roster, reports) the simulator answered",
        interval.as_secs(),
        settle.as_secs(),
        defaults.overlap.as_secs(),
        defaults.look_back.as_secs(),
        defaults.requests_per_second,
        defaults.reconcile_every.as_secs(),
    );
}
