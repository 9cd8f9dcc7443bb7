//! What the integration tests share: the simulator and clients pointed at it (`sim`), the
//! Kafka-protocol broker (`kafka`), addresses and receivers (`net`), waiting for a sink's lines
//! (`wait`), the secret canaries (`canary`), the event contract (`contract`) and an OTLP
//! collector (`otlp`). What they share with the benches — a pipeline's configuration and a
//! broker of their own — is in `crates/test-kit`.

pub mod canary;
pub mod contract;
pub mod kafka;
mod net;
pub mod otlp;
mod sim;
mod wait;

pub use net::*;
pub use sim::*;
pub use wait::*;

/// The relay's binary, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_mxc-relay");

pub fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}
