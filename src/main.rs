//! The `mxc-relay` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    fix_mmap_threshold();
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(args));
    // Stop the runtime first, so that the error is the last line printed.
    drop(runtime);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold each time a large block is freed, up to 32 MiB; from then
/// on each page body (~700 KB for 100 records) comes from the heap arenas of whichever thread
/// reads it, and the arenas keep what is freed. A soak at 100 records/s was at 203 MiB after
/// 19 minutes and growing, 78 MB of it in use; with the threshold fixed at glibc's own default,
/// 128 KiB, such blocks are mapped and returned when freed (see the README's soak).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
