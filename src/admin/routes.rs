//! The `/v1` routes: each takes and answers JSON, and tells the audit line what it did.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::api::{
    ApiError, BackfillStart, BackfillStatus, CursorPage, DeadLetterFilter, DeadLetterView,
    EndpointOutcome, MerchantOutcome, ReplayOutcome, ReplayRequest, StateView,
};
use super::auth::Outcome;
use super::ops::{self, OpError};
use super::Context;

pub(super) fn router(context: Arc<Context>) -> Router {
    Router::new()
        .route("/v1/state", get(state))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/dead-letters/replay", post(replay))
        .route("/v1/endpoints/{sink}/{action}", post(endpoint))
        .route("/v1/merchants/{xmid}/{action}", post(merchant))
        .route(
            "/v1/backfill",
            get(backfill_status)
                .post(backfill_start)
                .delete(backfill_cancel),
        )
        .with_state(context)
}

/// An answer with its audit outcome.
fn answer(status: StatusCode, body: impl serde::Serialize, outcome: String) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Outcome(outcome));
    response
}

fn error(status: StatusCode, message: String) -> Response {
    answer(
        status,
        ApiError {
            error: message.clone(),
        },
        message,
    )
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let status = match self {
            OpError::UnknownSink(_) | OpError::UnknownAction(_) | OpError::Task(_) => {
                StatusCode::BAD_REQUEST
            }
            OpError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.to_string())
    }
}

/// Store reads count whole trees: off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OpError> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(OpError::Task)?
}

/// The running state: cursors and lag per XMID and resource (a page of them, and a summary
/// of all), outboxes, dead letters, endpoints, paused merchants, roster, cluster shards, the
/// backfill.
#[utoipa::path(get, path = "/v1/state", tag = "state", params(CursorPage),
    responses((status = 200, body = StateView), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub(super) async fn state(
    State(c): State<Arc<Context>>,
    Query(page): Query<CursorPage>,
) -> Response {
    let context = c.clone();
    match blocking(move || Ok(context.state(&page)?)).await {
        Ok(view) => {
            let outcome = format!(
                "{} of {} cursors, {} sinks",
                view.cursors.len(),
                view.cursor_summary.count,
                view.sinks.len()
            );
            answer(StatusCode::OK, view, outcome)
        }
        Err(e) => e.into_response(),
    }
}

/// Dead letters, oldest first per sink; every given filter must match.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead letters", params(DeadLetterFilter),
    responses((status = 200, body = Vec<DeadLetterView>), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub(super) async fn dead_letters(
    State(c): State<Arc<Context>>,
    Query(filter): Query<DeadLetterFilter>,
) -> Response {
    let context = c.clone();
    match blocking(move || ops::dead_letters(&context.store, &context.sinks, &filter)).await {
        Ok(letters) => {
            let outcome = format!("{} dead letters", letters.len());
            answer(StatusCode::OK, letters, outcome)
        }
        Err(e) => e.into_response(),
    }
}

/// Moves the selected dead letters back to their outboxes: sent again at once, under their
/// first ids (`webhook-id`).
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead letters", request_body = ReplayRequest,
    responses((status = 200, body = ReplayOutcome), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub(super) async fn replay(
    State(c): State<Arc<Context>>,
    Json(request): Json<ReplayRequest>,
) -> Response {
    let context = c.clone();
    match blocking(move || ops::replay(&context.store, &context.sinks, &request)).await {
        Ok(outcome) => {
            let said = format!("replayed {}", outcome.replayed);
            answer(StatusCode::OK, outcome, said)
        }
        Err(e) => e.into_response(),
    }
}

/// Enables a disabled webhook endpoint (its waiting events go out), or pauses or resumes it
/// by hand (kept across restarts).
#[utoipa::path(post, path = "/v1/endpoints/{sink}/{action}", tag = "endpoints",
    params(("sink" = String, Path, description = "a webhook sink's name"),
        ("action" = String, Path, description = "`enable`, `pause` or `resume`")),
    responses((status = 200, body = EndpointOutcome), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn endpoint(
    State(c): State<Arc<Context>>,
    Path((sink, action)): Path<(String, String)>,
) -> Response {
    let Some(control) = c.webhooks.get(&sink) else {
        let names: Vec<&String> = c.webhooks.keys().collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("no webhook sink named {sink:?} (webhook sinks: {names:?})"),
        );
    };
    match ops::endpoint_action(&c.store, &sink, &action) {
        Ok(outcome) => {
            // The dispatcher takes the new state up at once.
            control.notify_one();
            let said = outcome.message.clone();
            answer(StatusCode::OK, outcome, said)
        }
        Err(e) => e.into_response(),
    }
}

/// Pauses or resumes polling of one XMID (kept across restarts), or polls it now.
#[utoipa::path(post, path = "/v1/merchants/{xmid}/{action}", tag = "merchants",
    params(("xmid" = String, Path, description = "an XMID this instance polls"),
        ("action" = String, Path, description = "`pause`, `resume` or `poll`")),
    responses((status = 200, body = MerchantOutcome), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn merchant(
    State(c): State<Arc<Context>>,
    Path((xmid, action)): Path<(String, String)>,
) -> Response {
    if !c.polls(&xmid) {
        return error(
            StatusCode::NOT_FOUND,
            format!("XMID {xmid} is not polled by this instance"),
        );
    }
    let merchants = &c.pollers.merchants;
    let result = match action.as_str() {
        "pause" | "resume" => {
            let pause = action == "pause";
            merchants
                .set_paused(&c.store, &xmid, pause)
                .map(|changed| match (changed, pause) {
                    (true, true) => (true, "polling paused (kept across restarts)".to_string()),
                    (true, false) => (
                        true,
                        "polling resumed; it catches up from its cursor".into(),
                    ),
                    (false, true) => (false, "already paused".into()),
                    (false, false) => (false, "not paused".into()),
                })
        }
        "poll" if merchants.is_paused(&xmid) => {
            return error(
                StatusCode::CONFLICT,
                format!("XMID {xmid} is paused: resume it first"),
            )
        }
        "poll" => {
            merchants.poll_now(&xmid);
            Ok((true, "polling now".into()))
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no merchant action {other:?} (pause, resume, poll)"),
            )
        }
    };
    match result {
        Ok((changed, message)) => answer(
            StatusCode::OK,
            MerchantOutcome {
                xmid,
                changed,
                message: message.clone(),
            },
            message,
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Starts a backfill inside the service (one at a time): the options of `mxc-relay backfill`;
/// the same request resumes a cancelled one from its checkpoint.
#[utoipa::path(post, path = "/v1/backfill", tag = "backfill", request_body = BackfillStart,
    responses((status = 202, body = BackfillStatus), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn backfill_start(
    State(c): State<Arc<Context>>,
    Json(start): Json<BackfillStart>,
) -> Response {
    let request = match super::jobs::backfill_request(&start, &c.listed, &c.routed) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match c.backfills.start(c.pollers.clone(), request, &c.stop) {
        Ok(status) => {
            let outcome = format!(
                "backfill of {} from {} started",
                status.resource, status.since
            );
            answer(StatusCode::ACCEPTED, status, outcome)
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// The running (or last) backfill's progress.
#[utoipa::path(get, path = "/v1/backfill", tag = "backfill",
    responses((status = 200, body = BackfillStatus), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn backfill_status(State(c): State<Arc<Context>>) -> Response {
    match c.backfills.status() {
        Some(status) => {
            let outcome = format!("{}: {} read", status.state, status.read);
            answer(StatusCode::OK, status, outcome)
        }
        None => error(
            StatusCode::NOT_FOUND,
            "no backfill has run since the start".into(),
        ),
    }
}

/// Cancels the running backfill; its checkpoint stays.
#[utoipa::path(delete, path = "/v1/backfill", tag = "backfill",
    responses((status = 200, body = BackfillStatus), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn backfill_cancel(State(c): State<Arc<Context>>) -> Response {
    match c.backfills.cancel() {
        Some(status) => answer(
            StatusCode::OK,
            status,
            "backfill cancelled; its checkpoint stays".into(),
        ),
        None => error(StatusCode::NOT_FOUND, "no backfill runs".into()),
    }
}
