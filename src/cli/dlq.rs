//! `mxc-relay dlq list|replay`: the dead letters — events a sink refused for good or gave up
//! on — and sending them again. Reads the store directly, so the service must be stopped.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use mxc_relay::config::Config;
use mxc_relay::store::Store;

#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters: when, which event, how many attempts, the last status and why.
    List(Selection),
    /// Move dead letters back to the end of their outbox; they go out when the service runs.
    Replay(Selection),
}

#[derive(Args)]
struct Selection {
    /// Only this sink [default: every sink].
    #[arg(long)]
    sink: Option<String>,
    /// Only letters dead-lettered at or after this: an instant (2026-11-28T10:00:00Z) or a
    /// time ago (90m, 2h, 3d).
    #[arg(long, value_parser = since)]
    since: Option<DateTime<Utc>>,
    /// The TOML configuration file (for the store path and the sinks).
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
    /// One JSON object per line (for `list`).
    #[arg(long)]
    json: bool,
}

fn since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = mxc_relay::config::parse_duration(text).map_err(|_| {
        format!("an instant like 2026-11-28T10:00:00Z or a time ago like 2h, got {text:?}")
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

pub fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let (selection, replay) = match args.command {
        DlqCommand::List(s) => (s, false),
        DlqCommand::Replay(s) => (s, true),
    };
    let config = Config::load(&selection.config)?;
    let all: Vec<String> = config.sinks.keys().cloned().collect();
    let sinks = match &selection.sink {
        Some(name) if all.contains(name) => vec![name.clone()],
        Some(name) => anyhow::bail!(
            "{}: no sink named {name:?} (sinks: {})",
            selection.config.display(),
            all.join(", ")
        ),
        None => all.clone(),
    };
    let store = Store::open_for(&config)?;
    if replay {
        let mut total = 0;
        for sink in &sinks {
            let n = store.replay_dead(sink, selection.since)?;
            if n > 0 {
                println!("{sink}: {n} dead letters moved back to the outbox");
            }
            total += n;
        }
        println!("replayed {total}; they are delivered when the service runs");
        return Ok(ExitCode::SUCCESS);
    }
    let mut shown = 0;
    for sink in &sinks {
        for (seq, letter) in store.dead_letters(sink)? {
            if selection.since.is_some_and(|t| letter.failed_at < t) {
                continue;
            }
            shown += 1;
            if selection.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "sink": sink, "seq": seq, "failed_at": letter.failed_at,
                        "attempts": letter.attempts, "last_status": letter.last_status,
                        "reason": letter.reason, "event_id": letter.event.id,
                        "event_type": letter.event.event_type, "record_id": letter.event.record_id,
                        "xmid": letter.event.xmid,
                    })
                );
            } else {
                println!(
                    "{sink}  {}  {}  record {}  xmid {}  attempts {}  status {}  {}",
                    letter
                        .failed_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    letter.event.id,
                    letter.event.record_id,
                    letter.event.xmid,
                    letter.attempts,
                    letter
                        .last_status
                        .map_or_else(|| "-".to_string(), |s| s.to_string()),
                    letter.reason
                );
            }
        }
    }
    if !selection.json {
        println!("{shown} dead letters");
    }
    Ok(ExitCode::SUCCESS)
}
