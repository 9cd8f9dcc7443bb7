//! The backfill that runs inside the service: one at a time, started, watched and cancelled
//! through the API. It runs on the pipeline's pollers — the same admission (what was sent is
//! recognised by id) and the same request budget as polling — and keeps its checkpoint after
//! every page, so a cancelled one resumes when the same request is started again.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::api::{BackfillStart, BackfillStatus};
use crate::poll::{BackfillProgress, BackfillRequest, Pollers};
use mxc::{Resource, AUTHORIZATIONS};

/// What a backfill request must satisfy, as the `backfill` command checks it: XMIDs (default:
/// those listed), a route that takes the resource, a window that is not empty.
pub fn backfill_request(
    start: &BackfillStart,
    listed: &[String],
    routed: &[&str],
) -> Result<BackfillRequest, String> {
    let resource: &'static Resource = match &start.resource {
        Some(name) => Resource::named(name).ok_or_else(|| {
            format!(
                "resource: no resource named {name:?} (known: {})",
                Resource::names()
            )
        })?,
        None => &AUTHORIZATIONS,
    };
    let xmids = if start.xmids.is_empty() {
        listed.to_vec()
    } else {
        start.xmids.clone()
    };
    if xmids.is_empty() {
        return Err("no XMIDs: give some (the roster is not read by backfill), or list them in pollers.xmids".into());
    }
    if !routed.contains(&resource.name) {
        return Err(format!(
            "no route takes {0}: add a [[routes]] entry with resource = {0:?} (and {0:?} to pollers.resources)",
            resource.name
        ));
    }
    let since = super::api::parse_instant(&start.since).map_err(|e| format!("since: {e}"))?;
    let until = start.until.unwrap_or_else(Utc::now);
    if since >= until {
        return Err(format!(
            "since ({}) must be before until ({})",
            mxc::instant(since),
            mxc::instant(until)
        ));
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
    ) -> Result<BackfillStatus, String> {
        let mut job = self.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = job.as_ref() {
            let status = lock(&current.status).clone();
            if status.state == "running" {
                return Err(format!(
                    "a backfill runs already ({} of {} from {}); cancel it first",
                    status.resource,
                    status.xmids.join(","),
                    status.since
                ));
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
