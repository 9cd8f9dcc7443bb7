//! Cold start: how long the real binary takes from its spawn to its first poll, with a store
//! holding 1,000,000 seen record ids and the cursors of 10,000 XMIDs, beside the same start
//! with an empty store (the baseline) in the same run.
//!
//! `cargo bench --bench coldstart` (`COLDSTART_IDS`, `COLDSTART_ROUNDS` for other sizes)
//!
//! The store is prepared through the crate's own `Store` API (ids admitted in transactions of
//! 10,000, then one cursor per XMID 10 s behind now, so the polls are idle), copied afresh for
//! each round; a store with the cursors alone separates the two. The big store starts twice:
//! as a clean stop leaves it (the database closed) and as a crash leaves it (its file copied
//! while a store had it open, synced: redb finds it not closed and recovers it from the
//! allocator state its last durable commit saved). `mxc-relay run` (default
//! configuration but `pollers.start` a minute back, so that a new XMID's first poll has
//! something settled to ask for at once; the 10,000 XMIDs listed in its file; a file sink) is
//! spawned against `mxc-relay sim`; the first poll is the first
//! `GET /report/v1/tsys/authorization` the simulator counts (its stats, read every 5 ms). The
//! first polls of the groups are spread over one interval (30 s), so the first of the 200
//! comes at a random instant early in it: the rounds alternate the stores and the medians are
//! compared.

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc::Secret;
use mxc::{Client, ClientConfig, Credentials, AUTHORIZATIONS};
use mxc_relay::config::StoreConfig;
use mxc_relay::store::{Admission, Cursor, Store};
use test_kit::SimProcess;

use common::{env_or, start_idle_sim, Guard};

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");
const XMIDS: usize = 10_000;
const BATCH: usize = 10_000;
const ROUTE: &str = "GET /report/v1/tsys/authorization";

fn main() {
    let ids: usize = env_or("COLDSTART_IDS", 1_000_000);
    let rounds: usize = env_or("COLDSTART_ROUNDS", 3);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = tempfile::tempdir().expect("tempdir");
    let (sim, base) = start_sim();
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
    assert_eq!(xmids.len(), XMIDS);

    // COLDSTART_STORE names a directory to keep the prepared store in (and reuse it from, if
    // it is there): for profiling a start by hand.
    let prepared = std::env::var_os("COLDSTART_STORE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| work.path().join("prepared"));
    if !prepared.exists() {
        let started = Instant::now();
        runtime.block_on(prepare(&prepared, &xmids, ids));
        println!(
            "prepared: {ids} seen ids and {XMIDS} cursors in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let size_mib = dir_size(&prepared) as f64 / (1024.0 * 1024.0);
    println!("the prepared store: {size_mib:.0} MiB on disk");
    // The same store as a crash leaves it: its file copied while it is open.
    let crashed = work.path().join("crashed");
    {
        let config = StoreConfig {
            path: prepared.clone(),
            ..StoreConfig::default()
        };
        let open = Store::open(&config, &["null".to_string()]).expect("open the prepared store");
        runtime.block_on(open.flush()).expect("sync");
        copy_dir(&prepared, &crashed).expect("copy the open store");
    }
    let cursors_only = work.path().join("cursors-only");
    runtime.block_on(prepare(&cursors_only, &xmids, 0));

    let mut rows: Vec<(&str, Vec<Start>)> = vec![
        ("empty store (baseline)", Vec::new()),
        ("10,000 cursors, no seen ids", Vec::new()),
        (
            "1,000,000 seen ids, 10,000 cursors, after a clean stop",
            Vec::new(),
        ),
        (
            "1,000,000 seen ids, 10,000 cursors, after a crash (recovered at open)",
            Vec::new(),
        ),
    ];
    if ids != 1_000_000 {
        rows[2].0 = "the prepared store, after a clean stop";
        rows[3].0 = "the prepared store, after a crash";
    }
    for round in 0..rounds {
        for (i, row) in rows.iter_mut().enumerate() {
            let dir = work.path().join(format!("round{round}-{i}"));
            std::fs::create_dir_all(&dir).expect("round dir");
            let from = [None, Some(&cursors_only), Some(&prepared), Some(&crashed)][i];
            if let Some(from) = from {
                copy_dir(from, &dir.join("store")).expect("copy the prepared store");
            }
            let start = measure(&runtime, &base, &xmids, &dir);
            println!(
                "round {round}, {}: first poll {:.3} s, \"mxc-relay running\" {:.3} s, RSS at first poll {:.1} MiB, 10 s later {:.1} MiB",
                row.0,
                start.first_poll.as_secs_f64(),
                start.running.map_or(f64::NAN, |d| d.as_secs_f64()),
                start.rss_first_poll_kib as f64 / 1024.0,
                start.rss_later_kib as f64 / 1024.0,
            );
            row.1.push(start);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    drop(sim);

    println!();
    println!("cold start: `mxc-relay run` (default configuration, {XMIDS} XMIDs listed) against `mxc-relay sim --merchants {XMIDS}`, {rounds} rounds, medians");
    println!();
    println!("| store at start | spawn → first poll | vs baseline | spawn → \"mxc-relay running\" | RSS at first poll | RSS 10 s later |");
    println!("|---|---:|---:|---:|---:|---:|");
    let base_first = median(rows[0].1.iter().map(|s| s.first_poll.as_secs_f64()));
    for (name, starts) in &rows {
        let first = median(starts.iter().map(|s| s.first_poll.as_secs_f64()));
        let running = median(
            starts
                .iter()
                .map(|s| s.running.map_or(f64::NAN, |d| d.as_secs_f64())),
        );
        let rss = median(starts.iter().map(|s| s.rss_first_poll_kib as f64 / 1024.0));
        let later = median(starts.iter().map(|s| s.rss_later_kib as f64 / 1024.0));
        println!(
            "| {name} | {first:.2} s | {:.2} | {running:.2} s | {rss:.1} MiB | {later:.1} MiB |",
            first / base_first
        );
    }
}

fn credentials() -> Credentials {
    Credentials {
        api_key: Secret::new(mxc_sim::DEFAULT_API_KEY),
        username: None,
        password: Secret::default(),
    }
}

fn start_sim() -> (SimProcess, String) {
    start_idle_sim(BIN, XMIDS)
}

/// A store as a relay polling `xmids` for a while leaves it: `ids` seen record ids, admitted
/// in transactions of `BATCH`, and every XMID's cursor a little behind now.
async fn prepare(path: &Path, xmids: &[String], ids: usize) {
    let config = StoreConfig {
        path: path.to_path_buf(),
        ..StoreConfig::default()
    };
    let store = Store::open(&config, &["null".to_string()]).expect("open the store");
    let mut admitted = 0;
    while admitted < ids {
        let n = BATCH.min(ids - admitted);
        let batch: Vec<Admission> = (admitted..admitted + n)
            .map(|i| Admission {
                record_id: uuid::Uuid::new_v4().to_string(),
                xmid: xmids[i % xmids.len()].clone(),
                events: vec![],
            })
            .collect();
        let outcome = store.admit(&batch, &[]).await.expect("admit");
        assert_eq!(outcome.new, n);
        admitted += n;
    }
    let now = Utc::now();
    let cursors: Vec<(String, Cursor)> = xmids
        .iter()
        .map(|x| {
            (
                AUTHORIZATIONS.cursor_key(x),
                Cursor {
                    position: now - chrono::Duration::seconds(10),
                    floor: now - chrono::Duration::hours(1),
                },
            )
        })
        .collect();
    for chunk in cursors.chunks(1_000) {
        store.admit(&[], chunk).await.expect("cursors");
    }
    store.flush().await.expect("flush");
    assert_eq!(store.seen_len(), ids);
}

struct Start {
    first_poll: Duration,
    running: Option<Duration>,
    rss_first_poll_kib: u64,
    rss_later_kib: u64,
}

/// Spawns `mxc-relay run` on `dir/store` and times its first poll.
fn measure(runtime: &tokio::runtime::Runtime, base: &str, xmids: &[String], dir: &Path) -> Start {
    let config = format!(
        "[mxc]\nbase_url = \"{base}\"\napi_key = \"{}\"\n[pollers]\nxmids = {}\nstart = \"{}\"\n[store]\npath = \"{}\"\n[sinks.null]\nkind = \"file\"\npath = \"{}\"\n[[routes]]\nsink = \"null\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        mxc_sim::DEFAULT_API_KEY,
        serde_json::to_string(xmids).expect("json"),
        mxc::instant(Utc::now() - chrono::Duration::minutes(1)),
        dir.join("store").display(),
        dir.join("out.jsonl").display(),
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, config).expect("config");
    let before = polls(runtime, base);
    let spawned = Instant::now();
    let mut run = Guard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run"),
    );
    let running: Arc<Mutex<Option<Duration>>> = Arc::default();
    let stderr = run.0.stderr.take().expect("stderr");
    let seen = running.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("mxc-relay running") {
                if let Ok(mut r) = seen.lock() {
                    r.get_or_insert(spawned.elapsed());
                }
            }
        }
    });
    let first_poll = loop {
        if polls(runtime, base) > before {
            break spawned.elapsed();
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(120),
            "no poll within 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let pid = run.0.id();
    let rss_first_poll_kib = rss_kib(pid);
    std::thread::sleep(Duration::from_secs(10));
    let rss_later_kib = rss_kib(pid);
    // A graceful stop, as in production (SIGTERM), then the guard's kill if it hangs.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(run.0.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(run);
    let _ = reader.join();
    let running = running.lock().ok().and_then(|r| *r);
    Start {
        first_poll,
        running,
        rss_first_poll_kib,
        rss_later_kib,
    }
}

/// Authorization queries the simulator answered so far.
fn polls(runtime: &tokio::runtime::Runtime, base: &str) -> u64 {
    runtime.block_on(async {
        let Ok(answer) = reqwest::get(format!("{base}/_sim/stats")).await else {
            return 0;
        };
        let stats: serde_json::Value = answer.json().await.unwrap_or_default();
        stats["requests"][ROUTE]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0)
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[n / 2],
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
