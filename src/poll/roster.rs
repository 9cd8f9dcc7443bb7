//! Discovery from the merchant roster: which merchants are polled, kept up to date. Every
//! `refresh` the roster is read again; merchants new to it start polling (from `backfill` back),
//! those that leave it or stop matching (closed) are polled for `grace` more and then stop,
//! their state kept in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{sleep_or_stop, Pollers};
use crate::config::RosterConfig;
use crate::mxc::Merchant;
use crate::store::{Cursor, StoreError};

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

    pub fn set(&self, xmids: Vec<String>) {
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
    /// In a cluster: whether this instance owns a merchant (its shard). Merchants it does not
    /// own are another instance's, not merchants that left the roster.
    pub owns: Option<Ownership>,
}

/// Whether this instance polls a merchant (cluster mode).
pub type Ownership = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One poller task's XMIDs, its stop switch and its task. Dropping it (the watch stopped or
/// aborted with its pipeline) aborts the task, so no poller outlives its pipeline.
struct Group {
    xmids: Vec<String>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What survives a restart or a reload: when the roster was last read, and the merchants
/// polled then, with the instant they left the roster for those in their grace period.
#[derive(Default, Serialize, Deserialize)]
struct Checkpoint {
    read_at: Option<DateTime<Utc>>,
    polled: BTreeMap<String, Option<DateTime<Utc>>>,
}

const CHECKPOINT: &str = "roster";

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
        let mut groups: Vec<Group> = Vec::new();
        // Discovered XMIDs → when they left the roster (None: in it).
        let mut polled: BTreeMap<String, Option<DateTime<Utc>>> = BTreeMap::new();
        let saved: Option<Checkpoint> = match self.pollers.store.checkpoint(CHECKPOINT) {
            Ok(value) => value.and_then(|v| serde_json::from_value(v).ok()),
            Err(error) => {
                tracing::error!(%error, "cannot read the roster's checkpoint; merchants in a grace period are not restored");
                None
            }
        };
        // Merchants first seen by this process were boarded while it was down (or before a
        // reload), unless the roster was never read: then they start where `pollers.start` says.
        let ever_read = saved.as_ref().is_some_and(|c| c.read_at.is_some());
        let mut restored = saved.map(|c| c.polled).unwrap_or_default();
        let grace = chrono::Duration::from_std(self.config.grace).unwrap_or_default();
        let backfill = chrono::Duration::from_std(self.config.backfill).unwrap_or_default();
        let mut read_once = false;
        loop {
            let wait = match self.pollers.client.roster().await {
                Err(error) => {
                    // Until the first good read nothing of the roster is polled: retry soon.
                    let wait = if read_once {
                        self.config.refresh
                    } else {
                        self.config.refresh.min(std::time::Duration::from_secs(10))
                    };
                    tracing::warn!(%error, retry_in = %humantime::format_duration(wait),
                        "cannot read the roster; the merchants polled stay as they are");
                    wait
                }
                Ok(roster) => {
                    // MXC's: new merchants' cursors start on its clock.
                    let now = self.pollers.client.mxc_now();
                    let owned = |x: &str| self.owns.as_ref().is_none_or(|owns| owns(x));
                    let wanted: BTreeSet<String> = roster
                        .iter()
                        .filter(|m| self.selects(m) && owned(&m.xmid))
                        .map(|m| m.xmid.clone())
                        .collect();
                    // Another instance's merchants: neither polled nor in a grace period here.
                    polled.retain(|x, _| owned(x));
                    restored.retain(|x, _| owned(x));
                    // Merchants the last process polled that are gone now: their grace period
                    // goes on (or starts, if they left while no process was watching).
                    for (xmid, left) in std::mem::take(&mut restored) {
                        // Listed by hand since: its own poller has it.
                        if !wanted.contains(&xmid) && !self.listed.contains(&xmid) {
                            polled.insert(xmid, Some(left.unwrap_or(now)));
                        }
                    }
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
                        .filter(|(_, left)| {
                            left.is_some_and(|t| {
                                t.checked_add_signed(grace).is_none_or(|end| end <= now)
                            })
                        })
                        .map(|(x, _)| x.clone())
                        .collect();
                    if !expired.is_empty() {
                        for xmid in &expired {
                            polled.remove(xmid);
                        }
                        self.stop_polling(&mut groups, &expired, &stop).await;
                        self.pollers
                            .metrics
                            .roster_removed
                            .inc_by(expired.len() as u64);
                        tracing::info!(count = expired.len(), xmids = %sample(&expired),
                            "merchants no longer polled (their state stays in the store)");
                    }
                    let in_groups: BTreeSet<&String> =
                        groups.iter().flat_map(|g| g.xmids.iter()).collect();
                    let new: Vec<String> = wanted
                        .iter()
                        .chain(polled.keys().filter(|x| !wanted.contains(*x)))
                        .filter(|x| !in_groups.contains(x))
                        .cloned()
                        .collect();
                    if !new.is_empty() {
                        let boarded = new
                            .iter()
                            .filter(|x| matches!(self.pollers.has_cursor(x), Ok(false)))
                            .count();
                        let from = if read_once || ever_read {
                            now.checked_sub_signed(backfill).unwrap_or(now)
                        } else {
                            self.start
                        };
                        match self.prepare(&new, from, now).await {
                            Ok(()) => {
                                for chunk in new.chunks(self.pollers.config.group_size.max(1)) {
                                    groups.push(self.spawn(chunk.to_vec(), &stop));
                                }
                                for xmid in &new {
                                    polled.entry(xmid.clone()).or_insert(None);
                                }
                                if read_once || ever_read {
                                    self.pollers.metrics.roster_added.inc_by(boarded as u64);
                                }
                                tracing::info!(count = new.len(), xmids = %sample(&new), new_from = %from,
                                    "merchants from the roster start polling");
                            }
                            Err(error) => {
                                tracing::error!(%error, "cannot record the roster's new merchants; they are tried again at the next refresh")
                            }
                        }
                    }
                    read_once = true;
                    let checkpoint = Checkpoint {
                        read_at: Some(now),
                        polled: polled.clone(),
                    };
                    if let Err(error) = self
                        .pollers
                        .store
                        .set_checkpoint(CHECKPOINT, serde_json::to_value(&checkpoint).ok().as_ref())
                        .await
                    {
                        tracing::error!(%error, "cannot save the roster's checkpoint");
                    }
                    let metrics = &self.pollers.metrics;
                    metrics.roster_merchants.set(polled.len() as i64);
                    metrics.roster_last_read.set(now.timestamp() as f64);
                    let mut all = self.listed.clone();
                    all.extend(polled.keys().cloned());
                    self.fleet.set(all);
                    self.config.refresh
                }
            };
            // A poller task that ended by itself panicked: say so and start it again.
            for group in groups.iter_mut() {
                if group.task.is_finished() && !stop.is_cancelled() {
                    tracing::error!(xmids = %sample(&group.xmids), "a poller task ended unexpectedly; starting it again");
                    let xmids = std::mem::take(&mut group.xmids);
                    *group = self.spawn(xmids, &stop);
                }
            }
            if sleep_or_stop(&stop, wait).await {
                for group in &groups {
                    group.stop.cancel();
                }
                for group in groups.iter_mut() {
                    let _ = (&mut group.task).await;
                }
                return;
            }
        }
    }

    /// Cursors for merchants about to be polled: new ones start at `from`; one that comes
    /// back after its record ids may have been forgotten (older than the retention) does not
    /// look back before its cursor, so nothing it sent is admitted again.
    async fn prepare(
        &self,
        xmids: &[String],
        from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.pollers.init_cursors(xmids, from).await?;
        let horizon = chrono::Duration::from_std(
            self.pollers
                .config
                .seen_retention
                .saturating_sub(self.pollers.config.look_back),
        )
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(now);
        let mut stale = Vec::new();
        for key in xmids.iter().flat_map(|x| self.pollers.cursor_keys(x)) {
            if let Some(cursor) = self.pollers.store.cursor(&key)? {
                if cursor.position < horizon && cursor.floor < cursor.position {
                    stale.push((
                        key,
                        Cursor {
                            position: cursor.position,
                            floor: cursor.position,
                        },
                    ));
                }
            }
        }
        if !stale.is_empty() {
            self.pollers.store.admit(&[], &stale).await?;
        }
        Ok(())
    }

    fn spawn(&self, xmids: Vec<String>, stop: &CancellationToken) -> Group {
        let group_stop = stop.child_token();
        let mut one = self.pollers.config.clone();
        one.group_size = xmids.len().max(1);
        let pollers = Pollers {
            config: one,
            ..self.pollers.clone()
        };
        let task = {
            let (xmids, stop) = (xmids.clone(), group_stop.clone());
            tokio::spawn(async move { pollers.run_group(xmids, stop).await })
        };
        Group {
            xmids,
            stop: group_stop,
            task,
        }
    }

    /// Stops the groups holding any of `xmids` — each finishes the poll it is in, so two polls
    /// of one merchant never overlap — and restarts their other members in a new group.
    async fn stop_polling(
        &self,
        groups: &mut Vec<Group>,
        xmids: &BTreeSet<String>,
        stop: &CancellationToken,
    ) {
        let (hit, kept): (Vec<Group>, Vec<Group>) = std::mem::take(groups)
            .into_iter()
            .partition(|g| g.xmids.iter().any(|x| xmids.contains(x)));
        *groups = kept;
        // All stop together; each finishes the poll it is in.
        for group in &hit {
            group.stop.cancel();
        }
        for mut group in hit {
            let _ = (&mut group.task).await;
            let rest: Vec<String> = std::mem::take(&mut group.xmids)
                .into_iter()
                .filter(|x| !xmids.contains(x))
                .collect();
            if !rest.is_empty() {
                groups.push(self.spawn(rest, stop));
            }
        }
    }
}

/// Up to 10 XMIDs for a log line, and how many more.
fn sample<'a>(xmids: impl IntoIterator<Item = &'a String>) -> String {
    let all: Vec<&str> = xmids.into_iter().map(String::as_str).collect();
    match all.len() {
        0..=10 => all.join(","),
        n => format!("{} and {} more", all[..10].join(","), n - 10),
    }
}
