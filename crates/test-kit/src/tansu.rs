//! A Kafka-protocol broker (Tansu) of a test's or bench's own: in memory, on a free port of
//! 127.0.0.1, stopped when dropped. `.ci/test` starts the one the tests share the same way.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the Tansu binary (`.ci/test` sets it).
pub const TANSU_BIN_ENV: &str = "MXC_RELAY_TEST_TANSU";

/// How long a broker may take to accept connections.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A running broker; killed (resumed first if paused) when dropped.
pub struct Tansu {
    child: Child,
    address: String,
}

impl Tansu {
    /// Starts the broker at `bin` and waits until it accepts connections.
    ///
    /// # Panics
    /// When it cannot be spawned, exits (its port taken meanwhile) or is not up within 10 s.
    pub fn start(bin: &str) -> Tansu {
        let address = free_address();
        let url = format!("tcp://{address}");
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("tansu ({bin}) did not spawn: {e}"));
        // Owned (and killed on drop) before anything can fail.
        let mut broker = Tansu { child, address };
        let deadline = Instant::now() + START_WITHIN;
        while TcpStream::connect(&broker.address).is_err() {
            assert!(
                matches!(broker.child.try_wait(), Ok(None)),
                "tansu exited ({} taken?)",
                broker.address
            );
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// `HOST:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stops the broker answering (SIGSTOP), as a broker gone from the network.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker answer again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "kill {signal} {pid} (tansu): {status:?}"
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        // Resumed first, in case it was left paused.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 nothing listened on a moment ago (bound, then released): the broker
/// must be told its address before it starts.
fn free_address() -> String {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}
