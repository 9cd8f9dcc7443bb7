//! mxc-relay: watches MX Connect for new card authorizations per merchant (XMID) and turns each
//! into an event for Kafka and signed webhooks. See the README's architecture section.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod pipeline;
pub mod poll;
pub mod receiver;
pub mod route;
pub mod schema;
pub mod signature;
pub mod sink;
pub mod store;
pub mod telemetry;
