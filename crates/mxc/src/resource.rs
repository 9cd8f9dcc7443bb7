//! The report resources mxc-relay polls, each declared here once: where it lives, which field
//! is its id and which its time, and which events it becomes by default. Adding a resource is
//! one more constant (and its simulator counterpart in `sim::data`).
//!
//! Every report shares the authorizations' envelope, query string and export form
//! (documented for authorizations and disputes). The paths of disputes, batches and ACH are
//! documented; their time fields are not: `batchDate` and `depositDate` appear in public
//! client code, `disputeDate` is inferred.

/// One report resource of the MXC API.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// Its name in the configuration (`pollers.resources`, a route's `resource`) and in Kafka
    /// topic templates (`{resource}`).
    pub name: &'static str,
    /// The paged listing (`GET`).
    pub path: &'static str,
    /// The export (scroll) form (`POST`), for backfills.
    pub export_path: &'static str,
    /// The record's unique id: the dedup key.
    pub id_field: &'static str,
    /// The record's time: what `dr_from`/`dr_to` select and `sort` orders by.
    pub time_field: &'static str,
    /// When MXC ingested the record, if the resource says: what the polling cursor follows
    /// (records reach MXC long after their time). Without one, polls keep a window on
    /// `time_field` with a look-back.
    pub ingestion_field: Option<&'static str>,
    /// The event type of a route over this resource that names none.
    pub event_type: &'static str,
    /// The records someone must act on now, for a route with `alerts = true`.
    pub alert: Alert,
}

/// A resource's urgent records: a filter (none: every record) and their event type.
#[derive(Debug, PartialEq, Eq)]
pub struct Alert {
    pub event_type: &'static str,
    pub filter: Option<&'static str>,
}

pub const AUTHORIZATIONS: Resource = Resource {
    name: "authorizations",
    path: "/report/v1/tsys/authorization",
    export_path: "/report/v1/tsys/authorization/export",
    id_field: "id",
    time_field: "transactionDateAndTime",
    // Documented in the vendor's sample (98 minutes after the transaction there).
    ingestion_field: Some("created"),
    event_type: "authorization.created",
    alert: Alert {
        event_type: "authorization.declined",
        filter: Some(r#"authorizationResponseStatus != "Approved""#),
    },
};

/// Chargebacks and retrieval requests; each refers to an earlier authorization.
pub const DISPUTES: Resource = Resource {
    name: "disputes",
    path: "/report/v1/tsys/disputes",
    export_path: "/report/v1/tsys/disputes/export",
    id_field: "id",
    time_field: "disputeDate",
    // Not known for this report: it keeps the transaction-time window.
    ingestion_field: None,
    event_type: "dispute.created",
    alert: Alert {
        event_type: "dispute.chargeback",
        filter: Some(r#"disputeType == "Chargeback""#),
    },
};

/// Settlement batches: one per terminal and (business) day, summing its sales.
pub const BATCHES: Resource = Resource {
    name: "batches",
    path: "/report/v1/tsys/batch",
    export_path: "/report/v1/tsys/batch/export",
    id_field: "id",
    time_field: "batchDate",
    // Not known for this report: it keeps the transaction-time window.
    ingestion_field: None,
    event_type: "batch.created",
    alert: Alert {
        event_type: "batch.rejected",
        filter: Some("rejected == true"),
    },
};

/// ACH deposits: what a settled batch pays into the merchant's bank account.
pub const ACH: Resource = Resource {
    name: "ach",
    path: "/report/v1/tsys/ach",
    export_path: "/report/v1/tsys/ach/export",
    id_field: "id",
    time_field: "depositDate",
    // Not known for this report: it keeps the transaction-time window.
    ingestion_field: None,
    event_type: "ach.deposit",
    alert: Alert {
        event_type: "ach.returned",
        filter: Some(r#"status == "Returned""#),
    },
};

/// Every resource, authorizations first.
pub const RESOURCES: [&Resource; 4] = [&AUTHORIZATIONS, &DISPUTES, &BATCHES, &ACH];

impl Resource {
    /// The resource of that configuration name.
    pub fn named(name: &str) -> Option<&'static Resource> {
        RESOURCES.into_iter().find(|r| r.name == name)
    }

    /// The names, for error messages: `authorizations, disputes, batches, ach`.
    pub fn names() -> String {
        RESOURCES.map(|r| r.name).join(", ")
    }

    /// The store key of an XMID's cursor for this resource. Authorizations keep the bare
    /// XMID (the key of stores written before there were other resources).
    pub fn cursor_key(&self, xmid: &str) -> String {
        self.scoped(xmid)
    }

    /// The seen-set key of a record id: ids are unique within a resource, not across them.
    pub fn seen_key(&self, record_id: &str) -> String {
        self.scoped(record_id)
    }

    fn scoped(&self, key: &str) -> String {
        if self == &AUTHORIZATIONS {
            key.to_string()
        } else {
            format!("{}/{key}", self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for r in RESOURCES {
            assert_eq!(Resource::named(r.name), Some(r));
        }
        assert_eq!(Resource::named("chargebacks"), None);
        assert_eq!(AUTHORIZATIONS.cursor_key("X1"), "X1");
        assert_eq!(DISPUTES.cursor_key("X1"), "disputes/X1");
        assert_eq!(BATCHES.seen_key("r-1"), "batches/r-1");
    }
}
