//! The command line, run as a user runs it: the real binary, real processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use chrono::{Duration, DurationRound, Utc};
use mxc_sim::SimConfig;

use crate::support::*;

#[tokio::test]
async fn sim_prints_its_address_first_and_serves_the_api() {
    let mut child = Command::new(BIN)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--merchants",
            "3",
            "--rate",
            "50",
            "--backlog",
            "2m",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = mxc::Client::new(mxc::ClientConfig::new(base.clone(), credentials())).unwrap();
    let roster = client.roster().await.unwrap();
    assert_eq!(roster.iter().filter(|m| m.active).count(), 3);
    let xmids = roster
        .iter()
        .filter(|m| m.active)
        .map(|m| m.xmid.clone())
        .collect();
    let page = client
        .report(
            &mxc::ReportQuery::new(xmids, Utc::now() - Duration::minutes(15), Utc::now()),
            0,
        )
        .await
        .unwrap();
    // 2 minutes at 50/s ≈ 6,000 records (Poisson arrivals).
    assert!(
        (5_000..7_000).contains(&page.total_records.unwrap()),
        "{}",
        page.total_records.unwrap()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn check_config_lists_every_error_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[mxc]\npage_size = 0\n[pollers]\ninterval = \"0s\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&file)
        .env_remove("MXC_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[0],
        format!("{}: 5 errors", file.display()),
        "{stderr}"
    );
    assert_eq!(
        &lines[1..],
        [
            "  mxc.api_key: missing: set MXC_API_KEY in the environment (or mxc.api_key in the file)",
            "  mxc.page_size: must be 1 to 100, got 0",
            "  pollers.xmids: list at least one XMID to poll (or \"roster\")",
            "  pollers.interval: must be at least 1s, got 0s",
            "  routes: add at least one [[routes]] entry (a sink and, optionally, a filter)",
        ]
    );
}

#[test]
fn check_config_accepts_the_example_with_the_key_in_the_environment() {
    let out = Command::new(BIN)
        .args(["check-config", "config/mxc-relay.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MXC_API_KEY", "API_canary_check_config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK — 2 XMID(s)") && stdout.contains("mxc.api_key from MXC_API_KEY"),
        "{stdout}"
    );
    assert!(!stdout.contains("API_canary_check_config"));
}

#[test]
fn check_config_checks_what_run_needs_of_the_machine_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    let config = |store: &std::path::Path, protocol: &str| {
        format!(
            "[mxc]\napi_key = \"API_x\"\n[pollers]\nxmids = [\"A1\"]\n[store]\npath = {:?}\n\
             [sinks.k]\nkind = \"kafka\"\nbrokers = \"localhost:9092\"\n\
             [sinks.k.properties]\n\"security.protocol\" = \"{protocol}\"\n\"sasl.password\" = \"canary-kafka-password\"\n\
             [[routes]]\nsink = \"k\"\n",
            store.display().to_string()
        )
    };
    let check = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg(&file)
            .env_remove("MXC_API_KEY")
            .output()
            .unwrap()
    };
    // A store to be created two levels down, librdkafka content: fine, and nothing created.
    let store = dir.path().join("not").join("yet");
    std::fs::write(&file, config(&store, "plaintext")).unwrap();
    let out = check(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("not").exists(),
        "check-config created the store"
    );

    // A file where the store should be, and a protocol librdkafka does not know: both said,
    // by check-config and by run alike, before anything starts.
    let taken = dir.path().join("taken");
    std::fs::write(&taken, "").unwrap();
    std::fs::write(&file, config(&taken, "bogus")).unwrap();
    let expected = format!(
        "{}: 2 errors\n  store.path: {taken:?} is a file, not a directory\n  sinks.k.properties: librdkafka refused the property \"security.protocol\" (its value is not shown)",
        file.display()
    );
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = check(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("canary-kafka-password"), "{stderr}");
    }
}

const KEY: &str = "API_canary_key_7f3a";
const USER: &str = "canary-user";
const PASSWORD: &str = "canary-password-91c2";

async fn canary_sim() -> mxc_sim::RunningSim {
    start_sim(SimConfig {
        api_key: KEY.into(),
        username: USER.into(),
        password: PASSWORD.into(),
        ..quiet_sim()
    })
    .await
}

fn fetch(base: &str, xmid: &str, password: &str) -> std::process::Output {
    Command::new(BIN)
        .args([
            "fetch",
            "--base-url",
            base,
            "--xmid",
            xmid,
            "--since",
            "2h",
            "--page-size",
            "40",
        ])
        .env("MXC_API_KEY", KEY)
        .env("MXC_USERNAME", USER)
        .env("MXC_PASSWORD", password)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap()
}

fn assert_no_secret(text: &str) {
    for secret in [KEY, PASSWORD] {
        assert!(!text.contains(secret), "secret {secret:?} leaked:\n{text}");
    }
    // Every JWT starts with the base64 of `{"`: none may be printed.
    assert!(!text.contains("eyJ"), "a JWT leaked:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_prints_json_lines_and_logs_no_secret_even_at_trace() {
    let sim = canary_sim().await;
    let xmid = sim.xmids()[1].clone();
    sim.generate(
        123,
        std::slice::from_ref(&xmid),
        Utc::now() - Duration::minutes(90),
        Utc::now(),
    )
    .unwrap();
    let base = sim.base_url();
    let out = tokio::task::spawn_blocking(move || fetch(&base, &xmid, PASSWORD))
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 123);
    assert!(
        stderr.contains("fetched 123 record(s) in 4 page(s) for 1 XMID(s)"),
        "{stderr}"
    );
    assert!(
        stderr.lines().count() > 20,
        "trace logging was on: {stderr}"
    );
    assert_no_secret(&stderr);
    assert_no_secret(&stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_is_one_clear_line_without_the_secret() {
    let sim = canary_sim().await;
    let base = sim.base_url();
    let xmid = sim.xmids()[0].clone();
    let out = tokio::task::spawn_blocking(move || fetch(&base, &xmid, "canary-wrong-password-55"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(
            "error: fetch failed: MXC Security API rejected the credentials (HTTP 401)"
        ),
        "{last}"
    );
    assert!(
        last.contains("MXC_PASSWORD") && last.contains("Bad credentials"),
        "{last}"
    );
    assert_no_secret(&stderr);
    assert!(!stderr.contains("canary-wrong-password-55"));
    assert_eq!(sim.stats().auth_calls, 1);
}

/// `fetch --export` of `[since, until]` with extra arguments: (stdout, stderr).
fn export(
    base: &str,
    xmids: &[String],
    since: &str,
    until: &str,
    extra: &[&str],
) -> (Vec<u8>, String) {
    let out = Command::new(BIN)
        .args(["fetch", "--export", "--base-url", base, "--xmid"])
        .arg(xmids.join(","))
        .args(["--since", since, "--until", until, "--page-size", "7"])
        .args(extra)
        .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{extra:?}: {stderr}");
    (out.stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_export_prints_what_one_scroll_prints() {
    let sim = start_sim(quiet_sim()).await;
    let xmids = sim.xmids()[..3].to_vec();
    let ms = Duration::milliseconds;
    let t0 = (Utc::now() - Duration::hours(6))
        .duration_trunc(Duration::seconds(1))
        .unwrap();
    let t4 = t0 + Duration::hours(4);
    sim.generate(400, &xmids, t0, t4).unwrap();
    // Four slices of [t0, t4] start at t0 + 1 h, 2 h, 3 h (ReportQuery::split): records on
    // both sides of each boundary and at the window's ends, three at each such instant.
    let mut inside = 400;
    for h in 0..=4 {
        for at in [-1, 0, 1].map(|d| t0 + Duration::hours(h) + ms(d)) {
            sim.generate(3, &xmids, at, at).unwrap();
            if (t0..=t4).contains(&at) {
                inside += 3;
            }
        }
    }
    let (since, until) = (mxc::instant(t0), mxc::instant(t4));
    let base = sim.base_url();
    let runs = tokio::task::spawn_blocking(move || {
        [
            &["--parallel", "1"][..],
            &["--parallel", "4"],
            &["--parallel", "4", "--buffer-mib", "0"],
        ]
        .map(|extra| export(&base, &xmids, &since, &until, extra))
    })
    .await
    .unwrap();

    let (one, stderr) = &runs[0];
    assert!(
        stderr.contains(&format!("fetched {inside} record(s)")) && !stderr.contains("slices"),
        "{stderr}"
    );
    let records: Vec<serde_json::Value> = std::str::from_utf8(one)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), inside);
    let times: Vec<_> = records
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r["transactionDateAndTime"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    let ids: std::collections::HashSet<_> = records.iter().map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), inside, "each record once");
    for (stdout, stderr) in &runs[1..] {
        assert!(
            stderr.contains(&format!("fetched {inside} record(s) in "))
                && stderr.contains("for 3 XMID(s)")
                && stderr.contains("4 slices of the window read at once"),
            "{stderr}"
        );
        assert!(
            stdout == one,
            "the same records in the same order, byte for byte"
        );
    }
}

#[test]
fn parallel_is_an_export_option() {
    let out = Command::new(BIN)
        .args(["fetch", "--xmid", "X1", "--since", "1h", "--parallel", "2"])
        .env("MXC_API_KEY", "API_x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--export"), "{stderr}");
}

#[test]
fn fetch_without_a_key_says_how_to_give_one() {
    let out = Command::new(BIN)
        .args(["fetch", "--xmid", "X1", "--since", "1h"])
        .env_remove("MXC_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: no API key: set MXC_API_KEY, or pass --config FILE"
    );
}

#[test]
fn the_demo_streams_authorizations_and_stops_by_itself() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--duration",
            "6s",
            "--merchants",
            "5",
            "--rate",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (alerts, lines): (Vec<&str>, Vec<&str>) =
        stdout.lines().partition(|l| l.starts_with("  ↳ webhook "));
    // Five minutes of history at 5/s (1,500 records) stream first, then live traffic (30 in
    // 6 s): hundreds of lines even from a debug build on a busy machine, which prints 700 to
    // 900 of them at 20/s.
    assert!(lines.len() > 300, "{} lines", lines.len());
    // Every decline (and chargeback, rejected batch, returned deposit) also came as a signed
    // webhook, verified by the demo's receiver.
    let urgent = |l: &&&str| {
        l.contains("DECLINED")
            || l.contains("CHARGEBACK")
            || l.ends_with(", Rejected")
            || l.contains("  Returned")
    };
    let declines = lines.iter().filter(urgent).count();
    assert_eq!(alerts.len(), declines, "{stdout}");
    assert!(
        alerts
            .iter()
            .all(|a| a.contains("webhook verified (secret #1)")
                && [
                    "authorization.declined",
                    "dispute.chargeback",
                    "batch.rejected",
                    "ach.returned"
                ]
                .iter()
                .any(|t| a.contains(t))),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.contains("DECLINED")),
        "declines are shown"
    );
    assert!(
        lines.iter().all(
            |l| l.contains('$') && (l.contains("Approved") || l.contains("DECLINED"))
                || l.contains("RETRIEVAL REQUEST")
                || l.contains("CHARGEBACK")
                || l.contains(" sales, ")
                || l.contains("ACH deposit")
        ),
        "{stdout}"
    );
    let authorizations = lines
        .iter()
        .filter(|l| l.contains("Approved") || l.contains("DECLINED"))
        .count();
    let total = stderr.lines().last().unwrap_or_default();
    assert!(
        total.starts_with(&format!("total: {authorizations} authorizations")),
        "{total}"
    );
    assert!(
        total.contains("outbox 0"),
        "everything delivered before exit: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_cleanly_on_sigterm_and_state_shows_the_store() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..3].to_vec();
    sim.generate(60, &xmids, Utc::now() - Duration::minutes(5), Utc::now())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    let telemetry = free_address();
    std::fs::write(
        &config,
        format!(
            "[mxc]\nbase_url = \"{}\"\n[pollers]\nxmids = {}\ninterval = \"1s\"\nstart = \"{}\"\n[store]\npath = \"{}\"\n[sinks.archive]\nkind = \"file\"\npath = \"{}\"\n[[routes]]\nsink = \"archive\"\n[telemetry]\nlisten = \"{telemetry}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            sim.base_url(),
            serde_json::to_string(&xmids).unwrap(),
            mxc::instant(Utc::now() - Duration::minutes(10)),
            dir.path().join("store").display(),
            dir.path().join("out.jsonl").display(),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out_file = dir.path().join("out.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::fs::read_to_string(&out_file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 60
    {
        assert!(
            std::time::Instant::now() < deadline,
            "records did not arrive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The telemetry endpoints: alive, ready, and the metrics say what happened.
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{telemetry}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let ready = get("/readyz").await.unwrap();
        let (status, text) = (ready.status(), ready.text().await.unwrap());
        if status == 200 {
            assert!(text.starts_with("ready\nstore: ok"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for series in [
        "mxc_relay_records_total{outcome=\"new\"} 60",
        "mxc_relay_events_total{outcome=\"delivered\",sink=\"archive\"} 60",
        "mxc_relay_polls_total{outcome=\"ok\"}",
        "mxc_relay_poll_lag_seconds{xmid=",
        "mxc_relay_poll_lag_max_seconds",
        "mxc_relay_poll_lag_percentile_seconds{percentile=\"99\"}",
        "mxc_relay_outbox_events{sink=\"archive\"}",
        "mxc_relay_dead_letters{sink=\"archive\"}",
        "mxc_relay_seen_ids",
        "mxc_relay_token_expiry_seconds",
        "mxc_relay_auth_requests_total",
        "mxc_relay_build_info{version=",
        "mxc_relay_auth_failures_total 0",
        "mxc_relay_api_requests_total{endpoint=\"/report/v1/tsys/authorization\",status=\"200\"}",
        "mxc_relay_api_request_duration_seconds_bucket{endpoint=\"/report/v1/tsys/authorization\"",
        "mxc_relay_delivery_latency_seconds_count{sink=\"archive\"} 60",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    assert!(!metrics.contains(mxc_sim::DEFAULT_API_KEY));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("stopping") && stderr.contains("stopped cleanly"),
        "{stderr}"
    );

    let state = Command::new(BIN)
        .args(["state", "--config"])
        .arg(&config)
        .env("MXC_API_KEY", "x")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&state.stdout);
    assert!(
        state.status.success(),
        "{}",
        String::from_utf8_lossy(&state.stderr)
    );
    for xmid in &xmids {
        assert!(text.contains(xmid.as_str()), "{text}");
    }
    assert!(text.contains("seen record ids: 60"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["archive", "0", "0", "0"]),
        "{text}"
    );
}

#[test]
fn webhook_verify_checks_the_published_vector_and_secret_makes_usable_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"test": 2432232314}"#).unwrap();
    let verify = |secrets: &str, signature: &str| {
        Command::new(BIN)
            .args([
                "webhook",
                "verify",
                "--id",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "--timestamp",
                "1614265330",
            ])
            .args(["--signature", signature, "--no-timestamp-check", "--body"])
            .arg(&body)
            .env("MXC_WEBHOOK_SECRET", secrets)
            .output()
            .unwrap()
    };
    let generated = Command::new(BIN)
        .args(["webhook", "secret"])
        .output()
        .unwrap();
    let other = String::from_utf8(generated.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(other.starts_with("whsec_") && other.len() > 40, "{other}");

    // Rotation: the receiver holds the new secret and the old one; the old one signed.
    let ok = verify(
        &format!("{other} whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "valid: signed with secret #2"
    );

    let bad = verify(&other, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.trim(), "invalid: no v1 signature in webhook-signature matches the body with any of the 1 secret(s)");
    assert!(!stderr.contains(&other));
}

#[tokio::test]
async fn webhook_listen_accepts_signed_deliveries_and_refuses_the_rest() {
    use mxc_relay::signature::{signature_header, WebhookSecret};
    let secret = WebhookSecret::generate();
    let mut child = Command::new(BIN)
        .args(["webhook", "listen", "--listen", "127.0.0.1:0"])
        .env("MXC_WEBHOOK_SECRET", secret.expose())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let base = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();

    let body = r#"{"type":"authorization.declined","timestamp":"2026-11-28T10:00:00Z","data":{"accountNumber":"887000000001","authorizedAmount":612.5,"authorizationResponseStatus":"Declined","authorizationResponseDescription":"Insufficient funds"}}"#;
    let now = Utc::now().timestamp();
    let http = reqwest::Client::new();
    let send = |signature: String, timestamp: i64| {
        http.post(format!("{base}/alerts"))
            .header("webhook-id", "evt_0123")
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
    };
    let good = send(
        signature_header(
            std::slice::from_ref(&secret),
            "evt_0123",
            now,
            body.as_bytes(),
        ),
        now,
    )
    .await
    .unwrap();
    assert_eq!(good.status(), 204);
    let forged = send(
        signature_header(
            &[WebhookSecret::generate()],
            "evt_0123",
            now,
            body.as_bytes(),
        ),
        now,
    )
    .await
    .unwrap();
    assert_eq!(forged.status(), 401);
    let stale = send(
        signature_header(
            std::slice::from_ref(&secret),
            "evt_0123",
            now - 3600,
            body.as_bytes(),
        ),
        now - 3600,
    )
    .await
    .unwrap();
    assert_eq!(stale.status(), 401);
    assert!(stale.text().await.unwrap().contains("at most 300 s"));

    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "verified (secret #1)  evt_0123  authorization.declined  xmid=887000000001  612.5 Declined  Insufficient funds"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("refused evt_0123").count(), 2, "{stderr}");
    assert!(!stderr.contains(secret.expose()));
}
