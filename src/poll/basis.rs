//! Which instant each resource's polls follow: MXC's ingestion time (`created`) where the
//! resource has one and MXC answers such queries, the transaction time otherwise — and the
//! fall from one to the other said out loud, once per resource. Before falling back, a
//! refused query on `created` is tried once more without its second sort key (`id`): the API's
//! support for either is inferred, not documented.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::config::CursorMode;
use crate::telemetry::events::{CreatedFilterIgnored, CursorFellBack, InternalEvent};
use crate::telemetry::Metrics;
use mxc::{MxcError, Resource, TimeBasis};

/// The time basis of each resource's polls, shared by every poller of the process.
#[derive(Debug)]
pub struct Bases {
    mode: CursorMode,
    /// Resources whose `created` queries MXC refused (`auto` only).
    fallen_back: Mutex<HashSet<&'static str>>,
    /// Resources whose `created` queries are sorted without the `id` tie-break.
    without_tie_break: Mutex<HashSet<&'static str>>,
    /// Resources whose `created` queries MXC answered outside their range (`created` mode).
    filter_ignored: Mutex<HashSet<&'static str>>,
}

impl Bases {
    pub fn new(mode: CursorMode) -> Bases {
        Bases {
            mode,
            fallen_back: Mutex::new(HashSet::new()),
            without_tie_break: Mutex::new(HashSet::new()),
            filter_ignored: Mutex::new(HashSet::new()),
        }
    }

    /// Whether a query of `resource` on `created` sorts on the id too.
    pub fn tie_break(&self, resource: &Resource) -> bool {
        !contains(&self.without_tie_break, resource)
    }

    /// What the next poll of `resource` follows.
    pub fn of(&self, resource: &Resource) -> TimeBasis {
        if resource.ingestion_field.is_none() {
            return TimeBasis::Transaction;
        }
        match self.mode {
            CursorMode::TransactionTime => TimeBasis::Transaction,
            CursorMode::Created => TimeBasis::Ingestion,
            CursorMode::Auto if contains(&self.fallen_back, resource) => TimeBasis::Transaction,
            CursorMode::Auto => TimeBasis::Ingestion,
        }
    }

    /// After `error` from a poll on `created` (sorted on the id too if `tie_break`): whether
    /// the poll is worth trying again at once on a lesser basis, because MXC refused the query
    /// (400) — first without the `id` tie-break, then (`auto` only) on transaction time. Each
    /// step is said once, in the log; the second also in `mxc_relay_cursor_fallback`.
    pub fn fall_back(
        &self,
        resource: &'static Resource,
        error: &MxcError,
        tie_break: bool,
        metrics: &Metrics,
    ) -> bool {
        if self.mode == CursorMode::TransactionTime
            || !matches!(error, MxcError::Refused { status: 400, .. })
        {
            return false;
        }
        if tie_break {
            if insert(&self.without_tie_break, resource) {
                tracing::warn!(resource = resource.name, %error,
                    "MXC refuses a query on the ingestion time (created) sorted by created and id: trying created alone (records of one instant may then change order between pages; the sweep is the safety net)");
            }
            return true;
        }
        if self.mode != CursorMode::Auto {
            return false;
        }
        if insert(&self.fallen_back, resource) {
            CursorFellBack {
                resource: resource.name,
                error,
            }
            .emit(metrics);
        }
        true
    }

    /// After a poll on `created` got `error`, a record outside the query's range (MXC ignores
    /// the filter): whether the poll should stop and be tried again at once on transaction
    /// time (`auto`); with `created` it goes on (known records are skipped). Said once per
    /// resource, in the log, `mxc_relay_created_filter_ignored` and `/readyz`.
    pub fn filter_ignored(
        &self,
        resource: &'static Resource,
        error: &dyn std::fmt::Display,
        metrics: &Metrics,
    ) -> bool {
        let falls_back = self.mode == CursorMode::Auto;
        let newly = if falls_back {
            insert(&self.fallen_back, resource)
        } else {
            insert(&self.filter_ignored, resource)
        };
        if newly {
            CreatedFilterIgnored {
                resource: resource.name,
                error,
                falls_back,
            }
            .emit(metrics);
        }
        falls_back
    }
}

fn contains(set: &Mutex<HashSet<&'static str>>, resource: &Resource) -> bool {
    set.lock()
        .map(|set| set.contains(resource.name))
        .unwrap_or(false)
}

/// Adds the resource; whether it was not there yet.
fn insert(set: &Mutex<HashSet<&'static str>>, resource: &'static Resource) -> bool {
    set.lock()
        .map(|mut set| set.insert(resource.name))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxc::{AUTHORIZATIONS, DISPUTES};

    fn refused(status: u16) -> MxcError {
        MxcError::Refused {
            endpoint: "GET /report".into(),
            status,
            excerpt: "No mapping found for [created]".into(),
        }
    }

    #[test]
    fn auto_drops_the_tie_break_then_falls_back_on_400_only() {
        let metrics = Metrics::new();
        let bases = Bases::new(CursorMode::Auto);
        assert_eq!(bases.of(&AUTHORIZATIONS), TimeBasis::Ingestion);
        assert_eq!(bases.of(&DISPUTES), TimeBasis::Transaction);
        assert!(!bases.fall_back(&AUTHORIZATIONS, &refused(403), true, &metrics));
        assert!(bases.tie_break(&AUTHORIZATIONS));
        // First without the id tie-break, still on created (twice: pollers may race) …
        assert!(bases.fall_back(&AUTHORIZATIONS, &refused(400), true, &metrics));
        assert!(bases.fall_back(&AUTHORIZATIONS, &refused(400), true, &metrics));
        assert_eq!(bases.of(&AUTHORIZATIONS), TimeBasis::Ingestion);
        assert!(!bases.tie_break(&AUTHORIZATIONS));
        let gauge = metrics
            .cursor_fallback
            .with_label_values(&["authorizations"]);
        assert_eq!(gauge.get(), 0);
        // … then on transaction time.
        assert!(bases.fall_back(&AUTHORIZATIONS, &refused(400), false, &metrics));
        assert_eq!(bases.of(&AUTHORIZATIONS), TimeBasis::Transaction);
        assert_eq!(gauge.get(), 1);
    }

    #[test]
    fn created_drops_only_the_tie_break_and_transaction_time_never_asks() {
        let metrics = Metrics::new();
        let created = Bases::new(CursorMode::Created);
        assert!(created.fall_back(&AUTHORIZATIONS, &refused(400), true, &metrics));
        assert!(!created.tie_break(&AUTHORIZATIONS));
        assert!(!created.fall_back(&AUTHORIZATIONS, &refused(400), false, &metrics));
        assert_eq!(created.of(&AUTHORIZATIONS), TimeBasis::Ingestion);
        let tx = Bases::new(CursorMode::TransactionTime);
        assert_eq!(tx.of(&AUTHORIZATIONS), TimeBasis::Transaction);
        assert!(!tx.fall_back(&AUTHORIZATIONS, &refused(400), true, &metrics));
    }
}
