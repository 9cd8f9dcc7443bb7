//! `mxc-relay sim`: the MX Connect simulator as a server (the `mxc-sim` crate's command line).

use std::process::ExitCode;

use mxc_relay::config::LogFormat;

pub use mxc_sim::cli::SimArgs;

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    mxc_relay::telemetry::init_logging("info", LogFormat::Pretty);
    mxc_sim::cli::serve(args, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
