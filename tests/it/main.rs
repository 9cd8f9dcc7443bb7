//! The integration tests, one binary: a module per area, the helpers they share in `support`.
//! `.ci/test` runs them with nextest, each test in its own process; one area alone:
//! `bash .ci/test -E 'test(/^kafka::/)'`.

// The tests run the relay against servers on this machine and compare with their clocks:
// they read the wall clock directly, which the code under test may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod support;

mod admin;
mod architecture;
mod auth;
mod backfill;
mod cli;
mod cluster;
mod config;
mod config_reference;
mod contract;
mod crash;
mod disk_full;
mod fault_suite;
mod faults;
mod ingestion;
mod kafka;
mod openapi;
mod paging;
mod pipeline;
mod properties;
mod receiver;
mod record_model;
mod record_path;
mod reload;
mod resources;
mod roster;
mod sim_api;
mod telemetry;
mod top;
mod traces;
mod webhook;
