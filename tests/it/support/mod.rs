//! Shared test helpers: a simulator on 127.0.0.1 and clients pointed at it.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use mxc_relay::config::Config;
use mxc_relay::mxc::{Client, ClientConfig, Credentials, RESOURCES};
use mxc_relay::receiver::{Receiver, ReceiverConfig};
use mxc_relay::secret::Secret;
use mxc_relay::signature::WebhookSecret;
use mxc_relay::sim::{self, RunningSim, SettlementConfig, SimConfig};

pub mod canary;

pub mod contract;

pub mod kafka;

/// A quiet simulator: no live traffic, data only from `generate`.
pub fn quiet_sim() -> SimConfig {
    SimConfig {
        rate: 0.0,
        ..SimConfig::default()
    }
}

pub async fn start_sim(config: SimConfig) -> RunningSim {
    sim::start(config).await.expect("simulator starts")
}

pub fn credentials() -> Credentials {
    Credentials {
        api_key: Secret::new(sim::DEFAULT_API_KEY),
        username: Some(sim::DEFAULT_USERNAME.to_string()),
        password: Secret::new(sim::DEFAULT_PASSWORD),
    }
}

pub fn client_config(sim: &RunningSim) -> ClientConfig {
    let mut config = ClientConfig::new(sim.base_url(), credentials());
    config.timeout = Duration::from_secs(10);
    config
}

pub fn client(sim: &RunningSim) -> Client {
    Client::new(client_config(sim)).expect("client builds")
}

/// The JSON lines of a sink's file, complete ones only (a line still being written waits).
pub fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Waits until `done` or `within` passed; whether `done` came true.
pub async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// The record ids of a sink's lines (`data.id` of each event).
pub fn record_ids(lines: &[serde_json::Value]) -> std::collections::HashSet<&str> {
    lines
        .iter()
        .map(|l| l["data"]["id"].as_str().expect("an event names its record"))
        .collect()
}

/// Complete lines in a file, without parsing them.
pub fn line_count(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// Follow-ups fast enough for a test: a dispute up to 20 s after its sale, a batch per
/// terminal every 5 s, its deposit 2 s later; a quarter of batches rejected and of deposits
/// returned, so each alert occurs.
pub fn busy_settlement() -> SettlementConfig {
    SettlementConfig {
        dispute_rate: 0.2,
        dispute_delay_ms: 20_000,
        batch_every_ms: 5_000,
        deposit_delay_ms: 2_000,
        reject_rate: 0.25,
        return_rate: 0.25,
    }
}

/// Every resource of `xmids` polled each second from `start`, with budget to spare; the store
/// in `store`.
pub fn every_resource(
    sim: &RunningSim,
    xmids: &[String],
    start: DateTime<Utc>,
    store: std::path::PathBuf,
) -> Config {
    let mut c = Config::for_simulator(sim.base_url(), xmids.to_vec());
    c.pollers.resources = RESOURCES.iter().map(|r| r.name.to_string()).collect();
    c.pollers.interval = Duration::from_secs(1);
    c.pollers.look_back = Duration::from_secs(60);
    c.pollers.requests_per_second = 200.0;
    c.pollers.burst = 50;
    c.pollers.start = mxc_relay::mxc::instant(start);
    c.store.path = store;
    c.delivery.retry_min = Duration::from_millis(200);
    c
}

/// A verifying webhook receiver on 127.0.0.1 that keeps every delivery.
pub async fn keeping_receiver(secret: &WebhookSecret) -> Receiver {
    Receiver::start(
        "127.0.0.1:0".parse().expect("an address"),
        ReceiverConfig {
            secrets: vec![secret.clone()],
            tolerance: Duration::from_secs(300),
            keep: true,
            on_delivery: None,
        },
    )
    .await
    .expect("the receiver starts")
}

/// History for a backfill: `old` records over 48 to 3 hours before `t0`, which reached MXC
/// (`created`) three hours ago, before the service started; and `recent` ones over the last
/// 150 minutes, which reach it now (the service polls them).
pub fn generate_history(
    sim: &RunningSim,
    xmids: &[String],
    t0: chrono::DateTime<chrono::Utc>,
    old: usize,
    recent: usize,
) {
    let hours = chrono::Duration::hours;
    sim.set_faults(sim::Faults {
        clock_offset_ms: -hours(3).num_milliseconds(),
        ..sim::Faults::default()
    });
    sim.generate(old, xmids, t0 - hours(48), t0 - hours(3))
        .expect("old records generated");
    sim.set_faults(sim::Faults::default());
    sim.generate(recent, xmids, t0 - chrono::Duration::minutes(150), t0)
        .expect("recent records generated");
}
