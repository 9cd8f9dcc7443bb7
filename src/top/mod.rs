//! `mxc-relay top`: the live picture of a running service, apart from the terminal that shows
//! it. [`Model`] takes refreshes (the admin API's state and a scrape of `/metrics`) and keys,
//! and says which admin API action to send; [`render`] draws it with ratatui and [`plain`]
//! writes it as text (`--once`). The command itself (`src/cli/top.rs`) fetches, drives the
//! terminal and sends the actions. `top` only reads, except for the actions an operator
//! confirms, and those go through the admin API: it never opens the store.

mod metrics_text;
mod model;
mod view;

pub use metrics_text::Counters;
pub use model::{Action, Command, Focus, InstanceRow, Key, Model, Rates, Sample};
pub use view::{plain, render, MIN_HEIGHT, MIN_WIDTH};
