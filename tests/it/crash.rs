//! kill -9 at any point loses nothing. The real binary (`mxc-relay run`) polls the simulator,
//! produces every record to the real broker and sends every decline to a verifying webhook
//! receiver; it is SIGKILLed at 10 random instants (mid-page, mid-transaction, mid-delivery,
//! while records keep arriving) and restarted on the same data directory each time. At the end
//! every record is on Kafka and every decline reached the receiver; a repeat is allowed only
//! with the same identity (record id, `webhook-id`). Canary secrets never show in any log.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::Utc;
use mxc::Secret;
use mxc::{Client, ClientConfig, Credentials};
use mxc_relay::receiver::{Behaviour, Receiver, ReceiverConfig};
use mxc_relay::signature::WebhookSecret;
use mxc_sim::SimConfig;
use rand::Rng;

use crate::support::kafka::*;
use crate::support::{any_port, generated, BIN};

const KILLS: usize = 10;
const API_KEY: &str = "API_canary_crash_7f3a9c";
const USERNAME: &str = "canary-user";
const PASSWORD: &str = "canary-password-91c2d8";
const WEBHOOK_KEY: &[u8] = b"canary-webhook-signing-key-5e1b0f";

fn webhook_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(WEBHOOK_KEY)
    )
}

/// Every secret as it could appear in a log line.
fn canaries() -> Vec<String> {
    vec![
        API_KEY.into(),
        PASSWORD.into(),
        webhook_secret(),
        base64::engine::general_purpose::STANDARD.encode(WEBHOOK_KEY),
        String::from_utf8_lossy(WEBHOOK_KEY).into(),
        // A JWT's header, base64url of `{"`: any token in a log starts so.
        "eyJ".into(),
    ]
}

fn write_config(
    dir: &Path,
    sim_url: &str,
    xmids: &[String],
    broker: &str,
    topic: &str,
    receiver: &str,
) -> PathBuf {
    let path = dir.join("relay.toml");
    let start = mxc::instant(Utc::now() - chrono::Duration::minutes(20));
    let text = format!(
        r#"[mxc]
base_url = "{sim_url}"
username = "{USERNAME}"
page_size = 100
timeout = "5s"

[pollers]
xmids = {xmids}
interval = "1s"
look_back = "30m"
start = "{start}"
requests_per_second = 200
burst = 50

[store]
path = "{store}"

[sinks.kafka]
kind = "kafka"
brokers = "{broker}"
topic = "{topic}"

[sinks.alerts]
kind = "webhook"
url = "{receiver}"
allow_insecure = true
secrets_env = "CRASH_WEBHOOK_SECRETS"
schedule = ["0s", "200ms", "1s", "2s", "5s", "10s", "30s", "1m"]
jitter = 0.0

[[routes]]
sink = "kafka"

[[routes]]
sink = "alerts"
event_type = "authorization.declined"
filter = 'authorizationResponseStatus != "Approved"'

[telemetry]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[log]
level = "mxc_relay=trace,info"
"#,
        xmids = serde_json::to_string(xmids).unwrap(),
        store = dir.join("store").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env("MXC_API_KEY", API_KEY)
        .env("MXC_PASSWORD", PASSWORD)
        .env("CRASH_WEBHOOK_SECRETS", webhook_secret())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_ten_random_instants_loses_nothing_and_repeats_keep_their_ids() {
    let Some(broker) = broker() else { return };
    let topic = topic_name("crash");
    create_topic(&broker, &topic, 4).await;

    let sim = Arc::new(
        mxc_sim::start(SimConfig {
            rate: 0.0,
            api_key: API_KEY.into(),
            username: USERNAME.into(),
            password: PASSWORD.into(),
            decline_rate: 0.2,
            ..SimConfig::default()
        })
        .await
        .unwrap(),
    );
    let xmids: Vec<String> = sim.xmids()[..8].to_vec();
    let now = Utc::now();
    sim.generate(4_000, &xmids, now - chrono::Duration::minutes(15), now)
        .unwrap();
    // Live traffic while the relay is killed and restarted.
    let generating = Arc::new(AtomicBool::new(true));
    let generator = {
        let (sim, xmids, generating) = (sim.clone(), xmids.clone(), generating.clone());
        tokio::spawn(async move {
            while generating.load(Ordering::Relaxed) {
                let now = Utc::now();
                sim.generate(40, &xmids, now - chrono::Duration::seconds(1), now)
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let secret = WebhookSecret::parse(&webhook_secret()).unwrap();
    let receiver = Receiver::start(
        any_port(),
        ReceiverConfig {
            secrets: vec![secret],
            tolerance: Duration::from_secs(300),
            keep: true,
            on_delivery: None,
        },
    )
    .await
    .unwrap();
    // Slow enough answers that kills land mid-delivery.
    receiver.set_behaviour(Behaviour {
        delay: Duration::from_millis(20),
        ..Behaviour::default()
    });

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sim.base_url(),
        &xmids,
        &broker,
        &topic,
        &receiver.url(),
    );
    let mut logs = Vec::new();
    let mut rng = rand::thread_rng();
    for kill in 0..KILLS {
        let log = dir.path().join(format!("run-{kill}.log"));
        let mut child = spawn(&config, &log);
        let after = Duration::from_millis(rng.gen_range(300..3_000));
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!(
            "kill {}: after {after:?}, {} webhooks so far",
            kill + 1,
            receiver.count()
        );
        logs.push(log);
    }
    generating.store(false, Ordering::Relaxed);
    generator.await.unwrap();

    // The last run, left to finish.
    let client = Client::new(ClientConfig::new(
        sim.base_url(),
        Credentials {
            api_key: Secret::new(API_KEY),
            username: Some(USERNAME.into()),
            password: Secret::new(PASSWORD),
        },
    ))
    .unwrap();
    let records = generated(&client, &xmids).await;
    let declines: BTreeSet<&String> = records
        .iter()
        .filter(|(_, d)| **d)
        .map(|(id, _)| id)
        .collect();
    let log = dir.path().join("final.log");
    let mut last = spawn(&config, &log);
    logs.push(log);

    let expected: HashSet<String> = records.keys().cloned().collect();
    let (b, t, e) = (broker.clone(), topic.clone(), expected.clone());
    let messages = tokio::task::spawn_blocking(move || {
        read_topic(
            &b,
            &t,
            |out| {
                let ids: HashSet<&String> =
                    out.iter().map(|m| &m.headers["mxc-record-id"]).collect();
                ids.len() >= e.len()
            },
            Duration::from_secs(180),
        )
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = receiver
            .deliveries()
            .iter()
            .map(|d| data_id(&d.body))
            .collect();
        if declines.iter().all(|id| delivered.contains(*id)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(last.id().to_string())
        .status();
    let status = last.wait().unwrap();
    assert!(
        status.success(),
        "the last run stops cleanly on SIGTERM: {status}"
    );

    // Kafka: every record, and a repeat only under the same record id and key.
    let on_kafka: HashSet<&String> = messages
        .iter()
        .map(|m| &m.headers["mxc-record-id"])
        .collect();
    let missing: Vec<&String> = records
        .keys()
        .filter(|id| !on_kafka.contains(id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "records missing on Kafka, e.g. {missing:?}"
    );
    assert_eq!(
        on_kafka.len(),
        records.len(),
        "nothing but the generated records"
    );
    let mut event_of_record: BTreeMap<&str, &str> = BTreeMap::new();
    for m in &messages {
        let record = m.headers["mxc-record-id"].as_str();
        assert_eq!(
            m.body["data"]["id"].as_str(),
            Some(record),
            "the payload is the record it names"
        );
        assert_eq!(
            Some(m.key.as_str()),
            m.body["xmid"].as_str(),
            "keyed by XMID"
        );
        let event = m.body["id"].as_str().unwrap();
        let first = event_of_record.entry(record).or_insert(event);
        assert_eq!(
            *first, event,
            "record {record}: a repeat carries the same event id"
        );
    }
    let kafka_repeats = messages.len() - on_kafka.len();

    // Webhooks: every decline, verified, one webhook-id per record (and one record per id).
    let deliveries = receiver.deliveries();
    let mut id_of_record: BTreeMap<String, String> = BTreeMap::new();
    let mut record_of_id: BTreeMap<String, String> = BTreeMap::new();
    for d in &deliveries {
        assert!(d.verified.is_ok(), "signature verified for {}", d.id);
        let record = data_id(&d.body);
        assert!(
            declines.contains(&record),
            "only declines are sent: {record}"
        );
        let first = id_of_record
            .entry(record.clone())
            .or_insert_with(|| d.id.clone());
        assert_eq!(
            first, &d.id,
            "record {record}: a repeat carries the same webhook-id"
        );
        let first = record_of_id
            .entry(d.id.clone())
            .or_insert_with(|| record.clone());
        assert_eq!(first, &record, "webhook-id {} names one record", d.id);
    }
    assert_eq!(
        id_of_record.len(),
        declines.len(),
        "every decline reached the receiver"
    );
    let webhook_repeats = deliveries.len() - id_of_record.len();
    eprintln!(
        "{} records ({} declines), {KILLS} kills: {} Kafka messages ({kafka_repeats} repeats), {} webhooks ({webhook_repeats} repeats)",
        records.len(),
        declines.len(),
        messages.len(),
        deliveries.len()
    );
    // Repeats are what was in flight at a kill: at most a delivery batch (100) per sink per kill.
    assert!(
        kafka_repeats <= KILLS * 100,
        "{kafka_repeats} Kafka repeats"
    );
    assert!(
        webhook_repeats <= KILLS * 16,
        "{webhook_repeats} webhook repeats"
    );

    // No secret in any run's log; and the logs are there (trace level).
    let canaries = canaries();
    let mut lines = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        lines += text.lines().count();
        for canary in &canaries {
            assert!(
                !text.contains(canary.as_str()),
                "{} leaks {canary:?}",
                log.display()
            );
        }
    }
    assert!(lines > 100, "the runs logged ({lines} lines)");
}

fn data_id(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["data"]["id"].as_str().unwrap().to_string()
}
