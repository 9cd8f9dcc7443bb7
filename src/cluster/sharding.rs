//! Which shards this instance polls, as the group moves them — make before break. A shard the
//! group takes away is polled on until its next owner claims it (lists it in its status), and
//! only then stopped and handed over; its next owner starts it once the last owner's status no
//! longer lists it as releasing, from the state that owner published. So a rebalance (an
//! instance joining, or one leaving on SIGTERM, which leaves the group first) leaves no shard
//! unpolled while the group's rounds go on, and never two instances polling one merchant.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::membership::{Change, Leaver};
use super::state::{Handover, InstanceStatus, ShardLag};
use super::{shard_of, Polling};
use crate::poll::{Ownership, Reassign, RosterWatch};

/// Keeps this instance polling exactly the XMIDs of the shards it holds, and publishes their
/// delivered state. Each shard's listed XMIDs have their own poller tasks, so a change touches
/// only the shards that move; the roster's merchants (if any) are watched by one roster task,
/// told of each change.
pub struct Sharding {
    pub changes: UnboundedReceiver<Change>,
    pub handover: Handover,
    /// The control topic's partitions.
    pub shards: u32,
    pub state_interval: Duration,
    pub session_timeout: Duration,
    /// How long a released shard's deliveries may take before it is handed over anyway.
    pub handover_within: Duration,
    /// How long a revoked shard is polled while no one claims it, and how long a claimed one
    /// waits for its last owner to release it.
    pub release_within: Duration,
    /// Leaves the group when polling is to stop, so the others claim the shards while this
    /// instance still polls them.
    pub leaver: Leaver,
}

/// Tasks with their stop switch.
struct Tasks {
    stop: CancellationToken,
    set: JoinSet<()>,
}

impl Tasks {
    fn new(parent: &CancellationToken) -> Tasks {
        Tasks {
            stop: parent.child_token(),
            set: JoinSet::new(),
        }
    }

    /// Stops them (a poll in progress is dropped: its admitted pages stay, its cursor does not
    /// move, and its state is not published).
    async fn halt(mut self) {
        self.stop.cancel();
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
    }
}

/// Shards handed over ("revoked") or started ("assigned"), in the metrics.
fn count_changes(polling: &Polling, change: &str, shards: &[u32]) {
    polling
        .pollers
        .metrics
        .cluster_shard_changes
        .with_label_values(&[change])
        .inc_by(shards.len() as u64);
}

/// The shards as this instance holds them.
#[derive(Default)]
struct Held {
    /// Polled, and ours.
    owned: BTreeMap<u32, Tasks>,
    /// Polled until claimed by another, or until the instant.
    releasing: BTreeMap<u32, (Tasks, Instant)>,
    /// Ours, not polled until their last owner releases them, or until the instant.
    claiming: BTreeMap<u32, Instant>,
    /// Stopping: out of the group, releasing everything.
    leaving: bool,
    /// A shard past its release time, unclaimed, was said in the log.
    overdue_said: bool,
}

/// Which of the shards being released (with their release times) to stop polling now: those
/// another live instance claims (lists); when leaving, also those past their time, or all when
/// every other instance leaves too. A shard past its time that no one claims stays polled
/// while this instance sees other instances (its statuses are read, and none lists it: no one
/// else polls it, say while the group's rebalance stalls); seeing none, it goes at its time.
fn releasable(
    releasing: impl Iterator<Item = (u32, Instant)>,
    leaving: bool,
    others: &[InstanceStatus],
    now: Instant,
) -> Vec<u32> {
    let claimed = |shard: &u32| others.iter().any(|o| o.shards.contains(shard));
    // Leaving with no one to claim (all stopping at once, or the last one): at once.
    let alone = others.iter().all(|o| o.leaving);
    let blind = others.is_empty();
    releasing
        .filter(|(shard, until)| {
            claimed(shard) || (now >= *until && (leaving || blind)) || (leaving && alone)
        })
        .map(|(shard, _)| shard)
        .collect()
}

impl Held {
    /// The shards polled here.
    fn polled(&self) -> BTreeSet<u32> {
        self.owned
            .keys()
            .chain(self.releasing.keys())
            .copied()
            .collect()
    }

    /// The next release or claim time to come (one passed with the shard still polled, being
    /// unclaimed, is looked at again as statuses change).
    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        self.releasing
            .values()
            .map(|(_, at)| *at)
            .chain(self.claiming.values().copied())
            .filter(|at| *at > now)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }
}

impl Sharding {
    pub async fn run(mut self, polling: Polling, stop: CancellationToken) {
        // Pollers stop when this task says, not at `stop`: a leaving instance polls its shards
        // until the others claim them.
        let polling_stop = CancellationToken::new();
        let mut held = Held::default();
        // Nothing owned yet: nothing of the key's budget spent.
        polling.pollers.budget.share(0, self.shards as usize);
        // The roster is read from the start, so merchants assigned are polled at once.
        let roster = self.watch_roster(&polling, &polling_stop);
        let mut statuses = self.handover.statuses_read();
        let mut tick = tokio::time::interval(self.state_interval);
        let mut member_gone = false;
        loop {
            let deadline = held.next_deadline();
            tokio::select! {
                // Changes first: a revocation holds the whole group.
                biased;
                _ = stop.cancelled(), if !held.leaving => {
                    // Leave the group first, and poll until the others claim the shards.
                    held.leaving = true;
                    let until = Instant::now() + self.release_within;
                    for (shard, tasks) in std::mem::take(&mut held.owned) {
                        held.releasing.insert(shard, (tasks, until));
                    }
                    held.claiming.clear();
                    self.status(&held, &polling, false).await;
                    self.leaver.leave();
                    tracing::info!(releasing = ?held.releasing.keys().collect::<Vec<_>>(),
                        "stopping: left the group; polling until the others claim the shards");
                }
                change = self.changes.recv(), if !member_gone => match change {
                    None => {
                        member_gone = true;
                        if !held.leaving {
                            break;
                        }
                    }
                    Some(Change::Revoke { shards, done }) => {
                        let until = Instant::now() + self.release_within;
                        for shard in &shards {
                            if let Some(tasks) = held.owned.remove(shard) {
                                held.releasing.insert(*shard, (tasks, until));
                            }
                            held.claiming.remove(shard);
                        }
                        // Said before the group goes on, so the next owner knows to wait; then
                        // the group goes on at once: these are polled until claimed.
                        self.status(&held, &polling, false).await;
                        let _ = done.send(());
                        if !held.leaving {
                            tracing::info!(shards = ?shards, "shards revoked: polled until their next owner claims them");
                        }
                    }
                    Some(Change::Assign { shards }) if !held.leaving => {
                        // Their last owners said they release them before the group went on:
                        // read that before deciding whether to wait.
                        if !self.handover.catch_up_statuses(Duration::from_secs(5)).await {
                            tracing::warn!("the instances' statuses could not be read to their end; a shard's last owner may poll it a moment longer");
                        }
                        let until = Instant::now() + self.release_within;
                        for shard in shards {
                            if let Some((tasks, _)) = held.releasing.remove(&shard) {
                                held.owned.insert(shard, tasks);
                            } else if !held.owned.contains_key(&shard) {
                                held.claiming.insert(shard, until);
                            }
                        }
                        // The claim: their last owners see it and release them.
                        self.status(&held, &polling, false).await;
                    }
                    Some(Change::Assign { .. }) => {}
                },
                Ok(()) = statuses.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = tick.tick() => {
                    if let Err(error) = self.handover.publish_delivered().await {
                        tracing::warn!(%error, "cannot publish merchant states");
                    }
                    self.status(&held, &polling, false).await;
                }
            }
            self.settle(&mut held, &polling, &roster, &polling_stop)
                .await;
            if held.leaving && held.releasing.is_empty() {
                break;
            }
        }
        // Stopped: hand over whatever is still polled.
        let all: HashSet<String> = polling.fleet.xmids().iter().cloned().collect();
        polling_stop.cancel();
        let owned = std::mem::take(&mut held.owned);
        let releasing = std::mem::take(&mut held.releasing);
        for tasks in owned
            .into_values()
            .chain(releasing.into_values().map(|(tasks, _)| tasks))
            .chain(roster.map(|(tasks, _)| tasks))
        {
            tasks.halt().await;
        }
        self.handover.finish(&all, self.handover_within).await;
        self.status(&held, &polling, true).await;
    }

    /// Releases the shards claimed by another instance (or past their time, or all when
    /// leaving with no other instance live), and starts the claimed shards whose last owner
    /// released them (or that waited their time).
    async fn settle(
        &self,
        held: &mut Held,
        polling: &Polling,
        roster: &Option<(Tasks, UnboundedSender<Reassign>)>,
        polling_stop: &CancellationToken,
    ) {
        let now = Instant::now();
        let others = self
            .handover
            .live_others(self.session_timeout + 3 * self.state_interval);
        let release = releasable(
            held.releasing
                .iter()
                .map(|(shard, (_, until))| (*shard, *until)),
            held.leaving,
            &others,
            now,
        );
        let overdue: Vec<u32> = held
            .releasing
            .iter()
            .filter(|(shard, (_, until))| now >= *until && !release.contains(shard))
            .map(|(shard, _)| *shard)
            .collect();
        if !overdue.is_empty() && !held.overdue_said {
            held.overdue_said = true;
            tracing::warn!(shards = ?overdue, "shards the group took from this instance are not claimed by any live instance after pollers' release_within: still polled here until one claims them (the group's rebalance has not finished)");
        }
        if !release.is_empty() {
            self.release(held, &release, polling, roster).await;
        }
        let released = |shard: &u32| {
            !others
                .iter()
                .any(|o: &InstanceStatus| o.releasing.contains(shard))
        };
        let ready: Vec<u32> = held
            .claiming
            .iter()
            .filter(|(shard, until)| now >= **until || released(shard))
            .map(|(shard, _)| *shard)
            .collect();
        if !ready.is_empty() {
            self.start(held, &ready, polling, roster, polling_stop)
                .await;
        }
    }

    /// Stops polling `shards` and hands them over: waits for their events to be delivered,
    /// publishes their merchants' states, then says so in this instance's status.
    async fn release(
        &self,
        held: &mut Held,
        shards: &[u32],
        polling: &Polling,
        roster: &Option<(Tasks, UnboundedSender<Reassign>)>,
    ) {
        let releasing = std::time::Instant::now();
        let gone: HashSet<String> = polling
            .fleet
            .xmids()
            .iter()
            .filter(|x| shards.contains(&shard_of(x, self.shards)))
            .cloned()
            .collect();
        for shard in shards {
            if let Some((tasks, _)) = held.releasing.remove(shard) {
                tasks.halt().await;
            }
        }
        self.reassign(roster, held.polled(), polling).await;
        let stopped_ms = releasing.elapsed().as_millis() as u64;
        // Before the next owner starts: the fleet's shares never add up to more than the
        // key's budget.
        polling
            .pollers
            .budget
            .share(held.polled().len(), self.shards as usize);
        self.handover.finish(&gone, self.handover_within).await;
        count_changes(polling, "revoked", shards);
        tracing::info!(shards = ?shards, merchants = gone.len(), stopped_ms, took_ms = releasing.elapsed().as_millis() as u64,
            "shards handed over");
        self.status(held, polling, false).await;
    }

    /// Starts polling claimed shards, from what their last owners published.
    async fn start(
        &self,
        held: &mut Held,
        shards: &[u32],
        polling: &Polling,
        roster: &Option<(Tasks, UnboundedSender<Reassign>)>,
        polling_stop: &CancellationToken,
    ) {
        let waited: Vec<Instant> = shards
            .iter()
            .filter_map(|s| held.claiming.remove(s))
            .collect();
        let waited_ms = waited
            .iter()
            .map(|until| {
                (self
                    .release_within
                    .saturating_sub(until.saturating_duration_since(Instant::now())))
                .as_millis() as u64
            })
            .max()
            .unwrap_or(0);
        // Until the state topic is read, nothing of these shards is polled: starting from a
        // local or fresh cursor could skip what the last owner never delivered.
        let reading = std::time::Instant::now();
        while !self
            .handover
            .catch_up(shards, Duration::from_secs(60))
            .await
        {
            if polling_stop.is_cancelled() {
                break;
            }
            tracing::warn!(shards = ?shards, "the state topic could not be read to its end; trying again before polling these shards");
        }
        let caught_up_ms = reading.elapsed().as_millis() as u64;
        let polled = held.polled().len() + shards.len();
        polling.pollers.budget.share(polled, self.shards as usize);
        for shard in shards {
            let tasks = self.poll_shard(polling, *shard, polling_stop).await;
            held.owned.insert(*shard, tasks);
        }
        self.reassign(roster, held.polled(), polling).await;
        count_changes(polling, "assigned", shards);
        tracing::info!(assigned = ?shards, owned = held.owned.len(), merchants = polling.fleet.xmids().len(),
            waited_for_release_ms = waited_ms, caught_up_ms,
            requests_per_second = polling.pollers.budget.requests_per_second(), "shards assigned");
        self.status(held, polling, false).await;
    }

    async fn status(&self, held: &Held, polling: &Polling, stopped: bool) {
        let leaving = held.leaving;
        polling
            .pollers
            .metrics
            .cluster_shards
            .set(held.owned.len() as i64);
        let lag = self.lag(polling).await;
        self.handover
            .publish_status(
                held.owned
                    .keys()
                    .chain(held.claiming.keys())
                    .copied()
                    .collect(),
                held.releasing.keys().copied().collect(),
                polling.fleet.xmids().len(),
                (leaving, stopped),
                lag,
            )
            .await;
    }

    /// Each owned shard's merchants and their longest poll lag, from the local cursors (so
    /// `cluster status` reads the instances' statuses, not every merchant's state).
    async fn lag(&self, polling: &Polling) -> Vec<ShardLag> {
        let xmids = polling.fleet.xmids();
        let keys: Vec<(u32, String)> = xmids
            .iter()
            .flat_map(|x| {
                let shard = shard_of(x, self.shards);
                polling.pollers.cursor_keys(x).map(move |k| (shard, k))
            })
            .collect();
        let per_xmid = polling.pollers.config.resources.len().max(1);
        let store = polling.pollers.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let cursors =
                store.cursors_of(&keys.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>())?;
            let now = store.clock().now();
            let mut lag: BTreeMap<u32, ShardLag> = BTreeMap::new();
            for (chunk, cursors) in keys.chunks(per_xmid).zip(cursors.chunks(per_xmid)) {
                let Some((shard, _)) = chunk.first() else {
                    continue;
                };
                let entry = lag.entry(*shard).or_insert(ShardLag {
                    shard: *shard,
                    merchants: 0,
                    max_lag_s: 0.0,
                });
                entry.merchants += 1;
                for cursor in cursors.iter().flatten() {
                    let seconds = (now - cursor.position).num_milliseconds().max(0) as f64 / 1000.0;
                    entry.max_lag_s = entry.max_lag_s.max(seconds);
                }
            }
            Ok::<_, crate::store::StoreError>(lag.into_values().collect())
        })
        .await;
        match read {
            Ok(Ok(lag)) => lag,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the cursors for this instance's status");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// The listed XMIDs of the owned shards.
    fn listed(&self, polling: &Polling, owned: impl Fn(u32) -> bool) -> Vec<String> {
        polling
            .listed
            .iter()
            .filter(|x| owned(shard_of(x, self.shards)))
            .cloned()
            .collect()
    }

    /// Starts polling one shard's listed XMIDs at once, longest waiting first (a shard taken
    /// over has waited enough).
    async fn poll_shard(&self, polling: &Polling, shard: u32, stop: &CancellationToken) -> Tasks {
        let mut tasks = Tasks::new(stop);
        let xmids = self.listed(polling, |s| s == shard);
        if let Err(error) = polling.pollers.init_cursors(&xmids, polling.start).await {
            tracing::error!(%error, shard, "cannot record the shard's new cursors; its merchants start where their cursors are");
        }
        if let Err(error) = polling
            .pollers
            .spawn_takeover(&xmids, &mut tasks.set, &tasks.stop)
        {
            tracing::error!(%error, shard, "cannot order the shard's merchants by their wait; they start spread over an interval");
            polling.pollers.spawn(&xmids, &mut tasks.set, &tasks.stop);
        }
        let mut fleet: Vec<String> = polling.fleet.xmids().iter().cloned().collect();
        fleet.extend(xmids);
        polling.fleet.set(fleet);
        tasks
    }

    /// The roster task, if the roster is used: started once, owning nothing until the group
    /// assigns shards, and told of every change (it keeps its last read of the roster, so a
    /// rebalance moves only the merchants of the shards that move).
    fn watch_roster(
        &self,
        polling: &Polling,
        stop: &CancellationToken,
    ) -> Option<(Tasks, UnboundedSender<Reassign>)> {
        let config = polling.roster.as_ref()?;
        let (changes, reassigned) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Tasks::new(stop);
        let watch = RosterWatch {
            pollers: polling.pollers.clone(),
            config: config.clone(),
            listed: polling.listed.clone(),
            start: polling.start,
            fleet: polling.fleet.clone(),
            owns: Some(Arc::new(|_: &str| false)),
            reassigned: Some(reassigned),
        };
        tasks.set.spawn(watch.run(tasks.stop.clone()));
        Some((tasks, changes))
    }

    /// Tells the roster task which merchants are owned now, and waits until those no longer
    /// owned have stopped; without a roster, the fleet is the owned shards' listed XMIDs.
    async fn reassign(
        &self,
        roster: &Option<(Tasks, UnboundedSender<Reassign>)>,
        owned: BTreeSet<u32>,
        polling: &Polling,
    ) {
        let shards = self.shards;
        let Some((_, changes)) = roster else {
            polling
                .fleet
                .set(self.listed(polling, |s| owned.contains(&s)));
            return;
        };
        let owns: Ownership = Arc::new(move |x: &str| owned.contains(&shard_of(x, shards)));
        let (done, stopped) = tokio::sync::oneshot::channel();
        if changes.send(Reassign { owns, done }).is_ok() {
            // An error: the task is gone (stopping), and polls nothing.
            let _ = stopped.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxc::Clock;

    fn status(name: &str, shards: &[u32], leaving: bool) -> InstanceStatus {
        InstanceStatus {
            instance: name.into(),
            shards: shards.to_vec(),
            merchants: 0,
            at: mxc::SystemClock.now(),
            stopped: false,
            lag: Vec::new(),
            releasing: Vec::new(),
            leaving,
        }
    }

    #[test]
    fn an_unclaimed_shard_stays_polled_past_its_time_while_others_are_seen() {
        let now = Instant::now();
        let past = now - Duration::from_secs(1);
        let future = now + Duration::from_secs(10);
        // Shard 1 is claimed by b; 2 is past its time, unclaimed; 3 still has time.
        let releasing = || [(1, future), (2, past), (3, future)].into_iter();
        let others = [status("b", &[1], false), status("c", &[7], false)];
        assert_eq!(releasable(releasing(), false, &others, now), vec![1]);
        // Leaving, the time bounds the wait.
        assert_eq!(releasable(releasing(), true, &others, now), vec![1, 2]);
        // Seeing no other instance (statuses unread, or alone), the time bounds it too.
        assert_eq!(releasable(releasing(), false, &[], now), vec![2]);
        // Leaving with every other leaving too: all at once.
        let leaving = [status("b", &[], true)];
        assert_eq!(releasable(releasing(), true, &leaving, now), vec![1, 2, 3]);
    }
}
