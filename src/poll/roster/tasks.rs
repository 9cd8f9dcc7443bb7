//! The poller tasks of the roster's merchants, one per group: started, stopped for merchants
//! that go, and re-formed when groups shrink.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RosterWatch;
use crate::poll::{FirstPoll, Pollers};

/// One poller task's XMIDs, its stop switch and its task. Dropping it (the watch stopped or
/// aborted with its pipeline) aborts the task, so no poller outlives its pipeline.
pub(super) struct Group {
    pub(super) xmids: Vec<String>,
    pub(super) stop: CancellationToken,
    pub(super) task: JoinHandle<()>,
    /// Formed at this roster read for merchants new to this process: not merged before the
    /// next read, so merchants still reading their backfill do not drag a merged group's
    /// window back with them.
    pub(super) fresh: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RosterWatch {
    /// The most XMIDs in one group (`pollers.group_size`).
    pub(super) fn max_group(&self) -> usize {
        self.pollers.config.group_size.max(1)
    }

    /// Starts a poller task for `xmids`, stopped by `stop` or its own switch.
    pub(super) fn spawn(
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
    pub(super) async fn regroup(
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
        let plan = crate::poll::groups::merges(&sizes, max);
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
        if !merging.is_empty() {
            self.merge(groups, merging, stop).await;
        }
    }

    /// Merges each of `merging` into one group: the running ones stop together, each after
    /// the poll it is in, and their merchants start again at once in the merged group.
    async fn merge(
        &self,
        groups: &mut Vec<Group>,
        merging: Vec<Vec<Piece>>,
        stop: &CancellationToken,
    ) {
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
            max_group = self.max_group(),
            "poller groups that shrank were merged (cursors are kept per merchant)"
        );
    }

    /// Stops the groups holding any of `xmids` — each finishes the poll it is in, so two polls
    /// of one merchant never overlap — and returns their other members, to be grouped again.
    pub(super) async fn stop_polling(
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
