//! The operations on a store that the admin API and the CLI (on a stopped service's store)
//! share, so that both answer the same.

use super::api::{
    CursorPage, CursorSort, CursorSummary, CursorView, DeadLetterFilter, DeadLetterView, Disabled,
    EndpointOutcome, EndpointView, OrphanOutbox, ReplayOutcome, ReplayRequest, SinkCount, SinkView,
    StateView,
};
use crate::store::{DeadLetter, Store, StoreError};
use mxc::RESOURCES;

/// A sink name that no configured sink has; the text lists those that exist.
#[derive(Debug, thiserror::Error)]
#[error("no sink named {name:?} (sinks: {})", listed(.sinks))]
pub struct UnknownSink {
    pub name: String,
    /// The configured sinks.
    pub sinks: Vec<String>,
}

fn listed(sinks: &[String]) -> String {
    if sinks.is_empty() {
        "none".to_string()
    } else {
        sinks.join(", ")
    }
}

/// Names the sink or says which exist.
pub fn check_sink(sinks: &[String], sink: &str) -> Result<(), UnknownSink> {
    if sinks.iter().any(|s| s == sink) {
        Ok(())
    } else {
        Err(UnknownSink {
            name: sink.to_string(),
            sinks: sinks.to_vec(),
        })
    }
}

/// The sinks a filter names (all of them without one).
fn selected<'a>(
    sinks: &'a [String],
    filter: &DeadLetterFilter,
) -> Result<Vec<&'a String>, UnknownSink> {
    match &filter.sink {
        Some(name) => {
            check_sink(sinks, name)?;
            Ok(sinks.iter().filter(|s| *s == name).collect())
        }
        None => Ok(sinks.iter().collect()),
    }
}

impl DeadLetterFilter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.since.is_none_or(|t| letter.failed_at >= t)
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| *t == letter.event.event_type)
            && self.xmid.as_ref().is_none_or(|x| *x == letter.event.xmid)
    }
}

/// Errors of these operations: a wrong argument (the caller's) or the store. The admin API
/// answers 500 for the store's, 400 for the others.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A filter names no configured sink.
    #[error(transparent)]
    UnknownSink(#[from] UnknownSink),
    /// An endpoint action other than `enable`, `pause` and `resume`.
    #[error("no endpoint action {0:?} (enable, pause, resume)")]
    UnknownAction(String),
    /// The admin API's blocking task for the request failed (panicked or was cancelled).
    #[error("the request's task failed: {0}")]
    Task(tokio::task::JoinError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The dead letters `filter` selects, oldest first per sink.
pub fn dead_letters(
    store: &Store,
    sinks: &[String],
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetterView>, OpError> {
    let mut out = Vec::new();
    for sink in selected(sinks, filter)? {
        for (seq, letter) in store.dead_letters(sink)? {
            if filter.matches(&letter) {
                out.push(DeadLetterView {
                    sink: sink.clone(),
                    seq,
                    failed_at: letter.failed_at,
                    attempts: letter.attempts,
                    last_status: letter.last_status,
                    reason: letter.reason,
                    event_id: letter.event.head.id,
                    event_type: letter.event.head.event_type,
                    record_id: letter.event.head.record_id,
                    xmid: letter.event.head.xmid,
                });
            }
        }
    }
    Ok(out)
}

/// Moves the selected dead letters back to their outboxes (same events, same ids).
pub fn replay(
    store: &Store,
    sinks: &[String],
    request: &ReplayRequest,
) -> Result<ReplayOutcome, OpError> {
    let mut outcome = ReplayOutcome {
        replayed: 0,
        per_sink: Vec::new(),
    };
    for sink in selected(sinks, &request.filter)? {
        let n = store.replay_dead_where(sink, |l| {
            request.filter.matches(l)
                && (request.ids.is_empty() || request.ids.contains(&l.event.id))
        })? as u64;
        if n > 0 {
            outcome.per_sink.push(SinkCount {
                sink: sink.clone(),
                count: n,
            });
        }
        outcome.replayed += n;
    }
    Ok(outcome)
}

/// Enables a disabled webhook endpoint in the store; whether it was disabled, and why.
pub fn enable_endpoint(store: &Store, sink: &str) -> Result<Option<String>, StoreError> {
    match store.disabled_endpoint(sink)? {
        Some(off) => {
            store.set_disabled_endpoint(sink, None)?;
            // Counting toward `disable_after` starts over.
            store.set_endpoint_failing_since(sink, None)?;
            Ok(Some(format!(
                "disabled since {}: {}",
                off.disabled_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                off.reason
            )))
        }
        None => Ok(None),
    }
}

/// Enables, pauses or resumes a webhook endpoint in the store (the running service then wakes
/// its dispatcher): what it did, and the events waiting in its outbox.
pub fn endpoint_action(
    store: &Store,
    sink: &str,
    action: &str,
) -> Result<EndpointOutcome, OpError> {
    let (changed, message) = match action {
        "enable" => match enable_endpoint(store, sink)? {
            Some(why) => (true, format!("enabled ({why}); its waiting events go out")),
            None => (false, "not disabled".to_string()),
        },
        "pause" | "resume" => {
            let pause = action == "pause";
            let was = store.endpoint_paused(sink)?;
            store.set_endpoint_paused(sink, pause)?;
            match (was, pause) {
                (false, true) => (true, "paused: its events wait in the outbox".into()),
                (true, false) => (true, "resumed".into()),
                (_, true) => (false, "already paused".into()),
                (_, false) => (false, "not paused".into()),
            }
        }
        other => return Err(OpError::UnknownAction(other.to_string())),
    };
    Ok(EndpointOutcome {
        sink: sink.to_string(),
        changed,
        message,
        outbox: store.outbox_len(sink)? as u64,
    })
}

/// What the store says: cursors and lag (the page `page` asks for, and a summary of all),
/// seen ids, outboxes, dead letters, endpoints, paused merchants. The running service adds
/// what only it knows.
pub fn state(
    store: &Store,
    sinks: &[String],
    webhooks: &[String],
    page: &CursorPage,
) -> Result<StateView, StoreError> {
    let now = store.clock().now();
    let mut cursors = Vec::new();
    for (key, cursor) in store.cursors()? {
        // Authorizations keep the bare XMID; the others are `RESOURCE/XMID`.
        let (resource, xmid) = match key.split_once('/') {
            Some((r, x)) if RESOURCES.iter().any(|known| known.name == r) => (r.to_string(), x),
            _ => (mxc::AUTHORIZATIONS.name.to_string(), key.as_str()),
        };
        cursors.push(CursorView {
            xmid: xmid.to_string(),
            resource,
            polled_up_to: cursor.position,
            lag_seconds: (now - cursor.position).num_seconds().max(0) as u64,
            last_error: None,
        });
    }
    let (cursor_summary, cursors, cursors_next) = paged(cursors, page);
    let mut sink_views = Vec::new();
    for sink in sinks {
        let endpoint = if webhooks.contains(sink) {
            Some(EndpointView {
                disabled: store.disabled_endpoint(sink)?.map(|d| Disabled {
                    since: d.disabled_at,
                    reason: d.reason,
                }),
                paused_by_hand: store.endpoint_paused(sink)?,
                failing_since: store.endpoint_failing_since(sink)?,
            })
        } else {
            None
        };
        sink_views.push(SinkView {
            name: sink.clone(),
            outbox: store.outbox_len(sink)? as u64,
            retrying: store.attempt_states(sink)?.len() as u64,
            dead_letters: store.dead_len(sink)? as u64,
            endpoint,
        });
    }
    Ok(StateView {
        store: store.path().display().to_string(),
        live: false,
        cursors,
        cursor_summary,
        cursors_next,
        seen_ids: store.seen_len() as u64,
        sinks: sink_views,
        orphan_outboxes: store
            .orphan_outboxes()
            .into_iter()
            .map(|(sink, n)| OrphanOutbox {
                sink,
                outbox: n as u64,
            })
            .collect(),
        paused_merchants: store.paused_merchants()?,
        roster_merchants: None,
        cluster_shards: None,
        backfill: None,
    })
}

/// The summary of every cursor, the page `page` asks for, and the next page's `after`.
fn paged(
    mut cursors: Vec<CursorView>,
    page: &CursorPage,
) -> (CursorSummary, Vec<CursorView>, Option<String>) {
    let limit = page.limit.unwrap_or(CursorPage::DEFAULT_LIMIT);
    // Most lagging first, then by resource and XMID.
    cursors.sort_by(|a, b| {
        b.lag_seconds
            .cmp(&a.lag_seconds)
            .then_with(|| page_key(a).cmp(&page_key(b)))
    });
    let at = |q: f64| {
        let n = cursors.len();
        // Nearest rank, counted from the least lagging.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
        cursors
            .get(n.saturating_sub(rank))
            .map_or(0, |c| c.lag_seconds)
    };
    let summary = CursorSummary {
        count: cursors.len() as u64,
        lag_p50_seconds: at(0.5),
        lag_p99_seconds: at(0.99),
        lag_max_seconds: cursors.first().map_or(0, |c| c.lag_seconds),
        most_lagging: cursors.first().cloned(),
    };
    if page.sort.unwrap_or_default() == CursorSort::Lag {
        cursors.truncate(limit);
        return (summary, cursors, None);
    }
    cursors.sort_by_cached_key(page_key);
    let start = match &page.after {
        Some(after) => cursors.partition_point(|c| page_key(c) <= *after),
        None => 0,
    };
    let mut listed: Vec<CursorView> = cursors.drain(start..).collect();
    // `limit` 0 lists none and has no next page: the summary was asked for.
    let next = match limit.checked_sub(1) {
        Some(last) if listed.len() > limit => Some(page_key(&listed[last])),
        _ => None,
    };
    listed.truncate(limit);
    (summary, listed, next)
}

/// A cursor's place in the `xmid` order, and the `after` that continues past it.
fn page_key(c: &CursorView) -> String {
    format!("{}/{}", c.resource, c.xmid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(xmid: &str, lag: u64) -> CursorView {
        CursorView {
            xmid: xmid.into(),
            resource: "authorizations".into(),
            polled_up_to: chrono::DateTime::UNIX_EPOCH,
            lag_seconds: lag,
            last_error: None,
        }
    }

    #[test]
    fn cursors_are_summarised_and_paged_by_xmid_or_by_lag() {
        // 100 cursors, lags 1..=100 s, XMIDs in the reverse order of their lag.
        let all: Vec<CursorView> = (1..=100)
            .map(|lag| cursor(&format!("X{:03}", 100 - lag), lag))
            .collect();
        let page = |limit, sort, after: Option<&str>| {
            paged(
                all.clone(),
                &CursorPage {
                    limit,
                    sort,
                    after: after.map(str::to_string),
                },
            )
        };
        let (summary, first, next) = page(Some(40), None, None);
        assert_eq!(summary.count, 100);
        assert_eq!(
            (
                summary.lag_p50_seconds,
                summary.lag_p99_seconds,
                summary.lag_max_seconds
            ),
            (50, 99, 100)
        );
        assert_eq!(summary.most_lagging.map(|c| c.xmid), Some("X000".into()));
        assert_eq!(first.len(), 40);
        assert_eq!(first[0].xmid, "X000");
        assert_eq!(next.as_deref(), Some("authorizations/X039"));
        let (_, second, next) = page(Some(40), None, next.as_deref());
        assert_eq!(second[0].xmid, "X040");
        let (_, third, next) = page(Some(40), None, next.as_deref());
        assert_eq!(
            (third.len(), third[19].xmid.as_str(), next),
            (20, "X099", None)
        );
        let (_, worst, next) = page(Some(3), Some(CursorSort::Lag), None);
        let lags: Vec<u64> = worst.iter().map(|c| c.lag_seconds).collect();
        assert_eq!((lags, next), (vec![100, 99, 98], None));
        let (summary, none, next) = page(Some(0), None, None);
        assert_eq!((summary.count, none.len(), next), (100, 0, None));
        let (empty, listed, next) = paged(Vec::new(), &CursorPage::default());
        assert_eq!(
            (empty.count, empty.lag_max_seconds, listed.len(), next),
            (0, 0, 0, None)
        );
    }

    #[test]
    fn an_unknown_sink_or_action_is_named_with_what_exists() {
        let sinks = vec!["kafka".to_string(), "hooks".to_string()];
        assert!(check_sink(&sinks, "hooks").is_ok());
        assert_eq!(
            check_sink(&sinks, "other").unwrap_err().to_string(),
            "no sink named \"other\" (sinks: kafka, hooks)"
        );
        assert_eq!(
            check_sink(&[], "other").unwrap_err().to_string(),
            "no sink named \"other\" (sinks: none)"
        );
        let filter = DeadLetterFilter {
            sink: Some("other".into()),
            ..DeadLetterFilter::default()
        };
        let e = OpError::from(selected(&sinks, &filter).unwrap_err());
        assert_eq!(
            e.to_string(),
            "no sink named \"other\" (sinks: kafka, hooks)"
        );
        assert_eq!(
            OpError::UnknownAction("stop".into()).to_string(),
            "no endpoint action \"stop\" (enable, pause, resume)"
        );
    }
}
