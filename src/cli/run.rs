//! `mxc-relay run`: the service. SIGHUP (or `mxc-relay reload`) re-reads the configuration
//! file and applies it without leaving the process; a file with errors is refused and the
//! running configuration stays. Beside the store it keeps its pid and the last reload's
//! outcome, for `mxc-relay reload`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use mxc::Clock;

use mxc_relay::admin::discovery::Discovery;
use mxc_relay::config::{Config, ConfigErrors};
use mxc_relay::pipeline::{Pipeline, PipelineError};
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
    let mut config = Config::load_for_run(&args.config)?;
    let metrics = Metrics::new();
    let traces = telemetry::init(
        &config.log.level,
        config.log.format,
        Some((&config.telemetry.traces, &metrics)),
    )?;
    if config.telemetry.traces.enabled() {
        tracing::info!(collector = %mxc::display_url(&config.telemetry.traces.traces_url()),
            sampling_ratio = config.telemetry.traces.sampling_ratio, "exporting traces");
    }
    let mut pipeline = tokio::select! {
        started = Pipeline::start(&config, metrics) => started?,
        _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
    };
    // The store is open (and locked): this process is the one `mxc-relay reload` signals.
    let control = Control::new(&config.store.path);
    control.write_pid();
    announce_admin(&config, &pipeline);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = hangups.next() => {
                let outcome = match reread(&args.config, &config) {
                    Err(refused) => Err(refused),
                    Ok(new) => {
                        let (next, applied) = pipeline.reload(&config, &new).await?;
                        pipeline = next;
                        announce_admin(&config, &pipeline);
                        match applied {
                            Ok(()) => {
                                if new.telemetry.traces != config.telemetry.traces {
                                    tracing::warn!("[telemetry.traces] changed: traces keep their start-up settings until the next start");
                                }
                                let changes = changes(&config, &new);
                                tracing::info!(%changes, "configuration reloaded");
                                config = new;
                                Ok(changes)
                            }
                            Err(error) => {
                                tracing::error!(%error, "reload failed to start; the previous configuration runs again");
                                Err(ReloadFailure::DidNotStart(error))
                            }
                        }
                    }
                };
                control.write_outcome(&outcome);
            }
        }
    }
    super::exit_on_second_signal();
    tracing::info!("stopping: finishing in-flight deliveries (a second signal exits at once)");
    let stopped = pipeline.shutdown().await;
    if let Some(traces) = traces {
        // The last deliveries' spans.
        traces.shutdown(std::time::Duration::from_secs(5)).await;
    }
    Discovery::remove(&config.store.path);
    control.remove();
    stopped?;
    Ok(ExitCode::SUCCESS)
}

/// Writes (or rewrites, after a reload) the file through which the CLI finds the admin API.
fn announce_admin(config: &Config, pipeline: &Pipeline) {
    let path = Discovery::path(&config.store.path);
    match pipeline.admin_addr {
        Some(addr) => {
            let found = Discovery::new(addr, pipeline.admin_generated_token.as_ref());
            if let Err(e) = found.write(&config.store.path) {
                tracing::warn!(file = %path.display(), error = %e,
                    "cannot write the admin API's address; the CLI will not find the running service");
            }
        }
        None => Discovery::remove(&config.store.path),
    }
}

/// The files beside the store through which `mxc-relay reload` finds the service and learns
/// what its reload did (both are the user's own: no port or socket is opened for it).
pub(super) struct Control {
    pid: PathBuf,
    outcome: PathBuf,
}

/// What the service writes after each reload attempt.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ReloadOutcome {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub ok: bool,
    /// What changed, or why nothing did.
    pub message: String,
}

impl Control {
    pub(super) fn new(store: &Path) -> Control {
        Control {
            pid: store.join("mxc-relay.pid"),
            outcome: store.join("last-reload.json"),
        }
    }

    fn write_pid(&self) {
        if let Err(e) = std::fs::write(&self.pid, std::process::id().to_string()) {
            tracing::warn!(file = %self.pid.display(), error = %e, "cannot write the pid file; `mxc-relay reload` will not find this process (SIGHUP still works)");
        }
    }

    fn write_outcome(&self, outcome: &Result<String, ReloadFailure>) {
        let record = ReloadOutcome {
            at_ms: mxc::SystemClock.now().timestamp_millis(),
            ok: outcome.is_ok(),
            message: match outcome {
                Ok(m) => m.clone(),
                Err(e) => e.to_string(),
            },
        };
        let text = serde_json::to_string(&record).unwrap_or_default();
        if let Err(e) = std::fs::write(&self.outcome, text) {
            tracing::warn!(file = %self.outcome.display(), error = %e, "cannot record the reload's outcome");
        }
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.pid);
    }

    /// The running service's pid, if its file is there.
    pub(super) fn read_pid(&self) -> Result<u32, PidError> {
        let text = std::fs::read_to_string(&self.pid).map_err(|error| PidError::NoService {
            file: self.pid.clone(),
            error,
        })?;
        text.trim().parse().map_err(|_| PidError::NotAPid {
            file: self.pid.clone(),
            text: text.trim().to_string(),
        })
    }

    pub(super) fn read_outcome(&self) -> Option<ReloadOutcome> {
        let text = std::fs::read_to_string(&self.outcome).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Why `mxc-relay reload` finds no service to signal.
#[derive(Debug, thiserror::Error)]
pub(super) enum PidError {
    /// No pid file beside the store (or it cannot be read): no service runs on this store.
    #[error("no running service found ({}: {error}); is it running with this configuration's store.path?", file.display())]
    NoService {
        file: PathBuf,
        error: std::io::Error,
    },
    /// The pid file holds something else than a pid.
    #[error("{}: not a pid: {text:?}", file.display())]
    NotAPid { file: PathBuf, text: String },
}

/// Why a SIGHUP did not apply the configuration file: logged, and written beside the store for
/// `mxc-relay reload`.
#[derive(Debug, thiserror::Error)]
enum ReloadFailure {
    /// The file has errors; the running configuration stays.
    #[error("refused, the running configuration stays: {0}")]
    Invalid(ConfigErrors),
    /// The file moves the store, which only a restart can do.
    #[error("refused: store.path cannot change while running ({} → {}); restart to move the store", running.display(), new.display())]
    StoreMoved { running: PathBuf, new: PathBuf },
    /// The new configuration was valid but did not start; the previous one runs again.
    #[error("the new configuration failed to start ({0}); the previous one runs again")]
    DidNotStart(PipelineError),
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

/// The file again, if it is valid; why not (logged too) if not.
fn reread(path: &Path, current: &Config) -> Result<Config, ReloadFailure> {
    tracing::info!(file = %path.display(), "SIGHUP: reading the configuration again");
    match Config::load_for_run(path) {
        Err(errors) => {
            tracing::error!(errors = %errors, "reload refused: the configuration has errors; the running one stays");
            Err(ReloadFailure::Invalid(errors))
        }
        Ok(new) if new.store.path != current.store.path => {
            tracing::error!(running = %current.store.path.display(), new = %new.store.path.display(),
                "reload refused: store.path cannot change while running; restart to move the store");
            Err(ReloadFailure::StoreMoved {
                running: current.store.path.clone(),
                new: new.store.path.clone(),
            })
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
            Ok(new)
        }
    }
}

/// What a reload changes, in a few words: XMIDs, resources, routes and sinks added or removed.
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
                    "{}→{}:{}:{}:{:?}",
                    r.name.clone().unwrap_or_default(),
                    r.sink,
                    r.resource,
                    r.event_type(),
                    r.filter()
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
    let (pa, pr) = diff(old.pollers.resources.clone(), new.pollers.resources.clone());
    format!("XMIDs +{xa} −{xr}, resources +{pa} −{pr}, sinks +{sa} −{sr}, routes +{ra} −{rr}")
}
