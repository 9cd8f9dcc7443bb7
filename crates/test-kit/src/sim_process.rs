//! `mxc-relay sim` as a process of its own (what a bench measures the relay against, off the
//! bench's CPU), on a free port of 127.0.0.1, killed when dropped.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running simulator.
pub struct SimProcess {
    child: Child,
    base_url: String,
}

impl SimProcess {
    /// Runs `bin sim --listen 127.0.0.1:0` with `args`, its stderr to `stderr`, and reads its
    /// base URL from the first line it prints (`listening on URL`); the rest of its stdout is
    /// read and dropped, so that it never fills the pipe.
    ///
    /// # Panics
    /// When it cannot be spawned, or its first line is not its address.
    pub fn start<I, S>(bin: &str, args: I, stderr: Stdio) -> SimProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(bin)
            .args(["sim", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("the simulator ({bin} sim) did not spawn: {e}"));
        let stdout = child.stdout.take();
        // Owned (and killed on drop) before anything can fail.
        let mut sim = SimProcess {
            child,
            base_url: String::new(),
        };
        let mut reader = BufReader::new(stdout.expect("stdout is piped"));
        let mut line = String::new();
        if let Err(e) = reader.read_line(&mut line) {
            panic!("the simulator's first line: {e}");
        }
        sim.base_url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the simulator: {line:?}"))
            .to_string();
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        sim
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
