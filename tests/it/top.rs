//! `mxc-relay top`: the view on ratatui's test backend at 80×24 and 200×60 (and too small), and
//! the real binary under tmux against a running service: the screen shows the merchants' lag
//! and a sink's dead letters, and the replay key replays them to the receiver.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use mxc_relay::receiver::Behaviour;
use mxc_relay::top::{self, Counters, Key, Model, Sample};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;

use crate::support::canary::{self, API_KEY, PASSWORD, USERNAME};
use crate::support::{free_address, keeping_receiver, wait_until, BIN};

/// A service's picture: three merchants (one paused), Kafka and a failing webhook endpoint
/// with dead letters, and two scrapes a second apart.
fn model() -> Model {
    let state = json!({
        "store": "/var/lib/mxc-relay",
        "live": true,
        "cursors": [
            { "xmid": "887000000003", "resource": "authorizations", "polled_up_to": "2026-12-07T10:00:00Z", "lag_seconds": 754,
              "last_error": { "at": "2026-12-07T10:00:05Z", "error": "MXC server error (HTTP 503)" } },
            { "xmid": "887000000001", "resource": "authorizations", "polled_up_to": "2026-12-07T10:12:00Z", "lag_seconds": 34 },
            { "xmid": "887000000002", "resource": "disputes", "polled_up_to": "2026-12-07T10:12:30Z", "lag_seconds": 4 }
        ],
        "cursor_summary": { "count": 3, "lag_p50_seconds": 34, "lag_p99_seconds": 754, "lag_max_seconds": 754, "most_lagging": null },
        "seen_ids": 1234,
        "sinks": [
            { "name": "kafka", "outbox": 12, "retrying": 0, "dead_letters": 0, "endpoint": null },
            { "name": "alerts", "outbox": 3, "retrying": 2, "dead_letters": 5,
              "endpoint": { "disabled": null, "paused_by_hand": false, "failing_since": "2026-12-07T10:01:02Z" } }
        ],
        "orphan_outboxes": [],
        "paused_merchants": ["887000000002"],
        "roster_merchants": null,
        "cluster_shards": null,
        "backfill": null
    });
    let scrape = |new: f64, delivered: f64| {
        Counters::parse(&format!(
            "mxc_relay_records_total{{outcome=\"new\"}} {new}\nmxc_relay_events_total{{outcome=\"delivered\",sink=\"kafka\"}} {delivered}\nmxc_relay_events_enqueued_total{{event_type=\"authorization.created\",sink=\"kafka\"}} {new}\nmxc_relay_events_enqueued_total{{event_type=\"dispute.created\",sink=\"kafka\"}} {delivered}\nmxc_relay_token_expiry_seconds 540\n"
        ))
    };
    let mut model = Model::new("http://127.0.0.1:9465");
    let start = Instant::now();
    model.update(Sample {
        at: start,
        state: serde_json::from_value(state.clone()).unwrap(),
        counters: Some(scrape(100.0, 90.0)),
    });
    model.update(Sample {
        at: start + Duration::from_secs(1),
        state: serde_json::from_value(state).unwrap(),
        counters: Some(scrape(142.0, 130.0)),
    });
    model
}

fn screen(width: u16, height: u16, model: &Model) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| top::render(f, model, false)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn at_80x24_and_200x60_every_section_is_drawn() {
    let model = model();
    for (w, h) in [(80, 24), (200, 60)] {
        let text = screen(w, h, &model);
        for wanted in [
            "mxc-relay top",
            "connected",
            "token expires in 9m00s",
            "new 42.0",
            "events/s by type  authorization.created 42.0 · dispute.created 40.0",
            "p99 12m34s",
            "887000000003",
            "12m34s",
            "paused",
            "alerts",
            "failing since 10:01:02",
            "failing since 10:00:05",
            "delivered/s",
            "40.0",
            "q quit",
        ] {
            assert!(text.contains(wanted), "{w}×{h}: no {wanted:?} in\n{text}");
        }
        if w >= 200 {
            assert!(
                text.contains("failing since 10:00:05: MXC server error (HTTP 503)"),
                "{text}"
            );
        }
        // The most lagging first, as the service listed them.
        assert!(text.find("887000000003") < text.find("887000000001"));
    }
}

#[test]
fn in_a_cluster_its_instances_are_shown() {
    let mut model = model();
    model.cluster = Some(Ok(vec![
        top::InstanceRow {
            instance: "relay-a".into(),
            shards: 6,
            merchants: 50_012,
            state: "live",
        },
        top::InstanceRow {
            instance: "relay-b".into(),
            shards: 0,
            merchants: 0,
            state: "gone",
        },
    ]));
    for (w, h) in [(80, 24), (200, 60)] {
        let text = screen(w, h, &model);
        assert!(text.contains("cluster  1 live: relay-a 6 shards"), "{text}");
        assert!(text.contains("887000000003"), "{text}");
    }
    assert!(top::plain(&model).contains("relay-b (gone)"));
    model.cluster = Some(Err("no broker answered".into()));
    assert!(screen(80, 24, &model).contains("cannot read the state topic: no broker answered"));
}

#[test]
fn a_terminal_too_small_says_so() {
    let text = screen(50, 12, &model());
    assert!(text.contains("terminal too small: 50×12"), "{text}");
    assert!(!text.contains("887000000003"));
}

#[test]
fn keys_select_filter_confirm_and_help() {
    let mut model = model();
    // Replay asks first, for the selected sink.
    model.key(Key::Tab);
    model.key(Key::Down);
    assert_eq!(model.key(Key::Char('r')), top::Command::Nothing);
    let text = screen(80, 24, &model);
    assert!(
        text.contains("replay the dead letters of alerts (5 when last refreshed)? y to confirm"),
        "{text}"
    );
    match model.key(Key::Char('y')) {
        top::Command::Send(action) => assert_eq!(action.path(), "/v1/dead-letters/replay"),
        other => panic!("{other:?}"),
    }
    // A paused merchant is resumed, a running one paused.
    model.key(Key::Tab);
    model.key(Key::Char('/'));
    for c in "0002".chars() {
        model.key(Key::Char(c));
    }
    model.key(Key::Enter);
    assert_eq!(model.merchants().len(), 1);
    model.key(Key::Char('p'));
    assert_eq!(
        model.key(Key::Char('y')),
        top::Command::Send(top::Action::Merchant {
            xmid: "887000000002".into(),
            pause: false
        })
    );
    // Any other key cancels; `?` shows the keys.
    model.key(Key::Char('p'));
    model.key(Key::Char('n'));
    assert_eq!(model.status.as_deref(), Some("cancelled"));
    model.key(Key::Char('?'));
    assert!(screen(80, 24, &model).contains("keys (any key closes)"));
    // Disconnected: the last picture stays, marked.
    model.failed("connection refused".into());
    assert!(screen(80, 24, &model).contains("disconnected, retrying: connection refused"));
}

#[test]
fn once_prints_the_same_sections_as_text() {
    let text = top::plain(&model());
    assert!(text.contains("records/s  new 42.0"), "{text}");
    assert!(
        text.contains("887000000003         authorizations       12m34s"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("alerts") && l.contains(" 5  failing since")),
        "{text}"
    );
}

fn write_config(
    dir: &Path,
    sim: &str,
    xmids: &[String],
    receiver: &str,
    metrics: std::net::SocketAddr,
) -> std::path::PathBuf {
    let path = dir.join("relay.toml");
    let start = mxc::instant(Utc::now() - chrono::Duration::minutes(20));
    std::fs::write(
        &path,
        format!(
            r#"[mxc]
base_url = "{sim}"
username = "{USERNAME}"

[pollers]
xmids = {xmids}
interval = "1s"
start = "{start}"

[store]
path = "{store}"

[sinks.alerts]
kind = "webhook"
url = "{receiver}"
allow_insecure = true
secrets_env = "TOP_WEBHOOK_SECRETS"
# One attempt, then a dead letter.
schedule = ["0s"]

[[routes]]
sink = "alerts"
event_type = "authorization.declined"
filter = 'authorizationResponseStatus != "Approved"'

[telemetry]
listen = "{metrics}"

[admin]
listen = "127.0.0.1:0"
"#,
            xmids = serde_json::to_string(xmids).unwrap(),
            store = dir.join("store").display(),
        ),
    )
    .unwrap();
    path
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tmux_top_shows_lag_and_dead_letters_and_replays_them() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "tmux is missing: .ci/test installs it"
        );
        eprintln!("skipped: no tmux");
        return;
    }
    let sim = mxc_sim::start(mxc_sim::SimConfig {
        decline_rate: 1.0,
        ..canary::sim_config(41)
    })
    .await
    .unwrap();
    let xmids: Vec<String> = sim.xmids()[..3].to_vec();
    let now = Utc::now();
    sim.generate(4, &xmids, now - chrono::Duration::minutes(5), now)
        .unwrap();
    let mut receiver = keeping_receiver(&canary::webhook_secret()).await;
    receiver.set_behaviour(Behaviour {
        status: 500,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sim.base_url(),
        &xmids,
        &receiver.url(),
        free_address(),
    );
    let mut service = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("MXC_API_KEY", API_KEY)
        .env("MXC_PASSWORD", PASSWORD)
        .env("TOP_WEBHOOK_SECRETS", canary::webhook_secret_text())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("relay.log")).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || receiver.deliveries().len() >= 4).await,
        "four declines refused once each"
    );

    let session = format!("mxc-top-{}", std::process::id());
    let errors = dir.path().join("top.err");
    let command = format!(
        "NO_COLOR=1 {BIN} top --config {} --interval 500ms 2>{}; echo top exited: $?; sleep 10",
        config.display(),
        errors.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    let capture = || tmux(&["capture-pane", "-p", "-t", &session]);
    let shown = wait_until(Duration::from_secs(20), || {
        let screen = capture();
        screen.contains("alerts")
            && screen
                .lines()
                .any(|l| l.contains("alerts") && l.contains(" 4 "))
            && xmids.iter().all(|x| screen.contains(x.as_str()))
    })
    .await;
    let screen = capture();
    std::fs::write(dir.path().join("screen.txt"), &screen).unwrap();
    eprintln!("{screen}");
    assert!(
        shown,
        "the merchants and 4 dead letters on screen:\n{screen}"
    );
    assert!(screen.contains("poll lag  p50"), "{screen}");

    // Replay: tab to the sinks (alerts is the only one), r, y.
    receiver.set_behaviour(Behaviour::default());
    tmux(&["send-keys", "-t", &session, "Tab"]);
    tmux(&["send-keys", "-t", &session, "r"]);
    let asked = wait_until(Duration::from_secs(5), || {
        capture().contains("replay the dead letters of alerts (4 when last refreshed)?")
    })
    .await;
    assert!(asked, "{}", capture());
    tmux(&["send-keys", "-t", &session, "y"]);
    let replayed = wait_until(Duration::from_secs(20), || {
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.status == 204)
            .count()
            >= 4
    })
    .await;
    let after = capture();
    tmux(&["send-keys", "-t", &session, "q"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux(&["kill-session", "-t", &session]);
    let _ = service.kill();
    let _ = service.wait();
    receiver.stop().await;
    assert!(replayed, "the receiver got the replayed letters:\n{after}");
    assert!(
        after.contains("replayed 4 dead letter(s) of alerts"),
        "{after}"
    );
}
