//! mxc-relay: watches MX Connect for new card authorizations per merchant (XMID) and turns each
//! into an event for Kafka and signed webhooks. See the README's architecture section.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod filter;
pub mod health;
pub mod http;
pub mod mxc;
pub mod pipeline;
pub mod poll;
pub mod receiver;
pub mod route;
pub mod schema;
pub mod secret;
pub mod signature;
pub mod sim;
pub mod sink;
pub mod store;
pub mod telemetry;
