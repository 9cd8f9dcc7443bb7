//! `mxc-sim`: the MX Connect simulator as a server of its own (the same as `mxc-relay sim`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// A simulator of the MX Connect API: the same paths, parameters, envelope and field set,
/// real JWTs, generated records, fault injection and a control surface under `/_sim`.
#[derive(Parser)]
#[command(name = "mxc-sim", version)]
struct Cli {
    #[command(flatten)]
    sim: mxc_sim::cli::SimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match mxc_sim::cli::serve(cli.sim, http_kit::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
