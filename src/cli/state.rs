//! `mxc-relay state`: cursors and lag per XMID and resource, seen ids, outboxes, dead letters,
//! endpoints, paused merchants — from the running service's admin API, or from its store when
//! it is stopped (the same view either way).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use mxc_relay::admin::api::{CursorPage, CursorSort, StateView};
use mxc_relay::admin::ops;
use mxc_relay::config::{Config, SinkConfig};
use mxc_relay::store::Store;

use super::service::Service;

#[derive(Args)]
pub struct StateArgs {
    /// The TOML configuration file (for the store path and the sink names).
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
    /// The view as JSON (what the admin API's /v1/state answers).
    #[arg(long)]
    json: bool,
    /// List at most this many cursors (every one is in the summary line).
    #[arg(long, default_value_t = CursorPage::DEFAULT_LIMIT)]
    limit: usize,
    /// `xmid`: by resource and XMID; `lag`: the most lagging first.
    #[arg(long, default_value = "xmid", value_parser = ["xmid", "lag"])]
    sort: String,
}

pub async fn run(args: StateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let page = CursorPage {
        limit: Some(args.limit),
        sort: Some(if args.sort == "lag" {
            CursorSort::Lag
        } else {
            CursorSort::Xmid
        }),
        after: None,
    };
    let view = match Service::find(&config)? {
        Service::Running(api) => {
            let path = format!("/v1/state?limit={}&sort={}", args.limit, args.sort);
            api.get::<StateView>(&path).await?
        }
        Service::Stopped => {
            let store = Store::open_for(&config)?;
            ops::state(&store, &sink_names(&config), &webhook_names(&config), &page)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print(&view);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sink_names(config: &Config) -> Vec<String> {
    config.sinks.keys().cloned().collect()
}

pub fn webhook_names(config: &Config) -> Vec<String> {
    config
        .sinks
        .iter()
        .filter(|(_, s)| matches!(s, SinkConfig::Webhook(_)))
        .map(|(n, _)| n.clone())
        .collect()
}

fn print(view: &StateView) {
    let source = if view.live {
        "(live, from the running service)"
    } else {
        "(service stopped)"
    };
    println!("store {} {source}", view.store);
    println!();
    // A cursor is the end of the last completed poll: on `created`, MXC's ingestion time.
    println!(
        "{:<20} {:<16} {:<26} {:>12}",
        "XMID", "resource", "polled up to", "lag"
    );
    for c in &view.cursors {
        let paused = if view.paused_merchants.contains(&c.xmid) {
            "  PAUSED"
        } else {
            ""
        };
        println!(
            "{:<20} {:<16} {:<26} {:>12}{paused}",
            c.xmid,
            c.resource,
            mxc::instant(c.polled_up_to),
            humantime::format_duration(std::time::Duration::from_secs(c.lag_seconds)).to_string()
        );
    }
    let summary = &view.cursor_summary;
    if summary.count == 0 {
        println!("(no XMID polled yet)");
    } else if (view.cursors.len() as u64) < summary.count {
        println!(
            "({} of {} listed: --limit, --sort lag, or --json for the rest)",
            view.cursors.len(),
            summary.count
        );
    }
    if summary.count > 0 {
        let lag = |s: u64| humantime::format_duration(std::time::Duration::from_secs(s));
        let worst = summary
            .most_lagging
            .as_ref()
            .map(|c| format!(" ({} {})", c.resource, c.xmid))
            .unwrap_or_default();
        println!(
            "cursors: {}; lag p50 {}, p99 {}, max {}{worst}",
            summary.count,
            lag(summary.lag_p50_seconds),
            lag(summary.lag_p99_seconds),
            lag(summary.lag_max_seconds),
        );
    }
    println!();
    println!("seen record ids: {}", view.seen_ids);
    if let Some(n) = view.roster_merchants {
        println!("roster merchants: {n}");
    }
    if let Some(n) = view.cluster_shards {
        println!("cluster shards owned: {n}");
    }
    if !view.paused_merchants.is_empty() {
        println!("polling paused: {}", view.paused_merchants.join(", "));
    }
    println!();
    println!(
        "{:<20} {:>10} {:>10} {:>14}  endpoint",
        "sink", "outbox", "retrying", "dead letters"
    );
    for s in &view.sinks {
        let endpoint = match &s.endpoint {
            None => String::new(),
            Some(e) => match (&e.disabled, e.paused_by_hand) {
                (Some(d), _) => format!(
                    "DISABLED since {} ({}); `mxc-relay webhook enable --sink {}`",
                    d.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    d.reason,
                    s.name
                ),
                (None, true) => "PAUSED by an operator".into(),
                (None, false) => match e.failing_since {
                    Some(t) => format!(
                        "failing since {}",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    None => "ok".into(),
                },
            },
        };
        println!(
            "{:<20} {:>10} {:>10} {:>14}  {endpoint}",
            s.name, s.outbox, s.retrying, s.dead_letters
        );
    }
    for o in &view.orphan_outboxes {
        println!(
            "{:<20} {:>10} {:>10} {:>14}  (sink no longer configured)",
            o.sink, o.outbox, "-", "-"
        );
    }
    if let Some(b) = &view.backfill {
        println!();
        println!(
            "backfill ({}): {} of {} from {}: {} read, {} new, {} already sent{}",
            b.state,
            b.resource,
            b.xmids.join(","),
            b.since,
            b.read,
            b.new,
            b.duplicate,
            b.error
                .as_ref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        );
    }
}
