//! mxc-relay: watches MX Connect for new card authorizations per merchant (XMID) and turns each
//! into an event for Kafka and signed webhooks. See ARCHITECTURE.md.
//!
//! Errors: the library's functions return typed errors, one `thiserror` enum per module where
//! one fits (`PipelineError`, `SinkError`, `RouteError` …), each variant documented and its text
//! the message users read; `anyhow` is used only by the binary's commands (`src/cli/`), which
//! print the error once and exit.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod filter;
pub mod health;
pub mod pipeline;
pub mod poll;
pub mod receiver;
pub mod route;
pub mod schema;
pub mod signature;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod top;
