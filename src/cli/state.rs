//! `mxc-relay state`: what the store holds — cursors and lag per XMID, seen ids, outboxes,
//! dead letters. Reads the store directly, so the service must be stopped (sled locks it).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::Args;

use mxc_relay::config::Config;
use mxc_relay::store::Store;

#[derive(Args)]
pub struct StateArgs {
    /// The TOML configuration file (for the store path and the sink names).
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
}

pub fn run(args: StateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let sinks: Vec<String> = config.sinks.keys().cloned().collect();
    let store = Store::open_for(&config)?;
    let now = Utc::now();
    let cursors = store.cursors()?;
    println!("store {}", store.path().display());
    println!();
    // A cursor is the end of the last completed poll: on `created`, MXC's ingestion time.
    println!("{:<20} {:<26} {:>12}", "XMID", "polled up to", "lag");
    for (xmid, cursor) in &cursors {
        let lag = (now - cursor.position).to_std().unwrap_or_default();
        println!(
            "{xmid:<20} {:<26} {:>12}",
            mxc_relay::mxc::instant(cursor.position),
            humantime::format_duration(std::time::Duration::from_secs(lag.as_secs())).to_string()
        );
    }
    if cursors.is_empty() {
        println!("(no XMID polled yet)");
    }
    println!();
    println!("seen record ids: {}", store.seen_len());
    println!();
    println!(
        "{:<20} {:>10} {:>10} {:>14}",
        "sink", "outbox", "retrying", "dead letters"
    );
    for sink in &sinks {
        println!(
            "{sink:<20} {:>10} {:>10} {:>14}",
            store.outbox_len(sink)?,
            store.attempt_states(sink)?.len(),
            store.dead_len(sink)?
        );
    }
    for sink in &sinks {
        if let Some(off) = store.disabled_endpoint(sink)? {
            println!(
                "{sink}: endpoint DISABLED since {} ({}); `mxc-relay webhook enable --sink {sink}`",
                off.disabled_at, off.reason
            );
        }
    }
    for (sink, len) in store.orphan_outboxes() {
        println!(
            "{sink:<20} {len:>10} {:>14}  (sink no longer configured)",
            "-"
        );
    }
    Ok(ExitCode::SUCCESS)
}
