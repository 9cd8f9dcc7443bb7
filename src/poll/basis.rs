//! Which instant each resource's polls follow: MXC's ingestion time (`created`) where the
//! resource has one and MXC answers such queries, the transaction time otherwise — and the
//! fall from one to the other said out loud, once per resource.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::config::CursorMode;
use crate::mxc::{MxcError, Resource, TimeBasis};
use crate::telemetry::Metrics;

/// The time basis of each resource's polls, shared by every poller of the process.
#[derive(Debug)]
pub struct Bases {
    mode: CursorMode,
    /// Resources whose `created` queries MXC refused (`auto` only).
    fallen_back: Mutex<HashSet<&'static str>>,
}

impl Bases {
    pub fn new(mode: CursorMode) -> Bases {
        Bases {
            mode,
            fallen_back: Mutex::new(HashSet::new()),
        }
    }

    /// What the next poll of `resource` follows.
    pub fn of(&self, resource: &Resource) -> TimeBasis {
        if resource.ingestion_field.is_none() {
            return TimeBasis::Transaction;
        }
        match self.mode {
            CursorMode::TransactionTime => TimeBasis::Transaction,
            CursorMode::Created => TimeBasis::Ingestion,
            CursorMode::Auto if self.has_fallen_back(resource) => TimeBasis::Transaction,
            CursorMode::Auto => TimeBasis::Ingestion,
        }
    }

    fn has_fallen_back(&self, resource: &Resource) -> bool {
        self.fallen_back
            .lock()
            .map(|set| set.contains(resource.name))
            .unwrap_or(false)
    }

    /// After `error` from a poll on `created`: whether `resource` now falls back to the
    /// transaction time (`auto`, and MXC refused the query with 400). The first time, says
    /// so in the log and in `mxc_relay_cursor_fallback`.
    pub fn fall_back(
        &self,
        resource: &'static Resource,
        error: &MxcError,
        metrics: &Metrics,
    ) -> bool {
        if self.mode != CursorMode::Auto || !matches!(error, MxcError::Refused { status: 400, .. })
        {
            return false;
        }
        let first = self
            .fallen_back
            .lock()
            .map(|mut set| set.insert(resource.name))
            .unwrap_or(false);
        if first {
            metrics
                .cursor_fallback
                .with_label_values(&[resource.name])
                .set(1);
            tracing::warn!(resource = resource.name, %error,
                "MXC refuses queries on the ingestion time (created): this resource is polled by transaction time with pollers.look_back from now on; records that reach MXC later than the look-back are found only by the reconciliation sweep");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mxc::{AUTHORIZATIONS, DISPUTES};

    fn refused(status: u16) -> MxcError {
        MxcError::Refused {
            endpoint: "GET /report".into(),
            status,
            excerpt: "No mapping found for [created]".into(),
        }
    }

    #[test]
    fn auto_falls_back_on_400_only_and_once() {
        let metrics = Metrics::new();
        let bases = Bases::new(CursorMode::Auto);
        assert_eq!(bases.of(&AUTHORIZATIONS), TimeBasis::Ingestion);
        assert_eq!(bases.of(&DISPUTES), TimeBasis::Transaction);
        assert!(!bases.fall_back(&AUTHORIZATIONS, &refused(403), &metrics));
        assert_eq!(bases.of(&AUTHORIZATIONS), TimeBasis::Ingestion);
        assert!(bases.fall_back(&AUTHORIZATIONS, &refused(400), &metrics));
        assert_eq!(bases.of(&AUTHORIZATIONS), TimeBasis::Transaction);
        let gauge = metrics
            .cursor_fallback
            .with_label_values(&["authorizations"]);
        assert_eq!(gauge.get(), 1);
    }

    #[test]
    fn created_never_falls_back_and_transaction_time_never_asks() {
        let metrics = Metrics::new();
        let created = Bases::new(CursorMode::Created);
        assert!(!created.fall_back(&AUTHORIZATIONS, &refused(400), &metrics));
        assert_eq!(created.of(&AUTHORIZATIONS), TimeBasis::Ingestion);
        let tx = Bases::new(CursorMode::TransactionTime);
        assert_eq!(tx.of(&AUTHORIZATIONS), TimeBasis::Transaction);
    }
}
