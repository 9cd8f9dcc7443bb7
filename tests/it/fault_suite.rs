//! Every guarantee against a fault that tries to break it: the whole pipeline (simulator over
//! HTTP → pollers → store → file and webhook sinks) while MXC or a receiver misbehaves for a few
//! seconds. Each test checks that every record arrives exactly once after the fault, that the
//! fault was really hit, that it was reported (metrics, log lines naming the XMID) — and, at
//! the end, that no secret canary (nor a JWT) shows in the logs captured at TRACE level, in
//! `/metrics`, or in the `Display`/`Debug` of what the test touched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mxc::Secret;
use mxc::{Client, ClientConfig, MxcError, ReportQuery};
use mxc_relay::config::{Config, GroupSize, RouteConfig, SinkConfig, WebhookConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::receiver::{Behaviour, Receiver, ReceiverConfig};
use mxc_relay::route::event_id;
use mxc_relay::telemetry::Metrics;
use mxc_sim::{Faults, RunningSim};
use serde_json::Value;

use crate::support::canary::{self, debugged, shown};
use crate::support::*;

const AUTHZ: &str = "GET /report/v1/tsys/authorization";
const AUTHZ_PATH: &str = "/report/v1/tsys/authorization";

/// A pipeline configuration against `base_url` for `xmids`, with the canary credentials, one
/// file sink `archive` taking every record, fast polling and a store in `dir`.
fn config(base_url: &str, xmids: &[String], dir: &Path, start: DateTime<Utc>) -> Config {
    archiving_pipeline(base_url, xmids, dir, start)
        .with(|c| {
            c.mxc.api_key = Secret::new(canary::API_KEY);
            c.mxc.username = canary::USERNAME.to_string();
            c.mxc.password = Secret::new(canary::PASSWORD);
        })
        .build()
}

fn complete_lines(path: &Path) -> String {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text
}

/// What the checks need of an archived event: reading only that keeps thousands of 7 KB lines
/// cheap to re-read.
#[derive(Debug, serde::Deserialize)]
struct Archived {
    xmid: String,
    data: ArchivedData,
}

#[derive(Debug, serde::Deserialize)]
struct ArchivedData {
    id: String,
}

fn archived(path: &Path) -> Vec<Archived> {
    complete_lines(path)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is an event"))
        .collect()
}

/// Every record id the simulator holds for `xmids` in `[from, to]` (asking for the ids only).
async fn sim_ids(
    sim: &RunningSim,
    xmids: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> HashSet<String> {
    let client = canary::client(sim);
    let mut ids = HashSet::new();
    for xmid in xmids {
        let mut query = ReportQuery::new(vec![xmid.clone()], from, to);
        query.fields = Some(vec!["id".into(), "transactionDateAndTime".into()]);
        let mut pager = client.report_pages(query);
        while let Some(batch) = pager.next_page().await.unwrap() {
            ids.extend(
                batch
                    .records
                    .iter()
                    .filter_map(|r| r.id().map(str::to_string)),
            );
        }
    }
    ids
}

fn query(xmid: &str) -> ReportQuery {
    ReportQuery::new(vec![xmid.to_string()], Utc::now() - minutes(60), Utc::now())
}

/// MXC authorization calls the pipeline counted with `status`.
fn api(metrics: &Metrics, status: &str) -> u64 {
    metrics
        .api_requests
        .with_label_values(&[AUTHZ_PATH, status])
        .get()
}

fn polls(metrics: &Metrics, outcome: &str) -> u64 {
    metrics.polls.with_label_values(&[outcome]).get()
}

/// The captured lines with all of `needles` that name one of `xmids` (`xmids=…` or `xmid=…`).
#[track_caller]
fn assert_logged_for(xmids: &[String], needles: &[&str]) -> Vec<String> {
    let found: Vec<String> = canary::assert_logged(needles)
        .into_iter()
        .filter(|l| xmids.iter().any(|x| l.contains(x.as_str())))
        .collect();
    assert!(
        !found.is_empty(),
        "lines with {needles:?} but none names one of {xmids:?}"
    );
    found
}

/// One test's world: a simulator with the canary credentials (its own seed, so its own XMIDs),
/// a temporary store and archive, and the pipeline's configuration.
struct Harness {
    sim: RunningSim,
    xmids: Vec<String>,
    dir: tempfile::TempDir,
    t0: DateTime<Utc>,
    config: Config,
    started: Instant,
}

impl Harness {
    async fn new(seed: u64, merchants: usize) -> Harness {
        canary::capture_logs();
        let started = Instant::now();
        let sim = start_sim(canary::sim_config(seed)).await;
        let xmids = sim.xmids()[..merchants].to_vec();
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now();
        let config = config(&sim.base_url(), &xmids, dir.path(), t0 - minutes(10));
        Harness {
            sim,
            xmids,
            dir,
            t0,
            config,
            started,
        }
    }

    /// `n` more records for the XMIDs, over the last five minutes.
    fn generate(&self, n: usize) {
        self.sim
            .generate(n, &self.xmids, self.t0 - minutes(5), Utc::now())
            .unwrap();
    }

    fn archive(&self) -> PathBuf {
        self.dir.path().join("archive.jsonl")
    }

    async fn start(&self) -> Pipeline {
        assert_eq!(self.config.validate(), vec![]);
        Pipeline::start(&self.config, Metrics::new()).await.unwrap()
    }

    /// Waits (up to `within`) for `n` lines in the archive, lets a few more polls run (nothing
    /// more may come), stops the pipeline, and asserts that the archive holds every record the
    /// simulator has for the XMIDs, each exactly once. Returns the metrics and the events.
    async fn finish(
        &self,
        pipeline: Pipeline,
        n: usize,
        within: Duration,
    ) -> (Metrics, Vec<Archived>) {
        wait_for_lines(&self.archive(), n, within).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let metrics = pipeline.metrics.clone();
        pipeline.shutdown().await.unwrap();
        let found = archived(&self.archive());
        let ids: HashSet<String> = found.iter().map(|a| a.data.id.clone()).collect();
        let expected = sim_ids(&self.sim, &self.xmids, self.t0 - minutes(10), Utc::now()).await;
        assert_eq!(expected.len(), n, "the simulator holds what was generated");
        assert_eq!(
            ids.len(),
            n,
            "every record arrived ({} lines, {} distinct of {n})",
            found.len(),
            ids.len()
        );
        assert_eq!(ids, expected, "the very records the simulator holds");
        assert_eq!(found.len(), n, "each record exactly once");
        canary::assert_not_in_files(&self.config.store.path);
        (metrics, found)
    }

    /// The `Debug` (and `Display`) texts of what the test touched, for the leak check: the
    /// configuration, the client's settings and the client, and `extra`.
    fn touched(&self, mut extra: Vec<String>) -> Vec<String> {
        let client_config = self.config.mxc.client_config();
        extra.push(debugged(&self.config));
        extra.push(debugged(&client_config));
        extra.push(debugged(&Client::new(client_config).unwrap()));
        extra
    }

    /// Prints the test's wall time and what it saw (with `--nocapture`).
    fn done(&self, name: &str, saw: String) {
        eprintln!("fault_suite: {name}: {:.1?}; {saw}", self.started.elapsed());
    }
}

/// The records the proxy gives a field of the wrong type: a quarter of them.
fn wrongly_typed(id: &str) -> bool {
    id.starts_with(['a', 'b', 'c', 'd'])
}

/// A proxy in front of the simulator, for the faults the simulator does not make: it serves
/// every answer as it is, except that, while switched on, authorization pages get records of
/// the wrong type (`wrong_types`: each record whose id starts with a, b, c or d carries
/// `authorizedAmount` as text) or stall halfway through their body (`stall`: the status, the
/// headers and half the body, then nothing).
struct Proxy {
    url: String,
    wrong_types: Arc<AtomicBool>,
    stall: Arc<AtomicBool>,
    /// Answers stalled so far.
    stalled: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        use axum::http::{header, HeaderMap, Method, Uri};
        use axum::response::IntoResponse;

        let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let proxy = Proxy {
            url: format!("http://{}", listener.local_addr().unwrap()),
            wrong_types: Arc::default(),
            stall: Arc::default(),
            stalled: Arc::default(),
        };
        let (wrong_types, stall, stalled) = (
            proxy.wrong_types.clone(),
            proxy.stall.clone(),
            proxy.stalled.clone(),
        );
        let http = reqwest::Client::new();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: bytes::Bytes| {
                let (http, upstream) = (http.clone(), upstream.clone());
                let (wrong_types, stall, stalled) =
                    (wrong_types.clone(), stall.clone(), stalled.clone());
                async move {
                    let target = uri.path_and_query().map_or("/", |p| p.as_str());
                    let mut request = http
                        .request(method, format!("{upstream}{target}"))
                        .body(body);
                    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
                        if let Some(value) = headers.get(&name) {
                            request = request.header(name, value);
                        }
                    }
                    let answer = request.send().await.unwrap();
                    let status = answer.status();
                    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
                    let mut body = answer.bytes().await.unwrap().to_vec();
                    let page = status == 200 && uri.path() == AUTHZ_PATH;
                    if page && wrong_types.load(Ordering::Relaxed) {
                        let mut page: Value = serde_json::from_slice(&body).unwrap();
                        for record in page["records"].as_array_mut().unwrap() {
                            let amount = record["authorizedAmount"].as_f64();
                            let chosen = record["id"].as_str().is_some_and(wrongly_typed);
                            if let (true, Some(amount)) = (chosen, amount) {
                                record["authorizedAmount"] = Value::from(format!("{amount:.2}"));
                            }
                        }
                        body = serde_json::to_vec(&page).unwrap();
                    }
                    let mut response = if page && stall.load(Ordering::Relaxed) {
                        stalled.fetch_add(1, Ordering::Relaxed);
                        body.truncate(body.len() / 2);
                        let half = futures::stream::once(async move {
                            Ok::<_, std::io::Error>(bytes::Bytes::from(body))
                        });
                        let body = axum::body::Body::from_stream(futures::StreamExt::chain(
                            half,
                            futures::stream::pending(),
                        ));
                        (status, body).into_response()
                    } else {
                        (status, body).into_response()
                    };
                    if let Some(content_type) = content_type {
                        response
                            .headers_mut()
                            .insert(header::CONTENT_TYPE, content_type);
                    }
                    response
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        proxy
    }
}

// ---- Faults on the MXC side ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_storm_loses_nothing_and_costs_one_auth_call_per_failed_poll() {
    let h = Harness::new(101, 5).await;
    h.generate(150);
    let pipeline = h.start().await;
    let metrics = pipeline.metrics.clone();
    assert_eq!(
        wait_for_lines(&h.archive(), 150, Duration::from_secs(10)).await,
        150,
        "flowing before the storm"
    );

    // Every report call answered 401 for 3 s: fresh tokens do not help.
    let before = h.sim.stats();
    let failed_before = polls(&metrics, "error");
    h.sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: Some(401),
        ..Faults::default()
    });
    h.generate(150);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = h.sim.stats();
    let failed_polls = polls(&metrics, "error") - failed_before;
    // What a caller sees meanwhile (two more auth calls: its first token and one retry).
    let direct = canary::client(&h.sim)
        .report(&query(&h.xmids[0]), 0)
        .await
        .unwrap_err();
    assert!(matches!(direct, MxcError::Unauthorized { .. }), "{direct}");
    h.sim.set_faults(Faults::default());
    let (metrics, _) = h.finish(pipeline, 300, Duration::from_secs(10)).await;

    let refused = during.requests_with(AUTHZ, 401) - before.requests_with(AUTHZ, 401);
    let auth_calls = during.auth_calls - before.auth_calls;
    assert!(refused >= 2, "the storm was hit: {refused} answers 401");
    assert!(failed_polls >= 1, "polls failed: {failed_polls}");
    assert!(
        auth_calls >= 1,
        "a 401 makes the client re-authenticate: {auth_calls} calls"
    );
    // Bounded: one re-authentication per failed poll (plus one per poller caught mid-cycle by
    // the snapshot), and the pollers back off — never a hot loop.
    let pollers = h.xmids.len() as u64;
    assert!(
        auth_calls <= failed_polls + pollers,
        "{auth_calls} auth calls for {failed_polls} failed polls"
    );
    assert!(
        auth_calls <= 4 * pollers,
        "{auth_calls} auth calls in 3 s for {pollers} pollers"
    );
    assert_eq!(
        metrics.auth_failures.get(),
        0,
        "the Security API itself never failed"
    );
    // The metrics tell what the simulator saw, less the direct client's calls (two 401s, two
    // auth calls) and sim_ids' one auth call.
    let total = h.sim.stats();
    assert_eq!(api(&metrics, "401"), total.requests_with(AUTHZ, 401) - 2);
    assert_eq!(
        metrics.auth_requests.get(),
        total.auth_calls - 2 - 1,
        "every Security API call counted"
    );
    assert_logged_for(
        &h.xmids,
        &[
            "poll failed",
            "unauthorized (HTTP 401) even with a fresh token",
        ],
    );
    canary::assert_no_leaks(&metrics, &h.touched(vec![shown(&direct)]));
    h.done(
        "401 storm",
        format!("{refused} answers 401, {failed_polls} failed polls, {auth_calls} auth calls"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_holds_the_poller_for_at_least_that_long() {
    let mut h = Harness::new(102, 5).await;
    // One poller for the five XMIDs: "the next request" is that poller's.
    h.config.pollers.group_size = GroupSize::Fixed(5);
    h.generate(200);
    h.sim.set_faults(Faults {
        throttle_rate: 1.0,
        retry_after_secs: 3,
        ..Faults::default()
    });
    let pipeline = h.start().await;

    let (first_at, first) = wait_for(Duration::from_secs(5), || {
        let s = h.sim.stats();
        (s.requests_with(AUTHZ, 429) >= 1).then_some(s)
    })
    .await;
    assert_eq!(
        first.requests_to(AUTHZ),
        1,
        "the first request was throttled"
    );
    // Throttling ends well inside the Retry-After window; the poller must still wait it out.
    tokio::time::sleep_until((first_at + Duration::from_millis(1500)).into()).await;
    assert_eq!(
        h.sim.stats().requests_to(AUTHZ),
        1,
        "nothing within the window"
    );
    h.sim.set_faults(Faults::default());
    let (next_at, _) = wait_for(Duration::from_secs(8), || {
        (h.sim.stats().requests_to(AUTHZ) > 1).then_some(())
    })
    .await;
    let gap = next_at - first_at;
    // The stats are sampled every 5 ms: 200 ms of slack for a late first sample.
    assert!(
        gap >= Duration::from_millis(2800),
        "the poller came back after {gap:?}, before Retry-After: 3"
    );
    assert!(gap < Duration::from_secs(6), "and not much later: {gap:?}");
    let (metrics, _) = h.finish(pipeline, 200, Duration::from_secs(10)).await;

    assert_eq!(api(&metrics, "429"), 1);
    assert!(polls(&metrics, "error") >= 1);
    assert_logged_for(
        &h.xmids,
        &[
            "poll failed",
            "throttled by MXC (HTTP 429), retry after 3s",
            "retry_in=3s",
        ],
    );
    canary::assert_no_leaks(&metrics, &h.touched(vec![]));
    h.done(
        "429 Retry-After",
        format!("next request {gap:.2?} after the 429"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_calls_failing_with_503_loses_nothing() {
    let h = Harness::new(103, 10).await;
    h.generate(200);
    let pipeline = h.start().await;
    wait_for_lines(&h.archive(), 200, Duration::from_secs(10)).await;
    h.sim.set_faults(Faults {
        error_rate: 0.5,
        error_status: Some(503),
        ..Faults::default()
    });
    h.generate(200);
    // A few seconds of polls against the fault, and on until one has met it: the 10 XMIDs
    // poll as one group, about one call a second, and each call fails only half the time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, during) = wait_for(Duration::from_secs(15), || {
        let stats = h.sim.stats();
        (stats.requests_with(AUTHZ, 503) >= 1).then_some(stats)
    })
    .await;
    h.sim.set_faults(Faults::default());
    let (metrics, _) = h.finish(pipeline, 400, Duration::from_secs(12)).await;

    let refused = during.requests_with(AUTHZ, 503);
    assert!(refused >= 1, "the fault was hit");
    assert!(api(&metrics, "503") >= 1 && api(&metrics, "503") <= refused);
    assert!(polls(&metrics, "error") >= 1);
    assert_logged_for(&h.xmids, &["poll failed", "MXC server error (HTTP 503)"]);
    canary::assert_no_leaks(&metrics, &h.touched(vec![]));
    h.done(
        "5xx",
        format!(
            "{refused} answers 503, {} failed polls",
            polls(&metrics, "error")
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_client_timeout_lose_nothing() {
    let mut h = Harness::new(104, 5).await;
    // The shortest timeout the configuration accepts.
    h.config.mxc.timeout = Duration::from_secs(1);
    h.generate(150);
    let pipeline = h.start().await;
    wait_for_lines(&h.archive(), 150, Duration::from_secs(10)).await;
    h.sim.set_faults(Faults {
        latency_ms: 2_500,
        ..Faults::default()
    });
    h.generate(150);
    let mut direct_config = ClientConfig::new(h.sim.base_url(), canary::credentials());
    direct_config.timeout = Duration::from_secs(1);
    let direct_client = Client::new(direct_config).unwrap();
    let direct = direct_client
        .report(&query(&h.xmids[0]), 0)
        .await
        .unwrap_err();
    assert!(matches!(direct, MxcError::Timeout { .. }), "{direct}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.sim.set_faults(Faults::default());
    let (metrics, _) = h.finish(pipeline, 300, Duration::from_secs(12)).await;

    assert!(api(&metrics, "timeout") >= 1, "the fault was hit");
    assert!(polls(&metrics, "error") >= 1);
    assert_logged_for(
        &h.xmids,
        &[
            "poll failed",
            "GET /report/v1/tsys/authorization: no answer within 1s",
        ],
    );
    canary::assert_no_leaks(
        &metrics,
        &h.touched(vec![shown(&direct), debugged(&direct_client)]),
    );
    h.done(
        "timeouts",
        format!(
            "{} timeouts, {} failed polls",
            api(&metrics, "timeout"),
            polls(&metrics, "error")
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalling_halfway_times_out_and_loses_nothing() {
    let mut h = Harness::new(111, 5).await;
    // Five pollers, so that three stalls come within seconds: one (a group of the five)
    // backs off after each, and its third stall can come after the wait below.
    h.config.pollers.group_size = GroupSize::Fixed(1);
    let proxy = Proxy::start(h.sim.base_url()).await;
    h.config.mxc.base_url = proxy.url.clone();
    h.config.mxc.timeout = Duration::from_secs(1);
    h.generate(150);
    let pipeline = h.start().await;
    wait_for_lines(&h.archive(), 150, Duration::from_secs(10)).await;
    // Pages start (200, headers, half the body) and then stall, until three did.
    proxy.stall.store(true, Ordering::Relaxed);
    h.generate(150);
    wait_for(Duration::from_secs(8), || {
        (proxy.stalled.load(Ordering::Relaxed) >= 3).then_some(())
    })
    .await;
    proxy.stall.store(false, Ordering::Relaxed);
    let (metrics, _) = h.finish(pipeline, 300, Duration::from_secs(12)).await;

    let stalled = proxy.stalled.load(Ordering::Relaxed);
    assert!(api(&metrics, "timeout") >= 3, "each stall timed out");
    assert!(api(&metrics, "timeout") <= stalled);
    assert!(polls(&metrics, "error") >= 3);
    assert_logged_for(
        &h.xmids,
        &[
            "poll failed",
            "GET /report/v1/tsys/authorization: no answer within 1s",
        ],
    );
    canary::assert_no_leaks(&metrics, &h.touched(vec![]));
    h.done(
        "stalled bodies",
        format!(
            "{stalled} stalled, {} timeouts, {} failed polls",
            api(&metrics, "timeout"),
            polls(&metrics, "error")
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_and_truncated_pages_lose_nothing() {
    // Twenty pollers: enough calls in 3 s that both faults are hit (each at 0.3 a call).
    let mut h = Harness::new(105, 20).await;
    h.config.pollers.group_size = GroupSize::Fixed(1);
    h.generate(400);
    let pipeline = h.start().await;
    wait_for_lines(&h.archive(), 400, Duration::from_secs(10)).await;
    h.sim.set_faults(Faults {
        truncate_rate: 0.3,
        malformed_rate: 0.3,
        ..Faults::default()
    });
    h.generate(400);
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.sim.set_faults(Faults::default());
    let (metrics, _) = h.finish(pipeline, 800, Duration::from_secs(12)).await;

    assert!(polls(&metrics, "error") >= 2);
    let malformed = "GET /report/v1/tsys/authorization: malformed response (HTTP 200)";
    let html = assert_logged_for(&h.xmids, &["poll failed", malformed, "body starts: <html>"]);
    let truncated = assert_logged_for(
        &h.xmids,
        &[
            "poll failed",
            malformed,
            "EOF while parsing",
            "body starts: {\"aggregations\"",
        ],
    );
    canary::assert_no_leaks(&metrics, &h.touched(vec![]));
    h.done(
        "malformed and truncated",
        format!(
            "{} failed polls, {} HTML, {} truncated",
            polls(&metrics, "error"),
            html.len(),
            truncated.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_refused_mid_paging_is_renewed_without_failing_the_poll() {
    let mut h = Harness::new(106, 2).await;
    // 3,000 records in pages of 10 at 100 requests/s: a window takes over 3 s to page through,
    // and the server refuses tokens older than 2 s.
    h.config.pollers.group_size = GroupSize::Fixed(2);
    h.config.mxc.page_size = 10;
    h.config.pollers.requests_per_second = 100.0;
    h.config.pollers.burst = 10;
    h.config.pollers.look_back = Duration::from_secs(60);
    h.sim
        .generate(3_000, &h.xmids, h.t0 - minutes(5), h.t0 - minutes(2))
        .unwrap();
    h.sim.set_faults(Faults {
        jwt_max_age_secs: Some(2),
        ..Faults::default()
    });
    let pipeline = h.start().await;
    let metrics = pipeline.metrics.clone();
    // The first poll that reads them (once they settled) pages through all 3,000.
    wait_for(Duration::from_secs(20), || {
        (metrics.records("new") >= 3_000).then_some(())
    })
    .await;
    let first_window = h.sim.stats();
    h.sim.set_faults(Faults::default());
    let (metrics, _) = h.finish(pipeline, 3_000, Duration::from_secs(10)).await;

    assert!(
        first_window.requests_with(AUTHZ, 200) >= 300,
        "the first window took 300 pages"
    );
    assert!(
        first_window.requests_with(AUTHZ, 401) >= 1,
        "the token was refused while paging"
    );
    assert!(first_window.auth_calls >= 2, "and renewed");
    assert_eq!(
        polls(&metrics, "error"),
        0,
        "each refusal cost one re-authentication, not a failed poll"
    );
    assert!(api(&metrics, "401") >= 1);
    assert!(metrics.auth_requests.get() >= 2);
    assert_eq!(metrics.auth_failures.get(), 0);
    canary::assert_logged(&["MXC answered 401; re-authenticating once", AUTHZ]);
    canary::assert_logged(&["obtained a new MXC token"]);
    canary::assert_no_leaks(&metrics, &h.touched(vec![]));
    h.done(
        "JWT mid-paging",
        format!(
            "first window: {} pages, {} refused, {} auth calls",
            first_window.requests_with(AUTHZ, 200),
            first_window.requests_with(AUTHZ, 401),
            first_window.auth_calls
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_merchant_fails_alone_and_catches_up_when_back() {
    let mut h = Harness::new(107, 5).await;
    // Alone only when polled alone: in a group (the default), MXC's error for one member fails
    // the group's polls (docs/operating/polling.md, "Fleets").
    h.config.pollers.group_size = GroupSize::Fixed(1);
    let (gone, healthy) = (h.xmids[0].clone(), h.xmids[1..].to_vec());
    h.generate(250);
    h.sim.set_faults(Faults {
        fail_xmids: vec![gone.clone()],
        ..Faults::default()
    });
    let fault_on = Instant::now();
    let pipeline = h.start().await;
    let metrics = pipeline.metrics.clone();
    h.generate(100);
    let direct = canary::client(&h.sim)
        .report(&query(&gone), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(direct, MxcError::Server { status: 500, .. }),
        "{direct}"
    );

    // Meanwhile the others flow, every record of theirs, none of the failing one.
    let expected_healthy = sim_ids(&h.sim, &healthy, h.t0 - minutes(10), Utc::now()).await;
    let (_, delivered) = wait_for(Duration::from_secs(10), || {
        let ids: HashSet<String> = archived(&h.archive())
            .into_iter()
            .map(|a| a.data.id)
            .collect();
        (ids.len() >= expected_healthy.len()).then_some(ids)
    })
    .await;
    assert_eq!(
        delivered, expected_healthy,
        "the healthy XMIDs lost nothing"
    );
    assert!(archived(&h.archive()).iter().all(|a| a.xmid != gone));
    // The failing XMID failed (its first poll may come up to an interval after the others'),
    // and /metrics names it: its poll lag stays at its start, ten minutes back, while the
    // others' is the poll interval (sampled every second).
    let lag = |xmid: &str| metrics.poll_lag.with_label_values(&[xmid]).get();
    let (_, (gone_lag, healthy_lag)) = wait_for(Duration::from_secs(5), || {
        let healthy_lag = healthy.iter().map(|x| lag(x)).fold(0.0, f64::max);
        (healthy_lag < 60.0 && polls(&metrics, "error") >= 1).then_some((lag(&gone), healthy_lag))
    })
    .await;
    assert!(
        gone_lag > 500.0,
        "the failing XMID's lag shows it: {gone_lag} s (others {healthy_lag} s)"
    );
    tokio::time::sleep_until((fault_on + Duration::from_millis(2500)).into()).await;
    h.sim.set_faults(Faults::default());
    let (metrics, found) = h.finish(pipeline, 350, Duration::from_secs(12)).await;

    assert!(found.iter().any(|a| a.xmid == gone), "caught up when back");
    assert!(api(&metrics, "500") >= 1);
    canary::assert_logged(&[
        "poll failed",
        &format!("xmids={gone} "),
        "MXC server error (HTTP 500)",
        "Simulated failure for this account",
    ]);
    for xmid in &healthy {
        assert_eq!(
            canary::lines_with(&["poll failed", &format!("xmids={xmid} ")]),
            Vec::<String>::new(),
            "a healthy XMID never failed"
        );
    }
    canary::assert_no_leaks(&metrics, &h.touched(vec![shown(&direct)]));
    h.done(
        "merchant removed",
        format!(
            "{} failed polls, {} healthy records during the fault, lag {gone_lag:.0} s vs {healthy_lag:.1} s",
            polls(&metrics, "error"),
            expected_healthy.len()
        ),
    );
}

// ---- Faults on the receiver's side ----

async fn receiver() -> Receiver {
    Receiver::start(
        any_port(),
        ReceiverConfig {
            secrets: vec![canary::webhook_secret()],
            tolerance: Duration::from_secs(300),
            keep: true,
            on_delivery: None,
        },
    )
    .await
    .unwrap()
}

/// A webhook sink `hooks` to `url` taking every record (route `hooks-all`), signed with the
/// canary secret, sending the canary header and the canary credentials in its URL (as Basic
/// auth), retried at once, 0.3 s, 0.6 s, then every second.
fn add_hooks(config: &mut Config, url: &str, timeout: Duration) -> WebhookConfig {
    let mut w = WebhookConfig::new(
        canary::with_url_credentials(url),
        &canary::webhook_secret_text(),
    );
    w.allow_insecure = true;
    w.timeout = timeout;
    w.schedule = [0, 300, 600]
        .into_iter()
        .chain([1_000; 30])
        .map(Duration::from_millis)
        .collect();
    w.jitter = 0.0;
    w.headers.insert(
        canary::HEADER_NAME.into(),
        Secret::new(canary::HEADER_VALUE),
    );
    config
        .sinks
        .insert("hooks".into(), SinkConfig::Webhook(Box::new(w.clone())));
    config
        .routes
        .push(RouteConfig::every_record("hooks-all", "hooks"));
    w
}

/// Record ids delivered (answered 2xx), by webhook-id, with every copy.
fn delivered(receiver: &Receiver) -> HashMap<String, Vec<(String, bytes::Bytes)>> {
    #[derive(serde::Deserialize)]
    struct Hook {
        data: ArchivedData,
    }
    let mut by_id: HashMap<String, Vec<(String, bytes::Bytes)>> = HashMap::new();
    for d in receiver.deliveries() {
        if (200..300).contains(&d.status) {
            let hook: Hook = serde_json::from_slice(&d.body).unwrap();
            by_id
                .entry(d.id.clone())
                .or_default()
                .push((hook.data.id, d.body));
        }
    }
    by_id
}

/// The webhook-ids answered 2xx so far.
fn delivered_ids(receiver: &Receiver) -> HashSet<String> {
    receiver
        .deliveries()
        .into_iter()
        .filter(|d| (200..300).contains(&d.status))
        .map(|d| d.id)
        .collect()
}

/// Every record of `expected` delivered under the one webhook-id its route gives it; any
/// repeat carries that same id and the same body. Returns the largest number of copies.
fn assert_delivered_once_per_id(receiver: &Receiver, expected: &HashSet<String>) -> usize {
    let basic = canary::url_basic_auth();
    for d in receiver.deliveries() {
        assert_eq!(d.verified, Ok(0), "verified with the canary secret");
        assert_eq!(
            d.authorization.as_ref().map(|a| a.expose()),
            Some(basic.as_str()),
            "the URL's credentials, as Basic auth"
        );
    }
    let by_id = delivered(receiver);
    let mut records = HashSet::new();
    for (id, copies) in &by_id {
        let (record, body) = &copies[0];
        assert_eq!(*id, event_id("hooks-all", record), "the route's webhook-id");
        assert!(
            copies.iter().all(|(r, b)| r == record && b == body),
            "a repeat of {id} is the same event"
        );
        records.insert(record.clone());
    }
    assert_eq!(&records, expected, "every record delivered");
    assert_eq!(by_id.len(), expected.len(), "one webhook-id per record");
    by_id.values().map(Vec::len).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_then_200_gets_every_event_once() {
    let mut h = Harness::new(108, 5).await;
    let receiver = receiver().await;
    // The receiver echoes the configured header in its error page: logs must not repeat it.
    receiver.set_behaviour(Behaviour {
        status: 500,
        body: format!(
            "bad request, {}: {}, password {}",
            canary::HEADER_NAME,
            canary::HEADER_VALUE,
            canary::URL_PASSWORD
        ),
        ..Behaviour::default()
    });
    let hooks = add_hooks(&mut h.config, &receiver.url(), Duration::from_secs(15));
    h.generate(150);
    let pipeline = h.start().await;
    let metrics = pipeline.metrics.clone();
    let attempted =
        || -> HashSet<String> { receiver.deliveries().iter().map(|d| d.id.clone()).collect() };
    wait_for(Duration::from_secs(8), || {
        (attempted().len() >= 150).then_some(())
    })
    .await;
    tokio::time::sleep_until((h.started + Duration::from_millis(2500)).into()).await;
    let refused = attempted();
    assert!(receiver.deliveries().iter().all(|d| d.status == 500));
    receiver.set_behaviour(Behaviour::default());
    wait_for(Duration::from_secs(10), || {
        (delivered_ids(&receiver).len() >= 150).then_some(())
    })
    .await;
    let (_, found) = h.finish(pipeline, 150, Duration::from_secs(5)).await;

    let expected: HashSet<String> = found.into_iter().map(|a| a.data.id).collect();
    let copies = assert_delivered_once_per_id(&receiver, &expected);
    assert_eq!(copies, 1, "a 2xx ends an event's deliveries");
    assert_eq!(refused.len(), 150, "every event was refused at first");
    let ids = delivered_ids(&receiver);
    assert!(
        refused.iter().all(|id| ids.contains(id)),
        "each refused webhook-id was delivered later, under that same id"
    );
    assert!(metrics.events("hooks", "failed") >= 150);
    assert_eq!(metrics.events("hooks", "delivered"), 150);
    assert_eq!(metrics.events("hooks", "dead_lettered"), 0);
    let failed = assert_logged_for(
        &h.xmids,
        &[
            "webhook delivery failed",
            "sink=hooks",
            "HTTP 500: bad request",
        ],
    );
    assert!(
        failed.iter().all(|l| l.contains("[redacted]")),
        "the echoed header is scrubbed: {}",
        failed[0]
    );
    canary::assert_no_leaks(
        &metrics,
        &h.touched(vec![debugged(&hooks), debugged(&canary::webhook_secret())]),
    );
    h.done(
        "receiver 500 then 200",
        format!(
            "{} attempts failed, {} delivered",
            metrics.events("hooks", "failed"),
            metrics.events("hooks", "delivered")
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_the_timeout_then_fast_gets_every_event_under_one_id() {
    let mut h = Harness::new(109, 5).await;
    let receiver = receiver().await;
    receiver.set_behaviour(Behaviour {
        delay: Duration::from_millis(2500),
        ..Behaviour::default()
    });
    // The shortest timeout a webhook sink accepts.
    let hooks = add_hooks(&mut h.config, &receiver.url(), Duration::from_secs(1));
    h.generate(100);
    let pipeline = h.start().await;
    let metrics = pipeline.metrics.clone();
    wait_for(Duration::from_secs(8), || {
        (metrics.events("hooks", "failed") >= 1).then_some(())
    })
    .await;
    tokio::time::sleep_until((h.started + Duration::from_secs(3)).into()).await;
    receiver.set_behaviour(Behaviour::default());
    wait_for(Duration::from_secs(10), || {
        (delivered_ids(&receiver).len() >= 100).then_some(())
    })
    .await;
    let (_, found) = h.finish(pipeline, 100, Duration::from_secs(5)).await;

    let expected: HashSet<String> = found.into_iter().map(|a| a.data.id).collect();
    // A request the sink gave up on may still have been answered 2xx: the repeat then carries
    // the same webhook-id, which is what receivers deduplicate on.
    let copies = assert_delivered_once_per_id(&receiver, &expected);
    assert!(metrics.events("hooks", "failed") >= 1);
    assert_eq!(
        metrics.events("hooks", "delivered"),
        100,
        "each confirmed once"
    );
    assert_eq!(metrics.events("hooks", "dead_lettered"), 0);
    let within = format!("no response from {} within 1s", receiver.url());
    assert_logged_for(&h.xmids, &["webhook delivery failed", &within]);
    canary::assert_logged(&[
        "webhook endpoint throttled: pausing all deliveries to it",
        &within,
    ]);
    canary::assert_no_leaks(&metrics, &h.touched(vec![debugged(&hooks)]));
    h.done(
        "receiver slow then fast",
        format!(
            "{} attempts failed, {} delivered, at most {copies} 2xx per webhook-id",
            metrics.events("hooks", "failed"),
            metrics.events("hooks", "delivered")
        ),
    );
}

// ---- Bad records ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_id_of_the_wrong_type_or_over_a_mebibyte_are_counted_and_the_rest_arrive() {
    let mut h = Harness::new(110, 5).await;
    let proxy = Proxy::start(h.sim.base_url()).await;
    proxy.wrong_types.store(true, Ordering::Relaxed);
    h.config.mxc.base_url = proxy.url.clone();
    let (from, now) = (h.t0 - minutes(5), Utc::now());
    h.generate(300);
    let no_id = mxc_sim::Shape {
        with_id: false,
        pad_bytes: 0,
        ..mxc_sim::Shape::NORMAL
    };
    h.sim
        .generate_shaped(5, &h.xmids, from, now, no_id)
        .unwrap();
    let oversize = mxc_sim::Shape {
        with_id: true,
        pad_bytes: 1_100_000,
        ..mxc_sim::Shape::NORMAL
    };
    h.sim
        .generate_shaped(2, &h.xmids, from, now, oversize)
        .unwrap();
    let pipeline = h.start().await;
    // Everything with an id arrives: the normal, the wrongly typed and the oversize records.
    let (metrics, _) = h.finish(pipeline, 302, Duration::from_secs(12)).await;
    let found = lines(&h.archive());

    // Records without an id: counted (each time a poll fetches them), logged with the XMID.
    assert!(
        metrics.records("skipped_no_id") >= 5,
        "{}",
        metrics.records("skipped_no_id")
    );
    assert_logged_for(&h.xmids, &["record without an id skipped", "xmid="]);

    // A field of the wrong type: kept and delivered as sent, counted, logged with XMID and id.
    let wrong: Vec<&Value> = found
        .iter()
        .filter(|l| wrongly_typed(&record_id(l)))
        .collect();
    assert!(
        wrong.len() >= 30,
        "enough wrongly typed records: {}",
        wrong.len()
    );
    let logged = canary::assert_logged(&[
        "record with a field of an unexpected type",
        "field `authorizedAmount`: invalid type: string",
    ]);
    for line in &wrong {
        assert!(
            line["data"]["authorizedAmount"].is_string(),
            "delivered as sent"
        );
        let (xmid, id) = (line["xmid"].as_str().unwrap(), record_id(line));
        assert!(
            logged
                .iter()
                .any(|l| l.contains(&format!("xmid={xmid} record_id={id} "))),
            "{id} logged with its XMID"
        );
    }
    assert!(metrics.records("wrong_type") >= wrong.len() as u64);

    // Over 1 MiB: admitted and delivered whole, counted, logged with XMID, id and size.
    let big: Vec<&Value> = found
        .iter()
        .filter(|l| l["data"].get("simPadding").is_some())
        .collect();
    assert_eq!(big.len(), 2);
    for line in &big {
        assert_eq!(
            line["data"]["simPadding"].as_str().unwrap().len(),
            1_100_000
        );
        let logged = canary::assert_logged(&[
            "record over 1 MiB",
            &format!("xmid={}", line["xmid"].as_str().unwrap()),
            &format!("record_id={}", record_id(line)),
        ]);
        assert!(logged[0].contains(" WARN "), "{}", logged[0]);
        let bytes: usize = logged[0]
            .split("bytes=")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("the size is logged");
        assert!(bytes > 1_100_000 && bytes < 1_200_000, "{bytes}");
    }
    assert!(
        metrics.records("oversize") >= 2,
        "{}",
        metrics.records("oversize")
    );
    canary::assert_no_leaks(&metrics, &h.touched(vec![]));
    h.done(
        "bad records",
        format!(
            "skipped_no_id {}, wrong_type {} ({} records), oversize {}",
            metrics.records("skipped_no_id"),
            metrics.records("wrong_type"),
            wrong.len(),
            metrics.records("oversize")
        ),
    );
}

// ---- The leak check itself ----

#[test]
fn the_leak_check_finds_each_canary_it_looks_for() {
    for secret in canary::secrets() {
        let text = format!("one line\nsomething {secret} inside\nlast line");
        let (found, line) = canary::find_leak(&text, false).expect("found");
        assert!(
            line.contains(&found) && line.starts_with("something"),
            "{line}"
        );
    }
    assert!(canary::find_leak(&format!("user {}", canary::USERNAME), true).is_some());
    assert!(canary::find_leak(&format!("user {}", canary::USERNAME), false).is_none());
    assert!(canary::find_leak("[redacted] x-canary-authorization", true).is_none());
    assert!(canary::find_leak("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", false).is_some());
}
