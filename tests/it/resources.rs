//! Disputes, settlement batches and ACH deposits flow end to end like authorizations: each
//! resource polled on its own, each record once on its own Kafka topic with its own event
//! type, and the urgent ones (chargebacks, rejected batches, returned deposits) as signed
//! webhooks. Real simulator, real broker (Tansu, started by `.ci/test`), real receiver.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mxc::{Record, ReportQuery, Resource, TimeBasis, RESOURCES};
use mxc_relay::config::{KafkaKey, RouteConfig, SinkConfig, WebhookConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::signature::WebhookSecret;
use mxc_relay::telemetry::Metrics;
use mxc_sim::{RunningSim, SimConfig};
use serde_json::Value;

use crate::support::kafka::*;
use crate::support::*;

/// Every record of `resource` the simulator holds for `xmids` in `[from, to]`, by id.
async fn truth(
    sim: &RunningSim,
    resource: &'static Resource,
    xmids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> HashMap<String, Value> {
    // What the relay polls: records ingested in the window where the resource says when
    // (authorizations), else records of that time.
    let basis = match resource.ingestion_field {
        Some(_) => TimeBasis::Ingestion,
        None => TimeBasis::Transaction,
    };
    let query = ReportQuery::new(xmids.to_vec(), from, to)
        .of(resource)
        .by(basis);
    let mut pager = client(sim).report_pages(query);
    let mut out = HashMap::new();
    while let Some(batch) = pager.next_page().await.unwrap() {
        for record in batch.records {
            out.insert(record.id().unwrap().to_string(), record.to_value());
        }
    }
    out
}

fn route(name: &str, sink: &str, resource: &str, alerts: bool) -> RouteConfig {
    RouteConfig {
        resource: resource.into(),
        alerts,
        ..RouteConfig::every_record(name, sink)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disputes_batches_and_deposits_reach_kafka_and_webhooks_with_their_own_event_types() {
    let Some(broker) = broker() else { return };
    let prefix = topic_name("resources");
    for r in RESOURCES {
        create_topic(&broker, &format!("{prefix}.{}", r.name), 2).await;
    }
    // Five minutes of history, and more arriving while the relay runs (busy_settlement).
    let sim = start_sim(SimConfig {
        merchants: 6,
        rate: 20.0,
        backlog: Duration::from_secs(300),
        max_lateness: Duration::from_secs(20),
        settlement: busy_settlement(),
        ..SimConfig::default()
    })
    .await;
    let xmids: Vec<String> = sim.xmids()[..6].to_vec();
    let start = Utc::now() - chrono::Duration::minutes(6);

    let secret = WebhookSecret::generate();
    let receiver = keeping_receiver(&secret).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = every_resource(&sim, &xmids, start, dir.path().join("store"));
    c.sinks.insert(
        "kafka".into(),
        SinkConfig::Kafka {
            brokers: broker.clone(),
            topic: format!("{prefix}.{{resource}}"),
            key: KafkaKey::Xmid,
            compression: "lz4".into(),
            properties: BTreeMap::new(),
            cloudevents: false,
        },
    );
    let mut alerts = WebhookConfig::new(receiver.url(), secret.expose());
    alerts.allow_insecure = true;
    c.sinks
        .insert("alerts".into(), SinkConfig::Webhook(Box::new(alerts)));
    for r in RESOURCES {
        c.routes
            .push(route(&format!("{}-kafka", r.name), "kafka", r.name, false));
    }
    for r in &RESOURCES[1..] {
        c.routes
            .push(route(&format!("{}-alerts", r.name), "alerts", r.name, true));
    }
    assert_eq!(c.validate(), vec![]);
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::start(&c, metrics.clone()).await.unwrap();

    // Let live records of every kind arrive, then require everything up to `until`.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let until = Utc::now() - chrono::Duration::seconds(3);
    let mut must = HashMap::new();
    for r in RESOURCES {
        must.insert(r.name, truth(&sim, r, &xmids, start, until).await);
    }
    let needed: usize = must.values().map(HashMap::len).sum();
    let deadline = Instant::now() + Duration::from_secs(90);
    // The count alone can be reached early: other resources' later records count too, while
    // the last authorizations before `until` wait for the settle time. So also wait until a
    // poll has surely covered `until` (settle, then two intervals).
    let covered = until
        + chrono::Duration::from_std(c.pollers.settle).unwrap()
        + chrono::Duration::seconds(2 * c.pollers.interval.as_secs() as i64 + 1);
    while ((metrics.events("kafka", "delivered") as usize) < needed || Utc::now() < covered)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        pipeline.drain(Duration::from_secs(30)).await,
        "outboxes empty"
    );
    pipeline.shutdown().await.unwrap();
    // Whatever was delivered must exist: the simulator's records up to now.
    let mut exist = HashMap::new();
    for r in RESOURCES {
        exist.insert(r.name, truth(&sim, r, &xmids, start, Utc::now()).await);
    }
    let stats = sim.stats();
    for r in RESOURCES {
        assert!(
            stats.requests_to(&format!("GET {}", r.path)) > 6,
            "{} polled",
            r.name
        );
    }

    // Every event matches its event type's JSON Schema.
    let contract = crate::support::contract::Contract::of(&c);
    let mut on_kafka: HashMap<&str, HashMap<String, Value>> = HashMap::new();
    for r in RESOURCES {
        let (b, topic, n) = (
            broker.clone(),
            format!("{prefix}.{}", r.name),
            must[r.name].len(),
        );
        let received = tokio::task::spawn_blocking(move || {
            read_topic(&b, &topic, |m| m.len() >= n, Duration::from_secs(60))
        })
        .await
        .unwrap();
        let mut ids = HashMap::new();
        for m in received {
            contract.check(&m.body);
            assert_eq!(m.headers["mxc-event-type"], r.event_type, "{}", r.name);
            assert_eq!(m.body["type"], r.event_type);
            let id = m.headers["mxc-record-id"].clone();
            let data = &m.body["data"];
            assert_eq!(data["id"], id.as_str());
            // The envelope's time is the resource's own time field.
            let record = Record::from_json(&data.to_string()).unwrap().of(r);
            assert_eq!(
                m.body["occurred_at"],
                mxc::instant(record.time().unwrap()),
                "{} {id}",
                r.name
            );
            assert!(
                ids.insert(id.clone(), data.clone()).is_none(),
                "{} {id} twice",
                r.name
            );
        }
        let missing: Vec<&String> = must[r.name]
            .keys()
            .filter(|id| !ids.contains_key(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: {} of {} missing, e.g. {:?}",
            r.name,
            missing.len(),
            must[r.name].len(),
            missing.first()
        );
        let extra: Vec<&String> = ids
            .keys()
            .filter(|id| !exist[r.name].contains_key(*id))
            .collect();
        assert!(
            extra.is_empty(),
            "{}: not in the simulator: {extra:?}",
            r.name
        );
        on_kafka.insert(r.name, ids);
    }
    let (disputes, batches, deposits) = (
        &on_kafka["disputes"],
        &on_kafka["batches"],
        &on_kafka["ach"],
    );
    assert!(
        disputes.len() >= 100 && batches.len() >= 100 && deposits.len() >= 50,
        "{} disputes, {} batches, {} deposits",
        disputes.len(),
        batches.len(),
        deposits.len()
    );
    // Each dispute is about an authorization that was itself delivered (if within the window).
    let authorizations = &on_kafka["authorizations"];
    let mut about_delivered = 0;
    for d in disputes.values() {
        if authorizations.contains_key(d["authorizationId"].as_str().unwrap()) {
            about_delivered += 1;
        }
    }
    assert!(
        about_delivered * 10 >= disputes.len() * 8,
        "{about_delivered} of {} disputes refer to delivered sales",
        disputes.len()
    );

    // The alerts: exactly the urgent records, each once, each verified, with its own type.
    let expected: HashSet<(String, String)> = disputes
        .iter()
        .filter(|(_, d)| d["disputeType"] == "Chargeback")
        .map(|(id, _)| ("dispute.chargeback".to_string(), id.clone()))
        .chain(
            batches
                .iter()
                .filter(|(_, b)| b["rejected"] == true)
                .map(|(id, _)| ("batch.rejected".to_string(), id.clone())),
        )
        .chain(
            deposits
                .iter()
                .filter(|(_, a)| a["status"] == "Returned")
                .map(|(id, _)| ("ach.returned".to_string(), id.clone())),
        )
        .collect();
    let mut alerted = HashSet::new();
    let mut types = BTreeMap::new();
    for d in receiver.deliveries() {
        assert!(d.verified.is_ok(), "signature of {}", d.id);
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        contract.check_webhook(&body);
        let key = (
            body["type"].as_str().unwrap().to_string(),
            body["data"]["id"].as_str().unwrap().to_string(),
        );
        *types.entry(key.0.clone()).or_insert(0) += 1;
        assert!(alerted.insert(key.clone()), "{key:?} alerted twice");
    }
    assert_eq!(types.len(), 3, "each kind of alert: {types:?}");
    eprintln!(
        "on Kafka: {} authorizations, {} disputes ({about_delivered} about delivered sales), {} batches, {} deposits; alerts {types:?}",
        authorizations.len(),
        disputes.len(),
        batches.len(),
        deposits.len()
    );
    let unexpected: Vec<_> = alerted.difference(&expected).collect();
    let missed: Vec<_> = expected.difference(&alerted).collect();
    assert!(
        unexpected.is_empty() && missed.is_empty(),
        "alerts {types:?}: unexpected {unexpected:?}, missed {missed:?}"
    );
}
