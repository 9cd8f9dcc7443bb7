//! One roster read (or the last one, when the shards move) applied: which merchants this
//! instance polls, whose grace period starts, ends or is cut short by coming back, and where
//! the cursors of the merchants that start polling begin.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::checkpoint::Selected;
use super::tasks::Group;
use super::{owned, sample, RosterWatch, Watching};
use crate::poll::FirstPoll;
use crate::store::{Cursor, StoreError};
use crate::telemetry::events::{InternalEvent, RosterMerchantsStarted, RosterRead};

impl RosterWatch {
    /// Brings the pollers in step with the roster (a new read's `selected`, or the last one)
    /// and the merchants this instance owns: new and returning merchants start (at once,
    /// longest waiting first, when `takeover`; else spread over an interval), those that left
    /// it go on for their grace period, those whose grace ended or that another instance owns
    /// now stop.
    pub(super) async fn apply(
        &self,
        read: Option<Selected>,
        watching: &mut Watching,
        takeover: bool,
        stop: &CancellationToken,
    ) {
        if read.is_some() {
            watching.selected = read;
        }
        for group in watching.groups.iter_mut() {
            group.fresh = false;
        }
        // MXC's: new merchants' cursors start on its clock.
        let now = self.pollers.client.mxc_now();
        let wanted = self.wanted(watching.selected.as_ref());
        let expired = self.follow(watching, &wanted, now);
        // Stop what is not polled here any more: expired, or another instance's now.
        let moved: BTreeSet<String> = watching
            .groups
            .iter()
            .flat_map(|g| g.xmids.iter())
            .filter(|x| !owned(&self.owns, x))
            .cloned()
            .collect();
        let mut remaining = Vec::new();
        if !expired.is_empty() || !moved.is_empty() {
            let stopping: BTreeSet<String> = expired.union(&moved).cloned().collect();
            remaining = self.stop_polling(&mut watching.groups, &stopping).await;
            if !expired.is_empty() {
                tracing::info!(count = expired.len(), xmids = %sample(&expired),
                    "merchants no longer polled (their state stays in the store)");
            }
        }
        let new = unpolled(&watching.groups, &remaining, &wanted, &watching.polled);
        if !new.is_empty() {
            self.start(&new, watching, takeover, now, stop).await;
        }
        self.regroup(&mut watching.groups, remaining, stop).await;
        watching.read_once = true;
        self.save(watching, now).await;
        RosterRead {
            removed: expired.len(),
            polled: watching.polled.len(),
            at: now,
        }
        .emit(&self.pollers.metrics);
        let mut all: Vec<String> = self
            .listed
            .iter()
            .filter(|x| owned(&self.owns, x))
            .cloned()
            .collect();
        all.extend(watching.polled.keys().cloned());
        self.fleet.set(all);
    }

    /// The merchants of the roster read this instance polls: selected, owned here, neither
    /// excluded nor listed by hand.
    fn wanted(&self, selected: Option<&Selected>) -> BTreeSet<String> {
        let roster: &[String] = selected.map_or(&[], |s| &s.xmids);
        let excluded = |x: &String| self.config.exclude.contains(x) || self.listed.contains(x);
        roster
            .iter()
            .filter(|x| !excluded(x) && owned(&self.owns, x))
            .cloned()
            .collect()
    }

    /// Follows the grace periods: merchants not `wanted` any more start theirs, those back in
    /// the roster end it, and those whose grace ended leave `polled` (returned).
    fn follow(
        &self,
        watching: &mut Watching,
        wanted: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> BTreeSet<String> {
        let Watching {
            polled, restored, ..
        } = watching;
        let owned = |x: &str| owned(&self.owns, x);
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
        expired
    }

    /// Starts polling `new` merchants: from `pollers.start` at the first read ever, else from
    /// `backfill` back; grouped at once (`takeover`) or spread over an interval.
    async fn start(
        &self,
        new: &[String],
        watching: &mut Watching,
        takeover: bool,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) {
        let boarded = new
            .iter()
            .filter(|x| matches!(self.pollers.has_cursor(x), Ok(false)))
            .count();
        let read_before = watching.read_once || watching.ever_read;
        let backfill = chrono::Duration::from_std(self.config.backfill).unwrap_or_default();
        let from = if read_before {
            now.checked_sub_signed(backfill).unwrap_or(now)
        } else {
            self.start
        };
        let started = match self.prepare(new, from, now).await {
            Ok(()) if takeover => self.pollers.takeover(new),
            Ok(()) => Ok(crate::poll::groups::even(new, self.max_group())
                .into_iter()
                .map(|g| (g, FirstPoll::Spread))
                .collect()),
            Err(error) => Err(error),
        };
        match started {
            Ok(planned) => {
                for (group, first) in planned {
                    watching.groups.push(self.spawn(group, stop, first, true));
                }
                for xmid in new {
                    watching.polled.entry(xmid.clone()).or_insert(None);
                }
                RosterMerchantsStarted {
                    count: new.len(),
                    sample: &sample(new),
                    from,
                    boarded: read_before.then_some(boarded),
                }
                .emit(&self.pollers.metrics);
            }
            Err(error) => {
                tracing::error!(%error, "cannot record the roster's new merchants; they are tried again at the next refresh")
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
        for chunk in stale.chunks(crate::poll::CURSORS_PER_TRANSACTION) {
            self.pollers.store.admit(&[], chunk).await?;
        }
        Ok(())
    }
}

/// The merchants to poll (`wanted`, and those in their grace period) that no group polls, nor
/// `remaining` (members of groups just stopped, about to be grouped again).
fn unpolled(
    groups: &[Group],
    remaining: &[Vec<String>],
    wanted: &BTreeSet<String>,
    polled: &BTreeMap<String, Option<DateTime<Utc>>>,
) -> Vec<String> {
    let in_groups: BTreeSet<&String> = groups
        .iter()
        .flat_map(|g| g.xmids.iter())
        .chain(remaining.iter().flatten())
        .collect();
    wanted
        .iter()
        .chain(polled.keys().filter(|x| !wanted.contains(*x)))
        .filter(|x| !in_groups.contains(x))
        .cloned()
        .collect()
}
