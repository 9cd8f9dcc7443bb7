//! Monitoring as an operator gets it: a running instance's `/metrics` checked by `promtool`,
//! scraped by a real Prometheus server and queried; the dashboard and the alert rules asking
//! only for series that exist; the alert rules' own unit tests; the deploy configurations valid.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`.ci/test` installs it).
//! Outside CI a missing one skips the test that needs it; under CI it fails loudly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use mxc_relay::config::{Config, RouteConfig, SinkConfig, WebhookConfig};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::receiver::{Receiver, ReceiverConfig};
use mxc_relay::signature::WebhookSecret;
use mxc_relay::telemetry::Metrics;
use test_kit::PipelineConfigBuilder;

use crate::support::*;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// A tool from Debian's `prometheus` package; `None` (skip) outside CI when missing.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path),
        None if std::env::var("CI").is_ok() => {
            panic!("{name} is missing: .ci/test installs Debian's prometheus package")
        }
        None => {
            eprintln!("skipped: no {name} (apt-get install prometheus, or run .ci/test)");
            None
        }
    }
}

/// Every `mxc_relay_…` series name a text asks for, histogram suffixes removed.
fn series_named_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("mxc_relay_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

/// The series a `/metrics` text declares (`# TYPE name …`).
fn series_exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Runs a pipeline with every kind of series in use: a file sink, a webhook sink and its
/// receiver, per-XMID lag. Returns it with the number of records it will admit.
async fn running_instance(
    dir: &Path,
    per_xmid_metrics: bool,
) -> (mxc_sim::RunningSim, Pipeline, Receiver, usize) {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..3].to_vec();
    let now = Utc::now();
    sim.generate(200, &xmids, now - chrono::Duration::minutes(5), now)
        .unwrap();
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(
        any_port(),
        ReceiverConfig {
            secrets: vec![secret.clone()],
            tolerance: Duration::from_secs(300),
            keep: false,
            on_delivery: None,
        },
    )
    .await
    .unwrap();
    let mut alerts = WebhookConfig::new(receiver.url(), secret.expose());
    alerts.allow_insecure = true;
    let c = PipelineConfigBuilder::new(sim.base_url(), &xmids)
        .interval(Duration::from_secs(1))
        .look_back(Duration::from_secs(60))
        .start(now - chrono::Duration::minutes(10))
        .store(dir.join("store"))
        .with(|c| c.telemetry.per_xmid_metrics = per_xmid_metrics)
        .archive(dir.join("archive.jsonl"))
        .sink("alerts", SinkConfig::Webhook(Box::new(alerts)))
        .route(RouteConfig {
            name: Some("declines".into()),
            event_type: Some("authorization.declined".into()),
            filter: Some(r#"authorizationResponseStatus != "Approved""#.into()),
            ..RouteConfig::every_record("", "alerts")
        })
        .build();
    let pipeline = Pipeline::start(&c, Metrics::new()).await.unwrap();
    // Wait until the records are in and delivered, and the 10-second gauges sampled once more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pipeline.metrics.events("archive", "delivered") < 200
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (sim, pipeline, receiver, 200)
}

async fn get(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_running_instance_and_the_dashboard_and_alerts_find_their_series() {
    let (Some(promtool), Some(prometheus)) = (tool("promtool"), tool("prometheus")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_sim, pipeline, _receiver, records) = running_instance(dir.path(), true).await;
    let telemetry = pipeline.telemetry_addr.expect("serving");
    let metrics = get(&format!("http://{telemetry}/metrics")).await;

    // promtool reads it as valid exposition text, without lint complaints.
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
    }
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every series the dashboard and the alert rules ask for is exported.
    let exported = series_exported(&metrics);
    let dashboard = std::fs::read_to_string(format!("{DEPLOY}/grafana/mxc-relay.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let wanted = series_named_in(&exprs.join("\n"));
    let rules = std::fs::read_to_string(format!("{DEPLOY}/prometheus/alerts.yml")).unwrap();
    let wanted_by_rules = series_named_in(&rules);
    for name in wanted.iter().chain(&wanted_by_rules) {
        assert!(
            exported.contains(name),
            "{name} is queried but not exported"
        );
    }
    assert!(wanted.len() >= 15, "{wanted:?}");
    // And every series the monitoring guide's table documents.
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/operating/monitoring.md"
    ))
    .unwrap();
    let documented: BTreeSet<String> = guide
        .lines()
        .filter_map(|l| l.strip_prefix("| `mxc_relay_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("mxc_relay_{name}"))
        .collect();
    assert!(documented.len() >= 18, "{documented:?}");
    for name in &documented {
        assert!(
            exported.contains(name),
            "{name} is documented but not exported"
        );
    }
    for name in &exported {
        assert!(
            documented.contains(name),
            "{name} is exported but not documented"
        );
    }

    // A real Prometheus server scrapes it, and a query returns what was counted.
    let port = free_address().port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mxc-relay\n    static_configs:\n      - targets: [\"{telemetry}\"]\n"),
    )
    .unwrap();
    let mut server = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=sum(mxc_relay_records_total%7Boutcome%3D%22new%22%7D)"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let value = loop {
        let answer: Option<serde_json::Value> = match reqwest::get(&query).await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let value = answer
            .as_ref()
            .and_then(|a| a["data"]["result"][0]["value"][1].as_str())
            .map(str::to_string);
        if value.is_some() || tokio::time::Instant::now() > deadline {
            break value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    pipeline.shutdown().await.unwrap();
    assert_eq!(
        value.as_deref(),
        Some(records.to_string().as_str()),
        "Prometheus counted the records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_xmid_series_can_be_switched_off_leaving_the_fleet_wide_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, pipeline, _receiver, _) = running_instance(dir.path(), false).await;
    let telemetry = pipeline.telemetry_addr.expect("serving");
    let metrics = get(&format!("http://{telemetry}/metrics")).await;
    pipeline.shutdown().await.unwrap();
    assert!(!metrics.contains("xmid="), "{metrics}");
    for series in [
        "mxc_relay_poll_lag_max_seconds ",
        "mxc_relay_poll_lag_percentile_seconds{percentile=\"50\"}",
        "mxc_relay_poll_lag_percentile_seconds{percentile=\"99\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(format!("{DEPLOY}/prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_deploy_configurations_are_valid() {
    let compose = std::fs::read_to_string(format!("{DEPLOY}/docker-compose.yml")).unwrap();
    // The relay signs with the secret the compose receiver verifies with.
    let secret = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("MXC_ALERTS_WEBHOOK_SECRETS: "))
        .expect("the relay's secret")
        .trim_matches('"')
        .to_string();
    assert!(compose.contains(&format!("MXC_WEBHOOK_SECRET: \"{secret}\"")));
    let env = |name: &str| match name {
        "MXC_API_KEY" => Some("API_x".to_string()),
        "MXC_ALERTS_WEBHOOK_SECRETS" => Some(secret.clone()),
        _ => None,
    };
    let text = std::fs::read_to_string(format!("{DEPLOY}/config/compose.toml")).unwrap();
    let config = Config::from_toml(&text, "compose.toml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.telemetry.listen, "0.0.0.0:9464");
    // Three relays in one consumer group with the cluster profile, each under its own name.
    assert!(config.cluster.enabled());
    for name in ["relay-1", "relay-2", "relay-3"] {
        assert!(
            compose.contains(&format!("MXC_CLUSTER_INSTANCE: {name}")),
            "{name}"
        );
    }
    assert_eq!(compose.matches("profiles: [\"cluster\"]").count(), 2);

    // The Kubernetes ConfigMap's file.
    let k8s = std::fs::read_to_string(format!("{DEPLOY}/k8s/mxc-relay.yaml")).unwrap();
    let start = k8s.find("mxc-relay.toml: |\n").unwrap() + "mxc-relay.toml: |\n".len();
    let embedded: String = k8s[start..]
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    let secret = WebhookSecret::generate();
    let env = |name: &str| match name {
        "MXC_API_KEY" => Some("API_x".to_string()),
        "MXC_ALERTS_WEBHOOK_SECRETS" => Some(secret.expose().to_string()),
        _ => None,
    };
    let config =
        Config::from_toml(&embedded, "k8s", &env).unwrap_or_else(|e| panic!("{e}\n{embedded}"));
    assert_eq!(config.sinks.len(), 2);
    assert!(config.cluster.enabled(), "the replicas share the merchants");
    assert!(k8s.contains("replicas: 3"));
    assert!(k8s.contains("name: MXC_CLUSTER_INSTANCE"));
}
