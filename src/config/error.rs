//! What is wrong with one configured value, found where the value is read. The caller adds the
//! key path (a [`ConfigError`](super::ConfigError) in validation, a `sinks.NAME.` prefix in a
//! sink's error), so these texts say only what is wrong with the value.

use crate::signature::SignatureError;

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// A duration that is not written like `30s`, `10m`, `1h30m` or `250ms`.
    #[error("invalid duration {text:?} ({error}); write it like 30s, 10m, 1h30m or 250ms")]
    Duration {
        text: String,
        error: humantime::DurationError,
    },
    /// `pollers.start` is neither `now` nor an RFC 3339 instant.
    #[error("must be \"now\" or an ISO-8601 instant such as 2026-01-01T00:00:00Z, got {text:?} ({error})")]
    NotAnInstant {
        text: String,
        error: chrono::ParseError,
    },
    /// `pollers.start` is an instant after now: nothing would be polled until then.
    #[error("{0:?} is in the future")]
    InTheFuture(String),
    /// The webhook secret at `index` of `secrets` is not `whsec_` and base64 (the text never
    /// quotes it).
    #[error("secrets[{index}]: {error}")]
    Secret { index: usize, error: SignatureError },
}
