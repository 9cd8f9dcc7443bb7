//! The MX Connect client: managed JWTs, report queries (authorizations, disputes, batches,
//! ACH), the roster, the record model.
//!
//! It keeps no metrics (it logs through `tracing`): a program that wants to count calls gives
//! the client an [`Observer`]. Errors are typed ([`MxcError`] for calls, [`ParseError`] for
//! pages and records) and never carry a credential or a token. Times come from a [`Clock`]
//! (the machine's by default), so tests can pause them.

mod auth;
mod client;
mod clock;
mod error;
mod observer;
mod record;
mod report;
mod resource;
mod roster;
mod secret;
mod span;
mod time;

pub use auth::{Credentials, TokenPolicy};
pub use client::{display_url, Client, ClientConfig, DEFAULT_BASE_URL};
pub use error::{MxcError, EXCERPT_LIMIT};
pub use observer::Observer;
pub use record::{Page, ParseError, Record, RecordView, RejectedRecord};
pub use report::{
    instant, Batch, ExportPager, RawPage, ReportPager, ReportQuery, TimeBasis,
    DEFAULT_MAX_RESULT_WINDOW, MAX_PAGE_SIZE,
};
pub use resource::{Alert, Resource, ACH, AUTHORIZATIONS, BATCHES, DISPUTES, RESOURCES};
pub use roster::Merchant;
pub use secret::Secret;
pub use time::{Clock, SharedClock, SystemClock, TokioClock};

/// The vendor's sample authorization record (documented): the simulator's template and the
/// source of the event schema's field list.
pub const AUTHORIZATION_SAMPLE: &str = include_str!("authorization_sample.json");

/// Paths of the API, shared with the simulator so the two cannot drift apart.
pub mod paths {
    pub use super::auth::AUTH_PATH;
    pub use super::roster::ROSTER_PATH;
}
