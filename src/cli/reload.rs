//! `mxc-relay reload`: checks the configuration file, asks the running service to apply it
//! (SIGHUP to the pid it keeps beside its store), and reports what the service did. A file with
//! errors is refused here, before the service is disturbed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::run::Control;
use mxc_relay::config::Config;

#[derive(Args)]
pub struct ReloadArgs {
    /// The running service's configuration file (its store.path locates the service).
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
    /// How long to wait for the service to report the outcome.
    #[arg(long, default_value = "60s", value_parser = mxc_relay::config::parse_duration)]
    wait: Duration,
}

pub async fn run(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load_for_run(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("not reloaded: the running configuration stays");
            return Ok(ExitCode::FAILURE);
        }
    };
    let control = Control::new(&config.store.path);
    let pid = control.read_pid()?;
    let before = control.read_outcome().map_or(i64::MIN, |o| o.at_ms);
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run kill to signal pid {pid}: {e}"))?;
    anyhow::ensure!(
        sent.success(),
        "cannot signal pid {pid} (from {}): the service is not running, or belongs to another user",
        config.store.path.join("mxc-relay.pid").display()
    );
    eprintln!("sent SIGHUP to mxc-relay (pid {pid}); waiting for its outcome");
    let deadline = Instant::now() + args.wait;
    while Instant::now() < deadline {
        if let Some(outcome) = control.read_outcome().filter(|o| o.at_ms > before) {
            return Ok(if outcome.ok {
                println!("reloaded: {}", outcome.message);
                ExitCode::SUCCESS
            } else {
                println!("not reloaded: {}", outcome.message);
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "pid {pid} said nothing within {}; see its log",
        humantime::format_duration(args.wait)
    )
}
