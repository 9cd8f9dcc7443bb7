//! The admin API and the CLI going through it, with the real binary (`mxc-relay run`), the
//! simulator and a verifying webhook receiver: dead letters replayed while polling goes on, an
//! endpoint disabled by a 410 enabled while running, a backfill inside the service (progress,
//! cancel, resume), and the token — refused when missing or wrong, absent from every log,
//! from /metrics and from the store.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_relay::receiver::{Behaviour, Receiver};
use mxc_relay::route::event_id;
use mxc_relay::signature::WebhookSecret;
use mxc_sim::{Faults, RunningSim};
use serde_json::{json, Value};

use crate::support::*;

const TOKEN: &str = "canary-admin-token-0123456789abcdef";
const DECLINES: &str = r#"authorizationResponseStatus != "Approved""#;

/// The service, run by the real binary; SIGTERM and reaped when dropped.
struct Service {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    api: String,
    telemetry: String,
    http: reqwest::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A configuration: `xmids` polled every second from `start`, every record to a file, the
/// declines to a webhook at `url` (retried after 200 ms, then dead-lettered).
fn write_config(
    dir: &Path,
    sim: &RunningSim,
    xmids: &[String],
    start: &str,
    url: &str,
    secret: &WebhookSecret,
    extra_pollers: &str,
) -> PathBuf {
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        format!(
            r#"[mxc]
base_url = "{base}"
[pollers]
xmids = {xmids}
interval = "1s"
start = "{start}"
{extra_pollers}
[store]
path = "{store}"
[delivery]
shutdown_timeout = "5s"
[sinks.archive]
kind = "file"
path = "{archive}"
[sinks.alerts]
kind = "webhook"
url = "{url}"
allow_insecure = true
secrets = ["{secret}"]
schedule = ["0s", "200ms"]
jitter = 0.0
[[routes]]
sink = "archive"
[[routes]]
name = "alerts-declines"
sink = "alerts"
event_type = "authorization.declined"
filter = '{DECLINES}'
[telemetry]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
level = "mxc_relay=trace,info"
"#,
            base = sim.base_url(),
            xmids = serde_json::to_string(xmids).unwrap(),
            store = dir.join("store").display(),
            archive = dir.join("archive.jsonl").display(),
            secret = secret.expose(),
        ),
    )
    .unwrap();
    file
}

/// Starts `mxc-relay run` and waits for its admin API (found through admin.json).
async fn start_service(dir: &Path, config: &Path) -> Service {
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
        .env("MXC_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("relay.log")).unwrap())
        .spawn()
        .unwrap();
    let found = dir.join("store").join("admin.json");
    assert!(
        wait_until(Duration::from_secs(30), || found.exists()).await,
        "the service wrote no admin.json: {}",
        std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default()
    );
    let discovery: Value = serde_json::from_slice(&std::fs::read(&found).unwrap()).unwrap();
    assert!(
        discovery.get("generated_token").is_none(),
        "a configured token is never written"
    );
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap();
    let telemetry = log
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .and_then(|l| l.split("address=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_string())
        .expect("telemetry address in the log");
    Service {
        child,
        dir: dir.to_path_buf(),
        config: config.to_path_buf(),
        api: format!("http://{}", discovery["address"].as_str().unwrap()),
        telemetry: format!("http://{telemetry}"),
        http: reqwest::Client::new(),
    }
}

impl Service {
    async fn get(&self, path: &str) -> Value {
        let answer = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "GET {path}: {}",
            answer.status()
        );
        answer.json().await.unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json().await.unwrap_or(Value::Null),
        )
    }

    /// The CLI, as a user runs it with the token in the environment.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
            .env("MXC_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    }

    async fn dead_letters(&self) -> u64 {
        self.sink("alerts").await["dead_letters"].as_u64().unwrap()
    }

    async fn sink(&self, name: &str) -> Value {
        let state = self.get("/v1/state").await;
        state["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relay.log")).unwrap()
    }
}

async fn receiver(secret: &WebhookSecret, status: u16) -> Receiver {
    let r = keeping_receiver(secret).await;
    r.set_behaviour(answer(status));
    r
}

fn answer(status: u16) -> Behaviour {
    Behaviour {
        status,
        ..Behaviour::default()
    }
}

/// Verified deliveries answered 2xx: how many times each webhook-id came, and its record.
fn accepted(receiver: &Receiver) -> HashMap<String, (usize, String)> {
    let mut out: HashMap<String, (usize, String)> = HashMap::new();
    for d in receiver.deliveries() {
        assert!(
            d.verified.is_ok(),
            "every delivery verifies: {:?}",
            d.verified
        );
        if (200..300).contains(&d.status) {
            let body: Value = serde_json::from_slice(&d.body).unwrap();
            let record = body["data"]["id"].as_str().unwrap().to_string();
            out.entry(d.id.clone()).or_insert((0, record)).0 += 1;
        }
    }
    out
}

/// Every record the simulator holds for `xmids` (the last 50 hours).
async fn records(sim: &RunningSim, xmids: &[String]) -> Vec<Value> {
    let now = Utc::now();
    let query = mxc::ReportQuery::new(xmids.to_vec(), now - chrono::Duration::hours(50), now);
    let mut pager = client(sim).report_pages(query);
    let mut out = Vec::new();
    while let Some(batch) = pager.next_page().await.unwrap() {
        out.extend(batch.records.iter().map(|r| r.to_value()));
    }
    out
}

/// The ids of the declines among them.
async fn declines(sim: &RunningSim, xmids: &[String]) -> HashSet<String> {
    records(sim, xmids)
        .await
        .iter()
        .filter(|r| r["authorizationResponseStatus"] != "Approved")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// A simulator with `merchants` XMIDs, a verifying receiver answering `status`, and the
/// service's configuration (polling from `start`, `extra_pollers` added).
struct Scene {
    sim: RunningSim,
    xmids: Vec<String>,
    receiver: Receiver,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scene {
    async fn new(merchants: usize, status: u16, start: &str, extra_pollers: &str) -> Scene {
        let sim = start_sim(quiet_sim()).await;
        let xmids: Vec<String> = sim.xmids()[..merchants].to_vec();
        let secret = WebhookSecret::generate();
        let receiver = receiver(&secret, status).await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &sim,
            &xmids,
            start,
            &receiver.url(),
            &secret,
            extra_pollers,
        );
        Scene {
            sim,
            xmids,
            receiver,
            dir,
            config,
        }
    }

    /// `n` records that reach MXC now, with times over the last `minutes`.
    fn generate(&self, n: usize, minutes: i64) {
        let now = Utc::now();
        self.sim
            .generate(
                n,
                &self.xmids,
                now - chrono::Duration::minutes(minutes),
                now,
            )
            .unwrap();
    }

    async fn start(&self) -> Service {
        start_service(self.dir.path(), &self.config).await
    }

    fn archive(&self) -> PathBuf {
        self.dir.path().join("archive.jsonl")
    }
}

fn ten_minutes_ago() -> String {
    mxc::instant(Utc::now() - chrono::Duration::minutes(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replayed_while_running_arrive_once_and_the_token_is_guarded() {
    let scene = Scene::new(5, 500, &ten_minutes_ago(), "").await;
    let (sim, xmids, receiver) = (&scene.sim, &scene.xmids, &scene.receiver);
    scene.generate(300, 5);
    let declined = declines(sim, xmids).await;
    assert!(!declined.is_empty());
    let service = scene.start().await;

    // The receiver is down long enough: every decline becomes a dead letter.
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.dead_letters().await < declined.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(service.dead_letters().await, declined.len() as u64);

    // No token, a wrong one of the same length, a shorter one: 401 and nothing replayed.
    let replay = format!("{}/v1/dead-letters/replay", service.api);
    let wrong = "x".repeat(TOKEN.len());
    for token in [None, Some(wrong.as_str()), Some("short")] {
        let mut request = service.http.post(&replay).json(&json!({}));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 401, "token {token:?}");
    }
    assert_eq!(
        service.dead_letters().await,
        declined.len() as u64,
        "nothing done"
    );
    let refused = service
        .log()
        .lines()
        .filter(|l| l.contains("admin request refused") && l.contains("remote=127.0.0.1"))
        .count();
    assert_eq!(refused, 3, "each refusal logged with the remote address");

    // The receiver is back; polling goes on while the CLI replays through the service.
    receiver.set_behaviour(answer(204));
    let archived_before = line_count(&scene.archive());
    scene.generate(100, 1);
    let listed = service.cli(&[
        "dlq",
        "list",
        "--sink",
        "alerts",
        "--event-type",
        "authorization.declined",
        "--json",
    ]);
    assert_eq!(listed.lines().count(), declined.len(), "{listed}");
    let replayed = service.cli(&["dlq", "replay", "--sink", "alerts"]);
    assert!(
        replayed.contains(&format!(
            "replayed {}; the running service sends them now",
            declined.len()
        )),
        "{replayed}"
    );
    let all_declines = declines(sim, xmids).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted(receiver).len() < all_declines.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = accepted(receiver);
    let records: HashSet<String> = got.values().map(|(_, r)| r.clone()).collect();
    assert_eq!(
        records, all_declines,
        "every decline, the replayed and the new"
    );
    for (id, (times, record)) in &got {
        assert_eq!(*times, 1, "{id} delivered once");
        assert_eq!(
            *id,
            event_id("alerts-declines", record),
            "its first webhook-id"
        );
    }
    assert!(
        line_count(&scene.archive()) >= archived_before + 100,
        "polling went on"
    );
    assert!(
        service
            .log()
            .contains("action=POST /v1/dead-letters/replay"),
        "the replay is logged"
    );

    // The token: in no log line (TRACE), not on /metrics, nowhere in the store.
    let metrics = reqwest::get(format!("{}/metrics", service.telemetry))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains(TOKEN));
    assert!(!service.log().contains(TOKEN), "the token is in the log");
    drop(service);
    for entry in walk(&scene.dir.path().join("store")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            entry.display()
        );
    }
    assert!(
        !scene.dir.path().join("store/admin.json").exists(),
        "removed at a clean stop"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_disabled_by_a_410_is_enabled_while_running_and_its_events_go_out() {
    let scene = Scene::new(5, 410, &ten_minutes_ago(), "").await;
    let (sim, xmids, receiver) = (&scene.sim, &scene.xmids, &scene.receiver);
    scene.generate(300, 5);
    let declined = declines(sim, xmids).await;
    let service = scene.start().await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sink = service.sink("alerts").await;
        if !sink["endpoint"]["disabled"].is_null()
            && sink["outbox"].as_u64() == Some(declined.len() as u64)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not disabled with its events waiting: {sink}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = service.cli(&["state"]);
    assert!(
        state.contains("(live, from the running service)") && state.contains("DISABLED"),
        "{state}"
    );

    receiver.set_behaviour(answer(204));
    let enabled = service.cli(&["webhook", "enable", "--sink", "alerts"]);
    assert!(enabled.contains("alerts: enabled"), "{enabled}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted(receiver).len() < declined.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = accepted(receiver);
    let records: HashSet<String> = got.values().map(|(_, r)| r.clone()).collect();
    assert_eq!(records, declined, "every waiting decline went out");
    assert!(got.values().all(|(n, _)| *n == 1), "each once");
    assert!(service.sink("alerts").await["endpoint"]["disabled"].is_null());
    let served = service.get("/v1/openapi.json").await;
    let generated: Value = serde_json::from_str(&mxc_relay::admin::openapi_document()).unwrap();
    assert_eq!(served, generated, "the service serves its OpenAPI document");

    // Paused by hand: nothing goes out until resumed.
    let (status, paused) = service
        .send(
            reqwest::Method::POST,
            "/v1/endpoints/alerts/pause",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    let before = receiver.count();
    scene.generate(200, 1);
    let waiting = declines(sim, xmids).await.len() - declined.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (service.sink("alerts").await["outbox"].as_u64().unwrap() as usize) < waiting
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(receiver.count(), before, "nothing sent while paused");
    let (status, _) = service
        .send(
            reqwest::Method::POST,
            "/v1/endpoints/alerts/resume",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted(receiver).len() < declined.len() + waiting && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted(receiver).len(), declined.len() + waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_inside_the_running_service_sends_each_record_once_cancelled_and_resumed() {
    let t0 = Utc::now();
    // A small request budget: the backfill's pages share it with polling, and take seconds.
    let start = mxc::instant(t0 - chrono::Duration::minutes(160));
    let budget = "requests_per_second = 8\nburst = 1";
    let scene = Scene::new(10, 204, &start, budget).await;
    let (sim, xmids) = (&scene.sim, &scene.xmids);
    generate_history(sim, xmids, t0, 4_000, 500);
    let archive = scene.archive();
    let service = scene.start().await;
    assert!(wait_until(Duration::from_secs(60), || line_count(&archive) >= 500).await);

    let start = json!({"since": "49h"});
    let (status, started) = service
        .send(reqwest::Method::POST, "/v1/backfill", start.clone())
        .await;
    assert_eq!(status, 202, "{started}");
    let (status, refused) = service
        .send(reqwest::Method::POST, "/v1/backfill", start.clone())
        .await;
    assert_eq!(status, 409, "one at a time: {refused}");
    // Records keep arriving while it runs.
    scene.generate(100, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let progress = service.get("/v1/backfill").await;
        if progress["read"].as_u64().unwrap() >= 1_000 {
            break;
        }
        assert_eq!(progress["state"], "running", "{progress}");
        assert!(Instant::now() < deadline, "no progress: {progress}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, cancelled) = service
        .send(reqwest::Method::DELETE, "/v1/backfill", json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        let progress = service.get("/v1/backfill").await;
        if progress["state"] != "running" {
            break progress;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stopped["state"], "cancelled", "{stopped}");
    assert!(stopped["read"].as_u64().unwrap() < 4_600, "{stopped}");

    // The same backfill again, by the CLI (through the service): it resumes and completes,
    // though MXC forgets its scroll every few pages.
    sim.set_faults(Faults {
        expire_scroll_every: 5,
        ..Faults::default()
    });
    let resumed = service.cli(&["backfill", "--since", "49h"]);
    assert!(resumed.contains("inside the running service"), "{resumed}");
    assert!(
        resumed.contains("backfill complete") && resumed.contains("resumed from a checkpoint"),
        "{resumed}"
    );
    assert!(
        service
            .log()
            .contains("the export's scroll expired; resuming from the checkpoint"),
        "the scroll expired on the way"
    );

    let expected: HashSet<String> = records(sim, xmids)
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 4_600);
    assert!(
        wait_until(Duration::from_secs(60), || line_count(&archive)
            >= expected.len())
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = lines(&archive);
    let ids = record_ids(&lines);
    assert_eq!(ids.len(), expected.len(), "every record of the window");
    assert_eq!(lines.len(), expected.len(), "none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_an_admin_api_on_every_interface_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "[pollers]\nxmids = [\"A1\"]\n[sinks.out]\nkind = \"stdout\"\n[[routes]]\nsink = \"out\"\n[admin]\nlisten = \"0.0.0.0:9465\"\n",
    )
    .unwrap();
    let check = |token: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["check-config"])
            .arg(&file)
            .env("MXC_API_KEY", "API_canary")
            .env_remove("MXC_ADMIN_TOKEN");
        if let Some(t) = token {
            c.env("MXC_ADMIN_TOKEN", t);
        }
        c.output().unwrap()
    };
    let refused = check(None);
    let said = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("admin.listen: 0.0.0.0:9465 is reachable from other hosts"),
        "{said}"
    );
    let accepted = check(Some(TOKEN));
    let said = String::from_utf8_lossy(&accepted.stdout).to_string()
        + &String::from_utf8_lossy(&accepted.stderr);
    assert!(accepted.status.success(), "{said}");
    assert!(!said.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_paused_by_hand_stays_paused_across_a_restart_and_catches_up_when_resumed() {
    let scene = Scene::new(4, 204, &ten_minutes_ago(), "group_size = 1").await;
    let (sim, xmids) = (&scene.sim, &scene.xmids);
    let paused = xmids[0].clone();
    let archive = scene.archive();
    let of = |xmid: &str| lines(&archive).iter().filter(|l| l["xmid"] == xmid).count();
    let service = scene.start().await;
    let (status, answer) = service
        .send(
            reqwest::Method::POST,
            &format!("/v1/merchants/{paused}/pause"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, answer["changed"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, _) = service
        .send(
            reqwest::Method::POST,
            "/v1/merchants/000000000000/pause",
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "an XMID not polled here");

    scene.generate(200, 2);
    // The others' records arrive; the paused merchant's do not, across a restart too.
    assert!(
        wait_until(Duration::from_secs(30), || xmids[1..]
            .iter()
            .all(|x| of(x) > 0))
        .await,
        "the other merchants are polled"
    );
    drop(service);
    let service = scene.start().await;
    let state = service.get("/v1/state").await;
    assert_eq!(
        state["paused_merchants"],
        json!([paused]),
        "kept in the store"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(of(&paused), 0, "not polled while paused");
    let (status, refused) = service
        .send(
            reqwest::Method::POST,
            &format!("/v1/merchants/{paused}/poll"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");

    // Resumed: it catches up from its cursor, every record once.
    let (status, _) = service
        .send(
            reqwest::Method::POST,
            &format!("/v1/merchants/{paused}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let total = lines(&archive).len();
    let all = records(sim, xmids).await.len();
    assert!(
        wait_until(Duration::from_secs(30), || lines(&archive).len() >= all).await,
        "{total} then {} of {all}",
        lines(&archive).len()
    );
    assert!(of(&paused) > 0);
    let (status, polled) = service
        .send(
            reqwest::Method::POST,
            &format!("/v1/merchants/{paused}/poll"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{polled}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = lines(&archive);
    assert_eq!(record_ids(&lines).len(), lines.len(), "none twice");
    assert_eq!(lines.len(), all);
}

/// Someone holds the admin port with 200 connections that never finish their headers: an
/// operator's request still gets in and is answered within a second (at the cap, a new
/// connection closes one that waits on its client, not itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_half_open_connections_do_not_lock_an_operator_out() {
    use tokio::io::AsyncWriteExt;
    let scene = Scene::new(2, 204, &ten_minutes_ago(), "").await;
    let service = scene.start().await;
    let address = service.api.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /v1/state HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // `get` asserts a 2xx answer, with the token.
    let state = tokio::time::timeout(Duration::from_secs(1), service.get("/v1/state"))
        .await
        .expect("no answer within 1 s while 200 connections are held");
    assert!(state["sinks"].is_array(), "{state}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_of_a_large_fleet_comes_in_pages_with_a_summary_of_every_cursor() {
    let scene = Scene::new(7, 204, &ten_minutes_ago(), "group_size = 1").await;
    let service = scene.start().await;
    let count = |state: &Value| state["cursor_summary"]["count"].as_u64().unwrap_or(0);
    let mut state = Value::Null;
    for _ in 0..60 {
        state = service.get("/v1/state?limit=0").await;
        if count(&state) == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(count(&state), 7, "one cursor per XMID: {state}");
    assert_eq!(state["cursors"], json!([]), "limit 0: the summary only");
    assert!(state.get("cursors_next").is_none(), "{state}");

    // Pages of 3, by XMID: each cursor once, in order, then no next page.
    let mut listed: Vec<String> = Vec::new();
    let mut path = "/v1/state?limit=3".to_string();
    let mut pages = 0;
    loop {
        let page = service.get(&path).await;
        pages += 1;
        let cursors = page["cursors"].as_array().unwrap();
        assert!(cursors.len() <= 3, "{page}");
        listed.extend(
            cursors
                .iter()
                .map(|c| c["xmid"].as_str().unwrap().to_string()),
        );
        match page["cursors_next"].as_str() {
            Some(next) => path = format!("/v1/state?limit=3&after={next}"),
            None => break,
        }
        assert!(pages < 5, "pages never end: {listed:?}");
    }
    assert_eq!(pages, 3);
    let mut expected = scene.xmids.clone();
    expected.sort();
    assert_eq!(listed, expected, "every XMID once, in order");

    // The most lagging first: the first is the summary's worst.
    let worst = service.get("/v1/state?limit=2&sort=lag").await;
    let cursors = worst["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 2);
    let summary = &worst["cursor_summary"];
    assert!(cursors[0]["lag_seconds"].as_u64() >= cursors[1]["lag_seconds"].as_u64());
    assert_eq!(cursors[0]["lag_seconds"], summary["lag_max_seconds"]);
    assert!(summary["lag_p50_seconds"].as_u64() <= summary["lag_p99_seconds"].as_u64());
    assert!(worst.get("cursors_next").is_none(), "{worst}");

    // The CLI says how many it left out, and summarises them all.
    let text = service.cli(&["state", "--limit", "2", "--sort", "lag"]);
    assert!(text.contains("(2 of 7 listed"), "{text}");
    assert!(text.contains("cursors: 7; lag p50"), "{text}");

    // A token given in the query (an easy mistake) is refused, and the audit line names the
    // query's keys, not its values.
    let refused = service
        .http
        .get(format!(
            "{}/v1/state?limit=1&access_token={TOKEN}",
            service.api
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        wait_until(Duration::from_secs(5), || service
            .log()
            .contains("GET /v1/state?limit=…&access_token=…"))
        .await,
        "the refusal is audited with the query's keys"
    );
    assert!(
        !service.log().contains(TOKEN),
        "the token is not in the log"
    );
}
