//! The MX Connect client: managed JWTs, authorization queries, the roster, the record model.

mod auth;
mod authorizations;
mod client;
mod error;
mod record;
mod roster;

pub use auth::{Credentials, TokenPolicy};
pub use authorizations::{
    instant, AuthorizationPager, AuthorizationQuery, Batch, ExportPager, DEFAULT_MAX_RESULT_WINDOW,
    MAX_PAGE_SIZE,
};
pub use client::{display_url, Client, ClientConfig, DEFAULT_BASE_URL};
pub(crate) use client::{error_chain, retry_after};
pub(crate) use error::excerpt_within;
pub use error::{MxcError, EXCERPT_LIMIT};
pub use record::{Page, Record, RecordView, RejectedRecord};
pub use roster::Merchant;

/// Paths of the API, shared with the simulator so the two cannot drift apart.
pub mod paths {
    pub use super::auth::AUTH_PATH;
    pub use super::authorizations::{AUTHORIZATIONS_PATH, EXPORT_PATH};
    pub use super::roster::ROSTER_PATH;
}
