//! What the roster watch keeps across a restart or a reload: its checkpoint in the store (when
//! the roster was last read, the merchants polled then and their grace periods), and the
//! selection of that read by the filters on the merchants' accounts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{RosterWatch, Watching};
use mxc::Merchant;

/// What survives a restart or a reload: when the roster was last read, and the merchants
/// polled then, with the instant they left the roster for those in their grace period; and the
/// merchants that read selected, so a restart polls them at once, before the roster is read
/// again (1,000 requests at 100,000 merchants).
#[derive(Default, Serialize, Deserialize)]
struct Checkpoint {
    read_at: Option<DateTime<Utc>>,
    polled: BTreeMap<String, Option<DateTime<Utc>>>,
    #[serde(default)]
    selected: Option<Selected>,
}

/// The XMIDs of a roster read that `pollers.roster`'s filters on the merchants' accounts
/// selected (its `exclude` and the listed XMIDs not applied yet).
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Selected {
    /// The filters they were selected by: another configuration reads the roster first.
    filters: String,
    pub(super) xmids: Vec<String>,
}

const CHECKPOINT: &str = "roster";

impl RosterWatch {
    /// Whether the roster's filters on the account select `merchant`.
    fn selects(&self, merchant: &Merchant) -> bool {
        let c = &self.config;
        (!c.active_only || merchant.active)
            && (c.product_ids.is_empty()
                || merchant
                    .product_id
                    .as_ref()
                    .is_some_and(|p| c.product_ids.contains(p)))
            && (c.statuses.is_empty()
                || merchant
                    .status
                    .as_ref()
                    .is_some_and(|s| c.statuses.contains(s)))
    }

    /// The filters on the account, as a key for the saved selection.
    fn filters(&self) -> String {
        let c = &self.config;
        format!(
            "active_only={} product_ids={:?} statuses={:?}",
            c.active_only, c.product_ids, c.statuses
        )
    }

    pub(super) fn select(&self, roster: &[Merchant]) -> Selected {
        Selected {
            filters: self.filters(),
            xmids: roster
                .iter()
                .filter(|m| self.selects(m))
                .map(|m| m.xmid.clone())
                .collect(),
        }
    }

    /// The watch as the last process left it (nothing polled yet): the merchants in a grace
    /// period, and its last roster read if selected by the same filters.
    pub(super) fn restore(&self) -> Watching {
        let saved: Option<Checkpoint> = match self.pollers.store.checkpoint(CHECKPOINT) {
            Ok(value) => value.and_then(|v| serde_json::from_value(v).ok()),
            Err(error) => {
                tracing::error!(%error, "cannot read the roster's checkpoint; merchants in a grace period are not restored");
                None
            }
        };
        let mut watching = Watching {
            groups: Vec::new(),
            polled: BTreeMap::new(),
            // Merchants first seen by this process were boarded while it was down (or before
            // a reload), unless the roster was never read: then they start where
            // `pollers.start` says.
            ever_read: saved.as_ref().is_some_and(|c| c.read_at.is_some()),
            restored: Default::default(),
            read_once: false,
            selected: None,
        };
        let filters = self.filters();
        if let Some(saved) = saved {
            watching.restored = saved.polled;
            // The last roster read: applied again, without reading it, when the shards move,
            // and at once after a restart (the read that follows brings it up to date).
            watching.selected = saved.selected.filter(|s| s.filters == filters);
        }
        watching
    }

    /// Saves what this instance polls, and the grace periods of merchants it may own again.
    pub(super) async fn save(&self, watching: &Watching, now: DateTime<Utc>) {
        let mut saved = watching.polled.clone();
        saved.extend(watching.restored.iter().map(|(x, left)| (x.clone(), *left)));
        let checkpoint = Checkpoint {
            read_at: Some(now),
            polled: saved,
            selected: watching.selected.clone(),
        };
        if let Err(error) = self
            .pollers
            .store
            .set_checkpoint(CHECKPOINT, serde_json::to_value(&checkpoint).ok().as_ref())
            .await
        {
            tracing::error!(%error, "cannot save the roster's checkpoint");
        }
    }
}
