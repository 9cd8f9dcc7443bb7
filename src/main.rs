//! The `mxc-relay` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_malloc();
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
/// 128 KiB, such blocks are mapped and returned when freed (see the soak in benches/README.md).
///
/// glibc also gives threads up to 8 arenas per core, and tokio's blocking pool (the store's
/// writes) runs on many threads in turn: each arena keeps its own freed memory, so RSS climbed
/// in steps for as long as a soak ran (62.0 MiB at 20 minutes, against 42.7 with
/// `MALLOC_ARENA_MAX=2`, in the same run). One arena per core, at least 2, keeps it flat.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8) as libc::c_int;
        // An operator's MALLOC_ARENA_MAX wins.
        let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some();
        // SAFETY: mallopt only sets tunables; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            if !chosen {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
    }
}
