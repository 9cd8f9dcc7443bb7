//! Discovery from the merchant roster: which merchants are polled, kept up to date. Every
//! `refresh` the roster is read again; merchants new to it start polling (from `backfill` back),
//! those that leave it or stop matching (closed) are polled for `grace` more and then stop,
//! their state kept in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{sleep_or_stop, Pollers};
use crate::config::RosterConfig;
use crate::mxc::Merchant;

/// The XMIDs polled right now (listed and discovered), shared with housekeeping and health.
#[derive(Clone, Default)]
pub struct Fleet(Arc<RwLock<Arc<Vec<String>>>>);

impl Fleet {
    pub fn new(xmids: Vec<String>) -> Fleet {
        Fleet(Arc::new(RwLock::new(Arc::new(xmids))))
    }

    pub fn xmids(&self) -> Arc<Vec<String>> {
        match self.0.read() {
            Ok(x) => x.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, xmids: Vec<String>) {
        match self.0.write() {
            Ok(mut x) => *x = Arc::new(xmids),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(xmids),
        }
    }
}

/// Keeps the pollers of the roster's merchants in step with the roster.
pub struct RosterWatch {
    pub pollers: Pollers,
    pub config: RosterConfig,
    /// XMIDs listed by hand: polled anyway, never managed here.
    pub listed: Vec<String>,
    /// Where merchants found by the first read start (later ones: `backfill` back).
    pub start: DateTime<Utc>,
    pub fleet: Fleet,
}

/// One poller task's XMIDs and its own stop switch.
struct Group {
    xmids: Vec<String>,
    stop: CancellationToken,
}

impl RosterWatch {
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
            && !c.exclude.contains(&merchant.xmid)
            && !self.listed.contains(&merchant.xmid)
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        let mut groups: Vec<Group> = Vec::new();
        // Discovered XMIDs → when they left the roster (None: in it).
        let mut polled: BTreeMap<String, Option<DateTime<Utc>>> = BTreeMap::new();
        let mut first = true;
        let grace = chrono::Duration::from_std(self.config.grace).unwrap_or_default();
        let backfill = chrono::Duration::from_std(self.config.backfill).unwrap_or_default();
        loop {
            match self.pollers.client.roster().await {
                Err(error) => {
                    tracing::warn!(%error, retry_in = %humantime::format_duration(self.config.refresh),
                    "cannot read the roster; the merchants polled stay as they are")
                }
                Ok(roster) => {
                    let now = Utc::now();
                    let wanted: BTreeSet<String> = roster
                        .iter()
                        .filter(|m| self.selects(m))
                        .map(|m| m.xmid.clone())
                        .collect();
                    for (xmid, left) in polled.iter_mut() {
                        match (wanted.contains(xmid), *left) {
                            (false, None) => {
                                *left = Some(now);
                                tracing::info!(%xmid, grace = %humantime::format_duration(self.config.grace),
                                    "merchant left the roster (or is closed): polled until the grace period ends");
                            }
                            (true, Some(_)) => {
                                *left = None;
                                tracing::info!(%xmid, "merchant back in the roster");
                            }
                            _ => {}
                        }
                    }
                    let expired: BTreeSet<String> = polled
                        .iter()
                        .filter(|(_, left)| left.is_some_and(|t| t + grace <= now))
                        .map(|(x, _)| x.clone())
                        .collect();
                    if !expired.is_empty() {
                        for xmid in &expired {
                            polled.remove(xmid);
                        }
                        self.stop_polling(&mut groups, &expired, &mut tasks, &stop);
                        self.pollers
                            .metrics
                            .roster_removed
                            .inc_by(expired.len() as u64);
                        tracing::info!(xmids = %join(&expired), "merchants no longer polled (their state stays in the store)");
                    }
                    let new: Vec<String> = wanted
                        .iter()
                        .filter(|x| !polled.contains_key(*x))
                        .cloned()
                        .collect();
                    if !new.is_empty() {
                        let from = if first { self.start } else { now - backfill };
                        match self.pollers.init_cursors(&new, from).await {
                            Ok(()) => {
                                for chunk in new.chunks(self.pollers.config.group_size.max(1)) {
                                    groups.push(self.spawn(chunk.to_vec(), &mut tasks, &stop));
                                }
                                for xmid in &new {
                                    polled.insert(xmid.clone(), None);
                                }
                                if !first {
                                    self.pollers.metrics.roster_added.inc_by(new.len() as u64);
                                }
                                tracing::info!(count = new.len(), xmids = %join(&new), from = %from,
                                    "merchants from the roster start polling");
                            }
                            Err(error) => {
                                tracing::error!(%error, "cannot record the roster's new merchants; they are tried again at the next refresh")
                            }
                        }
                    }
                    first = false;
                    self.pollers
                        .metrics
                        .roster_merchants
                        .set(polled.len() as i64);
                    let mut all = self.listed.clone();
                    all.extend(polled.keys().cloned());
                    self.fleet.set(all);
                }
            }
            if sleep_or_stop(&stop, self.config.refresh).await {
                for group in &groups {
                    group.stop.cancel();
                }
                while tasks.join_next().await.is_some() {}
                return;
            }
        }
    }

    fn spawn(
        &self,
        xmids: Vec<String>,
        tasks: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) -> Group {
        let group_stop = stop.child_token();
        let mut one = self.pollers.config.clone();
        one.group_size = xmids.len().max(1);
        let pollers = Pollers {
            config: one,
            ..self.pollers.clone()
        };
        pollers.spawn(&xmids, tasks, &group_stop);
        Group {
            xmids,
            stop: group_stop,
        }
    }

    /// Stops the groups holding any of `xmids`; their other members go on in a new group.
    fn stop_polling(
        &self,
        groups: &mut Vec<Group>,
        xmids: &BTreeSet<String>,
        tasks: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) {
        let (hit, kept): (Vec<Group>, Vec<Group>) = std::mem::take(groups)
            .into_iter()
            .partition(|g| g.xmids.iter().any(|x| xmids.contains(x)));
        *groups = kept;
        for group in hit {
            group.stop.cancel();
            let rest: Vec<String> = group
                .xmids
                .into_iter()
                .filter(|x| !xmids.contains(x))
                .collect();
            if !rest.is_empty() {
                groups.push(self.spawn(rest, tasks, stop));
            }
        }
    }
}

fn join<'a>(xmids: impl IntoIterator<Item = &'a String>) -> String {
    xmids
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}
