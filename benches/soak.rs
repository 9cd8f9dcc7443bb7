//! Soak: the real binary (`mxc-relay run`, release) at a steady rate for a long time, with its
//! memory and outbox depth sampled, to show they stay flat. Not part of CI.
//!
//! `SOAK_MINUTES=30 SOAK_RATE=100 cargo bench --bench soak` (`SOAK_CACHE_MIB` sets
//! `store.cache_mib`, 64 by default; `SOAK_RETENTION` the seen ids' retention, 11m)
//!
//! `SOAK_WRAP` prepends a command to the relay's (split on whitespace), e.g.
//! `SOAK_WRAP="heaptrack -o /tmp/soak-heap"`; the RSS sampled (and the SIGTERM at the end) is
//! then the relay's own process, found among the wrapper's descendants. Environment such as
//! `MALLOC_ARENA_MAX=2` needs no hook: the relay inherits this process's. `rss_mib` is VmRSS,
//! `anon_mib` its anonymous part (RssAnon).
//!
//! The simulator (in this process) generates `SOAK_RATE` authorizations/s in real time over 200
//! merchants (7 % declines); the relay polls them every 2 s in groups of 20, sends every record
//! to a stdout sink (to /dev/null) and, when `MXC_RELAY_TEST_KAFKA` names a broker, to Kafka
//! too, and every decline as a signed webhook to a verifying receiver in this process. Every
//! 10 s: the relay's RSS (/proc) and its /metrics. The baseline is the run's own first half:
//! memory at the end against memory at half-time (the seen ids are kept 11 minutes, so their
//! set — and the store's cache — is full by then), and records delivered against records generated.

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{env_or, metric};
use mxc_relay::receiver::{Receiver, ReceiverConfig};
use mxc_relay::signature::WebhookSecret;
use mxc_sim::SimConfig;

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` field given in kB, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The first process under `root` (itself included, breadth first) that runs `exe`: the relay
/// under a `SOAK_WRAP` wrapper, which may run it as a child rather than exec it.
fn find_exe(root: u32, exe: &std::path::Path) -> Option<u32> {
    let exe = std::fs::canonicalize(exe).ok()?;
    let mut queue = vec![root];
    while let Some(pid) = queue.first().copied() {
        queue.remove(0);
        if std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            == Some(exe.as_path())
        {
            return Some(pid);
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        queue.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    None
}

struct Sample {
    at: Duration,
    rss: f64,
    anon: f64,
    outbox: f64,
    generated: u64,
    new: f64,
    delivered_stdout: f64,
    delivered_alerts: f64,
    lag_max: f64,
    disk_mib: f64,
}

/// The store's live data: every key and value of every table (redb's own statistics of the
/// bytes stored, without its page overhead), and the seen ids among them.
fn live_mib(store: &std::path::Path) -> anyhow::Result<(f64, u64)> {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition, TableHandle};
    let db = redb::Database::open(store.join("store.redb"))?;
    let txn = db.begin_read()?;
    let mut bytes = 0u64;
    let mut seen = 0u64;
    for handle in txn.list_tables()? {
        let table = txn.open_untyped_table(handle.clone())?;
        bytes += table.stats()?.stored_bytes();
        if handle.name() == "seen" {
            seen = txn
                .open_table(TableDefinition::<&str, i64>::new("seen"))?
                .len()?;
        }
    }
    Ok((bytes as f64 / (1024.0 * 1024.0), seen))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let minutes = env_or("SOAK_MINUTES", 30.0);
    let rate = env_or("SOAK_RATE", 100.0);
    let sim = mxc_sim::start(SimConfig {
        rate,
        merchants: 200,
        ..SimConfig::default()
    })
    .await?;
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(
        "127.0.0.1:0".parse()?,
        ReceiverConfig {
            secrets: vec![secret.clone()],
            tolerance: Duration::from_secs(300),
            keep: false,
            on_delivery: None,
        },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let telemetry = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let kafka = match std::env::var("MXC_RELAY_TEST_KAFKA") {
        Ok(broker) if !broker.is_empty() => format!(
            "[sinks.kafka]\nkind = \"kafka\"\nbrokers = \"{broker}\"\ntopic = \"mxc-soak-{}\"\n[[routes]]\nsink = \"kafka\"\n",
            uuid::Uuid::new_v4().simple()
        ),
        _ => String::new(),
    };
    let config = dir.path().join("soak.toml");
    std::fs::write(
        &config,
        format!(
            r#"[mxc]
base_url = "{base}"
[pollers]
xmids = {xmids}
interval = "2s"
group_size = 20
requests_per_second = 20
burst = 20
# No sweep: its window (26 h) would have the seen ids kept that long, where this run wants
# them pruned within minutes, to reach the store's steady state.
reconcile_every = "0s"
[store]
path = "{store}"
seen_retention = "{retention}"
cache_mib = {cache_mib}
[sinks.console]
kind = "stdout"
[sinks.alerts]
kind = "webhook"
url = "{receiver}"
allow_insecure = true
secrets_env = "SOAK_WEBHOOK_SECRET"
[[routes]]
sink = "console"
[[routes]]
sink = "alerts"
event_type = "authorization.declined"
filter = 'authorizationResponseStatus != "Approved"'
[telemetry]
listen = "{telemetry}"
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
{kafka}"#,
            base = sim.base_url(),
            xmids = serde_json::to_string(&sim.xmids())?,
            store = dir.path().join("store").display(),
            receiver = receiver.url(),
            retention = std::env::var("SOAK_RETENTION").unwrap_or_else(|_| "11m".into()),
            cache_mib = env_or("SOAK_CACHE_MIB", 64u64),
        ),
    )?;
    let wrap: Vec<String> = std::env::var("SOAK_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let mut relay = command
        .args(["run", "--config"])
        .arg(&config)
        .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
        .env("SOAK_WEBHOOK_SECRET", secret.expose())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut pid = relay.id();
    if !wrap.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(30);
        pid = loop {
            if let Some(p) = find_exe(relay.id(), std::path::Path::new(BIN)) {
                break p;
            }
            anyhow::ensure!(Instant::now() < deadline, "no relay under {wrap:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
    }
    let metrics_url = format!("http://{telemetry}/metrics");
    eprintln!(
        "soak: {minutes} min at {rate} authorizations/s over 200 merchants{}; relay pid {pid}",
        if kafka.is_empty() { "" } else { ", with Kafka" }
    );
    println!("minute\trss_mib\tanon_mib\toutbox\tgenerated\tadmitted\tdelivered\twebhooks\tlag_max_s\tstore_disk_mib");
    let started = Instant::now();
    let http = reqwest::Client::new();
    let mut samples: Vec<Sample> = Vec::new();
    while started.elapsed() < Duration::from_secs_f64(minutes * 60.0) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Ok(Some(status)) = relay.try_wait() {
            anyhow::bail!("the relay exited: {status}");
        }
        let text = match http.get(&metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => continue,
        };
        let sample = Sample {
            at: started.elapsed(),
            rss: rss_mib(pid),
            anon: status_mib(pid, "RssAnon:"),
            outbox: metric(&text, "mxc_relay_outbox_events", &[]),
            generated: sim.stats().records_generated,
            new: metric(&text, "mxc_relay_records_total", &["outcome=\"new\""]),
            delivered_stdout: metric(
                &text,
                "mxc_relay_events_total",
                &["sink=\"console\"", "outcome=\"delivered\""],
            ),
            delivered_alerts: metric(
                &text,
                "mxc_relay_events_total",
                &["sink=\"alerts\"", "outcome=\"delivered\""],
            ),
            lag_max: metric(&text, "mxc_relay_poll_lag_max_seconds", &[]),
            disk_mib: metric(&text, "mxc_relay_store_disk_bytes", &[]) / (1024.0 * 1024.0),
        };
        if samples.len() % 6 == 5 {
            println!(
                "{:.0}\t{:.1}\t{:.1}\t{:.0}\t{}\t{:.0}\t{:.0}\t{:.0}\t{:.1}\t{:.1}",
                sample.at.as_secs_f64() / 60.0,
                sample.rss,
                sample.anon,
                sample.outbox,
                sample.generated,
                sample.new,
                sample.delivered_stdout,
                sample.delivered_alerts,
                sample.lag_max,
                sample.disk_mib
            );
        }
        samples.push(sample);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let status = relay.wait()?;

    let half = Duration::from_secs_f64(minutes * 30.0);
    let warm = samples.iter().find(|s| s.at >= half).or(samples.first());
    let (Some(warm), Some(last)) = (warm, samples.last()) else {
        anyhow::bail!("no samples");
    };
    let after_warm: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm.at).collect();
    let max_rss = after_warm.iter().map(|s| s.rss).fold(0.0, f64::max);
    let max_outbox = samples.iter().map(|s| s.outbox).fold(0.0, f64::max);
    let max_lag = samples.iter().map(|s| s.lag_max).fold(0.0, f64::max);
    println!();
    println!(
        "RSS: {:.1} MiB at {:.0} min, {:.1} MiB at the end ({:.2}×), at most {:.1} MiB in the second half",
        warm.rss,
        warm.at.as_secs_f64() / 60.0,
        last.rss,
        last.rss / warm.rss.max(1.0),
        max_rss
    );
    println!(
        "outbox: at most {max_outbox:.0} events (sampled every 10 s), {:.0} at the end",
        last.outbox
    );
    println!("poll lag: at most {max_lag:.1} s");
    println!(
        "records: {} generated, {:.0} admitted, {:.0} delivered to stdout ({:.4} of generated at the last sample), {:.0} decline webhooks",
        last.generated,
        last.new,
        last.delivered_stdout,
        last.delivered_stdout / (last.generated.max(1) as f64),
        last.delivered_alerts
    );
    println!("relay exit: {status}");
    // The store after the clean stop (closed): its live data against what
    // it took on disk while running, and its bound (2× live + 64 MiB).
    let (live, seen) = live_mib(&dir.path().join("store"))?;
    let max_disk = after_warm.iter().map(|s| s.disk_mib).fold(0.0, f64::max);
    println!(
        "store: live data {live:.1} MiB ({seen} seen ids) at the end; on disk {:.1} MiB at {:.0} min, {:.1} MiB at the end, at most {max_disk:.1} MiB in the second half; bound 2× live + 64 MiB = {:.1} MiB",
        warm.disk_mib,
        warm.at.as_secs_f64() / 60.0,
        last.disk_mib,
        2.0 * live + 64.0
    );
    Ok(())
}
