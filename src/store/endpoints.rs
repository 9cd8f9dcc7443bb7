//! Webhook endpoints switched off, and why (one entry per sink).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, ENDPOINTS};

/// A webhook endpoint switched off (by a `410 Gone`, or after failing too long). Its events
/// wait in the outbox until it is enabled again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisabledEndpoint {
    pub disabled_at: DateTime<Utc>,
    pub reason: String,
    /// The URL it had (as displayed: no query, no credentials); a new URL in the
    /// configuration enables the endpoint again.
    pub url: String,
}

impl Store {
    /// Whether (and why) a webhook endpoint is disabled.
    pub fn disabled_endpoint(&self, sink: &str) -> Result<Option<DisabledEndpoint>, StoreError> {
        let raw = self.value(ENDPOINTS, sink, "read endpoint state")?;
        raw.map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| self.corrupt("endpoint state", sink, &e.to_string()))
        })
        .transpose()
    }

    /// Disables a webhook endpoint (`Some`) or enables it again (`None`).
    pub fn set_disabled_endpoint(
        &self,
        sink: &str,
        state: Option<&DisabledEndpoint>,
    ) -> Result<(), StoreError> {
        let bytes = state
            .map(|state| {
                serde_json::to_vec(state)
                    .map_err(|e| self.corrupt("endpoint state", sink, &e.to_string()))
            })
            .transpose()?;
        self.put(ENDPOINTS, sink, bytes.as_deref(), "write endpoint state")?;
        self.inner.engine.sync()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::testing::open;

    #[test]
    fn an_endpoint_is_disabled_until_enabled_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["hook"]);
        assert_eq!(store.disabled_endpoint("hook").unwrap(), None);
        let off = DisabledEndpoint {
            disabled_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            reason: "410 Gone".into(),
            url: "https://example.com/hook".into(),
        };
        store.set_disabled_endpoint("hook", Some(&off)).unwrap();
        assert_eq!(store.disabled_endpoint("hook").unwrap(), Some(off));
        store.set_disabled_endpoint("hook", None).unwrap();
        assert_eq!(store.disabled_endpoint("hook").unwrap(), None);
    }
}
