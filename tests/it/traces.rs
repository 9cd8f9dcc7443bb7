//! Traces: the real binary polls the simulator, produces to the real broker and posts declines to
//! a verifying receiver (its URL with `user:password@`), exporting OTLP/HTTP to a collector in
//! the test that decodes each `ExportTraceServiceRequest`. One trace per poll; each record's span
//! under it; each delivery under the record's span, after a SIGKILL too; the `traceparent` of
//! every message and webhook names its record's span, and a Python consumer with OpenTelemetry's
//! own propagator continues it. No secret in any span or log line; a collector down or silent
//! changes nothing but the count of dropped spans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_relay::receiver::Behaviour;
use serde_json::Value;

use crate::support::canary::{self, API_KEY, PASSWORD, USERNAME};
use crate::support::kafka::*;
use crate::support::otlp::{Collector, Mode, Span};
use crate::support::{free_address, generated, keeping_receiver, wait_until, BIN};

const PRODUCER: i32 = 4;
const CLIENT: i32 = 3;

struct Setup<'a> {
    sim: &'a str,
    xmids: &'a [String],
    kafka: Option<(&'a str, &'a str)>,
    receiver: &'a str,
    metrics: std::net::SocketAddr,
}

fn write_config(dir: &Path, s: &Setup) -> PathBuf {
    let path = dir.join("relay.toml");
    let start = mxc::instant(Utc::now() - chrono::Duration::minutes(20));
    let kafka = match s.kafka {
        Some((broker, topic)) => format!(
            "[sinks.kafka]\nkind = \"kafka\"\nbrokers = \"{broker}\"\ntopic = \"{topic}\"\n\n[[routes]]\nsink = \"kafka\"\n"
        ),
        None => String::new(),
    };
    let text = format!(
        r#"[mxc]
base_url = "{sim}"
username = "{USERNAME}"
page_size = 100

[pollers]
xmids = {xmids}
interval = "1s"
start = "{start}"

[store]
path = "{store}"

{kafka}
[sinks.alerts]
kind = "webhook"
url = "{receiver}"
allow_insecure = true
secrets_env = "TRACES_WEBHOOK_SECRETS"
schedule = ["0s", "200ms", "500ms", "1s"]
jitter = 0.0

[[routes]]
sink = "alerts"
event_type = "authorization.declined"
filter = 'authorizationResponseStatus != "Approved"'

[telemetry]
listen = "{metrics}"

[telemetry.traces]
# The collector comes from OTEL_EXPORTER_OTLP_ENDPOINT, which wins over this.
endpoint = "http://127.0.0.1:9/not-this-one"
service_name = "not-this-name"
resource = {{ "deployment.environment.name" = "test" }}

[admin]
listen = ""

[log]
level = "trace"
format = "json"
"#,
        sim = s.sim,
        xmids = serde_json::to_string(s.xmids).unwrap(),
        store = dir.join("store").display(),
        receiver = canary::with_url_credentials(s.receiver),
        metrics = s.metrics,
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path, log: &Path, collector: &str, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(BIN);
    command
        .args(["run", "--config"])
        .arg(config)
        .env("MXC_API_KEY", API_KEY)
        .env("MXC_PASSWORD", PASSWORD)
        .env("TRACES_WEBHOOK_SECRETS", canary::webhook_secret_text())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        .env("OTEL_SERVICE_NAME", "relay-under-test")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in extra {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "stops cleanly on SIGTERM: {status}");
}

/// The decline ids among `records` (id → declined).
fn declines(records: &BTreeMap<String, bool>) -> HashSet<&str> {
    records
        .iter()
        .filter(|(_, d)| **d)
        .map(|(id, _)| id.as_str())
        .collect()
}

/// A simulator with the canary credentials holding `count` records of its first `merchants`
/// XMIDs (over the last 10 minutes, `decline_rate` of them declines), and each record's id with
/// whether it is a decline.
async fn simulated(
    seed: u64,
    decline_rate: f64,
    merchants: usize,
    count: usize,
) -> (mxc_sim::RunningSim, Vec<String>, BTreeMap<String, bool>) {
    let sim = mxc_sim::start(mxc_sim::SimConfig {
        decline_rate,
        ..canary::sim_config(seed)
    })
    .await
    .unwrap();
    let xmids: Vec<String> = sim.xmids()[..merchants].to_vec();
    let now = Utc::now();
    sim.generate(count, &xmids, now - chrono::Duration::minutes(10), now)
        .unwrap();
    let records = generated(&canary::client(&sim), &xmids).await;
    (sim, xmids, records)
}

/// `00-trace-span-flags` → (trace, span).
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[3], "01", "sampled: {traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

fn by_id(spans: &[Span]) -> HashMap<&str, &Span> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

/// The record span `traceparent` names: a "create" span for `record_id`, under a root poll
/// span of the same trace.
fn record_span<'a>(
    spans: &HashMap<&str, &'a Span>,
    traceparent: &str,
    record_id: &str,
) -> &'a Span {
    let (trace, span) = ids(traceparent);
    let record = spans
        .get(span.as_str())
        .unwrap_or_else(|| panic!("no span {span} (record {record_id})"));
    assert_eq!(record.trace_id, trace);
    assert_eq!(record.name, "create authorizations");
    assert_eq!(record.kind, PRODUCER);
    assert_eq!(record.attr("messaging.operation.type"), "create");
    assert_eq!(record.attr("mxc_relay.record_id"), record_id);
    let poll = spans
        .get(record.parent_span_id.as_str())
        .unwrap_or_else(|| panic!("record {record_id}: no parent span"));
    assert_eq!(poll.trace_id, trace);
    assert!(
        poll.name == "poll authorizations" || poll.name == "sweep authorizations",
        "{}",
        poll.name
    );
    assert_eq!(poll.parent_span_id, "", "a poll is a trace's root");
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_poll_follows_each_record_to_kafka_and_to_the_webhook() {
    let Some(broker) = broker() else { return };
    let topic = topic_name("traces");
    create_topic(&broker, &topic, 2).await;
    let collector = Collector::start().await;
    let (sim, xmids, records) = simulated(31, 0.3, 4, 120).await;
    let wanted_declines = declines(&records);
    let mut receiver = keeping_receiver(&canary::webhook_secret()).await;

    let dir = tempfile::tempdir().unwrap();
    let metrics = free_address();
    let config = write_config(
        dir.path(),
        &Setup {
            sim: &sim.base_url(),
            xmids: &xmids,
            kafka: Some((&broker, &topic)),
            receiver: &receiver.url(),
            metrics,
        },
    );
    let log = dir.path().join("relay.log");
    let child = spawn(&config, &log, &collector.url(), &[]);
    let all = records.len();
    let (b, t) = (broker.clone(), topic.clone());
    let messages = tokio::task::spawn_blocking(move || {
        read_topic(&b, &t, |m| m.len() >= all, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let got_declines = wait_until(Duration::from_secs(30), || {
        receiver.deliveries().len() >= wanted_declines.len()
    })
    .await;
    terminate(child);
    receiver.stop().await;
    assert_eq!(messages.len(), all, "every record on Kafka");
    assert!(got_declines, "every decline at the receiver");

    let spans = collector.spans();
    let index = by_id(&spans);
    assert!(spans
        .iter()
        .all(|s| s.resource["service.name"] == "relay-under-test"));
    assert!(spans
        .iter()
        .all(|s| s.resource["deployment.environment.name"] == "test"));

    // Kafka: each message's traceparent names its record's span, whose child is the send.
    for m in &messages {
        let record_id = &m.headers["mxc-record-id"];
        let record = record_span(&index, &m.headers["traceparent"], record_id);
        let sends: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == record.span_id && s.name == format!("send {topic}"))
            .collect();
        assert_eq!(sends.len(), 1, "record {record_id}: one send span");
        let send = sends[0];
        assert_eq!(send.kind, PRODUCER);
        assert_eq!(send.trace_id, record.trace_id);
        assert_eq!(send.attr("messaging.system"), "kafka");
        assert_eq!(send.attr("messaging.operation.type"), "send");
        assert_eq!(send.attr("messaging.destination.name"), topic);
        assert_eq!(
            send.attr("messaging.destination.partition.id"),
            m.partition.to_string()
        );
        assert_eq!(send.attr("messaging.kafka.offset"), m.offset.to_string());
        assert_eq!(send.attr("mxc_relay.sink"), "kafka");
    }

    // Webhooks: the same, over HTTP, with Basic auth from the URL's credentials.
    let deliveries = receiver.deliveries();
    let mut headers_file = String::new();
    for d in &deliveries {
        assert_eq!(
            d.authorization.as_ref().map(|a| a.expose().to_string()),
            Some(canary::url_basic_auth())
        );
        assert!(
            d.verified.is_ok(),
            "the signature verifies with traceparent beside it"
        );
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        let record_id = body["data"]["id"].as_str().unwrap();
        let traceparent = d.traceparent.as_deref().expect("a traceparent header");
        let record = record_span(&index, traceparent, record_id);
        let post = spans
            .iter()
            .find(|s| s.parent_span_id == record.span_id && s.name == "POST")
            .unwrap_or_else(|| panic!("record {record_id}: no webhook span"));
        assert_eq!(post.kind, CLIENT);
        assert_eq!(post.attr("http.request.method"), "POST");
        assert_eq!(post.attr("http.response.status_code"), "204");
        assert_eq!(post.attr("mxc_relay.sink"), "alerts");
        assert_eq!(post.attr("mxc_relay.attempt"), "1");
        assert_eq!(post.attr("url.full"), receiver.url());
        assert_eq!(post.attr("server.address"), "127.0.0.1");
        headers_file.push_str(
            &serde_json::json!({ "webhook-id": d.id, "traceparent": traceparent }).to_string(),
        );
        headers_file.push('\n');
    }

    // MXC's requests: client spans without the query (which names the account numbers); the
    // report's under the polls, the token's wherever it was fetched (a refresh is its own).
    let mut reports = 0;
    let mut tokens = 0;
    for r in spans
        .iter()
        .filter(|s| s.kind == CLIENT && s.attr("url.full").starts_with(&sim.base_url()))
    {
        assert!(!r.attr("url.full").contains('?'), "{}", r.attr("url.full"));
        assert!(xmids
            .iter()
            .all(|x| !r.texts().iter().any(|t| t.contains(x.as_str()))));
        assert_eq!(r.name, r.attr("http.request.method"));
        assert_eq!(r.attr("http.response.status_code"), "200");
        if r.attr("url.full").ends_with("/authenticate") {
            tokens += 1;
            continue;
        }
        reports += 1;
        let parent = index.get(r.parent_span_id.as_str());
        assert!(
            parent.is_some_and(|p| p.name == "poll authorizations"),
            "an MXC request span under a poll: {r:?}"
        );
    }
    assert!(
        reports > 0 && tokens > 0,
        "{reports} report and {tokens} token requests traced"
    );
    let polls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "poll authorizations")
        .collect();
    let new: u64 = polls
        .iter()
        .map(|p| p.attr("mxc_relay.records.new").parse::<u64>().unwrap_or(0))
        .sum();
    assert_eq!(new as usize, all, "the polls' new records add up");
    assert!(polls.iter().all(|p| p.attr("mxc_relay.xmids.count") == "4"));

    // No secret in any span, nor in any log line (at TRACE, dependencies' included).
    for secret in canary::secrets() {
        for s in &spans {
            assert!(
                !s.texts().iter().any(|t| t.contains(&secret)),
                "a secret in span {s:?}"
            );
        }
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    for secret in canary::secrets() {
        assert!(!logged.contains(&secret), "a secret in the log");
    }
    // Log lines written inside a traced span carry its ids.
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    let with_ids: Vec<Value> = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("trace_id").is_some())
        .collect();
    assert!(!with_ids.is_empty(), "log lines with trace ids");
    assert!(with_ids
        .iter()
        .all(|l| traces.contains(l["trace_id"].as_str().unwrap())
            && index.contains_key(l["span_id"].as_str().unwrap())));

    // A consumer outside Rust continues the trace, from Kafka's headers and the webhook's.
    if python_tracing_available() {
        let file = dir.path().join("webhook-headers.jsonl");
        std::fs::write(&file, headers_file).unwrap();
        let out = Command::new("python3")
            .arg(crate::contract::repo().join("tests/consumers/trace_consumer.py"))
            .args([&broker, &topic, &all.to_string(), "60"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let continued: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(continued.len(), all + deliveries.len());
        let event_record: HashMap<&str, &str> = deliveries
            .iter()
            .map(|d| (d.id.as_str(), d.traceparent.as_deref().unwrap()))
            .collect();
        let kafka_record: HashMap<&str, &str> = messages
            .iter()
            .map(|m| {
                (
                    m.headers["mxc-record-id"].as_str(),
                    m.headers["traceparent"].as_str(),
                )
            })
            .collect();
        for c in &continued {
            let carried = c["carried"].as_str().unwrap();
            let traceparent = match c["source"].as_str().unwrap() {
                "kafka" => kafka_record[carried],
                _ => event_record[carried],
            };
            let (trace, span) = ids(traceparent);
            assert_eq!(c["trace_id"], trace.as_str(), "the same trace: {c}");
            assert_eq!(
                c["parent_span_id"],
                span.as_str(),
                "under the record's span: {c}"
            );
            assert_eq!(c["sampled"], true);
        }
    } else {
        eprintln!("skipped the Python consumer: opentelemetry or confluent-kafka missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_between_admission_and_delivery_the_delivery_continues_the_records_trace() {
    let collector = Collector::start().await;
    let (sim, xmids, records) = simulated(32, 1.0, 2, 6).await;
    let mut receiver = keeping_receiver(&canary::webhook_secret()).await;
    // Admitted, then refused: the events wait in the outbox.
    receiver.set_behaviour(Behaviour {
        status: 503,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &Setup {
            sim: &sim.base_url(),
            xmids: &xmids,
            kafka: None,
            receiver: &receiver.url(),
            metrics: free_address(),
        },
    );
    let first = spawn(
        &config,
        &dir.path().join("first.log"),
        &collector.url(),
        &[],
    );
    // Every record's span exported, and a refused attempt: then SIGKILL.
    let admitted = wait_until(Duration::from_secs(30), || {
        let created = collector
            .spans()
            .iter()
            .filter(|s| s.name == "create authorizations")
            .count();
        created >= records.len() && receiver.deliveries().len() >= records.len()
    })
    .await;
    let mut first = first;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(admitted, "every record admitted and attempted once");
    let before: HashSet<String> = collector
        .spans()
        .iter()
        .map(|s| s.span_id.clone())
        .collect();
    let refused = receiver.deliveries().len();

    receiver.set_behaviour(Behaviour::default());
    let second = spawn(
        &config,
        &dir.path().join("second.log"),
        &collector.url(),
        &[],
    );
    let delivered = wait_until(Duration::from_secs(30), || {
        receiver.deliveries()[refused..]
            .iter()
            .filter(|d| d.status == 204)
            .count()
            >= records.len()
    })
    .await;
    terminate(second);
    receiver.stop().await;
    assert!(delivered, "every event delivered after the restart");

    let spans = collector.spans();
    let index = by_id(&spans);
    for d in receiver.deliveries()[refused..]
        .iter()
        .filter(|d| d.status == 204)
    {
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        let record_id = body["data"]["id"].as_str().unwrap();
        let record = record_span(&index, d.traceparent.as_deref().unwrap(), record_id);
        assert!(
            before.contains(&record.span_id),
            "the record's span is the first process's"
        );
        let attempts: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == record.span_id && s.name == "POST")
            .collect();
        let after: Vec<&&Span> = attempts
            .iter()
            .filter(|s| !before.contains(&s.span_id))
            .collect();
        assert!(
            after
                .iter()
                .any(|s| s.attr("http.response.status_code") == "204"),
            "record {record_id}: the delivery after the restart is under its span: {attempts:?}"
        );
        assert!(attempts
            .iter()
            .any(|s| s.attr("http.response.status_code") == "503" && s.status_code == 2));
    }
}

/// The collector refusing, then silent: every record is delivered all the same, and the spans
/// that could not go are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_refusing_or_silent_every_record_is_delivered_and_dropped_spans_are_counted(
) {
    for mode in [Mode::Refuse, Mode::BlackHole] {
        let collector = Collector::start().await;
        collector.set_mode(mode);
        let (sim, xmids, records) = simulated(33, 1.0, 2, 40).await;
        let mut receiver = keeping_receiver(&canary::webhook_secret()).await;
        let dir = tempfile::tempdir().unwrap();
        let metrics = free_address();
        let config = write_config(
            dir.path(),
            &Setup {
                sim: &sim.base_url(),
                xmids: &xmids,
                kafka: None,
                receiver: &receiver.url(),
                metrics,
            },
        );
        let log = dir.path().join("relay.log");
        let child = spawn(
            &config,
            &log,
            &collector.url(),
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500")],
        );
        let started = Instant::now();
        let delivered = wait_until(Duration::from_secs(30), || {
            receiver.deliveries().len() >= records.len()
        })
        .await;
        assert!(delivered, "{mode:?}: every record delivered");
        let deadline = Instant::now() + Duration::from_secs(20);
        let series = "mxc_relay_trace_spans_total{outcome=\"dropped_export_failed\"}";
        let mut dropped = 0.0;
        while dropped == 0.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            dropped = scrape(metrics, series).await;
        }
        let exported = scrape(metrics, "mxc_relay_trace_spans_total{outcome=\"exported\"}").await;
        terminate(child);
        receiver.stop().await;
        assert!(dropped > 0.0, "{mode:?}: dropped spans counted");
        assert_eq!(exported, 0.0, "{mode:?}: none exported");
        assert!(collector.requests() > 0, "{mode:?}: exports were tried");
        let logged = std::fs::read_to_string(&log).unwrap();
        let warnings = logged
            .lines()
            .filter(|l| l.contains("cannot export traces"))
            .count();
        assert!(
            warnings >= 1
                && logged
                    .lines()
                    .filter(|l| l.contains("\"level\":\"ERROR\""))
                    .count()
                    == 0,
            "{mode:?}: a warning, not an error ({warnings} warnings)"
        );
        eprintln!("{mode:?}: delivered in {:?}", started.elapsed());
    }
}

/// One series' value from the metrics endpoint (0 when it cannot be read).
async fn scrape(addr: std::net::SocketAddr, series: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Whether the Python consumer's packages are installed (`.ci/test` installs them).
fn python_tracing_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import confluent_kafka, opentelemetry.sdk.trace"])
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("CI").is_ok() {
        panic!("python3 lacks confluent-kafka or opentelemetry-sdk: .ci/test installs them");
    }
    found
}
