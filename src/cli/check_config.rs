//! `mxc-relay check-config FILE`: validate, with what `run` needs of this machine, and report
//! every error at once.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use mxc_relay::config::{Config, ENV_OVERRIDES};

#[derive(Args)]
pub struct CheckConfigArgs {
    /// The TOML configuration file.
    file: PathBuf,
}

pub fn run(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    match Config::load_for_run(&args.file) {
        Ok(config) => {
            let from_env: Vec<String> = ENV_OVERRIDES
                .iter()
                .filter(|(var, _)| std::env::var(var).is_ok_and(|v| !v.is_empty()))
                .map(|(var, key)| format!("{key} from {var}"))
                .collect();
            println!(
                "{}: OK — {} XMID(s), MXC at {}, polled every {}{}",
                args.file.display(),
                config.pollers.xmids.len(),
                mxc::display_url(&config.mxc.base_url),
                humantime::format_duration(config.pollers.interval),
                if from_env.is_empty() {
                    String::new()
                } else {
                    format!("; {}", from_env.join(", "))
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(ExitCode::FAILURE)
        }
    }
}
