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

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{FirstPoll, Pollers};
use crate::config::RosterConfig;
use crate::store::{Cursor, StoreError};
use crate::telemetry::events::{InternalEvent, RosterMerchantsStarted, RosterRead};
use mxc::Merchant;

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
    /// In a cluster: the ownership as the shards move, applied to the last roster read
    /// without reading it again (a rebalance stops and starts only the merchants that move).
    pub reassigned: Option<mpsc::UnboundedReceiver<Reassign>>,
}

/// Whether this instance polls a merchant (cluster mode).
pub type Ownership = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The merchants this instance owns from now on; `done` is sent once those it no longer owns
/// have stopped polling (each after the poll it was in).
pub struct Reassign {
    pub owns: Ownership,
    pub done: oneshot::Sender<()>,
}

fn owned(owns: &Option<Ownership>, xmid: &str) -> bool {
    owns.as_ref().is_none_or(|owns| owns(xmid))
}

/// The next change of ownership, or never (not in a cluster, or the sender gone).
async fn recv(changes: &mut Option<mpsc::UnboundedReceiver<Reassign>>) -> Option<Reassign> {
    match changes {
        Some(rx) => match rx.recv().await {
            Some(change) => Some(change),
            None => {
                *changes = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// What the watch keeps between roster reads.
struct Watching {
    groups: Vec<Group>,
    /// Discovered XMIDs → when they left the roster (None: in it).
    polled: BTreeMap<String, Option<DateTime<Utc>>>,
    /// From the last process's checkpoint, until owned here (all at once without a cluster).
    restored: BTreeMap<String, Option<DateTime<Utc>>>,
    ever_read: bool,
    read_once: bool,
    /// The last roster read, as selected by the filters on the account.
    selected: Option<Selected>,
}

/// One poller task's XMIDs, its stop switch and its task. Dropping it (the watch stopped or
/// aborted with its pipeline) aborts the task, so no poller outlives its pipeline.
struct Group {
    xmids: Vec<String>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Formed at this roster read for merchants new to this process: not merged before the
    /// next read, so merchants still reading their backfill do not drag a merged group's
    /// window back with them.
    fresh: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
struct Selected {
    /// The filters they were selected by: another configuration reads the roster first.
    filters: String,
    xmids: Vec<String>,
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

    fn select(&self, roster: &[Merchant]) -> Selected {
        Selected {
            filters: self.filters(),
            xmids: roster
                .iter()
                .filter(|m| self.selects(m))
                .map(|m| m.xmid.clone())
                .collect(),
        }
    }

    pub async fn run(mut self, stop: CancellationToken) {
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
        if watching.selected.is_some() {
            self.apply(None, &mut watching, false, &stop).await;
        }
        let mut reassigned = self.reassigned.take();
        loop {
            let client = self.pollers.client.clone();
            let budget = self.pollers.budget.clone();
            // Roster pages spend the request budget too: in a cluster, none until the group
            // assigns shards (a restart polls from the roster it saved meanwhile).
            let reading = client.roster_paced(move || {
                let budget = budget.clone();
                async move {
                    while budget.requests_per_second() <= 0.0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    budget.take().await;
                }
            });
            tokio::pin!(reading);
            let read = loop {
                tokio::select! {
                    read = &mut reading => break Some(read),
                    _ = stop.cancelled() => break None,
                    Some(change) = recv(&mut reassigned) => {
                        self.reassign(change, &mut watching, &stop).await;
                    }
                }
            };
            let wait = match read {
                None => break,
                Some(Err(error)) => {
                    // Until the first good read nothing of the roster is polled: retry soon.
                    let wait = if watching.read_once {
                        self.config.refresh
                    } else {
                        self.config.refresh.min(std::time::Duration::from_secs(10))
                    };
                    tracing::warn!(%error, retry_in = %humantime::format_duration(wait),
                        "cannot read the roster; the merchants polled stay as they are");
                    wait
                }
                Some(Ok(roster)) => {
                    let selected = self.select(&roster);
                    self.apply(Some(selected), &mut watching, false, &stop)
                        .await;
                    self.config.refresh
                }
            };
            // A poller task that ended by itself panicked: say so and start it again.
            for group in watching.groups.iter_mut() {
                if group.task.is_finished() && !stop.is_cancelled() {
                    tracing::error!(xmids = %sample(&group.xmids), "a poller task ended unexpectedly; starting it again");
                    let xmids = std::mem::take(&mut group.xmids);
                    *group = self.spawn(xmids, &stop, FirstPoll::Spread, false);
                }
            }
            let until = tokio::time::Instant::now() + wait;
            let stopped = loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break stop.is_cancelled(),
                    _ = stop.cancelled() => break true,
                    Some(change) = recv(&mut reassigned) => {
                        self.reassign(change, &mut watching, &stop).await;
                    }
                }
            };
            if stopped {
                break;
            }
        }
        for group in &watching.groups {
            group.stop.cancel();
        }
        for group in watching.groups.iter_mut() {
            let _ = (&mut group.task).await;
        }
    }

    /// The shards moved: the last roster read is applied again for the merchants owned now
    /// (those no longer owned stop, each group after the poll it is in; those taken over start
    /// at once, longest waiting first). `done` says when the former have stopped.
    async fn reassign(
        &mut self,
        change: Reassign,
        watching: &mut Watching,
        stop: &CancellationToken,
    ) {
        self.owns = Some(change.owns);
        match watching.selected {
            Some(_) => self.apply(None, watching, true, stop).await,
            // Not read yet: nothing polled; the first read applies the ownership.
            None => {
                let owns = self.owns.clone();
                let listed = self.listed.iter().filter(|x| owned(&owns, x)).cloned();
                self.fleet.set(listed.collect());
            }
        }
        let _ = change.done.send(());
    }

    /// Brings the pollers in step with the roster (a new read's `selected`, or the last one)
    /// and the merchants this instance owns: new and returning merchants start (at once,
    /// longest waiting first, when `takeover`; else spread over an interval), those that left
    /// it go on for their grace period, those whose grace ended or that another instance owns
    /// now stop.
    async fn apply(
        &self,
        read: Option<Selected>,
        watching: &mut Watching,
        takeover: bool,
        stop: &CancellationToken,
    ) {
        if read.is_some() {
            watching.selected = read;
        }
        let Watching {
            groups,
            polled,
            restored,
            ever_read,
            read_once,
            selected,
        } = watching;
        let roster: &[String] = selected.as_ref().map_or(&[], |s| &s.xmids);
        for group in groups.iter_mut() {
            group.fresh = false;
        }
        // MXC's: new merchants' cursors start on its clock.
        let now = self.pollers.client.mxc_now();
        let owned = |x: &str| owned(&self.owns, x);
        let excluded = |x: &String| self.config.exclude.contains(x) || self.listed.contains(x);
        let wanted: BTreeSet<String> = roster
            .iter()
            .filter(|x| !excluded(x) && owned(x))
            .cloned()
            .collect();
        // Another instance's merchants: neither polled nor in a grace period here.
        polled.retain(|x, _| owned(x));
        // Merchants the last process polled that are gone now: their grace period goes on (or
        // starts, if they left while no process was watching). Another instance's wait here
        // until this one owns them.
        restored.retain(|xmid, left| {
            if !owned(xmid) {
                return true;
            }
            // Listed by hand since: its own poller has it.
            if !wanted.contains(xmid) && !self.listed.contains(xmid) {
                polled.insert(xmid.clone(), Some(left.unwrap_or(now)));
            }
            false
        });
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
        let grace = chrono::Duration::from_std(self.config.grace).unwrap_or_default();
        let expired: BTreeSet<String> = polled
            .iter()
            .filter(|(_, left)| {
                left.is_some_and(|t| t.checked_add_signed(grace).is_none_or(|end| end <= now))
            })
            .map(|(x, _)| x.clone())
            .collect();
        for xmid in &expired {
            polled.remove(xmid);
        }
        // Stop what is not polled here any more: expired, or another instance's now.
        let moved: BTreeSet<String> = groups
            .iter()
            .flat_map(|g| g.xmids.iter())
            .filter(|x| !owned(x))
            .cloned()
            .collect();
        let mut remaining = Vec::new();
        if !expired.is_empty() || !moved.is_empty() {
            let stopping: BTreeSet<String> = expired.union(&moved).cloned().collect();
            remaining = self.stop_polling(groups, &stopping).await;
            if !expired.is_empty() {
                tracing::info!(count = expired.len(), xmids = %sample(&expired),
                    "merchants no longer polled (their state stays in the store)");
            }
        }
        // Polled, or about to be again (`remaining`: members of groups just stopped).
        let in_groups: BTreeSet<&String> = groups
            .iter()
            .flat_map(|g| g.xmids.iter())
            .chain(remaining.iter().flatten())
            .collect();
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
            let backfill = chrono::Duration::from_std(self.config.backfill).unwrap_or_default();
            let from = if *read_once || *ever_read {
                now.checked_sub_signed(backfill).unwrap_or(now)
            } else {
                self.start
            };
            let started = match self.prepare(&new, from, now).await {
                Ok(()) if takeover => self.pollers.takeover(&new),
                Ok(()) => Ok(super::groups::even(&new, self.max_group())
                    .into_iter()
                    .map(|g| (g, FirstPoll::Spread))
                    .collect()),
                Err(error) => Err(error),
            };
            match started {
                Ok(planned) => {
                    for (group, first) in planned {
                        groups.push(self.spawn(group, stop, first, true));
                    }
                    for xmid in &new {
                        polled.entry(xmid.clone()).or_insert(None);
                    }
                    RosterMerchantsStarted {
                        count: new.len(),
                        sample: &sample(&new),
                        from,
                        boarded: (*read_once || *ever_read).then_some(boarded),
                    }
                    .emit(&self.pollers.metrics);
                }
                Err(error) => {
                    tracing::error!(%error, "cannot record the roster's new merchants; they are tried again at the next refresh")
                }
            }
        }
        self.regroup(groups, remaining, stop).await;
        *read_once = true;
        // Saved: what this instance polls, and the grace periods of merchants it may own again.
        let mut saved = polled.clone();
        saved.extend(restored.iter().map(|(x, left)| (x.clone(), *left)));
        let checkpoint = Checkpoint {
            read_at: Some(now),
            polled: saved,
            selected: selected.clone(),
        };
        if let Err(error) = self
            .pollers
            .store
            .set_checkpoint(CHECKPOINT, serde_json::to_value(&checkpoint).ok().as_ref())
            .await
        {
            tracing::error!(%error, "cannot save the roster's checkpoint");
        }
        RosterRead {
            removed: expired.len(),
            polled: polled.len(),
            at: now,
        }
        .emit(&self.pollers.metrics);
        let mut all: Vec<String> = self.listed.iter().filter(|x| owned(x)).cloned().collect();
        all.extend(polled.keys().cloned());
        self.fleet.set(all);
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
        for chunk in stale.chunks(super::CURSORS_PER_TRANSACTION) {
            self.pollers.store.admit(&[], chunk).await?;
        }
        Ok(())
    }

    /// The most XMIDs in one group (`pollers.group_size`).
    fn max_group(&self) -> usize {
        self.pollers.config.group_size.max(1)
    }

    fn spawn(
        &self,
        xmids: Vec<String>,
        stop: &CancellationToken,
        first: FirstPoll,
        fresh: bool,
    ) -> Group {
        let group_stop = stop.child_token();
        let mut one = self.pollers.config.clone();
        one.group_size = xmids.len().max(1);
        let pollers = Pollers {
            config: one,
            ..self.pollers.clone()
        };
        let task = {
            let (xmids, stop) = (xmids.clone(), group_stop.clone());
            tokio::spawn(async move { pollers.run_group(xmids, stop, first).await })
        };
        Group {
            xmids,
            stop: group_stop,
            task,
            fresh,
        }
    }

    /// Re-forms the groups that shrank (merchants left the roster): `left` are the members
    /// that remain of the groups stopped for them, and running groups below the size are
    /// merged with them, or with each other, wherever together they fit in one group (first
    /// fit by decreasing size: afterwards no two groups would fit in one). Five groups of 46
    /// that lost 184 merchants become one, polled with one request per interval instead of
    /// five. A running group merged finishes the poll it is in first, so two polls of one
    /// merchant never overlap; cursors stay in the store per XMID, so a merged group's window
    /// starts at its earliest member's and each member takes only the records of its own
    /// window. Groups of merchants new at this read wait for the next one (see `fresh`).
    async fn regroup(
        &self,
        groups: &mut Vec<Group>,
        left: Vec<Vec<String>>,
        stop: &CancellationToken,
    ) {
        let max = self.max_group();
        let mut pieces: Vec<Piece> = left.into_iter().map(Piece::Left).collect();
        let (small, kept): (Vec<Group>, Vec<Group>) = std::mem::take(groups)
            .into_iter()
            .partition(|g| !g.fresh && g.xmids.len() < max);
        *groups = kept;
        pieces.extend(small.into_iter().map(Piece::Running));
        let sizes: Vec<usize> = pieces.iter().map(Piece::len).collect();
        let plan = super::groups::merges(&sizes, max);
        let mut slots: Vec<Option<Piece>> = pieces.into_iter().map(Some).collect();
        let merging: Vec<Vec<Piece>> = plan
            .iter()
            .map(|merge| {
                merge
                    .iter()
                    .filter_map(|k| slots.get_mut(*k).and_then(Option::take))
                    .collect()
            })
            .collect();
        // What is not merged goes on as it is, or starts alone.
        for piece in slots.into_iter().flatten() {
            match piece {
                Piece::Running(group) => groups.push(group),
                // Its merchants were polled by another group until now: no gap of an interval.
                Piece::Left(xmids) => {
                    groups.push(self.spawn(xmids, stop, FirstPoll::After(Duration::ZERO), false))
                }
            }
        }
        if merging.is_empty() {
            return;
        }
        // All stop together; each finishes the poll it is in.
        for piece in merging.iter().flatten() {
            if let Piece::Running(group) = piece {
                group.stop.cancel();
            }
        }
        let before = merging.iter().map(Vec::len).sum::<usize>();
        let after = merging.len();
        let mut merchants = 0;
        for merge in merging {
            let mut xmids = Vec::new();
            for piece in merge {
                match piece {
                    Piece::Running(mut group) => {
                        let _ = (&mut group.task).await;
                        xmids.append(&mut group.xmids);
                    }
                    Piece::Left(mut left) => xmids.append(&mut left),
                }
            }
            xmids.sort();
            merchants += xmids.len();
            groups.push(self.spawn(xmids, stop, FirstPoll::After(Duration::ZERO), false));
        }
        tracing::info!(
            groups_before = before,
            groups_after = after,
            merchants,
            max_group = max,
            "poller groups that shrank were merged (cursors are kept per merchant)"
        );
    }

    /// Stops the groups holding any of `xmids` — each finishes the poll it is in, so two polls
    /// of one merchant never overlap — and returns their other members, to be grouped again.
    async fn stop_polling(
        &self,
        groups: &mut Vec<Group>,
        xmids: &BTreeSet<String>,
    ) -> Vec<Vec<String>> {
        let (hit, kept): (Vec<Group>, Vec<Group>) = std::mem::take(groups)
            .into_iter()
            .partition(|g| g.xmids.iter().any(|x| xmids.contains(x)));
        *groups = kept;
        // All stop together; each finishes the poll it is in.
        for group in &hit {
            group.stop.cancel();
        }
        let mut left = Vec::new();
        for mut group in hit {
            let _ = (&mut group.task).await;
            let rest: Vec<String> = std::mem::take(&mut group.xmids)
                .into_iter()
                .filter(|x| !xmids.contains(x))
                .collect();
            if !rest.is_empty() {
                left.push(rest);
            }
        }
        left
    }
}

/// A group to re-form: one that runs, or the members left of one stopped.
enum Piece {
    Running(Group),
    Left(Vec<String>),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Running(group) => group.xmids.len(),
            Piece::Left(xmids) => xmids.len(),
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
