//! What the admin API takes and answers (JSON), shared by the server, the CLI's client and the
//! CLI's direct reading of a stopped service's store: one shape either way.

use chrono::{DateTime, Utc};
use mxc::Clock;
use serde::{Deserialize, Serialize};

/// The running state: what `mxc-relay state` prints.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateView {
    /// The store's directory.
    pub store: String,
    /// Whether this came from the running service (else from its store, stopped).
    pub live: bool,
    /// One per XMID and resource polled: the page [`CursorPage`] asks for (by default the
    /// first 1,000 by XMID).
    pub cursors: Vec<CursorView>,
    /// Every cursor at a glance, however many there are.
    pub cursor_summary: CursorSummary,
    /// The `after` of the next page of cursors; absent on the last page (or with `sort=lag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursors_next: Option<String>,
    /// Record ids remembered for deduplication.
    pub seen_ids: u64,
    pub sinks: Vec<SinkView>,
    /// Outboxes of sinks no longer configured: their events wait there.
    pub orphan_outboxes: Vec<OrphanOutbox>,
    /// XMIDs whose polling an operator paused.
    pub paused_merchants: Vec<String>,
    /// Merchants polled because the roster lists them (live, when the roster is used).
    pub roster_merchants: Option<i64>,
    /// In a cluster: the shards this instance owns (live).
    pub cluster_shards: Option<i64>,
    /// The backfill running inside the service, or the last one.
    pub backfill: Option<BackfillStatus>,
}

/// Which cursors `/v1/state` lists: a fleet of 100,000 merchants has as many.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CursorPage {
    /// At most this many (default 1,000; 0: none, the summary only).
    pub limit: Option<usize>,
    /// `xmid` (the default: by resource and XMID, paged with `after`) or `lag` (the most
    /// lagging first: the `limit` worst, no further pages).
    pub sort: Option<CursorSort>,
    /// Continue after this cursor: the previous page's `cursors_next`.
    pub after: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CursorSort {
    #[default]
    Xmid,
    Lag,
}

impl CursorPage {
    /// The cursors listed by default.
    pub const DEFAULT_LIMIT: usize = 1_000;
}

/// Every cursor's lag, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CursorSummary {
    /// Cursors in all (one per XMID and resource polled).
    pub count: u64,
    pub lag_p50_seconds: u64,
    pub lag_p99_seconds: u64,
    pub lag_max_seconds: u64,
    /// The cursor furthest behind.
    pub most_lagging: Option<CursorView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CursorView {
    pub xmid: String,
    pub resource: String,
    /// The end of the last completed poll (on `created`: MXC's ingestion time).
    pub polled_up_to: DateTime<Utc>,
    pub lag_seconds: u64,
    /// While the XMID's polls fail (live only): the last error and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// A merchant's last poll error.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastError {
    pub at: DateTime<Utc>,
    /// The error, as the log says it.
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SinkView {
    pub name: String,
    pub outbox: u64,
    /// Entries waiting for a retry (webhooks).
    pub retrying: u64,
    pub dead_letters: u64,
    /// For webhook sinks.
    pub endpoint: Option<EndpointView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub disabled: Option<Disabled>,
    pub paused_by_hand: bool,
    /// The first failure since the last success, if it is failing.
    pub failing_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disabled {
    pub since: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrphanOutbox {
    pub sink: String,
    pub outbox: u64,
}

/// Which dead letters: every given filter must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterFilter {
    pub sink: Option<String>,
    /// Dead-lettered at or after this instant.
    pub since: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
    pub xmid: Option<String>,
}

/// A replay: the letters the filter selects, or only those with these event ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayRequest {
    #[serde(flatten)]
    pub filter: DeadLetterFilter,
    /// Event ids (`evt_…`); empty: every letter the filter selects.
    #[serde(default)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    pub sink: String,
    pub seq: u64,
    pub failed_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub reason: String,
    pub event_id: String,
    pub event_type: String,
    pub record_id: String,
    pub xmid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayOutcome {
    /// Letters moved back to their outbox, in all.
    pub replayed: u64,
    /// Per sink (only those with some).
    pub per_sink: Vec<SinkCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SinkCount {
    pub sink: String,
    pub count: u64,
}

/// What enabling, pausing or resuming an endpoint did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointOutcome {
    pub sink: String,
    /// Whether it changed anything (`false`: it was already so).
    pub changed: bool,
    /// In a few words, for people.
    pub message: String,
    /// Events waiting in its outbox.
    pub outbox: u64,
}

/// What pausing, resuming or polling a merchant did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MerchantOutcome {
    pub xmid: String,
    pub changed: bool,
    pub message: String,
}

/// A backfill to start: the options of `mxc-relay backfill`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillStart {
    /// An instant, a date or a duration ago (`30d`); with `until`, the XMIDs and the
    /// resource, the checkpoint's key: the same request resumes.
    pub since: String,
    pub until: Option<DateTime<Utc>>,
    /// Default: those listed in `pollers.xmids`.
    #[serde(default)]
    pub xmids: Vec<String>,
    /// Default: `authorizations`.
    pub resource: Option<String>,
}

/// Where the backfill stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillStatus {
    /// `running`, `complete`, `cancelled` or `failed`.
    pub state: String,
    pub resource: String,
    pub xmids: Vec<String>,
    pub since: String,
    pub read: u64,
    pub new: u64,
    pub duplicate: u64,
    pub total: Option<u64>,
    /// Everything before this transaction time is admitted.
    pub position: Option<DateTime<Utc>>,
    pub resumed: bool,
    /// Why it failed.
    pub error: Option<String>,
}

/// Every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: String,
}

/// Why a text is not an instant for [`parse_instant`]; the text shows what it takes.
#[derive(Debug, thiserror::Error)]
pub enum InstantError {
    /// Neither an RFC 3339 instant, a `YYYY-MM-DD` date nor a duration.
    #[error("{0:?} is not an instant (2026-01-01T00:00:00Z), a date (2026-01-01) or a duration ago (1h)")]
    Unreadable(String),
    /// A duration so long that now minus it is before the first instant chrono can hold.
    #[error("{0:?} ago is before any instant this tool can name")]
    TooLongAgo(String),
}

/// An ISO-8601 instant, a `YYYY-MM-DD` date (its start, UTC), or a duration before now.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, InstantError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    let ago = crate::config::parse_duration(text)
        .map_err(|_| InstantError::Unreadable(text.to_string()))?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|d| mxc::SystemClock.now().checked_sub_signed(d))
        .ok_or_else(|| InstantError::TooLongAgo(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_is_read_or_refused_saying_what_is_taken() {
        assert_eq!(
            parse_instant("2026-01-02").unwrap().to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        assert!(parse_instant("1h").unwrap() < mxc::SystemClock.now());
        assert_eq!(
            parse_instant("soon").unwrap_err().to_string(),
            "\"soon\" is not an instant (2026-01-01T00:00:00Z), a date (2026-01-01) or a duration ago (1h)"
        );
        assert_eq!(
            parse_instant("1000000y").unwrap_err().to_string(),
            "\"1000000y\" ago is before any instant this tool can name"
        );
    }
}
