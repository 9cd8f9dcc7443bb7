//! `mxc-relay run`: the service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use mxc_relay::config::Config;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::{self, Metrics};

#[derive(Args)]
pub struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    telemetry::init_logging(&config.log.level, config.log.format);
    let pipeline = Pipeline::start(&config, Metrics::new()).await?;
    super::shutdown_signal().await;
    super::exit_on_second_signal();
    tracing::info!("stopping: finishing in-flight deliveries (a second signal exits at once)");
    pipeline.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}
