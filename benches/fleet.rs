//! The fleet at scale, measured from outside as a user runs it: `FLEET_INSTANCES` (5) instances
//! of the release binary in one consumer group over `FLEET_MERCHANTS` (100,000) roster
//! merchants, one simulator (its own process, limiting the API key to the fleet's budget with
//! 429 and `Retry-After`) and one broker. Then every instance restarted in turn (SIGTERM, started
//! again `FLEET_RESTART_AFTER_S` later), then one SIGKILLed and started again 15 s later.
//!
//! `cargo bench --bench fleet` (a Tansu broker started, as `.ci/test` installs it; or
//! `MXC_RELAY_BENCH_KAFKA=HOST:PORT` for another). Not part of CI: about 9 minutes.
//!
//! Reported, per phase: the longest and p99 time a merchant went between two queries (the
//! simulator's `/_sim/gaps`, the time since the last counting too); for each restart, the time
//! the instance took to stop and to be back (shards owned and `/readyz` 200); API calls/s
//! against the key's budget and the 429s; records missing and repeated (every instance's file
//! sink against the simulator's records). The baseline is the goal the issue set: gap ≤
//! session timeout + 2 intervals, back ≤ 10 s (SIGTERM) / 20 s (SIGKILL), 0 missing, no 429.

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{env_or, metric, Guard};
use test_kit::SimProcess;

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");
const ROUTE: &str = "GET /report/v1/tsys/authorization";

struct Setup {
    merchants: usize,
    instances: usize,
    interval_s: u64,
    session_s: u64,
    /// The API key's budget, requests/s: the simulator enforces it, the fleet shares it.
    budget: f64,
    /// Authorizations per second over all merchants.
    rate: f64,
    restart_after: Duration,
}

struct Fleet {
    setup: Setup,
    dir: PathBuf,
    sim: String,
    broker: String,
    name: String,
    /// Each instance's telemetry port.
    ports: Vec<u16>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Fleet {
    fn home(&self, i: usize) -> PathBuf {
        self.dir.join(format!("i{i}"))
    }

    fn start(&self, i: usize) -> Child {
        let home = self.home(i);
        std::fs::create_dir_all(&home).expect("dir");
        let s = &self.setup;
        let config = format!(
            r#"[mxc]
base_url = "{sim}"
[pollers]
xmids = "roster"
interval = "{interval}s"
group_size = 50
requests_per_second = {budget}
burst = 10
[pollers.roster]
refresh = "10m"
[store]
path = "{home}/store"
durability = "interval"
[sinks.out]
kind = "file"
path = "{home}/out.jsonl"
[[routes]]
sink = "out"
[telemetry]
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:0"
[log]
level = "info"
[cluster]
brokers = "{broker}"
group = "{name}"
control_topic = "{name}-shards"
state_topic = "{name}-state"
shards = 32
instance = "i{i}"
session_timeout = "{session}s"
"#,
            sim = self.sim,
            interval = s.interval_s,
            budget = s.budget,
            home = home.display(),
            port = self.ports[i],
            broker = self.broker,
            name = self.name,
            session = s.session_s,
        );
        let file = home.join("relay.toml");
        std::fs::write(&file, config).expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("relay.log"))
            .expect("log");
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&file)
            .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("relay starts")
    }

    /// Whether instance `i` owns shards and is ready.
    async fn back(&self, http: &reqwest::Client, i: usize) -> bool {
        let base = format!("http://127.0.0.1:{}", self.ports[i]);
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ready {
            return false;
        }
        let text = match http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return false,
        };
        metric(&text, "mxc_relay_cluster_shards", &[]) > 0.0
    }

    /// Waits until instance `i` is back (up to `within`); how long that took from `since`.
    async fn wait_back(
        &self,
        http: &reqwest::Client,
        i: usize,
        since: Instant,
        within: Duration,
    ) -> Option<Duration> {
        while since.elapsed() < within {
            if self.back(http, i).await {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

#[derive(serde::Deserialize)]
struct Gaps {
    merchants: usize,
    longest_ms: u64,
    p99_ms: u64,
    p50_ms: u64,
    worst: Option<String>,
}

/// The gaps since the last call, and a new measurement started.
async fn gaps(http: &reqwest::Client, sim: &str) -> Gaps {
    http.post(format!("{sim}/_sim/gaps"))
        .send()
        .await
        .expect("gaps")
        .json()
        .await
        .expect("gaps json")
}

async fn stats(http: &reqwest::Client, sim: &str) -> mxc_sim::StatsSnapshot {
    http.get(format!("{sim}/_sim/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json")
}

/// Record ids delivered by every instance, with how often.
fn delivered(fleet: &Fleet) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for i in 0..fleet.setup.instances {
        let text = std::fs::read_to_string(fleet.home(i).join("out.jsonl")).unwrap_or_default();
        for line in text.lines() {
            let id = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["data"]["id"].as_str().map(str::to_string));
            if let Some(id) = id {
                *ids.entry(id).or_default() += 1;
            }
        }
    }
    ids
}

/// Every record the simulator holds ingested between `from` and `to`, by id, read with a bare
/// client.
async fn generated(
    sim: &str,
    xmids: &[String],
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
) -> Vec<Generated> {
    let client = common::sim_client(sim);
    let mut records = Vec::new();
    for chunk in xmids.chunks(500) {
        let query = mxc::ReportQuery::new(chunk.to_vec(), from, to).by(mxc::TimeBasis::Ingestion);
        let mut pager = client.report_pages(query);
        while let Some(batch) = pager.next_page().await.expect("page") {
            records.extend(batch.records.iter().filter_map(|r| {
                Some(Generated {
                    id: r.id()?.to_string(),
                    xmid: r.xmid().unwrap_or_default().to_string(),
                    created: r.created(),
                })
            }));
        }
    }
    records
}

/// A record the simulator holds, as the missing-record report names it.
struct Generated {
    id: String,
    xmid: String,
    created: Option<chrono::DateTime<Utc>>,
}

/// What the instances' stores still hold to deliver, from `mxc-relay state` on each (stopped);
/// `None` where it could not be read.
fn outboxes_left(fleet: &Fleet) -> Vec<Option<u64>> {
    (0..fleet.setup.instances)
        .map(|i| {
            let out = Command::new(BIN)
                .args(["state", "--json", "--limit", "0", "--config"])
                .arg(fleet.home(i).join("relay.toml"))
                .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
                .output();
            let state: serde_json::Value = serde_json::from_slice(&out.ok()?.stdout).ok()?;
            let sinks = state["sinks"].as_array()?;
            Some(sinks.iter().filter_map(|s| s["outbox"].as_u64()).sum())
        })
        .collect()
}

fn print_gaps(phase: &str, g: &Gaps, goal: Duration) {
    println!(
        "{phase}: longest gap {:.1} s (p99 {:.1} s, median {:.1} s; {} merchants; worst {}) — goal ≤ {:.0} s",
        g.longest_ms as f64 / 1000.0,
        g.p99_ms as f64 / 1000.0,
        g.p50_ms as f64 / 1000.0,
        g.merchants,
        g.worst.as_deref().unwrap_or("-"),
        goal.as_secs_f64()
    );
}

fn stop_within(child: &mut Child, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    while started.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn show(d: Option<Duration>) -> String {
    d.map_or("not within the limit".into(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let setup = Setup {
        merchants: env_or("FLEET_MERCHANTS", 100_000),
        instances: env_or("FLEET_INSTANCES", 5),
        interval_s: env_or("FLEET_INTERVAL_S", 10),
        session_s: env_or("FLEET_SESSION_S", 10),
        budget: env_or("FLEET_BUDGET", 400.0),
        rate: env_or("FLEET_RATE", 20.0),
        restart_after: Duration::from_secs(env_or("FLEET_RESTART_AFTER_S", 5)),
    };
    println!("{}", common::machine());
    println!(
        "{} instances, {} roster merchants, interval {} s, session {} s, the key's budget {} requests/s (the simulator answers 429 above it), {} authorizations/s",
        setup.instances, setup.merchants, setup.interval_s, setup.session_s, setup.budget, setup.rate
    );
    let broker = common::broker();
    let sim = SimProcess::start(
        BIN,
        [
            "--merchants",
            &setup.merchants.to_string(),
            "--closed-merchants",
            "0",
            "--rate",
            &setup.rate.to_string(),
            "--late-fraction",
            "0",
            "--key-requests-per-second",
            &setup.budget.to_string(),
        ],
        Stdio::null(),
    );
    let base = sim.base_url().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet {
        ports: (0..setup.instances).map(|_| free_port()).collect(),
        setup,
        dir: dir.path().to_path_buf(),
        sim: base.clone(),
        broker: broker.address.clone(),
        name: format!("fleet-{}", uuid::Uuid::new_v4().simple()),
    };
    let s = &fleet.setup;
    let http = reqwest::Client::new();
    let gap_goal = Duration::from_secs(s.session_s + 2 * s.interval_s);

    // Launch.
    let launched = Instant::now();
    // Killed if the run stops early: none outlives it.
    let mut children: Vec<Guard> = (0..s.instances).map(|i| Guard(fleet.start(i))).collect();
    gaps(&http, &base).await;
    loop {
        let g: Gaps = http
            .get(format!("{base}/_sim/gaps"))
            .send()
            .await
            .expect("gaps")
            .json()
            .await
            .expect("json");
        if g.merchants >= s.merchants {
            break;
        }
        assert!(
            launched.elapsed() < Duration::from_secs(300),
            "{} of {} merchants polled after 5 minutes",
            g.merchants,
            s.merchants
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "launch: every merchant polled once after {:.1} s",
        launched.elapsed().as_secs_f64()
    );
    // A merchant starts from "now" when the roster first names it (`pollers.start`): what MXC
    // ingested before every merchant was polled once is not the fleet's to deliver.
    let counted_from = Utc::now();

    // Steady state.
    tokio::time::sleep(Duration::from_secs(2 * s.interval_s)).await;
    gaps(&http, &base).await;
    let before = stats(&http, &base).await;
    let window = Duration::from_secs(3 * s.interval_s);
    tokio::time::sleep(window).await;
    let after = stats(&http, &base).await;
    let calls =
        (after.requests_to(ROUTE) - before.requests_to(ROUTE)) as f64 / window.as_secs_f64();
    println!(
        "steady: {calls:.1} API calls/s (budget {}), {} answered 429",
        s.budget,
        after.requests_with(ROUTE, 429) - before.requests_with(ROUTE, 429)
    );
    print_gaps("steady", &gaps(&http, &base).await, gap_goal);
    let status_started = Instant::now();
    let status = Command::new(BIN)
        .args(["cluster", "status", "--config"])
        .arg(fleet.home(0).join("relay.toml"))
        .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
        .output()
        .expect("cluster status");
    let text = String::from_utf8_lossy(&status.stdout);
    println!(
        "cluster status: {:.2} s (goal ≤ 2 s), exit {}: {}",
        status_started.elapsed().as_secs_f64(),
        status.status,
        text.lines().next().unwrap_or("")
    );

    // Rolling restart.
    let rolling = stats(&http, &base).await;
    let rolling_started = Instant::now();
    for (i, child) in children.iter_mut().enumerate() {
        let stopped = stop_within(&mut child.0, Duration::from_secs(120));
        tokio::time::sleep(s.restart_after).await;
        let started = Instant::now();
        child.0 = fleet.start(i);
        let back = fleet
            .wait_back(&http, i, started, Duration::from_secs(120))
            .await;
        println!(
            "i{i}: SIGTERM → exited in {}; started {} s later; back (shards owned, /readyz 200) in {}",
            show(stopped),
            s.restart_after.as_secs(),
            show(back)
        );
        // The fleet settles before the next, as a deploy waits for readiness.
        tokio::time::sleep(Duration::from_secs(s.interval_s)).await;
    }
    let after = stats(&http, &base).await;
    let seconds = rolling_started.elapsed().as_secs_f64();
    println!(
        "rolling restart: {:.0} s, {:.1} API calls/s (budget {}), {} answered 429",
        seconds,
        (after.requests_to(ROUTE) - rolling.requests_to(ROUTE)) as f64 / seconds,
        s.budget,
        after.requests_with(ROUTE, 429) - rolling.requests_with(ROUTE, 429)
    );
    print_gaps("rolling restart", &gaps(&http, &base).await, gap_goal);

    // A crash.
    let victim = s.instances - 1;
    let _ = children[victim].0.kill();
    let _ = children[victim].0.wait();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let started = Instant::now();
    children[victim].0 = fleet.start(victim);
    let back = fleet
        .wait_back(&http, victim, started, Duration::from_secs(120))
        .await;
    println!(
        "i{victim}: SIGKILL, started 15 s later; back in {}",
        show(back)
    );
    tokio::time::sleep(Duration::from_secs(3 * s.interval_s)).await;
    print_gaps(
        "crash",
        &gaps(&http, &base).await,
        Duration::from_secs(s.session_s + 15 + 2 * s.interval_s),
    );

    // Records: everything the simulator holds up to a moment every merchant was polled after
    // (two intervals before the stop: one for the polls, one for the settle time and slack),
    // delivered.
    tokio::time::sleep(Duration::from_secs(2 * s.interval_s)).await;
    let counted_until = Utc::now() - chrono::Duration::seconds(2 * s.interval_s as i64);
    for child in &mut children {
        stop_within(&mut child.0, Duration::from_secs(120));
    }
    let xmids: Vec<String> = {
        let client = common::sim_client(&base);
        client
            .roster()
            .await
            .expect("roster")
            .into_iter()
            .map(|m| m.xmid)
            .collect()
    };
    let expected = generated(&base, &xmids, counted_from, counted_until).await;
    let copies = delivered(&fleet);
    let missing: Vec<&Generated> = expected
        .iter()
        .filter(|r| !copies.contains_key(&r.id))
        .collect();
    let repeated: usize = copies.values().map(|n| n - 1).sum();
    println!(
        "records: {} ingested from the launch's end until two intervals before the stop, {} of them missing; {} delivered in all, {repeated} repeated",
        expected.len(),
        missing.len(),
        copies.len()
    );
    if !missing.is_empty() {
        println!(
            "  left in the instances' outboxes after the stop: {:?}",
            outboxes_left(&fleet)
        );
        for r in missing.iter().take(10) {
            println!(
                "  missing {} (XMID {}, created {})",
                r.id,
                r.xmid,
                r.created.map(|c| c.to_rfc3339()).unwrap_or_default()
            );
        }
    }
    let _ = write_log_summary(&fleet);
}

/// The instances' cluster events, for reading a run afterwards.
fn write_log_summary(fleet: &Fleet) -> std::io::Result<()> {
    let out = Path::new("target").join("fleet-timeline.log");
    let mut text = String::new();
    for i in 0..fleet.setup.instances {
        let log = std::fs::read_to_string(fleet.home(i).join("relay.log"))?;
        for line in log
            .lines()
            .filter(|l| l.contains("shards") || l.contains("cluster") || l.contains("state topic"))
        {
            text.push_str(&format!("i{i}: {line}\n"));
        }
    }
    std::fs::write(&out, text)?;
    println!("timeline: {}", out.display());
    Ok(())
}
