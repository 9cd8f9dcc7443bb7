//! Live reload: SIGHUP makes the running binary re-read its file. A reload that adds a route
//! (to a new sink) and removes an XMID takes effect without a restart, losing and repeating
//! nothing; a broken file is refused with its errors and the running configuration stays.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;

use crate::support::*;

const DECLINES: &str = r#"
[sinks.declines]
kind = "file"
path = "{dir}/declines.jsonl"

[[routes]]
name = "declines"
sink = "declines"
event_type = "authorization.declined"
filter = 'authorizationResponseStatus != "Approved"'
"#;

fn config(sim_url: &str, xmids: &[String], dir: &Path, telemetry: &str, extra: &str) -> String {
    format!(
        r#"[mxc]
base_url = "{sim_url}"

[pollers]
xmids = {xmids}
interval = "1s"
start = "{start}"

[store]
path = "{dir}/store"

[sinks.archive]
kind = "file"
path = "{dir}/archive.jsonl"

[[routes]]
sink = "archive"

[telemetry]
listen = "{telemetry}"
[admin]
listen = "127.0.0.1:0"
{extra}"#,
        xmids = serde_json::to_string(xmids).unwrap(),
        start = mxc::instant(Utc::now() - chrono::Duration::minutes(10)),
        dir = dir.display(),
        extra = extra.replace("{dir}", &dir.display().to_string()),
    )
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `mxc-relay run --config FILE`, logging to `log`.
fn run(file: &Path, log: &Path) -> std::process::Child {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(file)
        .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_route_and_removes_an_xmid_live_and_a_broken_file_changes_nothing() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let (kept, removed) = (&xmids[..3], &xmids[3]);
    let t0 = Utc::now();
    sim.generate(200, &xmids, t0 - chrono::Duration::minutes(5), t0)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let telemetry = free_address().to_string();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        config(&sim.base_url(), &xmids, dir.path(), &telemetry, ""),
    )
    .unwrap();
    let log = dir.path().join("relay.log");
    let mut relay = run(&file, &log);
    let archive = dir.path().join("archive.jsonl");
    let declines = dir.path().join("declines.jsonl");
    let logged = |text: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(text)
            .count()
    };
    assert!(wait_until(Duration::from_secs(20), || lines(&archive).len() >= 200).await);

    // Reload: a decline route to a new sink; one XMID fewer.
    std::fs::write(
        &file,
        config(&sim.base_url(), kept, dir.path(), &telemetry, DECLINES),
    )
    .unwrap();
    signal(relay.id(), "HUP");
    assert!(
        wait_until(Duration::from_secs(20), || logged("configuration reloaded")
            == 1)
        .await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        logged("XMIDs +0 −1, resources +0 −0, sinks +1 −0, routes +1 −0"),
        1,
        "the log says what changed"
    );
    let now = Utc::now();
    sim.generate(100, kept, now - chrono::Duration::seconds(5), now)
        .unwrap();
    sim.generate(
        20,
        std::slice::from_ref(removed),
        now - chrono::Duration::seconds(5),
        now,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(20), || lines(&archive).len() >= 300).await);

    // A broken file: refused with its errors; the running configuration goes on.
    std::fs::write(
        &file,
        config(
            &sim.base_url(),
            kept,
            dir.path(),
            &telemetry,
            "[delivery]\nbatch_size = 0\n",
        ),
    )
    .unwrap();
    signal(relay.id(), "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || logged("reload refused") == 1).await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        logged("delivery.batch_size"),
        1,
        "the refusal names the key"
    );
    let now = Utc::now();
    sim.generate(50, kept, now - chrono::Duration::seconds(5), now)
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || lines(&archive).len() >= 350).await);
    let ready = reqwest::get(format!("http://{telemetry}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still ready");
    tokio::time::sleep(Duration::from_secs(2)).await;

    signal(relay.id(), "TERM");
    assert!(relay.wait().unwrap().success());
    let all = lines(&archive);
    let ids = record_ids(&all);
    assert_eq!(
        (all.len(), ids.len()),
        (350, 350),
        "every record once; none of the removed XMID's new ones"
    );
    let new_declines: Vec<&serde_json::Value> = all[200..]
        .iter()
        .filter(|l| l["data"]["authorizationResponseStatus"] != "Approved")
        .collect();
    let alerts = lines(&declines);
    assert!(!new_declines.is_empty());
    assert_eq!(
        record_ids(&alerts),
        new_declines
            .iter()
            .map(|l| l["data"]["id"].as_str().unwrap())
            .collect(),
        "the new route takes every decline admitted after the reload"
    );
    assert_eq!(alerts.len(), new_declines.len());
    assert!(alerts.iter().all(|l| l["type"] == "authorization.declined"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_checks_the_file_applies_it_and_says_what_changed() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..2].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let telemetry = free_address().to_string();
    let file = dir.path().join("relay.toml");
    let base = config(&sim.base_url(), &xmids, dir.path(), &telemetry, "");
    std::fs::write(&file, &base).unwrap();
    let log = dir.path().join("relay.log");
    let mut relay = run(&file, &log);
    let pid_file = dir.path().join("store").join("mxc-relay.pid");
    assert!(wait_until(Duration::from_secs(20), || pid_file.exists()).await);
    let reload = || {
        Command::new(BIN)
            .args(["reload", "--config"])
            .arg(&file)
            .env("MXC_API_KEY", mxc_sim::DEFAULT_API_KEY)
            .output()
            .unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();

    // A file with an error: refused by the command itself; the service never hears of it.
    std::fs::write(&file, format!("{base}[delivery]\nbatch_size = 0\n")).unwrap();
    let out = reload();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("delivery.batch_size") && stderr.contains("not reloaded"),
        "{stderr}"
    );
    assert!(!std::fs::read_to_string(&log).unwrap().contains("SIGHUP"));

    // Disputes polled too, into the archive: applied, and the command says what changed.
    let with_disputes = base.replace(
        "interval = \"1s\"",
        "interval = \"1s\"\nresources = [\"authorizations\", \"disputes\"]",
    ) + "\n[[routes]]\nsink = \"archive\"\nresource = \"disputes\"\n";
    std::fs::write(&file, with_disputes).unwrap();
    let out = reload();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "reloaded: XMIDs +0 −0, resources +1 −0, sinks +0 −0, routes +1 −0\n"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            sim.stats().requests_to("GET /report/v1/tsys/disputes") > 0
        })
        .await,
        "disputes are polled"
    );

    signal(relay.id(), "TERM");
    assert!(relay.wait().unwrap().success());
    assert!(!pid_file.exists(), "a stopped service leaves no pid behind");
    let out = reload();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no running service found"),
        "{}",
        text(&out.stderr)
    );
}
