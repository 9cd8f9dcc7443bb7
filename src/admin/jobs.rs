//! The backfill that runs inside the service: one at a time, started, watched and cancelled
//! through the API. It runs on the pipeline's pollers — the same admission (what was sent is
//! recognised by id) and the same request budget as polling — and keeps its checkpoint after
//! every page, so a cancelled one resumes when the same request is started again.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::api::{BackfillStart, BackfillStatus};
use crate::poll::{BackfillProgress, BackfillRequest, Pollers};
use mxc::{Clock, Resource, AUTHORIZATIONS};

/// Why a backfill request is refused (the admin API answers 400 with the text).
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// `resource` names no resource MXC serves; the text lists those it does.
    #[error("resource: no resource named {0:?} (known: {known})", known = Resource::names())]
    UnknownResource(String),
    /// No XMIDs given and none listed in `pollers.xmids`.
    #[error(
        "no XMIDs: give some (the roster is not read by backfill), or list them in pollers.xmids"
    )]
    NoXmids,
    /// No route takes the resource: what is read would go nowhere.
    #[error("no route takes {0}: add a [[routes]] entry with resource = {0:?} (and {0:?} to pollers.resources)")]
    NotRouted(&'static str),
    /// `since` is not an instant, a date or a duration ago.
    #[error("since: {0}")]
    Since(super::api::InstantError),
    /// The window from `since` to `until` (default: now) is empty.
    #[error("since ({}) must be before until ({})", mxc::instant(*.since), mxc::instant(*.until))]
    EmptyWindow {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
}

/// A backfill cannot start while another runs (the admin API answers 409 with the text).
#[derive(Debug, thiserror::Error)]
#[error("a backfill runs already ({resource} of {} from {since}); cancel it first", .xmids.join(","))]
pub struct BackfillRunning {
    pub resource: String,
    pub xmids: Vec<String>,
    pub since: String,
}

/// What a backfill request must satisfy, as the `backfill` command checks it: XMIDs (default:
/// those listed), a route that takes the resource, a window that is not empty.
pub fn backfill_request(
    start: &BackfillStart,
    listed: &[String],
    routed: &[&str],
) -> Result<BackfillRequest, BackfillError> {
    let resource: &'static Resource = match &start.resource {
        Some(name) => {
            Resource::named(name).ok_or_else(|| BackfillError::UnknownResource(name.clone()))?
        }
        None => &AUTHORIZATIONS,
    };
    let xmids = if start.xmids.is_empty() {
        listed.to_vec()
    } else {
        start.xmids.clone()
    };
    if xmids.is_empty() {
        return Err(BackfillError::NoXmids);
    }
    if !routed.contains(&resource.name) {
        return Err(BackfillError::NotRouted(resource.name));
    }
    let since = super::api::parse_instant(&start.since).map_err(BackfillError::Since)?;
    let until = start.until.unwrap_or_else(|| mxc::SystemClock.now());
    if since >= until {
        return Err(BackfillError::EmptyWindow { since, until });
    }
    Ok(BackfillRequest {
        resource,
        xmids,
        since_spec: start.since.clone(),
        since,
        until: start.until,
    })
}

struct Job {
    status: Arc<Mutex<BackfillStatus>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The current (or last) backfill.
#[derive(Clone, Default)]
pub struct Backfills {
    job: Arc<Mutex<Option<Job>>>,
}

impl Backfills {
    /// Starts `request` on `pollers`, unless one runs; it stops with `stop` too (the service's
    /// stop: its checkpoint stays).
    pub fn start(
        &self,
        pollers: Pollers,
        request: BackfillRequest,
        stop: &CancellationToken,
    ) -> Result<BackfillStatus, BackfillRunning> {
        let mut job = self.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = job.as_ref() {
            let status = lock(&current.status).clone();
            if status.state == "running" {
                return Err(BackfillRunning {
                    resource: status.resource,
                    xmids: status.xmids,
                    since: status.since,
                });
            }
        }
        let status = Arc::new(Mutex::new(BackfillStatus {
            state: "running".into(),
            resource: request.resource.name.to_string(),
            xmids: request.xmids.clone(),
            since: request.since_spec.clone(),
            read: 0,
            new: 0,
            duplicate: 0,
            total: None,
            position: None,
            resumed: false,
            error: None,
        }));
        let stop = stop.child_token();
        let snapshot = lock(&status).clone();
        let task_status = status.clone();
        let task_stop = stop.clone();
        let task = tokio::spawn(async move {
            let (status, stop) = (task_status, task_stop);
            tracing::info!(resource = request.resource.name, xmids = %request.xmids.join(","), since = %request.since_spec, "backfill started through the admin API");
            let result = pollers
                .backfill(&request, &stop, |p| update(&status, p))
                .await;
            let mut s = lock(&status);
            match result {
                Ok(p) => {
                    s.state = if p.complete { "complete" } else { "cancelled" }.into();
                    update_fields(&mut s, &p);
                    tracing::info!(state = %s.state, read = p.read, new = p.new, duplicate = p.duplicate, "backfill ended");
                }
                Err(e) => {
                    s.state = "failed".into();
                    s.error = Some(format!(
                        "{e}; start the same backfill again to resume from its checkpoint"
                    ));
                    tracing::error!(error = %e, "backfill failed; its checkpoint stays");
                }
            }
        });
        *job = Some(Job {
            status,
            stop,
            task: Some(task),
        });
        Ok(snapshot)
    }

    /// The current or last backfill.
    pub fn status(&self) -> Option<BackfillStatus> {
        let job = self.job.lock().unwrap_or_else(|e| e.into_inner());
        job.as_ref().map(|j| lock(&j.status).clone())
    }

    /// Cancels the running backfill (its checkpoint stays); its status, or `None` if none runs.
    pub fn cancel(&self) -> Option<BackfillStatus> {
        let job = self.job.lock().unwrap_or_else(|e| e.into_inner());
        let job = job.as_ref()?;
        let status = lock(&job.status).clone();
        (status.state == "running").then(|| {
            job.stop.cancel();
            status
        })
    }
}

impl Backfills {
    /// Waits for the backfill's task to end (the pipeline's stop cancels it): it holds the
    /// store.
    pub async fn finish(&self) {
        let task = {
            let mut job = self.job.lock().unwrap_or_else(|e| e.into_inner());
            job.as_mut().and_then(|j| j.task.take())
        };
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn lock(status: &Mutex<BackfillStatus>) -> std::sync::MutexGuard<'_, BackfillStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

fn update(status: &Mutex<BackfillStatus>, p: &BackfillProgress) {
    update_fields(&mut lock(status), p);
}

fn update_fields(s: &mut BackfillStatus, p: &BackfillProgress) {
    s.read = p.read;
    s.new = p.new;
    s.duplicate = p.duplicate;
    s.total = p.total;
    s.position = p.position;
    s.resumed = p.resumed;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(since: &str, resource: Option<&str>) -> BackfillStart {
        BackfillStart {
            since: since.into(),
            until: None,
            xmids: Vec::new(),
            resource: resource.map(String::from),
        }
    }

    fn refusal(start: &BackfillStart, listed: &[&str], routed: &[&str]) -> String {
        let listed: Vec<String> = listed.iter().map(|x| x.to_string()).collect();
        backfill_request(start, &listed, routed)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_refused_backfill_says_why_as_it_always_did() {
        let all = ["authorizations"];
        assert_eq!(
            refusal(&start("1h", Some("chargebacks")), &["X1"], &all),
            format!(
                "resource: no resource named \"chargebacks\" (known: {})",
                Resource::names()
            )
        );
        assert_eq!(
            refusal(&start("1h", None), &[], &all),
            "no XMIDs: give some (the roster is not read by backfill), or list them in pollers.xmids"
        );
        assert_eq!(
            refusal(&start("1h", None), &["X1"], &["disputes"]),
            "no route takes authorizations: add a [[routes]] entry with resource = \"authorizations\" (and \"authorizations\" to pollers.resources)"
        );
        assert_eq!(
            refusal(&start("soon", None), &["X1"], &all),
            "since: \"soon\" is not an instant (2026-01-01T00:00:00Z), a date (2026-01-01) or a duration ago (1h)"
        );
        let mut backwards = start("2026-01-02", None);
        backwards.until = Some("2026-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(
            refusal(&backwards, &["X1"], &all),
            format!(
                "since ({}) must be before until ({})",
                mxc::instant("2026-01-02T00:00:00Z".parse().unwrap()),
                mxc::instant("2026-01-01T00:00:00Z".parse().unwrap())
            )
        );
        let request = backfill_request(&start("2026-01-02", None), &["X1".into()], &all).unwrap();
        assert_eq!(request.xmids, ["X1"]);
        assert_eq!(request.resource.name, "authorizations");
    }

    #[test]
    fn a_second_backfill_names_the_one_that_runs() {
        let running = BackfillRunning {
            resource: "authorizations".into(),
            xmids: vec!["X1".into(), "X2".into()],
            since: "30d".into(),
        };
        assert_eq!(
            running.to_string(),
            "a backfill runs already (authorizations of X1,X2 from 30d); cancel it first"
        );
    }
}
