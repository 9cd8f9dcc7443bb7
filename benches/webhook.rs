//! Signed webhook deliveries/s from the outbox to a local keep-alive receiver, beside that
//! receiver's raw request rate under a plain HTTP load generator, in the same run.
//!
//! `cargo bench --bench webhook`
//!
//! - **baseline**: 16 concurrent keep-alive connections POST one pre-signed request over and
//!   over (no store, no signing): what the receiver — which verifies every signature — can take.
//! - **relay**: the same number of events waiting in an outbox, delivered by the webhook
//!   sink (`max_in_flight` 16): each one read, signed, sent, and removed from the outbox.
//!
//! Both send the same body: the vendor's example authorization (7.6 KB in all) in the
//! `{type, timestamp, data}` envelope. Beside each rate, the CPU time the whole process (sender,
//! receiver, store) spent per request in that window: on 2 cores shared by all three, the rate
//! follows it.
//!
//! To profile one side's timed window only (setup left out): `mkfifo /tmp/ctl`, then
//! `MXC_BENCH_PROFILE=relay MXC_BENCH_PERF_CTL=/tmp/ctl perf record -D -1 --control fifo:/tmp/ctl
//! -g … target/release/deps/webhook-…` (`baseline` for the other side).

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mxc_relay::config::{Durability, StoreConfig, WebhookConfig};
use mxc_relay::event::{Event, Head};
use mxc_relay::receiver::{Receiver, ReceiverConfig};
use mxc_relay::route::event_id;
use mxc_relay::signature::{signature_header, WebhookSecret};
use mxc_relay::sink::{webhook_body, WebhookSink};
use mxc_relay::store::{Admission, Store};
use mxc_relay::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 20_000;
const CONCURRENCY: usize = 16;
const ROUNDS: usize = 5;

/// CPU time of this process so far (user + system), on Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name in parentheses: state is field 3, utime and stime fields 14, 15,
    // in USER_HZ (100 on Linux).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ').skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A timed window: requests/s, and CPU µs per request when known.
struct Window {
    started: Instant,
    cpu: Option<f64>,
}

impl Window {
    fn start() -> Window {
        Window {
            cpu: cpu_seconds(),
            started: Instant::now(),
        }
    }

    fn end(self, requests: usize) -> (f64, Option<f64>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let cpu = self
            .cpu
            .zip(cpu_seconds())
            .map(|(a, b)| (b - a) * 1e6 / requests as f64);
        (requests as f64 / elapsed, cpu)
    }
}

/// Turns `perf record --control` on or off around `side`'s timed window, when asked to.
fn perf(side: &str, command: &str) {
    let asked = std::env::var("MXC_BENCH_PROFILE").is_ok_and(|s| s == side);
    if let (true, Ok(fifo)) = (asked, std::env::var("MXC_BENCH_PERF_CTL")) {
        if let Err(e) = std::fs::write(&fifo, format!("{command}\n")) {
            eprintln!("cannot write to {fifo}: {e}");
        }
    }
}

fn record() -> String {
    let page: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/authorization-page.json"))
            .expect("the fixture is JSON");
    page["records"][0].to_string()
}

fn event(i: usize, data: &str) -> Event {
    let record_id = format!("bench-{i}");
    let id = event_id("declines", &record_id);
    let head = Head {
        id,
        event_type: "authorization.declined".into(),
        route: "declines".into(),
        resource: "authorizations".into(),
        sink: "alerts".into(),
        xmid: "X1".into(),
        record_id,
        occurred_at: Some("2026-11-28T10:00:00.000Z".into()),
        fetched_at_ms: 0,
        traceparent: None,
    };
    Event::new(head, data)
}

async fn receiver(secret: &WebhookSecret) -> Receiver {
    Receiver::start(
        "127.0.0.1:0".parse().expect("address"),
        ReceiverConfig {
            secrets: vec![secret.clone()],
            tolerance: Duration::from_secs(3600),
            keep: false,
            on_delivery: None,
        },
    )
    .await
    .expect("receiver starts")
}

/// Requests/s of a plain load generator sending one pre-signed request.
async fn baseline(secret: &WebhookSecret, data: &str) -> (f64, Option<f64>) {
    let receiver = receiver(secret).await;
    let event = event(0, data);
    let body = webhook_body(&event);
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature_header(
        std::slice::from_ref(secret),
        &event.id,
        timestamp,
        body.as_bytes(),
    );
    let client = reqwest::Client::new();
    let url = receiver.url();
    perf("baseline", "enable");
    let window = Window::start();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, url, body, signature, id) = (
            client.clone(),
            url.clone(),
            body.clone(),
            signature.clone(),
            event.id.clone(),
        );
        tasks.spawn(async move {
            for _ in 0..EVENTS / CONCURRENCY {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", &signature)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the receiver answers");
                assert_eq!(response.status(), 204);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let measured = window.end(EVENTS / CONCURRENCY * CONCURRENCY);
    perf("baseline", "disable");
    assert_eq!(
        receiver.count() as usize,
        EVENTS / CONCURRENCY * CONCURRENCY
    );
    measured
}

/// Deliveries/s of the webhook sink draining an outbox of `EVENTS` events.
async fn relay(secret: &WebhookSecret, data: &str) -> (f64, Option<f64>) {
    let receiver = receiver(secret).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        &StoreConfig {
            path: dir.path().join("store"),
            durability: Durability::Interval,
            ..StoreConfig::default()
        },
        &["alerts".to_string()],
    )
    .expect("store opens");
    let admissions: Vec<Admission> = (0..EVENTS)
        .map(|i| {
            let e = event(i, data);
            Admission {
                record_id: e.record_id.clone(),
                xmid: e.xmid.clone(),
                events: vec![e],
            }
        })
        .collect();
    for chunk in admissions.chunks(1000) {
        store.admit(chunk, &[]).await.expect("admitted");
    }
    store.flush().await.expect("flushed");
    let mut config = WebhookConfig::new(receiver.url(), secret.expose());
    config.allow_insecure = true;
    config.max_in_flight = CONCURRENCY;
    let sink = WebhookSink::new("alerts", &config).expect("sink");
    let stop = CancellationToken::new();
    let metrics = Metrics::new();
    perf("relay", "enable");
    let window = Window::start();
    let task = tokio::spawn(sink.run(store.clone(), metrics.clone(), stop.clone()));
    while metrics.events("alerts", "delivered") < EVENTS as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let measured = window.end(EVENTS);
    perf("relay", "disable");
    stop.cancel();
    task.await.expect("sink stops");
    assert_eq!(receiver.count() as usize, EVENTS);
    assert_eq!(store.outbox_len("alerts").expect("outbox"), 0);
    measured
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let secret = Arc::new(WebhookSecret::generate());
    let data = record();
    println!(
        "webhook bench: {EVENTS} events of {} bytes, {CONCURRENCY} in flight, median of {ROUNDS} rounds",
        webhook_body(&event(0, &data)).len()
    );
    let (mut raw, mut signed, mut raw_cpu, mut signed_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let us = |cpu: Option<f64>| cpu.map_or("?".to_string(), |c| format!("{c:.0}"));
    runtime.block_on(async {
        for round in 1..=ROUNDS {
            let (b, b_cpu) = baseline(&secret, &data).await;
            let (r, r_cpu) = relay(&secret, &data).await;
            println!(
                "round {round}: baseline {b:>9.0} req/s ({:>3} µs CPU each)   relay {r:>9.0} deliveries/s ({:>3} µs CPU each)",
                us(b_cpu),
                us(r_cpu)
            );
            raw.push(b);
            signed.push(r);
            raw_cpu.extend(b_cpu);
            signed_cpu.extend(r_cpu);
        }
    });
    let (b, r) = (median(raw), median(signed));
    let cpu = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    let (b_cpu, r_cpu) = (cpu(raw_cpu), cpu(signed_cpu));
    println!(
        "baseline (plain load generator → verifying receiver): {b:.0} requests/s  ({} µs CPU each)",
        us(b_cpu)
    );
    println!(
        "relay (outbox → signed POST → outbox removal):          {r:.0} deliveries/s  ({} µs CPU each; {:.2} of baseline)",
        us(r_cpu),
        r / b
    );
}
