//! `mxc-relay backfill`: history replayed into the sinks through the export API, each record
//! once (what polling or an earlier run already sent is skipped), with progress on stderr and
//! a checkpoint after every page: Ctrl-C, then the same command, resumes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use mxc::Clock;
use tokio_util::sync::CancellationToken;

use mxc::Resource;
use mxc_relay::admin::api::{BackfillStart, BackfillStatus};
use mxc_relay::admin::backfill_request;
use mxc_relay::admin::client::{AdminClient, ClientError};
use mxc_relay::config::Config;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::poll::BackfillProgress;
use mxc_relay::telemetry::{self, Metrics};

use super::service::Service;

#[derive(Args)]
pub struct BackfillArgs {
    /// The service's configuration: its MXC account, routes, sinks and store.
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
    /// Start: an ISO-8601 instant, a date, or a duration ago (`7d`; a resumed run keeps the
    /// instant of its first run).
    #[arg(long)]
    since: String,
    /// End [default: now].
    #[arg(long, value_parser = super::instant)]
    until: Option<DateTime<Utc>>,
    /// XMIDs to replay (repeatable) [default: those listed in pollers.xmids].
    #[arg(long = "xmid")]
    xmids: Vec<String>,
    /// What to replay: authorizations, disputes, batches or ach.
    #[arg(long, default_value = "authorizations", value_parser = super::resource)]
    resource: &'static Resource,
}

pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load_for_run(&args.config)?;
    telemetry::init_logging(&config.log.level, config.log.format);
    // The command's options, checked as the admin API checks them.
    let start = BackfillStart {
        since: args.since.clone(),
        until: args.until,
        xmids: args.xmids.clone(),
        resource: Some(args.resource.name.to_string()),
    };
    let routed: Vec<&str> = config.routes.iter().map(|r| r.resource.as_str()).collect();
    let request = backfill_request(&start, &config.pollers.listed_xmids(), &routed)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let since = request.since;
    let remembered = chrono::Duration::from_std(config.store.seen_retention)
        .ok()
        .and_then(|r| mxc::SystemClock.now().checked_sub_signed(r));
    if remembered.is_some_and(|r| since < r) {
        eprintln!(
            "note: ids are remembered for store.seen_retention ({}): records older than that which were already sent are sent again (same ids)",
            humantime::format_duration(config.store.seen_retention)
        );
    }
    if let Service::Running(api) = Service::find(&config)? {
        return through_service(&api, &start).await;
    }
    // Sinks and the store as the service has them; no pollers and no telemetry server.
    let mut delivery = config.clone();
    delivery.pollers.xmids = Vec::new();
    delivery.telemetry.listen = String::new();
    delivery.admin.listen = String::new();
    // Not a member of the service's cluster: it would take shards it does not poll.
    delivery.cluster.brokers = String::new();
    let mut pipeline = Pipeline::start(&delivery, Metrics::new()).await.context(
        "backfill opens the service's store (no running service was found through admin.json)",
    )?;

    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            stop.cancel();
        });
    }
    eprintln!(
        "backfill: {} XMIDs from {} to {}",
        request.xmids.len(),
        mxc::instant(request.since),
        args.until.map_or(
            "now (or where an interrupted run of this command ended)".into(),
            mxc::instant
        )
    );
    let mut bar = ProgressLine::new();
    let result = pipeline
        .backfill(&request, &stop, |p| bar.show(p, false))
        .await;
    let progress = match result {
        Ok(p) => p,
        Err(e) => {
            pipeline.shutdown().await?;
            return Err(e)
                .context("backfill stopped; run the same command to resume from its checkpoint");
        }
    };
    bar.show(&progress, true);
    if !progress.complete {
        eprintln!("interrupted: deliveries in flight finish; what is admitted but not yet delivered waits in the outboxes for the service or the next run; run the same command to resume");
        pipeline.shutdown().await?;
        return Ok(ExitCode::from(130));
    }
    // Everything admitted is in the outboxes: wait until the sinks confirm it (Ctrl-C leaves
    // the rest there for the service, under the same ids).
    eprintln!("delivering what was admitted …");
    let drained = tokio::select! {
        drained = pipeline.drain(Duration::from_secs(30 * 86_400)) => drained,
        _ = stop.cancelled() => false,
    };
    pipeline.shutdown().await?;
    if !drained {
        eprintln!("admitted in full; interrupted while delivering: the rest waits in the outboxes for the service (same ids)");
        return Ok(ExitCode::from(130));
    }
    eprintln!(
        "backfill complete: {} records read, {} sent, {} already sent before{}",
        progress.read,
        progress.new,
        progress.duplicate,
        if progress.resumed {
            " (resumed from a checkpoint)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The backfill inside the running service, through its admin API: started, watched, and
/// cancelled on Ctrl-C (its checkpoint stays: the same command resumes it).
async fn through_service(api: &AdminClient, start: &BackfillStart) -> anyhow::Result<ExitCode> {
    let started: BackfillStatus = api.post("/v1/backfill", start).await?;
    eprintln!(
        "backfill: inside the running service (pid {}): {} of {} XMIDs from {}",
        api.pid(),
        started.resource,
        started.xmids.len(),
        started.since
    );
    let interrupted = CancellationToken::new();
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            interrupted.cancel();
        });
    }
    let mut bar = ProgressLine::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = interrupted.cancelled() => {
                let cancelled: Result<BackfillStatus, ClientError> = api.delete("/v1/backfill").await;
                if let Ok(status) = cancelled {
                    bar.show(&progress_of(&status), true);
                }
                eprintln!("cancelled: the service keeps the checkpoint and delivers what was admitted; run the same command to resume");
                return Ok(ExitCode::from(130));
            }
        }
        let status: BackfillStatus = api.get("/v1/backfill").await?;
        let done = status.state != "running";
        bar.show(&progress_of(&status), done);
        match status.state.as_str() {
            "running" => continue,
            "complete" => {
                eprintln!(
                    "backfill complete: {} records read, {} admitted (the service delivers them), {} already sent before{}",
                    status.read,
                    status.new,
                    status.duplicate,
                    if status.resumed { " (resumed from a checkpoint)" } else { "" }
                );
                return Ok(ExitCode::SUCCESS);
            }
            "cancelled" => {
                eprintln!("the backfill was cancelled (through the admin API); run the same command to resume");
                return Ok(ExitCode::from(130));
            }
            _ => anyhow::bail!(
                "backfill stopped: {}",
                status.error.unwrap_or_else(|| status.state.clone())
            ),
        }
    }
}

fn progress_of(s: &BackfillStatus) -> BackfillProgress {
    BackfillProgress {
        read: s.read,
        new: s.new,
        duplicate: s.duplicate,
        total: s.total,
        position: s.position,
        resumed: s.resumed,
        complete: s.state == "complete",
        ..BackfillProgress::default()
    }
}

/// One progress line on stderr: redrawn in place on a terminal, every 5 s otherwise.
struct ProgressLine {
    started: Instant,
    last: Instant,
    terminal: bool,
    read_at_start: Option<u64>,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            started: Instant::now(),
            last: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            read_at_start: None,
        }
    }

    fn show(&mut self, p: &BackfillProgress, last: bool) {
        let start = *self.read_at_start.get_or_insert(p.read);
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if !last && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (p.read - start) as f64 / elapsed;
        let share = match p.total {
            Some(total) if total > 0 => format!(
                " of {total} ({:.0} %, about {:.0} s left)",
                100.0 * p.read.min(total) as f64 / total as f64,
                total.saturating_sub(p.read) as f64 / rate.max(1.0)
            ),
            _ => String::new(),
        };
        let position = p.position.map(mxc::instant).unwrap_or_default();
        let line = format!(
            "backfill: {} read{share}, {} new, {} already sent, {rate:.0}/s, at {position}",
            p.read, p.new, p.duplicate
        );
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}
