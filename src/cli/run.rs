//! `mxc-relay run`: the service. SIGHUP re-reads the configuration file and applies it without
//! leaving the process; a file with errors is refused and the running configuration stays.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use mxc_relay::config::Config;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::{self, Metrics};

#[derive(Args)]
pub struct RunArgs {
    /// The TOML configuration file (re-read on SIGHUP).
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Listening first: a SIGHUP during start-up must not end the process (its default), and
    // both listeners live across iterations, so no signal falls between two of them.
    let mut hangups = Hangups::new();
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    let mut config = Config::load(&args.config)?;
    telemetry::init_logging(&config.log.level, config.log.format);
    let mut pipeline = tokio::select! {
        started = Pipeline::start(&config, Metrics::new()) => started?,
        _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
    };
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = hangups.next() => {
                let Some(new) = reread(&args.config, &config) else { continue };
                let (next, applied) = pipeline.reload(&config, &new).await?;
                pipeline = next;
                match applied {
                    Ok(()) => {
                        tracing::info!(changes = %changes(&config, &new), "configuration reloaded");
                        config = new;
                    }
                    Err(error) => tracing::error!(%error,
                        "reload failed to start; the previous configuration runs again"),
                }
            }
        }
    }
    super::exit_on_second_signal();
    tracing::info!("stopping: finishing in-flight deliveries (a second signal exits at once)");
    pipeline.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUPs, as they come (none where the platform has none).
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new() -> Hangups {
        Hangups {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// The file again, if it is valid; its errors logged if not.
fn reread(path: &Path, current: &Config) -> Option<Config> {
    tracing::info!(file = %path.display(), "SIGHUP: reading the configuration again");
    match Config::load(path) {
        Err(errors) => {
            tracing::error!(errors = %errors, "reload refused: the configuration has errors; the running one stays");
            None
        }
        Ok(new) if new.store.path != current.store.path => {
            tracing::error!(running = %current.store.path.display(), new = %new.store.path.display(),
                "reload refused: store.path cannot change while running; restart to move the store");
            None
        }
        Ok(new) => {
            if new.log.level != current.log.level || new.log.format != current.log.format {
                tracing::warn!("[log] changes take effect at the next start");
            }
            let (a, b) = (&new.store, &current.store);
            if a.durability != b.durability
                || a.flush_interval != b.flush_interval
                || a.cache_mib != b.cache_mib
            {
                tracing::warn!("store.durability, store.flush_interval and store.cache_mib changes take effect at the next start");
            }
            Some(new)
        }
    }
}

/// What a reload changes, in a few words: XMIDs, routes and sinks added or removed.
fn changes(old: &Config, new: &Config) -> String {
    let diff = |old: Vec<String>, new: Vec<String>| {
        let added: Vec<&String> = new.iter().filter(|x| !old.contains(x)).collect();
        let removed: Vec<&String> = old.iter().filter(|x| !new.contains(x)).collect();
        (added.len(), removed.len())
    };
    let routes = |c: &Config| -> Vec<String> {
        c.routes
            .iter()
            .map(|r| {
                format!(
                    "{}→{}:{:?}",
                    r.name.clone().unwrap_or_default(),
                    r.sink,
                    r.filter
                )
            })
            .collect()
    };
    let (xa, xr) = diff(old.pollers.xmids.clone(), new.pollers.xmids.clone());
    let (sa, sr) = diff(
        old.sinks.keys().cloned().collect(),
        new.sinks.keys().cloned().collect(),
    );
    let (ra, rr) = diff(routes(old), routes(new));
    format!("XMIDs +{xa} −{xr}, sinks +{sa} −{sr}, routes +{ra} −{rr}")
}
