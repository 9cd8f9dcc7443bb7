//! The store alone: CPU per admitted record, and the disk it takes, for the write pattern of a
//! poll — `STORE_BATCHES` (2,000) admissions of 100 new records, each record one event of
//! about 1 KiB for one sink, and the page's cursor — then every entry delivered (removed).
//!
//! `cargo bench --bench store`
//!
//! Each configuration runs in a fresh directory, three times; the medians are printed. The
//! baseline, in the same run, is bare redb doing the same writes (the same tables, keys and
//! values; one write transaction per batch, a lookup and three inserts per record), with no
//! store code around it: `store / bare` is what the store's own code costs on top of its
//! engine. CPU is this process's user + system time (`getrusage`): nothing else runs in it.

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use chrono::Utc;
use mxc_relay::config::{Durability, StoreConfig};
use mxc_relay::event::{Event, Head};
use mxc_relay::store::{Admission, Cursor, Store};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use common::{cpu_seconds, env_or, machine};

const PER_BATCH: usize = 100;
const ROUNDS: usize = 3;

fn main() {
    let batches: usize = env_or("STORE_BATCHES", 2_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = "x".repeat(1000);
    println!("store: {batches} admissions of {PER_BATCH} new records (one ~1 KiB event each), then every entry removed; {ROUNDS} rounds, medians");
    println!("{}", machine());
    println!();
    println!("| configuration | CPU µs per record | wall µs per record | disk at the end | store / bare (CPU) |");
    println!("|---|---:|---:|---:|---:|");
    for durable in [true, false] {
        let mut bare = Vec::new();
        let mut store = Vec::new();
        for _ in 0..ROUNDS {
            bare.push(run_bare(batches, &body, durable));
            store.push(runtime.block_on(run_store(batches, &body, durable)));
        }
        let bare = Run::median(bare);
        let store = Run::median(store);
        let mode = if durable {
            "durable per batch (`durability = \"batch\"`)"
        } else {
            "no sync per batch (`durability = \"interval\"`)"
        };
        for (name, run) in [("bare redb", &bare), ("`Store`", &store)] {
            println!(
                "| {name}, {mode} | {:.1} | {:.1} | {:.1} MiB | {} |",
                run.cpu_us,
                run.wall_us,
                run.disk_mib,
                if std::ptr::eq(run, &store) {
                    format!("{:.2}", store.cpu_us / bare.cpu_us)
                } else {
                    "1 (baseline)".into()
                }
            );
        }
    }
}

#[derive(Clone, Copy)]
struct Run {
    cpu_us: f64,
    wall_us: f64,
    disk_mib: f64,
}

impl Run {
    fn median(mut runs: Vec<Run>) -> Run {
        runs.sort_by(|a, b| a.cpu_us.total_cmp(&b.cpu_us));
        runs[runs.len() / 2]
    }
}

fn record_id(batch: usize, i: usize) -> String {
    format!("{:08}-{:03}-{}", batch, i, "0000-4000-8000-000000000000")
}

fn event(record_id: &str, body: &str) -> Event {
    let head = Head {
        id: format!("evt_{record_id}"),
        event_type: "authorization.created".into(),
        route: "all".into(),
        resource: "authorizations".into(),
        sink: "out".into(),
        xmid: "XMID-0001".into(),
        record_id: record_id.into(),
        occurred_at: Some("2026-12-01T00:00:00.000Z".into()),
        fetched_at_ms: 1_764_000_000_000,
        traceparent: None,
    };
    Event::new(
        head,
        &format!("{{\"id\":\"{record_id}\",\"pad\":\"{body}\"}}"),
    )
}

/// What a poll hands the store: a page's admissions and its cursor.
type Page = (Vec<Admission>, Vec<(String, Cursor)>);

async fn run_store(batches: usize, body: &str, durable: bool) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        path: dir.path().join("store"),
        durability: if durable {
            Durability::Batch
        } else {
            Durability::Interval
        },
        ..StoreConfig::default()
    };
    let store = Store::open(&config, &["out".to_string()]).expect("open");
    // Built before the clock starts: what the poller hands the store.
    let pages: Vec<Page> = (0..batches)
        .map(|b| {
            let admissions = (0..PER_BATCH)
                .map(|i| {
                    let id = record_id(b, i);
                    Admission {
                        events: vec![event(&id, body)],
                        record_id: id,
                        xmid: "XMID-0001".into(),
                    }
                })
                .collect();
            let now = Utc::now();
            let cursor = Cursor {
                position: now,
                floor: now,
            };
            (admissions, vec![("XMID-0001".to_string(), cursor)])
        })
        .collect();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    for (admissions, cursors) in &pages {
        let outcome = store.admit(admissions, cursors).await.expect("admit");
        assert_eq!(outcome.new, PER_BATCH);
        // Delivered: as the sink worker removes them.
        let seqs: Vec<u64> = store
            .peek("out", PER_BATCH)
            .expect("peek")
            .iter()
            .map(|e| e.seq)
            .collect();
        store.remove("out", &seqs).await.expect("remove");
    }
    store.flush().await.expect("sync");
    let run = Run {
        cpu_us: (cpu_seconds() - cpu0) * 1e6 / (batches * PER_BATCH) as f64,
        wall_us: wall0.elapsed().as_secs_f64() * 1e6 / (batches * PER_BATCH) as f64,
        disk_mib: store.disk_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0),
    };
    assert_eq!(store.outbox_len("out").expect("len"), 0);
    run
}

const SEEN: TableDefinition<&str, i64> = TableDefinition::new("seen");
const SEEN_BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("seen_by_time");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox/out");
const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");

/// The same writes on bare redb: per record a lookup of the id, its insert, its time index and
/// its outbox entry (the event's bytes as the store lays them out); the cursor per batch.
fn run_bare(batches: usize, body: &str, durable: bool) -> Run {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bare.redb");
    let db = redb::Database::builder()
        .set_cache_size(64 * 1024 * 1024)
        .create(&file)
        .expect("create");
    let pages: Vec<Vec<(String, Vec<u8>)>> = (0..batches)
        .map(|b| {
            (0..PER_BATCH)
                .map(|i| {
                    let id = record_id(b, i);
                    let e = event(&id, body);
                    let value = e.to_outbox();
                    (id, value)
                })
                .collect()
        })
        .collect();
    let durability = if durable {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    };
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let mut seq = 0u64;
    let now = Utc::now().timestamp_millis();
    for page in &pages {
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(durability).expect("durability");
        let first = seq;
        {
            let mut seen = txn.open_table(SEEN).expect("seen");
            let mut by_time = txn.open_table(SEEN_BY_TIME).expect("by time");
            let mut outbox = txn.open_table(OUTBOX).expect("outbox");
            for (id, value) in page {
                if seen.get(id.as_str()).expect("get").is_some() {
                    continue;
                }
                seen.insert(id.as_str(), now).expect("insert");
                let mut key = now.to_be_bytes().to_vec();
                key.extend_from_slice(id.as_bytes());
                by_time.insert(key.as_slice(), ()).expect("insert");
                outbox.insert(seq, value.as_slice()).expect("insert");
                seq += 1;
            }
            txn.open_table(CURSORS)
                .expect("cursors")
                .insert("XMID-0001", [0u8; 16].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
        // Delivered: read back and removed, as the store's peek and remove do.
        let read = db.begin_read().expect("read");
        let n = read
            .open_table(OUTBOX)
            .expect("outbox")
            .range(first..)
            .expect("range")
            .take(PER_BATCH)
            .count();
        drop(read);
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(redb::Durability::None)
            .expect("durability");
        {
            let mut outbox = txn.open_table(OUTBOX).expect("outbox");
            for s in first..first + n as u64 {
                outbox.remove(s).expect("remove");
            }
        }
        txn.commit().expect("commit");
    }
    let mut txn = db.begin_write().expect("begin");
    txn.set_quick_repair(true);
    txn.commit().expect("sync");
    Run {
        cpu_us: (cpu_seconds() - cpu0) * 1e6 / (batches * PER_BATCH) as f64,
        wall_us: wall0.elapsed().as_secs_f64() * 1e6 / (batches * PER_BATCH) as f64,
        disk_mib: std::fs::metadata(&file).map_or(0, |m| m.blocks() * 512) as f64
            / (1024.0 * 1024.0),
    }
}
