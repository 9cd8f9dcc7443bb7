//! `mxc-relay cluster status`: the instances sharing the merchants, their shards, and the lag
//! of each shard, read from the cluster's state topic.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use mxc::Clock;

use mxc_relay::cluster::{self, StateMessage};
use mxc_relay::config::Config;

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Instances, their shards and merchants, and the poll lag of each shard.
    Status {
        /// A configuration of the cluster (its [cluster] section is read).
        #[arg(long, short, default_value = "config/mxc-relay.toml")]
        config: PathBuf,
    },
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Status { config } = args.command;
    let config = Config::load(&config)?;
    mxc_relay::telemetry::init_logging("warn", config.log.format);
    let cluster = config.cluster.clone();
    anyhow::ensure!(
        cluster.enabled(),
        "cluster.brokers is empty in this configuration: it runs as a single instance"
    );
    let messages = tokio::task::spawn_blocking(move || cluster::read_status(&cluster)).await??;
    let cluster = &config.cluster;
    let now = mxc::SystemClock.now();
    // An instance that said nothing for this long is gone (killed, or cut off).
    let silent = chrono::Duration::from_std(cluster.state_interval * 3 + cluster.session_timeout)
        .unwrap_or_default();
    let mut instances = Vec::new();
    let mut lag: BTreeMap<u32, (usize, f64)> = BTreeMap::new();
    let mut shards = cluster.shards;
    for message in &messages {
        match message {
            StateMessage::Instance(i) => {
                shards = shards.max(i.shards.iter().map(|s| s + 1).max().unwrap_or(0));
                instances.push(i.clone());
            }
            StateMessage::Merchant(_) => {}
        }
    }
    instances.sort_by(|a, b| a.instance.cmp(&b.instance));
    let live: Vec<_> = instances
        .iter()
        .filter(|i| !i.stopped && now - i.at < silent)
        .collect();
    // Each shard's lag as its owner last said it; from the merchants' published states when
    // the topic is read whole (laid out by an older version).
    for i in &live {
        for shard in &i.lag {
            lag.insert(shard.shard, (shard.merchants, shard.max_lag_s));
        }
    }
    let reported = !lag.is_empty();
    for message in messages.iter().filter(|_| !reported) {
        if let StateMessage::Merchant(m) = message {
            let entry = lag.entry(cluster::shard_of(&m.xmid, shards)).or_default();
            entry.0 += 1;
            let seconds = (now - m.position).num_milliseconds().max(0) as f64 / 1000.0;
            entry.1 = entry.1.max(seconds);
        }
    }
    println!(
        "group {} on {}: {} live instance{}, {shards} shards (control topic {}, state topic {})",
        cluster.group,
        cluster.brokers,
        live.len(),
        if live.len() == 1 { "" } else { "s" },
        cluster.control_topic,
        cluster.state_topic
    );
    println!();
    println!(
        "{:<28} {:>9} {:>10}  shards",
        "instance", "merchants", "last seen"
    );
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    for i in &instances {
        let ago = (now - i.at).num_milliseconds().max(0) as f64 / 1000.0;
        let state = if i.stopped {
            " (stopped)"
        } else if now - i.at >= silent {
            " (gone)"
        } else {
            for s in &i.shards {
                owner.insert(*s, &i.instance);
            }
            ""
        };
        let list: Vec<String> = i.shards.iter().map(u32::to_string).collect();
        println!(
            "{:<28} {:>9} {:>9.1}s  {}{state}",
            i.instance,
            i.merchants,
            ago,
            if list.is_empty() {
                "-".to_string()
            } else {
                list.join(",")
            }
        );
    }
    println!();
    println!(
        "{:>5}  {:<28} {:>9} {:>12}",
        "shard", "owner", "merchants", "max lag"
    );
    let mut unowned = 0;
    for shard in 0..shards {
        let (merchants, max_lag) = lag.get(&shard).copied().unwrap_or((0, 0.0));
        let who = owner.get(&shard).copied().unwrap_or_else(|| {
            unowned += 1;
            "(none)"
        });
        println!("{shard:>5}  {who:<28} {merchants:>9} {max_lag:>11.1}s");
    }
    Ok(if unowned == 0 && !live.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{unowned} shard(s) without a live owner");
        ExitCode::FAILURE
    })
}
