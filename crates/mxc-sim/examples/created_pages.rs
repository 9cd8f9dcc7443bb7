//! How fast the simulator answers the relay's poll: authorizations of a group of XMIDs whose
//! `created` lies in a window, sorted `created:asc,id:asc` (or `created:asc` without the id
//! tie-break), in pages of 100, read through `mxc::Client`'s pager as the relay reads them.
//!
//! `cargo run --release -p mxc-sim --example created_pages`. Two data sets of the same size:
//! - bulk: every record generated at once, so all share one `created` (as `benches/kafka.rs`
//!   generates them: the pager re-anchors at the result window, then exports the instant);
//! - spread: `created` spread over the window (records that arrive one by one).
//!
//! Environment: `SIM_PAGES_RECORDS` (default 30,000), `SIM_PAGES_MERCHANTS` (20, also the
//! group's size), `SIM_PAGES_ROUNDS` (3).

use std::time::Instant;

use chrono::Duration;
use mxc::{Client, ClientConfig, Credentials, ReportQuery, Secret, TimeBasis};
use mxc_sim::{Faults, SimConfig, StatsSnapshot};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let records = env_or("SIM_PAGES_RECORDS", 30_000);
    let merchants = env_or("SIM_PAGES_MERCHANTS", 20);
    let rounds = env_or("SIM_PAGES_ROUNDS", 3).max(1);
    println!(
        "relay's poll on `created`: {records} records, a group of {merchants} XMIDs, pages of 100, median of {rounds} rounds"
    );
    println!();
    println!("| data | sort | requests | records | seconds | records/s | ms/request |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for spread in [false, true] {
        let sim = mxc_sim::start(SimConfig {
            merchants,
            rate: 0.0,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let xmids: Vec<String> = sim.xmids()[..merchants].to_vec();
        let t0 = sim.now();
        if spread {
            // Transaction times ahead of the clock: `created` is each one's transaction time.
            sim.generate(records, &xmids, t0, t0 + Duration::minutes(30))
                .expect("generate");
        } else {
            sim.generate(records, &xmids, t0 - Duration::minutes(30), t0)
                .expect("generate");
        }
        // The clock past every `created`, so that every record is searchable.
        sim.set_faults(Faults {
            clock_offset_ms: 31 * 60_000 + 60_000,
            ..Faults::default()
        });
        let credentials = Credentials {
            api_key: Secret::new(mxc_sim::DEFAULT_API_KEY),
            username: None,
            password: Secret::default(),
        };
        let client = Client::new(ClientConfig::new(sim.base_url(), credentials)).expect("client");
        client.authenticate().await.expect("token");
        for tie_break in [true, false] {
            let mut rows = Vec::new();
            for _ in 0..rounds {
                let mut query = ReportQuery::new(
                    xmids.clone(),
                    t0 - Duration::minutes(31),
                    t0 + Duration::minutes(31),
                )
                .by(TimeBasis::Ingestion);
                query.tie_break = tie_break;
                let before = sim.stats();
                let started = Instant::now();
                let mut pager = client.report_pages(query);
                let mut n = 0;
                while let Some(batch) = pager.next_page().await.expect("page") {
                    n += batch.records.len();
                }
                let secs = started.elapsed().as_secs_f64();
                let after = sim.stats();
                assert_eq!(n, records, "every record once");
                let requests = report_requests(&after).saturating_sub(report_requests(&before));
                rows.push((secs, requests));
            }
            rows.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (secs, requests) = rows[rows.len() / 2];
            println!(
                "| {} | {} | {requests} | {records} | {secs:.3} | {:.0} | {:.2} |",
                if spread {
                    "spread"
                } else {
                    "bulk (one instant)"
                },
                if tie_break {
                    "created:asc,id:asc"
                } else {
                    "created:asc"
                },
                records as f64 / secs,
                secs * 1000.0 / requests.max(1) as f64,
            );
        }
        sim.shutdown().await.expect("shutdown");
    }
}

/// Requests to the authorizations' report endpoints (query and export forms).
fn report_requests(stats: &StatsSnapshot) -> u64 {
    stats
        .requests
        .iter()
        .filter(|(route, _)| route.contains("/report/"))
        .flat_map(|(_, by_status)| by_status.values())
        .sum()
}
