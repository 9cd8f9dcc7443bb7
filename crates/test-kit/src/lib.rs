//! What the relay's integration tests (`tests/it`) and benchmarks (`benches/`) share, which
//! cannot live in either (they are separate crates): the pipeline configuration they run
//! against the simulator (`pipeline_config`), and the processes they start — a Kafka-protocol
//! broker of their own (`tansu`) and `mxc-relay sim` (`sim_process`). Dev-only: never published,
//! never a dependency of the relay itself.

mod pipeline_config;
mod sim_process;
mod tansu;

pub use pipeline_config::PipelineConfigBuilder;
pub use sim_process::SimProcess;
pub use tansu::{Tansu, TANSU_BIN_ENV};
