//! `mxc-relay dlq list|replay`: the dead letters — events a sink refused for good or gave up
//! on — and sending them again (same events, same ids). Through the running service's admin
//! API, or on its store when it is stopped.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use mxc_relay::admin::api::{DeadLetterFilter, DeadLetterView, ReplayOutcome, ReplayRequest};
use mxc_relay::admin::ops;
use mxc_relay::config::Config;
use mxc_relay::store::Store;

use super::service::Service;

#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters: when, which event, how many attempts, the last status and why.
    List(Selection),
    /// Move dead letters back to the end of their outbox: the running service sends them at
    /// once (a stopped one when it starts), under their first ids.
    Replay(Selection),
}

#[derive(Args)]
struct Selection {
    /// Only this sink [default: every sink].
    #[arg(long)]
    sink: Option<String>,
    /// Only letters dead-lettered at or after this: an instant (2026-11-28T10:00:00Z) or a
    /// time ago (90m, 2h, 3d).
    #[arg(long, value_parser = super::instant)]
    since: Option<DateTime<Utc>>,
    /// Only events of this type (`authorization.declined` …).
    #[arg(long)]
    event_type: Option<String>,
    /// Only events of this XMID.
    #[arg(long)]
    xmid: Option<String>,
    /// Only these events, by id (`evt_…`; repeatable; for `replay`).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// The TOML configuration file (for the store path and the sinks).
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
    /// One JSON object per line (for `list`).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let (selection, replay) = match args.command {
        DlqCommand::List(s) => (s, false),
        DlqCommand::Replay(s) => (s, true),
    };
    let config = Config::load(&selection.config)?;
    let sinks = super::state::sink_names(&config);
    if let Some(sink) = &selection.sink {
        ops::check_sink(&sinks, sink)
            .map_err(|e| anyhow::anyhow!("{}: {e}", selection.config.display()))?;
    }
    let filter = DeadLetterFilter {
        sink: selection.sink.clone(),
        since: selection.since,
        event_type: selection.event_type.clone(),
        xmid: selection.xmid.clone(),
    };
    let service = Service::find(&config)?;
    if replay {
        let request = ReplayRequest {
            filter,
            ids: selection.ids.clone(),
        };
        let (outcome, when): (ReplayOutcome, &str) = match &service {
            Service::Running(api) => (
                api.post("/v1/dead-letters/replay", &request).await?,
                "the running service sends them now",
            ),
            Service::Stopped => (
                ops::replay(&Store::open_for(&config)?, &sinks, &request)?,
                "they are delivered when the service runs",
            ),
        };
        for s in &outcome.per_sink {
            println!(
                "{}: {} dead letters moved back to the outbox",
                s.sink, s.count
            );
        }
        println!("replayed {}; {when}", outcome.replayed);
        return Ok(ExitCode::SUCCESS);
    }
    let letters: Vec<DeadLetterView> = match &service {
        Service::Running(api) => {
            api.get(&format!("/v1/dead-letters?{}", query(&filter)))
                .await?
        }
        Service::Stopped => ops::dead_letters(&Store::open_for(&config)?, &sinks, &filter)?,
    };
    for letter in &letters {
        if selection.json {
            println!("{}", serde_json::to_string(letter)?);
        } else {
            println!(
                "{}  {}  {}  {}  record {}  xmid {}  attempts {}  status {}  {}",
                letter.sink,
                letter
                    .failed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                letter.event_id,
                letter.event_type,
                letter.record_id,
                letter.xmid,
                letter.attempts,
                letter
                    .last_status
                    .map_or_else(|| "-".to_string(), |s| s.to_string()),
                letter.reason
            );
        }
    }
    if !selection.json {
        println!("{} dead letters", letters.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The filter as a query string.
fn query(filter: &DeadLetterFilter) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(s) = &filter.sink {
        q.append_pair("sink", s);
    }
    if let Some(t) = filter.since {
        q.append_pair("since", &t.to_rfc3339());
    }
    if let Some(t) = &filter.event_type {
        q.append_pair("event_type", t);
    }
    if let Some(x) = &filter.xmid {
        q.append_pair("xmid", x);
    }
    q.finish()
}
