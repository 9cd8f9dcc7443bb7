//! The Kafka sink against a real Kafka-protocol broker (Tansu, started by `.ci/test`).
//! `MXC_RELAY_TEST_KAFKA` is its address; `MXC_RELAY_TEST_TANSU` the broker binary, for the
//! test that needs a broker of its own to pause. Under CI a missing broker fails loudly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mxc::Secret;
use mxc_relay::config::{Config, SinkConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::Metrics;
use mxc_sim::RunningSim;
use test_kit::{PipelineConfigBuilder, Tansu, TANSU_BIN_ENV};

use crate::support::kafka::*;
use crate::support::*;

/// Reads the topic until at least `expected` messages arrived (then 3 s more, so extras show).
fn consume(broker: &str, topic: &str, expected: usize, within: Duration) -> Vec<Received> {
    read_topic(broker, topic, |out| out.len() >= expected, within)
}

fn kafka_config(
    sim: &RunningSim,
    xmids: &[String],
    dir: &Path,
    start: DateTime<Utc>,
    broker: &str,
    topic: &str,
) -> Config {
    PipelineConfigBuilder::new(sim.base_url(), xmids)
        .interval(Duration::from_secs(1))
        .look_back(Duration::from_secs(30 * 60))
        .budget(500.0, 100)
        .start(start)
        .store(dir.join("store"))
        .with(|c| c.delivery.batch_size = 500)
        .retry_min(Duration::from_millis(200))
        .kafka(broker, topic, BTreeMap::new())
        .build_valid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_records_become_fifty_thousand_messages_with_keys_headers_and_order() {
    let Some(broker) = broker() else { return };
    let topic = topic_name("fifty");
    create_topic(&broker, &topic, 4).await;
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..20].to_vec();
    let t0 = Utc::now();
    sim.generate(50_000, &xmids, t0 - minutes(20), t0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let pipeline = Pipeline::start(
        &kafka_config(&sim, &xmids, dir.path(), t0 - minutes(25), &broker, &topic),
        metrics.clone(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while metrics.events("kafka", "delivered") < 50_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pipeline.shutdown().await.unwrap();

    let (b, t) = (broker.clone(), topic.clone());
    let received =
        tokio::task::spawn_blocking(move || consume(&b, &t, 50_000, Duration::from_secs(120)))
            .await
            .unwrap();
    assert_eq!(received.len(), 50_000, "one message per record");
    let ids: HashSet<&str> = received
        .iter()
        .map(|m| m.headers["mxc-record-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 50_000, "distinct records");
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    let mut per_xmid: HashMap<&str, Vec<(chrono::DateTime<chrono::FixedOffset>, &str)>> =
        HashMap::new();
    let contract = crate::support::contract::Contract::defaults();
    let validating = std::time::Instant::now();
    for m in &received {
        contract.check(&m.body);
    }
    eprintln!(
        "50,000 events validated against their JSON Schema in {:.1?}",
        validating.elapsed()
    );
    for m in &received {
        let xmid = m.body["xmid"].as_str().unwrap();
        assert_eq!(m.key, xmid, "keyed by XMID");
        assert_eq!(m.headers["mxc-xmid"], xmid);
        assert_eq!(
            m.headers["mxc-record-id"],
            m.body["data"]["id"].as_str().unwrap()
        );
        assert_eq!(m.headers["mxc-event-type"], "authorization.created");
        assert_eq!(m.headers["content-type"], "application/json");
        assert_eq!(
            m.headers["mxc-schema-version"],
            mxc_relay::sink::SCHEMA_VERSION
        );
        assert_eq!(
            *partition_of.entry(xmid).or_insert(m.partition),
            m.partition,
            "one partition per XMID"
        );
        // The order MXC ingested them in: `created`, then the id (the poll's sort).
        let created = m.body["data"]["created"].as_str().unwrap();
        let created = chrono::DateTime::parse_from_rfc3339(created).unwrap();
        per_xmid
            .entry(xmid)
            .or_default()
            .push((created, m.body["data"]["id"].as_str().unwrap()));
    }
    for (xmid, order) in per_xmid {
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{xmid}: order kept");
    }
}

/// A broker of our own, to pause; `None` (skip) outside CI when no Tansu binary is named.
fn own_broker() -> Option<Tansu> {
    match std::env::var(TANSU_BIN_ENV) {
        Ok(bin) if !bin.is_empty() => Some(Tansu::start(&bin)),
        _ if std::env::var("CI").is_ok() => {
            panic!("{TANSU_BIN_ENV} is not set: run the tests with .ci/test")
        }
        _ => {
            eprintln!("skipped: no Tansu binary (run the tests with .ci/test)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_gone_for_30_seconds_loses_nothing_and_the_backlog_drains() {
    let Some(own) = own_broker() else { return };
    let topic = topic_name("outage");
    create_topic(own.address(), &topic, 2).await;
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..10].to_vec();
    let t0 = Utc::now();
    sim.generate(2_000, &xmids, t0 - minutes(10), t0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let pipeline = Pipeline::start(
        &kafka_config(
            &sim,
            &xmids,
            dir.path(),
            t0 - minutes(15),
            own.address(),
            &topic,
        ),
        metrics.clone(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.events("kafka", "delivered") < 2_000 {
        assert!(Instant::now() < deadline, "first records did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The broker stops answering (SIGSTOP) while new records keep coming.
    own.pause();
    sim.generate(3_000, &xmids, Utc::now() - minutes(1), Utc::now())
        .unwrap();
    // Readiness says so within two probes (10 s apart, 5 s each).
    let readyz = format!(
        "http://{}/readyz",
        pipeline.telemetry_addr.expect("serving")
    );
    let frozen_at = Instant::now();
    let not_ready = loop {
        let answer = reqwest::get(&readyz).await.unwrap();
        let (status, text) = (answer.status(), answer.text().await.unwrap());
        // Another check may fail first under load (a poller slowed by the parallel tests):
        // wait for the sink's own verdict.
        if (status == 503 && text.contains("unreachable: kafka"))
            || frozen_at.elapsed() > Duration::from_secs(25)
        {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(not_ready.0, 503, "{}", not_ready.1);
    assert!(
        not_ready.1.contains("sinks: FAILING, unreachable: kafka"),
        "{}",
        not_ready.1
    );
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(frozen_at.elapsed())).await;
    let during = metrics.events("kafka", "delivered");
    assert_eq!(during, 2_000, "nothing confirmed while the broker was gone");
    own.resume();
    let deadline = Instant::now() + Duration::from_secs(120);
    while metrics.events("kafka", "delivered") < 5_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Ready again once the broker answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = reqwest::get(&readyz).await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let store = pipeline.store.clone();
    pipeline.shutdown().await.unwrap();
    assert_eq!(store.outbox_len("kafka").unwrap(), 0, "the backlog drained");

    let (b, t) = (own.address().to_string(), topic.clone());
    let received =
        tokio::task::spawn_blocking(move || consume(&b, &t, 5_000, Duration::from_secs(60)))
            .await
            .unwrap();
    let ids: HashSet<&str> = received
        .iter()
        .map(|m| m.headers["mxc-record-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 5_000, "nothing lost");
    // Requests in flight at the freeze may time out and be sent again: at-least-once allows a
    // repeat of those (same record id, dropped by consumers), never more.
    assert!(
        received.len() <= 5_000 + 500,
        "{} messages for 5,000 records",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_record_is_dead_lettered_and_the_others_arrive() {
    let Some(broker) = broker() else { return };
    let topic = topic_name("oversize");
    create_topic(&broker, &topic, 1).await;
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..3].to_vec();
    let t0 = Utc::now();
    sim.generate(200, &xmids, t0 - minutes(5), t0).unwrap();
    let oversize = mxc_sim::Shape {
        with_id: true,
        pad_bytes: 200_000,
        ..mxc_sim::Shape::NORMAL
    };
    sim.generate_shaped(1, &xmids[..1], t0 - minutes(5), t0, oversize)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_config(&sim, &xmids, dir.path(), t0 - minutes(10), &broker, &topic);
    if let Some(SinkConfig::Kafka { properties, .. }) = config.sinks.get_mut("kafka") {
        properties.insert("message.max.bytes".into(), Secret::new("100000"));
    }
    let metrics = Metrics::new();
    let pipeline = Pipeline::start(&config, metrics.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (metrics.events("kafka", "delivered") < 200
        || metrics.events("kafka", "dead_lettered") < 1)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = pipeline.store.clone();
    pipeline.shutdown().await.unwrap();

    let dead = store.dead_letters("kafka").unwrap();
    assert_eq!(dead.len(), 1);
    let (_, letter) = &dead[0];
    assert!(letter.reason.contains("too large"), "{}", letter.reason);
    assert!(letter.event.body().len() > 200_000);
    let (b, t) = (broker.clone(), topic.clone());
    let received =
        tokio::task::spawn_blocking(move || consume(&b, &t, 200, Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(received.len(), 200, "the others arrived");
    assert!(received
        .iter()
        .all(|m| m.headers["mxc-record-id"] != letter.event.record_id));
}
