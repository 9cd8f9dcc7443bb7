//! The webhook sink against real receivers on 127.0.0.1: signatures, the retry schedule (on a
//! paused clock), Retry-After, 410, an outage, dead letters and their replay, and isolation
//! between endpoints.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use mxc::ReportQuery;
use mxc_relay::config::{Config, Durability, RouteConfig, SinkConfig, WebhookConfig};
use mxc_relay::event::{Event, Head};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::receiver::{Behaviour, Receiver, ReceiverConfig};
use mxc_relay::route::event_id;
use mxc_relay::signature::WebhookSecret;
use mxc_relay::sink::WebhookSink;
use mxc_relay::store::{Admission, Store};
use mxc_relay::telemetry::Metrics;
use mxc_sim::RunningSim;
use serde_json::Value;
use test_kit::PipelineConfigBuilder;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const DECLINES: &str = r#"authorizationResponseStatus != "Approved""#;

async fn receiver(secrets: &[&WebhookSecret]) -> Receiver {
    Receiver::start(
        any_port(),
        ReceiverConfig {
            secrets: secrets.iter().map(|s| (*s).clone()).collect(),
            tolerance: Duration::from_secs(300),
            keep: true,
            on_delivery: None,
        },
    )
    .await
    .unwrap()
}

fn answer(status: u16) -> Behaviour {
    Behaviour {
        status,
        ..Behaviour::default()
    }
}

fn webhook(url: &str, secrets: &[&WebhookSecret], schedule_ms: &[u64]) -> WebhookConfig {
    let mut w = WebhookConfig::new(url, secrets[0].expose());
    w.secrets = secrets.iter().map(|s| s.expose().into()).collect();
    w.allow_insecure = true;
    w.schedule = schedule_ms
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    w.jitter = 0.0;
    w
}

fn store(dir: &Path, sinks: &[&str]) -> Store {
    let config = mxc_relay::config::StoreConfig {
        path: dir.join("store"),
        durability: Durability::Interval,
        ..Default::default()
    };
    let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
    Store::open(&config, &sinks).unwrap()
}

/// Puts `n` events for `sink` in the store, as the pollers would.
async fn enqueue(store: &Store, sink: &str, n: usize) -> Vec<Event> {
    let ids: Vec<String> = (0..n).map(|i| format!("r-{i}")).collect();
    enqueue_ids(store, sink, &ids).await
}

/// Puts one event per record id for `sink` in the store.
async fn enqueue_ids(store: &Store, sink: &str, record_ids: &[String]) -> Vec<Event> {
    let events: Vec<Event> = record_ids
        .iter()
        .map(|record_id| {
            let record_id = record_id.clone();
            let id = event_id("declines", &record_id);
            let data = format!(r#"{{"id":"{record_id}"}}"#);
            let head = Head {
                id,
                event_type: "authorization.declined".into(),
                route: "declines".into(),
                resource: "authorizations".into(),
                sink: sink.into(),
                xmid: "X1".into(),
                record_id,
                occurred_at: Some("2026-11-28T10:00:00.000Z".into()),
                fetched_at_ms: 0,
                traceparent: None,
            };
            Event::new(head, &data)
        })
        .collect();
    let admissions: Vec<Admission> = events
        .iter()
        .map(|e| Admission {
            record_id: e.record_id.clone(),
            xmid: e.xmid.clone(),
            events: vec![e.clone()],
        })
        .collect();
    store.admit(&admissions, &[]).await.unwrap();
    events
}

/// Runs one webhook sink on `store` until the returned token is cancelled.
fn run_sink(
    name: &str,
    config: &WebhookConfig,
    store: &Store,
    metrics: &Metrics,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let sink = WebhookSink::new(name, config).unwrap();
    let task = tokio::spawn(sink.run(store.clone(), metrics.clone(), stop.clone()));
    (stop, task)
}

fn gaps(receiver: &Receiver) -> Vec<Duration> {
    let times: Vec<_> = receiver
        .deliveries()
        .iter()
        .map(|d| d.received_at)
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn assert_near(actual: Duration, expected: Duration) {
    let slack = Duration::from_millis(100);
    assert!(
        actual + slack >= expected && actual <= expected + slack,
        "expected {expected:?}, got {actual:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_schedule_is_followed_then_the_event_is_dead_lettered() {
    let secret = WebhookSecret::generate();
    let receiver = receiver(&[&secret]).await;
    receiver.set_behaviour(Behaviour {
        status: 500,
        body: "database down\nretry later".into(),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &["alerts"]);
    let events = enqueue(&store, "alerts", 1).await;
    // The default schedule, less its last four steps (the paused clock makes hours instant).
    let config = webhook(&receiver.url(), &[&secret], &[0, 5_000, 300_000, 1_800_000]);
    let metrics = Metrics::new();
    let (stop, task) = run_sink("alerts", &config, &store, &metrics);

    assert_eq!(receiver.wait_for(4, Duration::from_secs(3 * 3600)).await, 4);
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    assert_eq!(receiver.count(), 4, "no attempt after the last one");
    let gaps = gaps(&receiver);
    for (gap, expected) in gaps.iter().zip([5, 300, 1800]) {
        assert_near(*gap, Duration::from_secs(expected));
    }
    // Every attempt carried the same webhook-id, and a valid signature.
    for d in receiver.deliveries() {
        assert_eq!(d.id, events[0].id);
        assert_eq!(d.verified, Ok(0));
    }
    let dead = store.dead_letters("alerts").unwrap();
    assert_eq!(dead.len(), 1);
    let letter = &dead[0].1;
    assert_eq!(letter.attempts, 4);
    assert_eq!(letter.last_status, Some(500));
    assert_eq!(letter.event.id, events[0].id);
    assert!(
        letter
            .reason
            .contains("HTTP 500: database down retry later"),
        "{}",
        letter.reason
    );
    assert_eq!(store.outbox_len("alerts").unwrap(), 0);
    assert_eq!(metrics.events("alerts", "failed"), 4);
    assert_eq!(metrics.events("alerts", "dead_lettered"), 1);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_pauses_the_endpoint() {
    let secret = WebhookSecret::generate();
    let receiver = receiver(&[&secret]).await;
    receiver.set_behaviour(Behaviour {
        status: 429,
        retry_after: Some("120".into()),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &["alerts"]);
    enqueue(&store, "alerts", 1).await;
    let config = webhook(&receiver.url(), &[&secret], &[0, 5_000, 5_000, 5_000]);
    let metrics = Metrics::new();
    let (stop, task) = run_sink("alerts", &config, &store, &metrics);

    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await, 1);
    // Throttled: the schedule's 5 s gives way to the receiver's 120 s, and a second event
    // enqueued meanwhile waits for the pause too.
    receiver.set_behaviour(answer(204));
    tokio::time::sleep(Duration::from_secs(1)).await;
    enqueue_ids(&store, "alerts", &["late-1".to_string()]).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(receiver.count(), 1, "nothing goes out during the pause");
    assert_eq!(receiver.wait_for(3, Duration::from_secs(120)).await, 3);
    let deliveries = receiver.deliveries();
    assert_near(
        deliveries[1].received_at - deliveries[0].received_at,
        Duration::from_secs(120),
    );
    assert_near(
        deliveries[2].received_at - deliveries[0].received_at,
        Duration::from_secs(120),
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // the answers are settled
    assert_eq!(store.outbox_len("alerts").unwrap(), 0);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_410_disables_the_endpoint_and_its_events_wait_until_it_is_enabled() {
    let secret = WebhookSecret::generate();
    let receiver = receiver(&[&secret]).await;
    receiver.set_behaviour(answer(410));
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &["alerts"]);
    enqueue(&store, "alerts", 3).await;
    let mut config = webhook(&receiver.url(), &[&secret], &[0, 1_000, 1_000]);
    config.max_in_flight = 1;
    let metrics = Metrics::new();
    let (stop, task) = run_sink("alerts", &config, &store, &metrics);
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await, 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(receiver.count(), 1, "no request after the 410");
    let off = store
        .disabled_endpoint("alerts")
        .unwrap()
        .expect("disabled");
    assert!(off.reason.contains("HTTP 410"), "{}", off.reason);
    assert_eq!(
        metrics
            .webhook_disabled
            .with_label_values(&["alerts"])
            .get(),
        1
    );
    assert_eq!(store.outbox_len("alerts").unwrap(), 3, "nothing lost");
    assert_eq!(store.dead_len("alerts").unwrap(), 0);
    stop.cancel();
    task.await.unwrap();

    // A restart keeps it disabled; enabling it (as `mxc-relay webhook enable` does) resumes.
    receiver.set_behaviour(answer(204));
    let (stop, task) = run_sink("alerts", &config, &store, &metrics);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(receiver.count(), 1);
    stop.cancel();
    task.await.unwrap();
    store.set_disabled_endpoint("alerts", None).unwrap();
    let (stop, task) = run_sink("alerts", &config, &store, &metrics);
    assert_eq!(receiver.wait_for(4, Duration::from_secs(10)).await, 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.outbox_len("alerts").unwrap(), 0);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_failing_longer_than_disable_after_is_disabled() {
    let secret = WebhookSecret::generate();
    let receiver = receiver(&[&secret]).await;
    receiver.set_behaviour(answer(500));
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &["alerts"]);
    enqueue(&store, "alerts", 1).await;
    let mut config = webhook(&receiver.url(), &[&secret], &[0; 30]);
    config.schedule = vec![Duration::from_secs(600); 30];
    config.disable_after = Duration::from_secs(3600);
    let metrics = Metrics::new();
    let (stop, task) = run_sink("alerts", &config, &store, &metrics);
    tokio::time::sleep(Duration::from_secs(5 * 3600)).await;
    // Attempts at 0, 10, 20 … 60 min: the one at 60 min finds it failing for an hour.
    assert_eq!(receiver.count(), 7);
    let off = store
        .disabled_endpoint("alerts")
        .unwrap()
        .expect("disabled");
    assert!(
        off.reason.starts_with("no successful delivery for 1h"),
        "{}",
        off.reason
    );
    assert_eq!(store.outbox_len("alerts").unwrap(), 1);
    stop.cancel();
    task.await.unwrap();
}

// ---- End to end: simulator → pipeline → webhook receivers ----

/// Polls 5 of the simulator's XMIDs every second, from ten minutes back.
fn pipeline_config(sim: &RunningSim, dir: &Path) -> Config {
    PipelineConfigBuilder::new(sim.base_url(), &sim.xmids()[..5])
        .interval(Duration::from_secs(1))
        .look_back(Duration::from_secs(60))
        .budget(200.0, 50)
        .start(Utc::now() - chrono::Duration::minutes(10))
        .store(dir.join("store"))
        .shutdown_timeout(Duration::from_secs(5))
        .build()
}

fn add_webhook(c: &mut Config, name: &str, webhook: WebhookConfig) {
    c.sinks
        .insert(name.into(), SinkConfig::Webhook(Box::new(webhook)));
    c.routes.push(RouteConfig {
        name: Some(format!("{name}-declines")),
        event_type: Some("authorization.declined".into()),
        filter: Some(DECLINES.into()),
        ..RouteConfig::every_record("", name)
    });
}

/// Makes the simulator hold `n` records of the configured XMIDs over the last five minutes;
/// returns the record ids of the declines among them.
async fn generate(sim: &RunningSim, config: &Config, n: usize) -> HashSet<String> {
    let (xmids, now) = (&config.pollers.xmids, Utc::now());
    sim.generate(n, xmids, now - chrono::Duration::minutes(5), now)
        .unwrap();
    let client = client(sim);
    let mut ids = HashSet::new();
    let from = now - chrono::Duration::minutes(10);
    let mut pager = client.report_pages(ReportQuery::new(xmids.clone(), from, now));
    while let Some(batch) = pager.next_page().await.unwrap() {
        for r in &batch.records {
            if r.to_value()["authorizationResponseStatus"] != "Approved" {
                ids.insert(r.id().unwrap().to_string());
            }
        }
    }
    ids
}

/// Record id of each delivery answered 2xx, by webhook-id.
fn delivered(receiver: &Receiver) -> HashMap<String, String> {
    receiver
        .deliveries()
        .iter()
        .filter(|d| (200..300).contains(&d.status))
        .map(|d| {
            let body: Value = serde_json::from_slice(&d.body).unwrap();
            (
                d.id.clone(),
                body["data"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_back_gets_every_alert_with_its_original_id() {
    let sim = start_sim(quiet_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    // Rotation: the sink signs with the old and the new secret; this receiver knows only the
    // new one.
    let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
    let mut receiver = receiver(&[&new]).await;
    receiver.stop().await;
    let mut config = pipeline_config(&sim, dir.path());
    let mut schedule = vec![0, 200, 500];
    schedule.extend([1_000; 30]);
    add_webhook(
        &mut config,
        "alerts",
        webhook(&receiver.url(), &[&old, &new], &schedule),
    );
    // Read within a second or two of the start (not the default 5 s), so the first attempts
    // meet the receiver down.
    config.pollers.settle = Duration::from_millis(500);
    let declines = generate(&sim, &config, 400).await;
    assert!(
        declines.len() > 20,
        "the simulator declines some: {}",
        declines.len()
    );
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();

    // Down: connections refused for 3 s. Then up but failing (503) for 2 s. Then well.
    tokio::time::sleep(Duration::from_secs(3)).await;
    receiver.set_behaviour(answer(503));
    receiver.restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed_ids: HashSet<String> = receiver.deliveries().iter().map(|d| d.id.clone()).collect();
    assert!(
        !failed_ids.is_empty(),
        "some attempts reached the failing receiver"
    );
    receiver.set_behaviour(answer(204));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while delivered(&receiver).len() < declines.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = pipeline.metrics.clone();
    pipeline.shutdown().await.unwrap();

    let delivered = delivered(&receiver);
    let got: HashSet<String> = delivered.values().cloned().collect();
    assert_eq!(got, declines, "every decline delivered");
    assert_eq!(
        delivered.len(),
        declines.len(),
        "one webhook-id per decline"
    );
    for (id, record_id) in &delivered {
        assert_eq!(
            *id,
            event_id("alerts-declines", record_id),
            "the original webhook-id"
        );
    }
    assert!(
        failed_ids.iter().all(|id| delivered.contains_key(id)),
        "each id refused with 503 was later delivered under that same id"
    );
    assert!(
        receiver.deliveries().iter().all(|d| d.verified == Ok(0)),
        "every request verifies with the new secret alone"
    );
    assert_eq!(metrics.events("alerts", "dead_lettered"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_delay_a_second_endpoint_nor_other_sinks() {
    let sim = start_sim(quiet_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = WebhookSecret::generate();
    let slow = receiver(&[&secret]).await;
    slow.set_behaviour(Behaviour {
        delay: Duration::from_secs(5),
        ..answer(204)
    });
    let fast = receiver(&[&secret]).await;
    let mut config = pipeline_config(&sim, dir.path());
    let mut slow_hook = webhook(&slow.url(), &[&secret], &[0, 1_000]);
    slow_hook.max_in_flight = 1;
    add_webhook(&mut config, "slow", slow_hook);
    add_webhook(
        &mut config,
        "fast",
        webhook(&fast.url(), &[&secret], &[0, 1_000]),
    );
    config.sinks.insert(
        "archive".into(),
        SinkConfig::File {
            path: dir.path().join("archive.jsonl"),
        },
    );
    config
        .routes
        .push(RouteConfig::every_record("all", "archive"));
    let declines = generate(&sim, &config, 300).await;
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();

    // The slow endpoint takes one alert per 5 s; the others get everything meanwhile.
    let n = declines.len() as u64;
    assert!(n >= 8, "enough declines to tell: {n}");
    assert_eq!(fast.wait_for(n, Duration::from_secs(20)).await, n);
    let archive = dir.path().join("archive.jsonl");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let archived = loop {
        let lines = std::fs::read_to_string(&archive)
            .unwrap_or_default()
            .lines()
            .count();
        if lines >= 300 || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let slow_so_far = slow.count();
    pipeline.shutdown().await.unwrap();
    assert_eq!(archived, 300, "the file sink was not held back either");
    assert!(
        slow_so_far < n / 2,
        "the slow endpoint had taken {slow_so_far} of {n} when the others had everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_by_the_cli_and_then_delivered() {
    let sim = start_sim(quiet_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = WebhookSecret::generate();
    let receiver = receiver(&[&secret]).await;
    receiver.set_behaviour(Behaviour {
        status: 500,
        body: "receiver bug".into(),
        ..Behaviour::default()
    });
    let mut config = pipeline_config(&sim, dir.path());
    add_webhook(
        &mut config,
        "alerts",
        webhook(&receiver.url(), &[&secret], &[0, 100]),
    );
    let declines = generate(&sim, &config, 200).await;
    let n = declines.len();
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.events("alerts", "dead_lettered") < n as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.shutdown().await.unwrap();
    assert_eq!(metrics.events("alerts", "dead_lettered"), n as u64);

    // The same configuration as a file, for the CLI.
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[mxc]
base_url = "{base}"
api_key = "{key}"
username = "{user}"
password = "{password}"
[pollers]
xmids = {xmids:?}
[store]
path = "{store}"
[sinks.alerts]
kind = "webhook"
url = "{url}"
allow_insecure = true
secrets = ["{secret}"]
[[routes]]
name = "alerts-declines"
sink = "alerts"
event_type = "authorization.declined"
filter = '{DECLINES}'
"#,
            base = sim.base_url(),
            key = mxc_sim::DEFAULT_API_KEY,
            user = mxc_sim::DEFAULT_USERNAME,
            password = mxc_sim::DEFAULT_PASSWORD,
            xmids = config.pollers.xmids,
            store = config.store.path.display(),
            url = receiver.url(),
            secret = secret.expose(),
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mxc-relay"))
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cli(&["dlq", "list", "--sink", "alerts", "--json"]);
    let letters: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), n);
    for letter in &letters {
        assert_eq!(letter["attempts"], 2);
        assert_eq!(letter["last_status"], 500);
        assert!(letter["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 500: receiver bug"));
    }
    assert!(cli(&["dlq", "list", "--since", "1h"]).contains(&format!("{n} dead letters")));
    assert!(cli(&["dlq", "list", "--since", "2999-01-01T00:00:00Z"]).contains("0 dead letters"));
    let replayed = cli(&["dlq", "replay", "--sink", "alerts"]);
    assert!(replayed.contains(&format!("replayed {n}")), "{replayed}");

    // Back to work with a healthy receiver: each replayed alert arrives, under its first id.
    receiver.set_behaviour(answer(204));
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while delivered(&receiver).len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.shutdown().await.unwrap();
    let delivered = delivered(&receiver);
    let got: HashSet<String> = delivered.values().cloned().collect();
    assert_eq!(got, declines);
    for (id, record_id) in &delivered {
        assert_eq!(*id, event_id("alerts-declines", record_id));
    }
    let ids_refused: HashSet<String> = letters
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids_refused,
        delivered.keys().cloned().collect::<HashSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_makes_the_instance_not_ready_and_shows_in_metrics() {
    let sim = start_sim(quiet_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = WebhookSecret::generate();
    let receiver = receiver(&[&secret]).await;
    receiver.set_behaviour(answer(410));
    let mut config = pipeline_config(&sim, dir.path());
    add_webhook(
        &mut config,
        "alerts",
        webhook(&receiver.url(), &[&secret], &[0, 100]),
    );
    generate(&sim, &config, 100).await;
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    let base = format!("http://{}", pipeline.telemetry_addr.expect("serving"));
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Wait for the sink's own verdict: the pollers' check can fail first, for the second
    // until the lag gauge is sampled after the first poll.
    let text = loop {
        let answer = reqwest::get(format!("{base}/readyz")).await.unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        if (status == 503 && text.contains("webhook endpoint disabled"))
            || tokio::time::Instant::now() > deadline
        {
            assert_eq!(status, 503, "{text}");
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains("sinks: FAILING, webhook endpoint disabled: alerts"),
        "{text}"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mxc_relay_webhook_endpoint_disabled{sink=\"alerts\"} 1"),
        "{metrics}"
    );
    // Only attempts already in flight at the first 410 were answered; then nothing more.
    let answered = receiver.count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), answered);
    assert!(
        pipeline.store.outbox_len("alerts").unwrap() > 0,
        "its events wait"
    );
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failing_period_behind_disable_after_survives_a_restart() {
    let sim = start_sim(quiet_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = WebhookSecret::generate();
    let receiver = receiver(&[&secret]).await;
    receiver.set_behaviour(answer(500));
    let mut config = pipeline_config(&sim, dir.path());
    // Retries an hour apart: only new events are attempted after the restart.
    let mut hook = webhook(&receiver.url(), &[&secret], &[0, 3_600_000]);
    hook.disable_after = Duration::from_secs(4);
    add_webhook(&mut config, "alerts", hook);
    generate(&sim, &config, 100).await;
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    receiver.wait_for(1, Duration::from_secs(20)).await;
    let first_failure = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = pipeline.store.clone();
    assert!(store.endpoint_failing_since("alerts").unwrap().is_some());
    assert!(store.disabled_endpoint("alerts").unwrap().is_none());
    drop(store);
    pipeline.shutdown().await.unwrap();

    // Restarted, the next failure counts from the first one: the first attempt after the
    // restart disables it, where a fresh count would wait four more seconds. (The telemetry
    // server lets go of the store a moment after the stop.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempted = receiver.count();
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    generate(&sim, &config, 100).await;
    receiver
        .wait_for(attempted + 1, Duration::from_secs(20))
        .await;
    let first_attempt = std::time::Instant::now();
    while pipeline
        .store
        .disabled_endpoint("alerts")
        .unwrap()
        .is_none()
        && first_attempt.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let off = pipeline
        .store
        .disabled_endpoint("alerts")
        .unwrap()
        .expect("disabled");
    assert!(
        off.reason.starts_with("no successful delivery for"),
        "{}",
        off.reason
    );
    assert!(
        first_failure.elapsed() >= Duration::from_secs(4)
            && first_attempt.elapsed() < Duration::from_secs(2),
        "disabled {:?} after the first attempt since the restart",
        first_attempt.elapsed()
    );
    pipeline.shutdown().await.unwrap();
}
