//! The event contract: the JSON Schemas (checked in, current, valid draft 2020-12), the
//! AsyncAPI documents (through the official parser), and, end to end, every event of every
//! resource and route — on Kafka with and without CloudEvents headers, as webhooks, redacted in
//! a file — validated against its schema, and read back as CloudEvents by a consumer built on
//! the CloudEvents SDK for Python. Real simulator, real broker (Tansu, started by `.ci/test`),
//! real receiver, the real binary.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use mxc::RESOURCES;
use mxc_relay::config::{Config, KafkaKey, RedactConfig, RouteConfig, SinkConfig, WebhookConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::schema::{schema_id, Catalog, Enums};
use mxc_relay::signature::WebhookSecret;
use mxc_relay::sink::cloudevents_source;
use mxc_relay::telemetry::Metrics;
use mxc_sim::SimConfig;
use serde_json::{json, Value};

use crate::support::contract::Contract;
use crate::support::kafka::*;
use crate::support::*;

const REGENERATE: &str = "cargo run -- schema --out deploy/schemas";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `mxc-relay schema ARGS…` (no MXC key in its environment: none is needed); its stdout.
fn schema(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_mxc-relay"))
        .arg("schema")
        .args(args)
        .env_remove("MXC_API_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mxc-relay schema {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A configuration that exercises the contract's corners: topic templates, both keys, a
/// route of a custom type over two resources, redaction, a webhook with its own schedule.
const CORNERS: &str = r#"
[mxc]
base_url = "http://127.0.0.1:9"
[pollers]
xmids = ["887000000001"]
resources = ["authorizations", "disputes", "batches", "ach"]
[sinks.by-type]
kind = "kafka"
brokers = "k1:9092,k2:9092"
topic = "mxc.{type}"
key = "record_id"
[sinks.by-route]
kind = "kafka"
brokers = "k1:9092"
topic = "relay.{route}"
cloudevents = true
[sinks.hooks]
kind = "webhook"
url = "https://hooks.example.com:8443/in/mxc"
secrets_env = "CONTRACT_TEST_UNSET_SECRETS"
schedule = ["0s", "1m", "1h"]
[sinks.archive]
kind = "file"
path = "events.jsonl"
[[routes]]
name = "all"
sink = "by-type"
[[routes]]
name = "declines"
sink = "by-route"
alerts = true
redact.drop = ["cardNumber.data", "uar"]
redact.mask = ["cardNumber.hash", "authorizedAmount"]
[[routes]]
name = "large-sales"
sink = "hooks"
event_type = "mxc.large"
filter = "authorizedAmount >= 500"
[[routes]]
name = "large-disputes"
sink = "hooks"
resource = "disputes"
event_type = "mxc.large"
filter = "disputeAmount >= 500"
[[routes]]
name = "batches"
sink = "archive"
resource = "batches"
"#;

#[test]
fn the_checked_in_schemas_are_current_and_valid_draft_2020_12() {
    let fresh = tempfile::tempdir().unwrap();
    schema(&["--out".as_ref(), fresh.path().as_os_str()]);
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    };
    let checked_in = repo().join("deploy/schemas");
    assert_eq!(
        names(&checked_in),
        names(fresh.path()),
        "deploy/schemas holds other files than `mxc-relay schema --out` writes: regenerate with `{REGENERATE}` (and remove the others)"
    );
    for name in names(fresh.path()) {
        let want = std::fs::read_to_string(fresh.path().join(&name)).unwrap();
        let have = std::fs::read_to_string(checked_in.join(&name)).unwrap();
        assert!(
            want == have,
            "deploy/schemas/{name} is stale (the code describes the events differently now): regenerate with `{REGENERATE}`"
        );
    }

    // Every schema, default and of a configuration, open and closed, is valid draft 2020-12.
    let corners = Config::from_toml_without_secrets(CORNERS, "corners", &|_| None).unwrap();
    for enums in [Enums::Open, Enums::Closed] {
        for catalog in [
            Catalog::defaults(enums),
            Catalog::for_config(&corners, enums).unwrap(),
        ] {
            for event in &catalog.events {
                let document = event.document();
                assert_eq!(
                    document["$schema"],
                    "https://json-schema.org/draft/2020-12/schema"
                );
                if let Err(e) = jsonschema::draft202012::meta::validate(&document) {
                    panic!(
                        "{} ({enums:?}) is not a valid 2020-12 schema: {e} at {}",
                        event.event_type,
                        e.instance_path()
                    );
                }
            }
        }
    }
    // The metaschema check can fail.
    assert!(jsonschema::draft202012::meta::validate(&json!({"type": "text"})).is_err());
}

/// The vendor's sample record (documented) in an envelope, as the relay would send it.
fn sample_event(event_type: &str) -> Value {
    let page: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/authorization-page.json"
    )))
    .unwrap();
    json!({
        "id": "evt_0123456789abcdef0123456789abcdef",
        "type": event_type,
        "xmid": "xmid_value",
        "occurred_at": "2019-11-07T12:55:49.000Z",
        "data": page["records"][0],
    })
}

#[test]
fn the_vendor_sample_matches_and_a_closed_enum_notices_its_placeholder_brand() {
    let open = Catalog::defaults(Enums::Open);
    let closed = Catalog::defaults(Enums::Closed);
    let validator = |catalog: &Catalog, t: &str| {
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&catalog.get(t).unwrap().document())
            .unwrap()
    };
    for t in ["authorization.created", "authorization.declined"] {
        let event = sample_event(t);
        let errors: Vec<String> = validator(&open, t)
            .iter_errors(&event)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{t}: {errors:?}");
        // The sample's cardType is a placeholder ("Card_Brand"): only closed enums refuse it.
        let errors: Vec<String> = validator(&closed, t)
            .iter_errors(&event)
            .map(|e| e.instance_path().to_string())
            .collect();
        assert_eq!(errors, ["/data/cardType"], "{t}");
    }
    // The envelope is checked too: a wrong type, a malformed id, a time not in UTC.
    let v = validator(&open, "authorization.created");
    for (key, bad) in [
        ("type", json!("authorization.declined")),
        ("id", json!("evt_123")),
        ("occurred_at", json!("2019-11-07T07:55:49.000-05:00")),
        (
            "data",
            json!({"id": "00000000-0000-0000-0000-000000000000"}),
        ),
    ] {
        let mut event = sample_event("authorization.created");
        event[key] = bad;
        assert!(!v.is_valid(&event), "{key} accepted");
    }
    let mut event = sample_event("authorization.created");
    event["data"]["authorizedAmount"] = json!("11.11");
    assert!(!v.is_valid(&event), "an amount as a string accepted");
    event["data"]["authorizedAmount"] = json!(11.11);
    event["data"]["someFieldMxcAddsLater"] = json!({"x": [1]});
    assert!(v.is_valid(&event), "an unknown field refused");
}

#[test]
fn asyncapi_documents_pass_the_official_parser() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node is not installed, so the AsyncAPI documents were NOT checked by the official parser (.ci/test needs node and installs the parser)");
        return;
    }
    let tools = repo().join(".ci/asyncapi");
    assert!(
        tools
            .join("node_modules/@asyncapi/parser/package.json")
            .exists(),
        "the AsyncAPI parser is not installed: run `npm ci --prefix .ci/asyncapi` (.ci/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corners.toml");
    std::fs::write(&file, CORNERS).unwrap();
    let printed = schema(&["--asyncapi".as_ref(), "--config".as_ref(), file.as_os_str()]);
    let corners: Value = serde_json::from_slice(&printed).unwrap();
    let generated = dir.path().join("corners.asyncapi.json");
    std::fs::write(&generated, &printed).unwrap();
    // What the document says of the configuration.
    let channels = corners["channels"].as_object().unwrap();
    for address in ["mxc.authorization.created", "relay.declines", "/in/mxc"] {
        assert!(
            channels.values().any(|c| c["address"] == address),
            "no channel {address}: {:?}",
            channels.keys()
        );
    }
    assert!(!channels.values().any(|c| c["address"] == "events.jsonl"));
    let messages = &corners["components"]["messages"];
    assert_eq!(
        messages["by-route.authorization.declined"]["headers"]["properties"]["ce_dataschema"]
            ["const"],
        Catalog::for_config(
            &Config::from_toml_without_secrets(CORNERS, "corners", &|_| None).unwrap(),
            Enums::Open
        )
        .unwrap()
        .get("authorization.declined")
        .unwrap()
        .id
    );
    assert!(
        messages["by-type.authorization.created"]["headers"]["properties"]
            .get("ce_id")
            .is_none()
    );
    assert_eq!(
        corners["operations"]["deliver.webhook.hooks"]["x-retry-schedule"],
        json!(["0s", "1m", "1h"])
    );
    assert_eq!(
        corners["servers"]["webhook-hooks"]["host"],
        "hooks.example.com:8443"
    );

    let checked_in = repo().join("deploy/schemas/asyncapi.json");
    let out = Command::new("node")
        .arg(tools.join("validate.mjs"))
        .arg(&checked_in)
        .arg(&generated)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the AsyncAPI parser refused a document:\n{report}"
    );
    assert_eq!(
        report.matches("valid AsyncAPI 3.0.0").count(),
        2,
        "{report}"
    );
}

fn kafka(broker: &str, topic: String, cloudevents: bool) -> SinkConfig {
    SinkConfig::Kafka {
        brokers: broker.to_string(),
        topic,
        key: KafkaKey::Xmid,
        compression: "lz4".into(),
        properties: BTreeMap::new(),
        cloudevents,
    }
}

fn route(name: &str, sink: &str, resource: &str) -> RouteConfig {
    RouteConfig {
        resource: resource.into(),
        ..RouteConfig::every_record(name, sink)
    }
}

fn redacted(name: &str, resource: &str, drop: &[&str], mask: &[&str]) -> RouteConfig {
    RouteConfig {
        redact: RedactConfig {
            drop: drop.iter().map(|s| s.to_string()).collect(),
            mask: mask.iter().map(|s| s.to_string()).collect(),
        },
        ..route(name, "archive", resource)
    }
}

/// Whether Python has the CloudEvents SDK and the Kafka client (.ci/test installs them);
/// missing outside CI: skipped, loudly.
fn python_consumer_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cloudevents.kafka, confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "python3 lacks cloudevents or confluent_kafka: .ci/test installs them (pip, pinned)"
        );
        eprintln!("SKIPPED: the CloudEvents SDK consumer (python3 lacks cloudevents or confluent_kafka; .ci/test installs them)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_matches_its_schema_and_a_cloudevents_sdk_consumer_reads_kafka() {
    let Some(broker) = broker() else { return };
    let prefix = topic_name("contract");
    for r in RESOURCES {
        for kind in ["ce", "plain"] {
            create_topic(&broker, &format!("{prefix}.{kind}.{}", r.name), 2).await;
        }
    }
    let sim = start_sim(SimConfig {
        merchants: 4,
        rate: 10.0,
        backlog: Duration::from_secs(240),
        max_lateness: Duration::from_secs(20),
        settlement: busy_settlement(),
        ..SimConfig::default()
    })
    .await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let secret = WebhookSecret::generate();
    let receiver = keeping_receiver(&secret).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.jsonl");
    let start = Utc::now() - chrono::Duration::minutes(5);
    let mut c = every_resource(&sim, &xmids, start, dir.path().join("store"));
    c.sinks.insert(
        "ce".into(),
        kafka(&broker, format!("{prefix}.ce.{{resource}}"), true),
    );
    c.sinks.insert(
        "plain".into(),
        kafka(&broker, format!("{prefix}.plain.{{resource}}"), false),
    );
    let mut alerts = WebhookConfig::new(receiver.url(), secret.expose());
    alerts.allow_insecure = true;
    c.sinks
        .insert("alerts".into(), SinkConfig::Webhook(Box::new(alerts)));
    c.sinks.insert(
        "archive".into(),
        SinkConfig::File {
            path: archive.clone(),
        },
    );
    for r in RESOURCES {
        c.routes
            .push(route(&format!("{}-ce", r.name), "ce", r.name));
        c.routes
            .push(route(&format!("{}-plain", r.name), "plain", r.name));
        c.routes.push(RouteConfig {
            alerts: true,
            ..route(&format!("{}-alerts", r.name), "alerts", r.name)
        });
    }
    c.routes.extend([
        redacted(
            "auth-redacted",
            "authorizations",
            &["cardNumber.data", "uar", "id"],
            &["cardNumber.hash", "authorizedAmount", "approvalCode"],
        ),
        redacted(
            "disputes-redacted",
            "disputes",
            &["cardNumber"],
            &["disputeAmount"],
        ),
        redacted(
            "batches-redacted",
            "batches",
            &["authorizationIds"],
            &["netAmount", "rejected"],
        ),
        redacted("ach-redacted", "ach", &["returnReason"], &["traceNumber"]),
        RouteConfig {
            event_type: Some("mxc.large".into()),
            filter: Some("authorizedAmount >= 100".into()),
            ..route("large-sales", "archive", "authorizations")
        },
        RouteConfig {
            event_type: Some("mxc.large".into()),
            filter: Some("disputeAmount >= 100".into()),
            ..route("large-disputes", "archive", "disputes")
        },
    ]);
    assert_eq!(c.validate(), vec![]);
    let contract = Contract::of(&c);
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::start(&c, metrics.clone()).await.unwrap();
    // The backlog, and live records of every kind (a batch per terminal every 5 s).
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        pipeline.drain(Duration::from_secs(60)).await,
        "outboxes empty"
    );
    pipeline.shutdown().await.unwrap();

    let ids = Catalog::for_config(&c, Enums::Open).unwrap().ids();
    let mut on_ce = 0;
    for r in RESOURCES {
        let read = |kind: &str| {
            let (b, topic) = (broker.clone(), format!("{prefix}.{kind}.{}", r.name));
            tokio::task::spawn_blocking(move || {
                read_topic(&b, &topic, |m| !m.is_empty(), Duration::from_secs(30))
            })
        };
        let (ce, plain) = (read("ce").await.unwrap(), read("plain").await.unwrap());
        assert!(!ce.is_empty(), "no {} on Kafka", r.name);
        assert_eq!(
            ce.len(),
            plain.len(),
            "{}: one message per record on each sink",
            r.name
        );
        let plain: HashMap<&str, &Received> = plain
            .iter()
            .map(|m| (m.headers["mxc-record-id"].as_str(), m))
            .collect();
        for m in &ce {
            contract.check(&m.body);
            let h = &m.headers;
            let body = &m.body;
            assert_eq!(h["ce_specversion"], "1.0");
            assert_eq!(h["ce_id"], body["id"].as_str().unwrap());
            assert_eq!(h["ce_type"], r.event_type);
            assert_eq!(
                h["ce_source"],
                cloudevents_source(body["xmid"].as_str().unwrap())
            );
            assert_eq!(
                h["ce_source"],
                format!("/mxc/merchants/{}", body["xmid"].as_str().unwrap())
            );
            assert_eq!(h["ce_subject"], h["mxc-record-id"]);
            assert_eq!(h["ce_subject"], body["data"]["id"].as_str().unwrap());
            assert_eq!(h["ce_time"], body["occurred_at"].as_str().unwrap());
            // Redacting routes of the same type (the file's) make its schema this
            // configuration's own: named apart from the default one.
            assert_eq!(h["ce_dataschema"], ids[r.event_type]);
            assert!(
                ids[r.event_type].starts_with(&format!("{}:routes-", schema_id(r.event_type))),
                "{}",
                ids[r.event_type]
            );
            assert_eq!(h["content-type"], "application/json");
            assert_eq!(h.len(), 12, "{h:?}");
            // The same record from the sink without CloudEvents: the same bytes but for the
            // event id (each route has its own), and none of the ce_ headers.
            let other = plain[h["mxc-record-id"].as_str()];
            contract.check(&other.body);
            assert_eq!(other.headers.len(), 5, "{:?}", other.headers);
            assert!(other.headers.keys().all(|k| !k.starts_with("ce_")));
            let (mine, theirs) = (h["ce_id"].as_str(), other.body["id"].as_str().unwrap());
            assert_eq!(
                String::from_utf8(m.value.clone())
                    .unwrap()
                    .replacen(mine, theirs, 1),
                String::from_utf8(other.value.clone()).unwrap(),
                "the value differs beyond the event id"
            );
        }
        on_ce += ce.len();

        if python_consumer_available() {
            let topic = format!("{prefix}.ce.{}", r.name);
            let out = Command::new("python3")
                .arg(repo().join("tests/consumers/cloudevents_consumer.py"))
                .args([&broker, &topic, &ce.len().to_string(), "60"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "the CloudEvents consumer failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let read: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(
                read.len(),
                ce.len(),
                "{topic}: every message read as a CloudEvent"
            );
            let by_id: HashMap<&str, &Received> = ce
                .iter()
                .map(|m| (m.headers["ce_id"].as_str(), m))
                .collect();
            for e in &read {
                let m = by_id[e["id"].as_str().unwrap()];
                assert_eq!(e["specversion"], "1.0");
                assert_eq!(e["type"], r.event_type);
                assert_eq!(e["source"], m.headers["ce_source"].as_str());
                assert_eq!(e["time"], m.body["occurred_at"]);
                assert_eq!(e["subject"], m.body["data"]["id"]);
                assert_eq!(e["dataschema"], ids[r.event_type].as_str());
                assert_eq!(e["datacontenttype"], "application/json");
                assert_eq!(e["partitionkey"], m.body["xmid"]);
                assert_eq!(e["envelope_id"], e["id"]);
                assert_eq!(e["record_id"], m.body["data"]["id"]);
            }
            eprintln!("{topic}: {} CloudEvents read by the Python SDK", read.len());
        }
    }

    let deliveries = receiver.deliveries();
    assert!(!deliveries.is_empty(), "no alert delivered");
    for d in &deliveries {
        contract.check_webhook(&serde_json::from_slice(&d.body).unwrap());
    }
    let lines = lines(&archive);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        contract.check(line);
        *kinds
            .entry(format!(
                "{} {}",
                line["type"].as_str().unwrap(),
                line["data"]
                    .get("authorizedAmount")
                    .map_or("", |_| "(sale)")
            ))
            .or_default() += 1;
    }
    for t in [
        "authorization.created",
        "dispute.created",
        "batch.created",
        "ach.deposit",
    ] {
        assert!(
            kinds.keys().any(|k| k.starts_with(t)),
            "no redacted {t}: {kinds:?}"
        );
    }
    assert!(kinds.contains_key("mxc.large (sale)"), "{kinds:?}");
    assert!(
        kinds.contains_key("mxc.large "),
        "a large dispute: {kinds:?}"
    );
    // The default schemas would refuse the redacted events: the validation can fail.
    let defaults = Contract::defaults();
    let redacted_sale = lines
        .iter()
        .find(|l| l["type"] == "authorization.created")
        .unwrap();
    assert_eq!(redacted_sale["data"]["authorizedAmount"], "[masked]");
    let refused = defaults.errors(redacted_sale, false);
    assert!(
        refused.iter().any(|e| e.contains("/data/authorizedAmount")),
        "the default schema accepted a masked amount: {refused:?}"
    );
    eprintln!(
        "validated {on_ce} CloudEvents on Kafka (and as many without), {} webhooks, {} redacted lines: {kinds:?}",
        deliveries.len(),
        lines.len()
    );
}
