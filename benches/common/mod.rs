//! Helpers the benchmarks that run the real binaries share.
// Each bench uses some of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The environment variable `name` read as a `T`, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kills the child when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bin sim` on a free port with `merchants` open merchants and no traffic of its own; its base
/// URL (the first line it prints).
pub fn start_idle_sim(bin: &str, merchants: usize) -> (Guard, String) {
    let mut sim = Guard(
        Command::new(bin)
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--merchants",
                &merchants.to_string(),
                "--closed-merchants",
                "0",
                "--rate",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sim"),
    );
    let mut line = String::new();
    BufReader::new(sim.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let base = line.trim().trim_start_matches("listening on ").to_string();
    (sim, base)
}

/// The sum of a series' samples whose labels include all of `labels`, from Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds this process has used so far (user and system, every thread), from getrusage.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The machine and commit a benchmark ran on, for its provenance line.
pub fn machine() -> String {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let model = run("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_string()))
        .unwrap_or_default();
    format!(
        "machine: {} CPU(s), {model}; commit {}",
        run("nproc", &[]),
        run(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        )
    )
}
