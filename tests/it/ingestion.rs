//! The cursor on MXC's ingestion time (`created`), as a user relies on it:
//! - records that reach MXC 1 minute, 25 minutes, 2 hours and 20 hours after their transaction
//!   are each delivered once, to a file and to Kafka, across a SIGKILL of the real binary;
//! - with MXC indexing records late and its clock a minute ahead of or behind ours, none is
//!   missed;
//! - when MXC refuses `created` queries, the relay falls back to transaction-time windows and
//!   says so (log, metric, `/readyz`), and still delivers everything;
//! - records the cursor cannot see are found by the reconciliation sweep and counted;
//! - a poll costs the pages of what is new, plus at most one request.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mxc::{Client, ReportQuery, TimeBasis};
use mxc_relay::config::{Config, CursorMode, StoreConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::poll::{Bases, Budget, PollConfig, Pollers};
use mxc_relay::store::Store;
use mxc_relay::telemetry::Metrics;
use mxc_sim::{Faults, RunningSim, SimConfig};
use test_kit::PipelineConfigBuilder;

use crate::support::canary::{assert_logged, capture_logs, lines_with};
use crate::support::kafka::{broker, create_topic, read_topic, topic_name};
use crate::support::{client, line_count, lines, minutes, record_ids, start_sim, wait_until, BIN};

/// A quiet simulator (records only from `generate`) that indexes like MXC: a record is
/// searchable a second after it is ingested, some only after up to five.
fn indexing_sim(faults: Faults) -> SimConfig {
    SimConfig {
        rate: 0.0,
        index_delay: Duration::from_secs(1),
        faults,
        ..SimConfig::default()
    }
}

/// The ids of every record ingested (`created`) in `[from, to]` that a `created` query
/// returns, read with the crate's own client.
async fn ingested(
    client: &Client,
    xmids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> HashSet<String> {
    ids_of(
        client,
        ReportQuery::new(xmids.to_vec(), from, to).by(TimeBasis::Ingestion),
    )
    .await
}

/// The ids of every record whose transaction time lies in `[from, to]`.
async fn by_transaction_time(
    client: &Client,
    xmids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> HashSet<String> {
    ids_of(client, ReportQuery::new(xmids.to_vec(), from, to)).await
}

async fn ids_of(client: &Client, query: ReportQuery) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut export = client.report_export(query);
    while let Some(batch) = export.next_page().await.unwrap() {
        ids.extend(
            batch
                .records
                .iter()
                .filter_map(|r| r.id().map(str::to_string)),
        );
    }
    ids
}

/// Records for `xmids` that reach MXC now, `late` after their transaction (within 20 s).
fn arrive_late(sim: &RunningSim, count: usize, xmids: &[String], late: chrono::Duration) {
    let t = sim.now() - late;
    sim.generate(count, xmids, t - chrono::Duration::seconds(20), t)
        .unwrap();
}

/// Long enough for the simulator to have indexed every record (5× its 1 s delay at most).
const INDEXED: Duration = Duration::from_millis(5_500);

const LATENESS: [(&str, i64); 4] = [("1 min", 1), ("25 min", 25), ("2 h", 120), ("20 h", 1200)];

// ---------------------------------------------------------------------------------------------
// The real binary, a file and Kafka, a SIGKILL.

fn write_config(
    dir: &Path,
    sim: &RunningSim,
    xmids: &[String],
    kafka: Option<(&str, &str)>,
) -> PathBuf {
    let path = dir.join("relay.toml");
    let mut text = format!(
        r#"[mxc]
base_url = "{url}"
api_key = "{key}"
username = "{user}"
password = "{password}"

[pollers]
xmids = {xmids}
interval = "1s"
start = "now"
requests_per_second = 100
burst = 20

[store]
path = "{store}"

[sinks.archive]
kind = "file"
path = "{archive}"

[[routes]]
sink = "archive"

[telemetry]
listen = ""
[admin]
listen = "127.0.0.1:0"

[log]
level = "info"
"#,
        url = sim.base_url(),
        key = mxc_sim::DEFAULT_API_KEY,
        user = mxc_sim::DEFAULT_USERNAME,
        password = mxc_sim::DEFAULT_PASSWORD,
        xmids = serde_json::to_string(xmids).unwrap(),
        store = dir.join("store").display(),
        archive = dir.join("archive.jsonl").display(),
    );
    if let Some((broker, topic)) = kafka {
        text.push_str(&format!(
            "\n[sinks.kafka]\nkind = \"kafka\"\nbrokers = \"{broker}\"\ntopic = \"{topic}\"\n\n[[routes]]\nsink = \"kafka\"\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until the relay has authenticated (its start is MXC's now at that moment) and a
/// poll has had time to set its cursors.
async fn wait_started(sim: &RunningSim, auth_calls_before: u64) {
    assert!(
        wait_until(Duration::from_secs(30), || sim.stats().auth_calls
            > auth_calls_before)
        .await,
        "the relay authenticated"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_late_by_1_min_25_min_2_h_and_20_h_are_delivered_once_to_a_file_and_kafka_across_a_sigkill(
) {
    let broker = broker();
    let topic = topic_name("ingestion");
    if let Some(broker) = &broker {
        create_topic(broker, &topic, 3).await;
    }
    let sim = start_sim(indexing_sim(Faults::default())).await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let client = client(&sim);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sim,
        &xmids,
        broker.as_deref().map(|b| (b, topic.as_str())),
    );
    let archive = dir.path().join("archive.jsonl");

    // Ingested before the relay starts (`start = "now"`): never delivered, however recent.
    arrive_late(&sim, 30, &xmids, chrono::Duration::zero());
    tokio::time::sleep(INDEXED).await;
    let before_start = ingested(&client, &xmids, sim.now() - minutes(5), sim.now()).await;
    assert_eq!(before_start.len(), 30);

    let mut relay = spawn(&config, &dir.path().join("run-1.log"));
    wait_started(&sim, 0).await;
    let t1 = sim.now();
    for (_, late) in LATENESS {
        arrive_late(&sim, 25, &xmids, minutes(late));
    }
    assert!(
        wait_until(Duration::from_secs(30), || line_count(&archive) >= 100).await,
        "the first 100 late records were delivered: {} lines",
        line_count(&archive)
    );

    // Kafka has them too; the relay is between polls, its deliveries acknowledged.
    if let Some(broker) = broker.clone() {
        let topic = topic.clone();
        let messages = tokio::task::spawn_blocking(move || {
            read_topic(&broker, &topic, |m| m.len() >= 100, Duration::from_secs(30))
        })
        .await
        .unwrap();
        assert_eq!(messages.len(), 100, "the first 100 on Kafka");
    }

    // More late records reach MXC, and the relay dies before its next poll could read them
    // (they settle for 5 s first).
    for (_, late) in LATENESS {
        arrive_late(&sim, 25, &xmids, minutes(late));
    }
    relay.kill().unwrap(); // SIGKILL
    relay.wait().unwrap();
    assert_eq!(line_count(&archive), 100, "killed before it read them");
    let auth_calls = sim.stats().auth_calls;
    let mut relay = spawn(&config, &dir.path().join("run-2.log"));
    wait_started(&sim, auth_calls).await;
    assert!(
        wait_until(Duration::from_secs(30), || line_count(&archive) >= 200).await,
        "the records that arrived while it was down were delivered: {} lines",
        line_count(&archive)
    );
    tokio::time::sleep(Duration::from_secs(3)).await; // a few more polls: nothing more may come
    relay.kill().unwrap();
    relay.wait().unwrap();

    let expected = ingested(&client, &xmids, t1, sim.now()).await;
    assert_eq!(expected.len(), 200);
    assert!(expected.is_disjoint(&before_start));
    let found = lines(&archive);
    assert_eq!(found.len(), 200, "each record once in the file");
    let in_file: HashSet<String> = record_ids(&found).into_iter().map(str::to_string).collect();
    assert_eq!(in_file, expected);
    // Every lateness class is there, by the transaction times the file carries.
    let lateness: Vec<i64> = found
        .iter()
        .map(|l| {
            let data = &l["data"];
            let at = |f: &str| DateTime::parse_from_rfc3339(data[f].as_str().unwrap()).unwrap();
            (at("created") - at("transactionDateAndTime")).num_minutes()
        })
        .collect();
    for (name, late) in LATENESS {
        let n = lateness
            .iter()
            .filter(|m| (late - 1..=late).contains(*m))
            .count();
        assert_eq!(n, 50, "{name} late: {n} of 50");
    }

    if let Some(broker) = broker {
        let messages = tokio::task::spawn_blocking(move || {
            read_topic(&broker, &topic, |m| m.len() >= 200, Duration::from_secs(60))
        })
        .await
        .unwrap();
        let ids: Vec<&str> = messages
            .iter()
            .map(|m| m.headers["mxc-record-id"].as_str())
            .collect();
        let unique: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
        assert_eq!(ids.len(), 200, "each record once on Kafka");
        assert_eq!(unique, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// In-process pipelines.

fn pipeline_config(sim: &RunningSim, xmids: &[String], dir: &Path) -> Config {
    PipelineConfigBuilder::new(sim.base_url(), xmids)
        .interval(Duration::from_secs(1))
        .budget(200.0, 50)
        .with(|c| c.pollers.reconcile_every = Duration::ZERO)
        .store(dir.join("store"))
        .retry_min(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(5))
        .archive(dir.join("archive.jsonl"))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_late_indexing_and_mxc_a_minute_ahead_or_behind_no_record_is_missed() {
    for offset_ms in [60_000, -60_000] {
        let sim = Arc::new(
            start_sim(indexing_sim(Faults {
                clock_offset_ms: offset_ms,
                ..Faults::default()
            }))
            .await,
        );
        let skew = (sim.now() - Utc::now()).num_seconds();
        assert!(
            (offset_ms / 1000 - skew).abs() <= 1,
            "MXC's clock is {skew}s off ours"
        );
        let xmids: Vec<String> = sim.xmids()[..6].to_vec();
        let dir = tempfile::tempdir().unwrap();
        let mut config = pipeline_config(&sim, &xmids, dir.path());
        // The sweep is off: the cursor alone must see everything.
        config.pollers.reconcile_every = Duration::ZERO;
        assert_eq!(config.validate(), vec![]);
        let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
        let t0 = sim.now();

        // 8 s of traffic, most of it on time, some of it hours late.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            arrive_late(&sim, 8, &xmids, chrono::Duration::zero());
            arrive_late(&sim, 2, &xmids, minutes(97));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(INDEXED).await;
        let expected = ingested(&client(&sim), &xmids, t0, sim.now()).await;
        assert!(expected.len() >= 300, "{} records", expected.len());
        let archive = dir.path().join("archive.jsonl");
        let delivered = wait_until(Duration::from_secs(30), || {
            line_count(&archive) >= expected.len()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let metrics = pipeline.metrics.clone();
        pipeline.shutdown().await.unwrap();
        let found = lines(&archive);
        let ids: HashSet<String> = record_ids(&found).into_iter().map(str::to_string).collect();
        assert!(
            delivered,
            "clock {offset_ms:+} ms: {} of {} delivered",
            ids.len(),
            expected.len()
        );
        assert_eq!(ids, expected, "clock {offset_ms:+} ms: every record");
        assert_eq!(
            found.len(),
            expected.len(),
            "clock {offset_ms:+} ms: each once"
        );
        assert_eq!(metrics.records("new"), expected.len() as u64);
        assert_eq!(metrics.records("reconciled"), 0);
    }
}

/// A pipeline in `auto` polling from 10 minutes back, while 150 records arrive up to 5
/// minutes late (within the default 10-minute look-back, which a fallback to transaction
/// time leans on); returns once the 150 are delivered, with their ids and the archive.
async fn deliver_after_a_fallback(
    sim: &RunningSim,
    xmids: &[String],
    dir: &Path,
) -> (Pipeline, HashSet<String>, PathBuf) {
    let mut config = pipeline_config(sim, xmids, dir);
    // On transaction time the start is a transaction time: from 10 minutes back.
    config.pollers.start = mxc::instant(sim.now() - minutes(10));
    assert_eq!(config.pollers.cursor, CursorMode::Auto);
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    for late in [0, 1, 5] {
        arrive_late(sim, 50, xmids, minutes(late));
    }
    tokio::time::sleep(INDEXED).await;
    let expected =
        by_transaction_time(&client(sim), xmids, sim.now() - minutes(9), sim.now()).await;
    assert_eq!(expected.len(), 150);
    let archive = dir.join("archive.jsonl");
    let delivered = wait_until(Duration::from_secs(30), || line_count(&archive) >= 150).await;
    assert!(delivered, "{} of 150 delivered", line_count(&archive));
    (pipeline, expected, archive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_mxc_refuses_created_queries_the_relay_falls_back_out_loud_and_delivers_everything() {
    capture_logs();
    let sim = start_sim(indexing_sim(Faults {
        refuse_created: true,
        ..Faults::default()
    }))
    .await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, expected, archive) = deliver_after_a_fallback(&sim, &xmids, dir.path()).await;
    let route = "GET /report/v1/tsys/authorization";
    let refused = sim.stats().requests_with(route, 400);
    tokio::time::sleep(Duration::from_secs(2)).await; // two more polls each

    let metrics = pipeline.metrics.clone();
    let gauge = metrics
        .cursor_fallback
        .with_label_values(&["authorizations"])
        .get();
    assert_eq!(
        gauge, 1,
        "mxc_relay_cursor_fallback{{resource=\"authorizations\"}}"
    );
    assert!(metrics
        .render()
        .contains("mxc_relay_cursor_fallback{resource=\"authorizations\"} 1"));
    let readyz = format!("http://{}/readyz", pipeline.telemetry_addr.unwrap());
    let answer = reqwest::get(&readyz).await.unwrap();
    assert_eq!(answer.status(), 200, "still ready");
    let body = answer.text().await.unwrap();
    assert!(
        body.lines().any(
            |l| l.contains("cursor") && l.contains("authorizations polled by transaction time")
        ),
        "{body}"
    );
    let warned = assert_logged(&[
        "WARN",
        "MXC refuses queries on the ingestion time",
        "HTTP 400",
    ]);
    assert_eq!(warned.len(), 1, "said once: {warned:#?}");
    assert!(
        warned[0].contains("No mapping found for [created]"),
        "quotes MXC's answer: {}",
        warned[0]
    );
    pipeline.shutdown().await.unwrap();
    let found = lines(&archive);
    let ids: HashSet<String> = record_ids(&found).into_iter().map(str::to_string).collect();
    assert_eq!(ids, expected);
    assert_eq!(found.len(), 150, "each once");
    // Refused sorted by created and id, then by created alone (once each per poller at
    // most: their first polls may race); then never asked again.
    assert!((2..=8).contains(&refused), "{refused} refusals");
    assert_eq!(sim.stats().requests_with(route, 400), refused);
    let tie_break = lines_with(&["sorted by created and id: trying created alone"]);
    assert_eq!(tie_break.len(), 1, "{tie_break:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_mxc_ignores_the_created_range_the_relay_notices_and_falls_back_out_loud() {
    capture_logs();
    let ignoring = Faults {
        ignore_created_filter: true,
        ..Faults::default()
    };
    let sim = start_sim(indexing_sim(ignoring.clone())).await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    // 20 records ingested 30 minutes ago, before the relay's start: a server that kept the
    // range would never return them to a query on created.
    sim.set_faults(Faults {
        clock_offset_ms: -minutes(30).num_milliseconds(),
        ..ignoring.clone()
    });
    let early = sim.now() - minutes(1);
    sim.generate(20, &xmids, early, sim.now()).unwrap();
    sim.set_faults(ignoring);
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, expected, archive) = deliver_after_a_fallback(&sim, &xmids, dir.path()).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // two more polls each

    let metrics = pipeline.metrics.clone();
    let rendered = metrics.render();
    for series in [
        "mxc_relay_created_filter_ignored{resource=\"authorizations\"} 1",
        "mxc_relay_cursor_fallback{resource=\"authorizations\"} 1",
    ] {
        assert!(rendered.contains(series), "{series} in /metrics");
    }
    let readyz = format!("http://{}/readyz", pipeline.telemetry_addr.unwrap());
    let answer = reqwest::get(&readyz).await.unwrap();
    assert_eq!(answer.status(), 200, "still ready");
    let body = answer.text().await.unwrap();
    assert!(
        body.lines().any(|l| l.contains("created filter")
            && l.contains("MXC ignores the range of created queries: authorizations")),
        "{body}"
    );
    assert!(
        !body.contains("MXC refused created queries"),
        "not said to be refused: {body}"
    );
    let warned = assert_logged(&[
        "WARN",
        "MXC ignores the range of queries on the ingestion time",
    ]);
    assert_eq!(warned.len(), 1, "said once: {warned:#?}");
    assert!(
        warned[0].contains("with record") && warned[0].contains("it ignores the range"),
        "names the record outside the range: {}",
        warned[0]
    );
    pipeline.shutdown().await.unwrap();
    let found = lines(&archive);
    let ids: HashSet<String> = record_ids(&found).into_iter().map(str::to_string).collect();
    assert_eq!(
        ids, expected,
        "the 150 records of the window, not the 20 before the start"
    );
    assert_eq!(found.len(), 150, "each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_hidden_from_the_cursor_are_found_by_the_sweep_and_counted_as_reconciled() {
    capture_logs();
    let sim = start_sim(indexing_sim(Faults {
        hide_from_created_rate: 0.2,
        ..Faults::default()
    }))
    .await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pipeline_config(&sim, &xmids, dir.path());
    config.pollers.reconcile_every = Duration::from_secs(10);
    config.pollers.reconcile_window = Duration::from_secs(3 * 3600);
    assert_eq!(config.validate(), vec![]);
    let pipeline = Pipeline::start(&config, Metrics::new()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for late in [0, 3, 30, 100] {
        arrive_late(&sim, 75, &xmids, minutes(late));
    }
    tokio::time::sleep(INDEXED).await;
    let client = client(&sim);
    let all = by_transaction_time(&client, &xmids, sim.now() - minutes(150), sim.now()).await;
    let visible = ingested(&client, &xmids, sim.now() - minutes(5), sim.now()).await;
    let hidden = all.len() - visible.len();
    assert_eq!(all.len(), 300);
    assert!(
        hidden > 20,
        "the simulator hides a share from created queries: {hidden}"
    );

    // The cursor delivers what it sees within seconds; the sweep, every 10 s, the rest.
    let archive = dir.path().join("archive.jsonl");
    let delivered = wait_until(Duration::from_secs(45), || line_count(&archive) >= 300).await;
    let metrics = pipeline.metrics.clone();
    assert!(
        delivered,
        "{} of 300 delivered, {} reconciled",
        line_count(&archive),
        metrics.records("reconciled")
    );
    tokio::time::sleep(Duration::from_secs(11)).await; // one more sweep finds nothing more
    pipeline.shutdown().await.unwrap();
    assert_eq!(metrics.records("reconciled"), hidden as u64);
    assert_eq!(
        metrics.records("new"),
        (300 - hidden) as u64,
        "the cursor's own"
    );
    assert!(metrics.sweeps.with_label_values(&["ok"]).get() >= 2);
    let found = lines(&archive);
    let ids: HashSet<String> = record_ids(&found).into_iter().map(str::to_string).collect();
    assert_eq!(ids, all);
    assert_eq!(found.len(), 300, "each once");
    // Each one is named in the log, with its XMID.
    let missed: Vec<&String> = all.difference(&visible).collect();
    for id in missed.iter().take(5) {
        let line = assert_logged(&["reconciliation sweep found a record", id.as_str()]);
        assert!(
            xmids.iter().any(|x| line[0].contains(x.as_str())),
            "{line:?}"
        );
    }
    assert!(lines_with(&["reconciliation sweep failed"]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// What a poll costs.

/// Pollers over the simulator with a store in `dir` and no routes, cursors from now, the
/// sweep off (called by hand), a budget that never waits.
fn bare_pollers(sim: &RunningSim, xmids: &[String], dir: &Path) -> Pollers {
    let store = Store::open(
        &StoreConfig {
            path: dir.join("store"),
            ..StoreConfig::default()
        },
        &[],
    )
    .unwrap();
    Pollers {
        client: client(sim),
        store,
        routes: Arc::new(Vec::new()),
        budget: std::sync::Arc::new(Budget::new(1000.0, 100)),
        config: PollConfig {
            interval: Duration::from_secs(1),
            settle: Duration::from_millis(500),
            overlap: Duration::from_millis(500),
            look_back: Duration::from_secs(600),
            reconcile_every: Duration::ZERO,
            reconcile_window: Duration::from_secs(3600),
            group_size: xmids.len(),
            page_size: 100,
            max_result_window: 10_000,
            max_backoff: Duration::from_secs(5),
            seen_retention: Duration::from_secs(86_400),
            resources: vec![&mxc::AUTHORIZATIONS],
            first_poll_within: Duration::ZERO,
        },
        metrics: Metrics::new(),
        handover: None,
        bases: Arc::new(Bases::new(CursorMode::Auto)),
        polls_waiting: Arc::default(),
        sweeps: Arc::default(),
        merchants: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_costs_the_pages_of_what_is_new_plus_at_most_one_request() {
    let sim = start_sim(SimConfig {
        rate: 0.0,
        ..SimConfig::default()
    })
    .await;
    let xmids: Vec<String> = sim.xmids()[..10].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let pollers = bare_pollers(&sim, &xmids, dir.path());
    pollers.client.authenticate().await.unwrap();
    pollers
        .init_cursors(&xmids, pollers.client.mxc_now())
        .await
        .unwrap();
    let route = "GET /report/v1/tsys/authorization";
    let resource = &mxc::AUTHORIZATIONS;
    let mut costs: HashMap<usize, u64> = HashMap::new();
    // Each round: `new` records reach MXC (hours late, some of them), then one poll once they
    // settled — past the overlap of the poll before, so a poll reads only what is new. (MXC's
    // now is known to the second: `Date` has no finer grain.)
    for new in [0usize, 1, 99, 100, 101, 250, 0, 420, 37] {
        arrive_late(&sim, new / 2, &xmids, chrono::Duration::zero());
        arrive_late(&sim, new - new / 2, &xmids, minutes(150));
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let (requests, admitted) = (
            sim.stats().requests_to(route),
            pollers.metrics.records("new"),
        );
        pollers.poll_once(resource, &xmids).await.unwrap();
        let cost = sim.stats().requests_to(route) - requests;
        assert_eq!(
            pollers.metrics.records("new") - admitted,
            new as u64,
            "every new record read"
        );
        let pages = new.div_ceil(100) as u64;
        assert!(
            cost <= pages + 1,
            "{new} new records: {cost} requests (pages: {pages})"
        );
        costs.insert(new, cost);
    }
    assert_eq!(
        pollers.metrics.records("duplicate"),
        0,
        "nothing read twice"
    );
    eprintln!("requests per poll by new records: {costs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_reads_its_share_of_the_budget_and_the_next_goes_on_where_it_stopped() {
    capture_logs();
    let sim = start_sim(indexing_sim(Faults {
        hide_from_created_rate: 0.2,
        ..Faults::default()
    }))
    .await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let pollers = bare_pollers(&sim, &xmids, dir.path());
    pollers.client.authenticate().await.unwrap();
    pollers
        .init_cursors(&xmids, pollers.client.mxc_now())
        .await
        .unwrap();
    // 600 records, 30 minutes late: the cursor reads the 80 % it can see.
    arrive_late(&sim, 600, &xmids, minutes(30));
    tokio::time::sleep(INDEXED).await;
    let client = client(&sim);
    let all = by_transaction_time(&client, &xmids, sim.now() - minutes(40), sim.now()).await;
    let visible = ingested(&client, &xmids, sim.now() - minutes(5), sim.now()).await;
    let hidden = all.len() - visible.len();
    assert_eq!(all.len(), 600);
    assert!(hidden > 60, "{hidden} hidden from created queries");
    pollers
        .poll_once(&mxc::AUTHORIZATIONS, &xmids)
        .await
        .unwrap();
    assert_eq!(pollers.metrics.records("new"), visible.len() as u64);

    // Sweeps of at most 2 pages of 100: the 600 records' window takes 3 of them (and each
    // page with a missed record one request more, for those records whole).
    let stop = tokio_util::sync::CancellationToken::new();
    let (export, get) = (
        "POST /report/v1/tsys/authorization/export",
        "GET /report/v1/tsys/authorization",
    );
    let mut resume_at = None;
    let mut sweeps = Vec::new();
    loop {
        let before = (
            sim.stats().requests_to(export),
            sim.stats().requests_to(get),
        );
        let outcome = pollers
            .sweep(&mxc::AUTHORIZATIONS, &xmids, &stop, resume_at, 2)
            .await
            .unwrap();
        let cost = (
            sim.stats().requests_to(export) - before.0,
            sim.stats().requests_to(get) - before.1,
        );
        assert!(outcome.pages <= 2, "{outcome:?}");
        // One export request a page (the last sweep's last one finds the scroll's end).
        let end = u64::from(outcome.resume_at.is_none());
        assert!(
            (outcome.pages as u64..=outcome.pages as u64 + end).contains(&cost.0),
            "{outcome:?}: {cost:?}"
        );
        assert!(
            cost.1 <= 2 * outcome.pages as u64,
            "whole records: {cost:?}"
        );
        sweeps.push((outcome.found, outcome.pages, cost));
        resume_at = outcome.resume_at;
        if resume_at.is_none() {
            break;
        }
        assert!(sweeps.len() < 10, "never ends: {sweeps:?}");
    }
    eprintln!("sweeps (found, pages, (export, get requests)): {sweeps:?}");
    assert!((3..=4).contains(&sweeps.len()), "{sweeps:?}");
    let found: usize = sweeps.iter().map(|s| s.0).sum();
    assert_eq!(found, hidden, "every hidden record, once: {sweeps:?}");
    assert_eq!(pollers.metrics.records("reconciled"), hidden as u64);
    // Found again, they are known: a full sweep now finds nothing.
    let again = pollers
        .sweep(&mxc::AUTHORIZATIONS, &xmids, &stop, None, 100)
        .await
        .unwrap();
    assert_eq!((again.found, again.resume_at), (0, None), "{again:?}");
}
