//! The `/_sim` control endpoints: statistics, faults at run time, generated records and
//! merchants boarded or closed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::data::{Created, Shape};
use crate::faults::Faults;

use super::answer::json_error;
use super::state::SimState;

#[derive(Deserialize)]
pub(super) struct StatsParams {
    #[serde(default)]
    by_xmid: bool,
}

pub(super) async fn stats(
    State(state): State<Arc<SimState>>,
    Query(params): Query<StatsParams>,
) -> Response {
    Json(state.snapshot(params.by_xmid)).into_response()
}

pub(super) async fn get_gaps(State(state): State<Arc<SimState>>) -> Response {
    Json(state.stats.gaps(false)).into_response()
}

pub(super) async fn reset_gaps(State(state): State<Arc<SimState>>) -> Response {
    Json(state.stats.gaps(true)).into_response()
}

pub(super) async fn get_faults(State(state): State<Arc<SimState>>) -> Response {
    Json(state.faults()).into_response()
}

pub(super) async fn set_faults(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("faults: {e}")),
    };
    if let Err(message) = faults.validate() {
        return json_error(StatusCode::BAD_REQUEST, &format!("faults: {message}"));
    }
    state.set_faults(faults.clone());
    Json(faults).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    count: usize,
    #[serde(default)]
    xmids: Vec<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Leave the `id` field out of the generated records.
    #[serde(default)]
    without_id: bool,
    /// Add a `simPadding` field of this many bytes to each record.
    #[serde(default)]
    pad_bytes: usize,
    /// `"now"` (all ingested at once, the default) or `"with_transaction"` (each soon after
    /// its transaction, as live traffic).
    #[serde(default)]
    created: Created,
}

pub(super) async fn generate(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let request: GenerateBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("generate: {e}")),
    };
    let to = request.to.unwrap_or_else(|| state.now());
    let from = request.from.unwrap_or(to - chrono::Duration::hours(1));
    let shape = Shape {
        with_id: !request.without_id,
        pad_bytes: request.pad_bytes,
        created: request.created,
    };
    match state.generate(request.count, &request.xmids, from, to, shape) {
        Ok(()) => Json(serde_json::json!({ "generated": request.count })).into_response(),
        Err(message) => json_error(StatusCode::BAD_REQUEST, &format!("generate: {message}")),
    }
}

/// `POST /_sim/merchants {"add": N, "close": ["XMID", …]}`: boards and closes merchants.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MerchantsBody {
    #[serde(default)]
    add: usize,
    #[serde(default)]
    close: Vec<String>,
}

pub(super) async fn change_merchants(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let request: MerchantsBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("merchants: {e}")),
    };
    let Ok(mut data) = state.data.lock() else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulator state poisoned",
        );
    };
    if let Some(unknown) = request
        .close
        .iter()
        .find(|x| data.merchant_index(x).is_none())
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("merchants: no merchant {unknown:?} to close"),
        );
    }
    for xmid in &request.close {
        data.close_merchant(xmid);
    }
    let added: Vec<String> = (0..request.add).map(|_| data.add_merchant()).collect();
    Json(serde_json::json!({ "added": added, "closed": request.close })).into_response()
}
