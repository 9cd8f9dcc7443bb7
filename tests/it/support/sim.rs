//! The simulator on 127.0.0.1 and clients pointed at it; configurations and data for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mxc::Secret;
use mxc::{Client, ClientConfig, Credentials, RESOURCES};
use mxc_relay::config::Config;
use mxc_sim::{RunningSim, SettlementConfig, SimConfig};
use test_kit::PipelineConfigBuilder;

/// A pipeline against `base_url` for `xmids` with one file sink `archive` (in `dir`) taking
/// every record, fast polling from `start`, quick retries and a store in `dir`: what the
/// pipeline and fault-suite tests run.
pub fn archiving_pipeline(
    base_url: &str,
    xmids: &[String],
    dir: &std::path::Path,
    start: DateTime<Utc>,
) -> PipelineConfigBuilder {
    PipelineConfigBuilder::new(base_url, xmids)
        .interval(Duration::from_secs(1))
        .look_back(Duration::from_secs(40 * 60))
        .budget(200.0, 50)
        .start(start)
        .store(dir.join("store"))
        .retry_min(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(5))
        .archive(dir.join("archive.jsonl"))
}

/// A quiet simulator: no live traffic, data only from `generate`.
pub fn quiet_sim() -> SimConfig {
    SimConfig {
        rate: 0.0,
        ..SimConfig::default()
    }
}

pub async fn start_sim(config: SimConfig) -> RunningSim {
    mxc_sim::start(config).await.expect("simulator starts")
}

pub fn credentials() -> Credentials {
    Credentials {
        api_key: Secret::new(mxc_sim::DEFAULT_API_KEY),
        username: Some(mxc_sim::DEFAULT_USERNAME.to_string()),
        password: Secret::new(mxc_sim::DEFAULT_PASSWORD),
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
    PipelineConfigBuilder::new(sim.base_url(), xmids)
        .with(|c| c.pollers.resources = RESOURCES.iter().map(|r| r.name.to_string()).collect())
        .interval(Duration::from_secs(1))
        .look_back(Duration::from_secs(60))
        .budget(200.0, 50)
        .start(start)
        .store(store)
        .retry_min(Duration::from_millis(200))
        .build()
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
    sim.set_faults(mxc_sim::Faults {
        clock_offset_ms: -hours(3).num_milliseconds(),
        ..mxc_sim::Faults::default()
    });
    sim.generate(old, xmids, t0 - hours(48), t0 - hours(3))
        .expect("old records generated");
    sim.set_faults(mxc_sim::Faults::default());
    sim.generate(recent, xmids, t0 - chrono::Duration::minutes(150), t0)
        .expect("recent records generated");
}

/// Every record the simulator holds for `xmids` (generated within the last hour), read with the
/// crate's own client: its id and whether it is a decline.
pub async fn generated(
    client: &Client,
    xmids: &[String],
) -> std::collections::BTreeMap<String, bool> {
    let mut out = std::collections::BTreeMap::new();
    let query = mxc::ReportQuery::new(
        xmids.to_vec(),
        Utc::now() - chrono::Duration::hours(1),
        Utc::now() + chrono::Duration::minutes(1),
    );
    let mut pager = client.report_pages(query);
    while let Some(batch) = pager.next_page().await.unwrap() {
        for record in batch.records {
            let decline = record.to_value()["authorizationResponseStatus"] != "Approved";
            out.insert(record.id().unwrap().to_string(), decline);
        }
    }
    out
}
