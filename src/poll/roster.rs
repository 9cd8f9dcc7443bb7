//! Discovery from the merchant roster: which merchants are polled, kept up to date. Every
//! `refresh` the roster is read again; merchants new to it start polling (from `backfill` back),
//! those that leave it or stop matching (closed) are polled for `grace` more and then stop,
//! their state kept in the store.
//!
//! This module holds the watch's loop (reading the roster, following the shards as they move);
//! `apply` brings the pollers in step with one read, `tasks` runs their groups, `checkpoint`
//! keeps the watch across restarts, and `fleet` shares the XMIDs polled.

mod apply;
mod checkpoint;
mod fleet;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use fleet::Fleet;

use super::{FirstPoll, Pollers};
use crate::config::RosterConfig;
use checkpoint::Selected;
use mxc::{Merchant, MxcError};
use tasks::Group;

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

impl RosterWatch {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut watching = self.restore();
        if watching.selected.is_some() {
            self.apply(None, &mut watching, false, &stop).await;
        }
        let mut reassigned = self.reassigned.take();
        loop {
            let wait = match self.read(&mut watching, &mut reassigned, &stop).await {
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
            self.restart_ended(&mut watching, &stop);
            if self.wait(wait, &mut watching, &mut reassigned, &stop).await {
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

    /// Reads the roster, following the shards as they move meanwhile; `None` once stopped.
    async fn read(
        &mut self,
        watching: &mut Watching,
        reassigned: &mut Option<mpsc::UnboundedReceiver<Reassign>>,
        stop: &CancellationToken,
    ) -> Option<Result<Vec<Merchant>, MxcError>> {
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
        loop {
            tokio::select! {
                read = &mut reading => return Some(read),
                _ = stop.cancelled() => return None,
                Some(change) = recv(reassigned) => {
                    self.reassign(change, watching, stop).await;
                }
            }
        }
    }

    /// Waits `wait` for the next read, following the shards as they move meanwhile; true once
    /// stopped.
    async fn wait(
        &mut self,
        wait: Duration,
        watching: &mut Watching,
        reassigned: &mut Option<mpsc::UnboundedReceiver<Reassign>>,
        stop: &CancellationToken,
    ) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return stop.is_cancelled(),
                _ = stop.cancelled() => return true,
                Some(change) = recv(reassigned) => {
                    self.reassign(change, watching, stop).await;
                }
            }
        }
    }

    /// A poller task that ended by itself panicked: say so and start it again.
    fn restart_ended(&self, watching: &mut Watching, stop: &CancellationToken) {
        for group in watching.groups.iter_mut() {
            if group.task.is_finished() && !stop.is_cancelled() {
                tracing::error!(xmids = %sample(&group.xmids), "a poller task ended unexpectedly; starting it again");
                let xmids = std::mem::take(&mut group.xmids);
                *group = self.spawn(xmids, stop, FirstPoll::Spread, false);
            }
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
}

/// Up to 10 XMIDs for a log line, and how many more.
fn sample<'a>(xmids: impl IntoIterator<Item = &'a String>) -> String {
    let all: Vec<&str> = xmids.into_iter().map(String::as_str).collect();
    match all.len() {
        0..=10 => all.join(","),
        n => format!("{} and {} more", all[..10].join(","), n - 10),
    }
}
