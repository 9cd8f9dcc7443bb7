//! What operators set by hand through the admin API, and endpoint state that must outlive a
//! restart: merchants whose polling is paused, webhook endpoints paused by hand, and since when
//! an endpoint has been failing (what `disable_after` counts from).

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

const MERCHANT_PAUSED: &str = "merchant-paused/";
const ENDPOINT_PAUSED: &str = "endpoint-paused/";
const ENDPOINT_FAILING: &str = "endpoint-failing-since/";

impl Store {
    /// XMIDs whose polling is paused by hand.
    pub fn paused_merchants(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.controls.scan_prefix(MERCHANT_PAUSED) {
            let (k, _) = item.map_err(self.io("read paused merchants"))?;
            out.push(String::from_utf8_lossy(&k[MERCHANT_PAUSED.len()..]).into_owned());
        }
        Ok(out)
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
        self.inner
            .controls
            .contains_key(key)
            .map_err(self.io("read endpoint pause"))
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
        let raw = self
            .inner
            .controls
            .get(&key)
            .map_err(self.io("read endpoint failing period"))?;
        raw.map(|v| {
            <[u8; 8]>::try_from(v.as_ref())
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
        let tree = &self.inner.controls;
        match value {
            Some(v) => tree.insert(key, v).map(|_| ()),
            None => tree.remove(key).map(|_| ()),
        }
        .map_err(self.io("write control"))?;
        tree.flush().map_err(self.io("flush control"))?;
        Ok(())
    }
}
