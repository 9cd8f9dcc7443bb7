//! The errors of the MX Connect client. Each names the endpoint and what the server said
//! (a short excerpt of the body), and none carries a credential or a token.

use std::time::Duration;

/// Longest body excerpt kept in an error (bytes, cut at a character boundary).
pub const EXCERPT_LIMIT: usize = 500;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MxcError {
    /// The Security API refused the credentials (HTTP 401 or 403). Retrying will not help:
    /// a person has to fix the configuration.
    #[error("MXC Security API rejected the credentials (HTTP {status}): check {check}; server said: {excerpt}")]
    AuthRejected {
        status: u16,
        /// Which configuration to check, by key path and environment variable.
        check: &'static str,
        excerpt: String,
    },

    /// A resource call got 401 again with a token obtained a moment before.
    #[error("{endpoint}: unauthorized (HTTP 401) even with a fresh token: {excerpt}")]
    Unauthorized { endpoint: String, excerpt: String },

    /// HTTP 429. `retry_after` is the server's `Retry-After`, when it sent one.
    #[error("{endpoint}: throttled by MXC (HTTP 429){}", fmt_retry_after(.retry_after))]
    Throttled {
        endpoint: String,
        retry_after: Option<Duration>,
    },

    /// HTTP 5xx.
    #[error("{endpoint}: MXC server error (HTTP {status}): {excerpt}")]
    Server {
        endpoint: String,
        status: u16,
        excerpt: String,
    },

    /// Any other non-2xx status (400, 403, 404 …): the request itself was refused.
    #[error("{endpoint}: MXC refused the request (HTTP {status}): {excerpt}")]
    Refused {
        endpoint: String,
        status: u16,
        excerpt: String,
    },

    /// No complete answer within the configured timeout.
    #[error("{endpoint}: no answer within {}", humantime::format_duration(*.after))]
    Timeout { endpoint: String, after: Duration },

    /// Connection refused, reset, DNS failure, TLS failure …
    #[error("{endpoint}: transport error: {detail}")]
    Transport { endpoint: String, detail: String },

    /// A 2xx answer whose body is not what the API documents (truncated, not JSON, missing fields).
    #[error("{endpoint}: malformed response (HTTP {status}): {detail}; body starts: {excerpt}")]
    Malformed {
        endpoint: String,
        status: u16,
        detail: String,
        excerpt: String,
    },

    /// The caller asked for something the API cannot do (no XMID, page size over 100 …).
    #[error("invalid MXC request: {0}")]
    InvalidRequest(String),
}

fn fmt_retry_after(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {}", humantime::format_duration(*d)),
        None => String::new(),
    }
}

impl MxcError {
    /// Whether trying the same call again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MxcError::Throttled { .. }
                | MxcError::Server { .. }
                | MxcError::Timeout { .. }
                | MxcError::Transport { .. }
                | MxcError::Malformed { .. }
                | MxcError::Unauthorized { .. }
        )
    }

    /// The HTTP status MXC answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            MxcError::AuthRejected { status, .. }
            | MxcError::Server { status, .. }
            | MxcError::Refused { status, .. }
            | MxcError::Malformed { status, .. } => Some(*status),
            MxcError::Unauthorized { .. } => Some(401),
            MxcError::Throttled { .. } => Some(429),
            MxcError::Timeout { .. } | MxcError::Transport { .. } | MxcError::InvalidRequest(_) => {
                None
            }
        }
    }

    /// A short name of the kind of failure (a trace's `error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            MxcError::AuthRejected { .. } => "auth_rejected",
            MxcError::Unauthorized { .. } => "unauthorized",
            MxcError::Throttled { .. } => "throttled",
            MxcError::Server { .. } => "server_error",
            MxcError::Refused { .. } => "refused",
            MxcError::Timeout { .. } => "timeout",
            MxcError::Transport { .. } => "transport",
            MxcError::Malformed { .. } => "malformed",
            MxcError::InvalidRequest(_) => "invalid_request",
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MxcError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// At most [`EXCERPT_LIMIT`] bytes of a body, as one line, for an error message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    http_kit::client::excerpt_within(body, EXCERPT_LIMIT)
}

/// A failed exchange: a timeout, or a transport failure described by its whole cause chain
/// (reqwest's own message alone is just "error sending request").
pub(crate) fn request_error(endpoint: &str, error: reqwest::Error, timeout: Duration) -> MxcError {
    if error.is_timeout() {
        return MxcError::Timeout {
            endpoint: endpoint.to_string(),
            after: timeout,
        };
    }
    MxcError::Transport {
        endpoint: endpoint.to_string(),
        detail: http_kit::client::error_chain(error),
    }
}

/// The error for a non-2xx status other than 401.
pub(crate) fn status_error(
    endpoint: &str,
    status: u16,
    retry_after: Option<Duration>,
    excerpt: String,
) -> MxcError {
    let endpoint = endpoint.to_string();
    match status {
        429 => MxcError::Throttled {
            endpoint,
            retry_after,
        },
        500..=599 => MxcError::Server {
            endpoint,
            status,
            excerpt,
        },
        _ => MxcError::Refused {
            endpoint,
            status,
            excerpt,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_bounded_and_one_line() {
        let body = "é\n".repeat(1000);
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= EXCERPT_LIMIT + '…'.len_utf8());
        assert!(!e.contains('\n'));
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b""), "(empty body)");
    }

    #[test]
    fn throttled_names_its_delay() {
        let e = MxcError::Throttled {
            endpoint: "GET /report/v1/tsys/authorization".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            e.to_string(),
            "GET /report/v1/tsys/authorization: throttled by MXC (HTTP 429), retry after 7s"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }
}
