//! How fast the simulator serves authorizations, against a baseline measured in the same run.
//!
//! `cargo bench --bench sim_serving` (release). Three measurements over HTTP on 127.0.0.1, each
//! with the same number of concurrent clients:
//! - baseline: a minimal axum server answering every GET with one fixed 100-record page taken
//!   from the simulator: the ceiling that HTTP, the same bytes and this machine allow;
//! - sim, raw: paging through every record of the simulator, reading bytes only;
//! - sim via mxc::Client: the same, parsed into records by the real client.
//!
//! Records/s, and the ratio to the baseline, which holds on a noisy machine.

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use chrono::Utc;
use mxc::Secret;
use mxc::{Client, ClientConfig, Credentials, ReportQuery};
use mxc_sim::SimConfig;

const RECORDS: usize = 100_000;
const MERCHANTS: usize = 20;
const WORKERS: usize = 4;
const ROUNDS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let sim = mxc_sim::start(SimConfig {
        merchants: MERCHANTS,
        rate: 0.0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let xmids: Vec<String> = sim.xmids()[..MERCHANTS].to_vec();
    let to = Utc::now();
    let from = to - chrono::Duration::hours(2);
    let started = Instant::now();
    sim.generate(RECORDS, &xmids, from, to).expect("generate");
    eprintln!(
        "generated {RECORDS} records in {:.2}s",
        started.elapsed().as_secs_f64()
    );

    let credentials = Credentials {
        api_key: Secret::new(mxc_sim::DEFAULT_API_KEY),
        username: None,
        password: Secret::default(),
    };
    let client = Client::new(ClientConfig::new(sim.base_url(), credentials)).expect("client");
    client.authenticate().await.expect("token");

    // One page as the simulator renders it, for the baseline server.
    let query = move |xmid: &str| ReportQuery::new(vec![xmid.to_string()], from, to);
    let http = reqwest::Client::new();
    let token = raw_token(&http, &sim.base_url()).await;
    let sample = raw_page(&http, &sim.base_url(), &token, &query(&xmids[0]), 0).await;
    let page_bytes = sample.len();
    let baseline_url = baseline_server(sample).await;

    let pages_total = RECORDS / 100;
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let baseline = measure(|w| {
            let url = baseline_url.clone();
            async move {
                let http = reqwest::Client::new();
                let mut n = 0;
                for _ in 0..pages_total / WORKERS + usize::from(w < pages_total % WORKERS) {
                    let body = http
                        .get(&url)
                        .send()
                        .await
                        .expect("get")
                        .bytes()
                        .await
                        .expect("body");
                    assert!(!body.is_empty());
                    n += 100;
                }
                n
            }
        })
        .await;
        let raw = measure(|w| {
            let (http, base, token, mine) = (
                http.clone(),
                sim.base_url(),
                token.clone(),
                my_xmids(&xmids, w),
            );
            async move {
                let mut n = 0;
                for xmid in mine {
                    let q = query(&xmid);
                    let mut offset = 0;
                    loop {
                        let body = raw_page(&http, &base, &token, &q, offset).await;
                        let count = count_records(&body);
                        n += count;
                        offset += count as u32;
                        if count < 100 {
                            break;
                        }
                    }
                }
                n
            }
        })
        .await;
        let parsed = measure(|w| {
            let (client, mine) = (client.clone(), my_xmids(&xmids, w));
            async move {
                let mut n = 0;
                for xmid in mine {
                    let mut pager = client.report_pages(query(&xmid));
                    while let Some(batch) = pager.next_page().await.expect("page") {
                        n += batch.records.len();
                    }
                }
                n
            }
        })
        .await;
        assert_eq!(raw.0, RECORDS, "every record served");
        assert_eq!(parsed.0, RECORDS, "every record parsed");
        eprintln!(
            "round {}: baseline {:.0}/s, sim raw {:.0}/s, sim parsed {:.0}/s",
            round + 1,
            baseline.1,
            raw.1,
            parsed.1
        );
        rows.push((baseline.1, raw.1, parsed.1));
    }
    let median = |f: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (b, r, p) = (median(|x| x.0), median(|x| x.1), median(|x| x.2));
    println!("simulator serving rate: {RECORDS} records, {MERCHANTS} XMIDs, pages of 100 (~{} KiB), {WORKERS} concurrent clients, median of {ROUNDS} rounds", page_bytes / 1024);
    println!();
    println!("| measurement | records/s | vs baseline |");
    println!("|---|---:|---:|");
    println!("| baseline: fixed page from a bare axum handler | {b:.0} | 1.00 |");
    println!(
        "| simulator, raw HTTP (bytes only) | {r:.0} | {:.2} |",
        r / b
    );
    println!(
        "| simulator, through mxc::Client (parsed records) | {p:.0} | {:.2} |",
        p / b
    );
}

fn my_xmids(xmids: &[String], worker: usize) -> Vec<String> {
    xmids
        .iter()
        .skip(worker)
        .step_by(WORKERS)
        .cloned()
        .collect()
}

/// Runs `WORKERS` copies of `work` at once; returns (records, records per second).
async fn measure<F, Fut>(work: F) -> (usize, f64)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = usize> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..WORKERS).map(|w| tokio::spawn(work(w))).collect();
    let mut total = 0;
    for h in handles {
        total += h.await.expect("worker");
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    (total, total as f64 / secs)
}

/// A token for the raw requests, straight from the Security API.
async fn raw_token(http: &reqwest::Client, base: &str) -> String {
    let answer: serde_json::Value = http
        .post(format!("{base}/security/v1/apiKey/authenticate"))
        .json(&serde_json::json!({"value": mxc_sim::DEFAULT_API_KEY}))
        .send()
        .await
        .expect("auth")
        .json()
        .await
        .expect("token");
    answer["token"].as_str().unwrap_or_default().to_string()
}

async fn raw_page(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    q: &ReportQuery,
    offset: u32,
) -> bytes::Bytes {
    http.get(format!("{base}/report/v1/tsys/authorization"))
        .query(&[
            (
                "accountNumbers",
                serde_json::to_string(&q.xmids).unwrap_or_default(),
            ),
            ("dr_type", "abs".into()),
            ("dr_from", mxc::instant(q.from)),
            ("dr_to", mxc::instant(q.to)),
            ("sort", "transactionDateAndTime:asc".into()),
            ("size", "100".into()),
            ("from", offset.to_string()),
        ])
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body")
}

/// `recordCount` from the envelope's head, without parsing the body.
fn count_records(body: &[u8]) -> usize {
    let head = String::from_utf8_lossy(&body[..body.len().min(200)]);
    head.split("\"recordCount\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn baseline_server(page: bytes::Bytes) -> String {
    let page = Arc::new(page);
    let app = axum::Router::new().route(
        "/page",
        get(move || {
            let page = page.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    (*page).clone(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    format!("http://{addr}/page")
}
