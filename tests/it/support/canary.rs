//! Secret canaries: distinctive values for every secret a test configures (the MXC API key and
//! password, webhook signing secrets, a webhook header, credentials in a webhook's URL), a global TRACE-level subscriber that
//! captures every log line of the test binary in memory (`tracing` events of every target, and
//! `log` records through tracing-log), and the check that no canary — nor a JWT: any `eyJ`, the
//! base64 of `{"` that starts every JWT — appears in the logs, in `/metrics`, or in the `Display`
//! and `Debug` of what a test touched.
//!
//! Every test of a binary shares the one subscriber and buffer: a test's positive checks look
//! for lines naming its own XMIDs (give each test its own simulator seed), and its leak check
//! covers whatever every test has logged so far.

use std::fmt::{Debug, Display};
use std::sync::{Mutex, MutexGuard, Once};

use base64::Engine;
use mxc::Secret;
use mxc::{Client, ClientConfig, Credentials};
use mxc_relay::signature::WebhookSecret;
use mxc_relay::telemetry::Metrics;
use mxc_sim::{RunningSim, SimConfig};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The MXC API key the simulator expects and the tests configure.
pub const API_KEY: &str = "API_canary_key_4f9b2e7d";
/// The MXC username. Not a secret by the contract (it is an identity, shown in the
/// configuration's `Debug` like the base URL), so it is looked for in logs and metrics only.
pub const USERNAME: &str = "canary-user-0c1d";
pub const PASSWORD: &str = "canary-password-8a6e3f";
/// The key bytes of the webhook signing secret (`whsec_` + their base64).
pub const WEBHOOK_KEY: &[u8] = b"canary-webhook-key-bytes-5e2a91c";
/// A configured webhook header (its value is a secret: `[sinks.NAME.headers]`).
pub const HEADER_NAME: &str = "x-canary-authorization";
pub const HEADER_VALUE: &str = "Bearer canary-header-token-73bd";
/// Credentials given in a webhook's URL (`http://user:password@…`): sent as Basic auth.
pub const URL_USER: &str = "canary-hook-user";
pub const URL_PASSWORD: &str = "canary-url-password-91c";
/// Every JWT starts with the base64 of `{"`.
pub const JWT_MARK: &str = "eyJ";

/// `url` (`http://host…`) with the canary credentials in it.
pub fn with_url_credentials(url: &str) -> String {
    url.replacen("://", &format!("://{URL_USER}:{URL_PASSWORD}@"), 1)
}

/// The `Authorization` value the URL's credentials make.
pub fn url_basic_auth() -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{URL_USER}:{URL_PASSWORD}"));
    format!("Basic {token}")
}

/// `whsec_` + base64 of [`WEBHOOK_KEY`].
pub fn webhook_secret_text() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(WEBHOOK_KEY)
    )
}

pub fn webhook_secret() -> WebhookSecret {
    WebhookSecret::parse(&webhook_secret_text()).expect("the canary is a valid secret")
}

/// What must never appear anywhere: each secret, its distinctive parts, the Security API's
/// Basic header, and a JWT.
pub fn secrets() -> Vec<String> {
    let whsec = webhook_secret_text();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{PASSWORD}"));
    vec![
        basic,
        API_KEY.to_string(),
        PASSWORD.to_string(),
        whsec.trim_start_matches("whsec_").to_string(),
        whsec,
        String::from_utf8_lossy(WEBHOOK_KEY).into_owned(),
        HEADER_VALUE.to_string(),
        HEADER_VALUE.trim_start_matches("Bearer ").to_string(),
        URL_PASSWORD.to_string(),
        url_basic_auth().trim_start_matches("Basic ").to_string(),
        JWT_MARK.to_string(),
    ]
}

/// A quiet simulator (data only from `generate`) expecting the canary credentials.
pub fn sim_config(seed: u64) -> SimConfig {
    SimConfig {
        api_key: API_KEY.to_string(),
        username: USERNAME.to_string(),
        password: PASSWORD.to_string(),
        seed,
        ..super::quiet_sim()
    }
}

pub fn credentials() -> Credentials {
    Credentials {
        api_key: Secret::new(API_KEY),
        username: Some(USERNAME.to_string()),
        password: Secret::new(PASSWORD),
    }
}

/// A client of `sim` with the canary credentials.
pub fn client(sim: &RunningSim) -> Client {
    let mut config = ClientConfig::new(sim.base_url(), credentials());
    config.timeout = std::time::Duration::from_secs(10);
    Client::new(config).expect("client builds")
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static CAPTURE: Once = Once::new();

fn logs_buffer() -> MutexGuard<'static, Vec<u8>> {
    // A test that panicked while appending leaves the buffer usable.
    LOGS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes each event as one line — `LEVEL target: message field=value …` (`%` fields as
/// `Display`, the rest as `Debug`) — into [`LOGS`]. Hand-made rather than the fmt layer, whose
/// thread-local buffer is gone when a thread's last words are logged (a thread-local
/// destructor that logs), and without per-layer filters (thread-local state too).
struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let mut line = format!("{:>5} {}:", meta.level(), meta.target());
        event.record(&mut Fields(&mut line));
        line.push('\n');
        logs_buffer().extend_from_slice(line.as_bytes());
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
        use std::fmt::Write as _;
        match field.name() {
            "message" => write!(self.0, " {value:?}"),
            "log.target" => write!(self.0, " [{value:?}]"),
            // tracing-log's metadata of a `log` record.
            name if name.starts_with("log.") => Ok(()),
            name => write!(self.0, " {name}={value:?}"),
        }
        .unwrap_or_default();
    }
}

/// Installs, once per test binary, the global subscriber: every event of every target at
/// every level (TRACE included) into the shared buffer, and `log` records through
/// tracing-log. Call it first in every test.
pub fn capture_logs() {
    CAPTURE.call_once(|| {
        tracing_subscriber::registry()
            .with(Capture)
            .try_init()
            .expect("the only global subscriber of this test binary");
    });
}

/// Everything captured so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&logs_buffer()).into_owned()
}

/// The captured lines that contain every one of `needles`.
pub fn lines_with(needles: &[&str]) -> Vec<String> {
    logs()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Asserts that some captured line contains every one of `needles`; returns those lines.
#[track_caller]
pub fn assert_logged(needles: &[&str]) -> Vec<String> {
    let found = lines_with(needles);
    assert!(
        !found.is_empty(),
        "no log line contains all of {needles:?}; WARN lines so far:\n{}",
        logs()
            .lines()
            .filter(|l| l.contains(" WARN "))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    found
}

/// Asserts that no file under `dir` (a store: the outboxes, dead letters, cursors) holds a
/// secret or a JWT: what is written to disk must not carry them either.
#[track_caller]
pub fn assert_not_in_files(dir: &std::path::Path) {
    // A JWT's header as the simulator (and most issuers) write it: `{"alg":"…`. Not a bare
    // `eyJ`, which three random bytes of a binary file match now and then.
    let mut forbidden = secrets();
    forbidden.retain(|s| s != JWT_MARK);
    forbidden.push("eyJhbGci".to_string());
    let mut files = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
            continue;
        }
        // As text (ASCII secrets survive the lossy decoding): std's optimized substring search.
        let bytes = std::fs::read(&path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        files += 1;
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "secret {secret:?} stored in {}",
                path.display()
            );
        }
    }
    assert!(files > 0, "{} holds files", dir.display());
}

/// `Display` and `Debug` of something a test touched, for [`assert_no_leaks`].
pub fn shown<T: Display + Debug + ?Sized>(value: &T) -> String {
    format!("{value}\n{value:?}")
}

/// `Debug` of something a test touched (a configuration has no `Display`).
pub fn debugged<T: Debug + ?Sized>(value: &T) -> String {
    format!("{value:?}")
}

/// The first secret (or JWT) in `text`, with the line it is on. The username counts only
/// when `with_username` (it is an identity, shown in a configuration's `Debug`).
pub fn find_leak(text: &str, with_username: bool) -> Option<(String, String)> {
    let mut forbidden = secrets();
    if with_username {
        forbidden.push(USERNAME.to_string());
    }
    forbidden.into_iter().find_map(|secret| {
        let at = text.find(secret.as_str())?;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        Some((secret, text[line_start..line_end].to_string()))
    })
}

/// Asserts that no secret (nor a JWT) is in the captured logs, in `metrics`' `/metrics` text,
/// nor in any of `touched` (`Display`/`Debug` texts: see [`shown`], [`debugged`]); and that the
/// logs hold TRACE lines, so the check cannot pass vacuously.
#[track_caller]
pub fn assert_no_leaks(metrics: &Metrics, touched: &[String]) {
    let logs = logs();
    let lines = logs.lines().count();
    assert!(lines > 10, "the log capture is working: {lines} lines");
    assert!(
        logs.lines().any(|l| l.starts_with("TRACE")),
        "TRACE lines are captured"
    );
    let rendered = metrics.render();
    assert!(
        rendered.contains("mxc_relay_polls_total"),
        "metrics rendered"
    );
    let mut places = vec![("the captured logs", logs.as_str(), true)];
    places.push(("/metrics", rendered.as_str(), true));
    for text in touched {
        places.push(("a Display/Debug text", text.as_str(), false));
    }
    for (place, text, with_username) in places {
        if let Some((secret, line)) = find_leak(text, with_username) {
            panic!("secret {secret:?} leaked into {place}: {line}");
        }
    }
}
