//! What operators set by hand through the admin API, and endpoint state that must outlive a
//! restart: merchants whose polling is paused, webhook endpoints paused by hand, and since when
//! an endpoint has been failing (what `disable_after` counts from).

use chrono::{DateTime, Utc};
use redb::ReadableTable;

use super::{Store, StoreError, CONTROLS};

const MERCHANT_PAUSED: &str = "merchant-paused/";
const ENDPOINT_PAUSED: &str = "endpoint-paused/";
const ENDPOINT_FAILING: &str = "endpoint-failing-since/";

impl Store {
    /// XMIDs whose polling is paused by hand.
    pub fn paused_merchants(&self) -> Result<Vec<String>, StoreError> {
        self.inner.engine.read("read paused merchants", |txn| {
            let mut out = Vec::new();
            for item in txn.open_table(CONTROLS)?.range(MERCHANT_PAUSED..)? {
                let (k, _) = item?;
                let Some(xmid) = k.value().strip_prefix(MERCHANT_PAUSED) else {
                    break;
                };
                out.push(xmid.to_string());
            }
            Ok(out)
        })
    }

    pub fn set_merchant_paused(&self, xmid: &str, paused: bool) -> Result<(), StoreError> {
        self.set_control(
            &format!("{MERCHANT_PAUSED}{xmid}"),
            paused.then_some(&b"1"[..]),
        )
    }

    /// Whether the webhook endpoint is paused by hand.
    pub fn endpoint_paused(&self, sink: &str) -> Result<bool, StoreError> {
        let key = format!("{ENDPOINT_PAUSED}{sink}");
        Ok(self.value(CONTROLS, &key, "read endpoint pause")?.is_some())
    }

    pub fn set_endpoint_paused(&self, sink: &str, paused: bool) -> Result<(), StoreError> {
        self.set_control(
            &format!("{ENDPOINT_PAUSED}{sink}"),
            paused.then_some(&b"1"[..]),
        )
    }

    /// The first failure since the endpoint's last success, if it is failing.
    pub fn endpoint_failing_since(&self, sink: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let key = format!("{ENDPOINT_FAILING}{sink}");
        let raw = self.value(CONTROLS, &key, "read endpoint failing period")?;
        raw.map(|v| {
            <[u8; 8]>::try_from(v.as_slice())
                .ok()
                .and_then(|b| DateTime::from_timestamp_millis(i64::from_be_bytes(b)))
                .ok_or_else(|| self.corrupt("endpoint failing period", sink, "not 8 bytes of time"))
        })
        .transpose()
    }

    pub fn set_endpoint_failing_since(
        &self,
        sink: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let bytes = since.map(|t| t.timestamp_millis().to_be_bytes());
        self.set_control(
            &format!("{ENDPOINT_FAILING}{sink}"),
            bytes.as_ref().map(|b| &b[..]),
        )
    }

    /// Sets (`Some`) or clears a control, durably: an operator's pause must survive a crash.
    fn set_control(&self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        self.put(CONTROLS, key, value, "write control")?;
        self.inner.engine.sync()
    }
}
