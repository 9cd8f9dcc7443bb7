//! The middleware of every answer: the `Date` header from the simulator's clock, and, on the
//! API endpoints, the request count and the injected faults.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::faults::Faults;

use super::answer::json_error;
use super::state::SimState;

/// Sets `Date` on every answer from the simulator's clock (hyper then adds none of its own).
pub(super) async fn date_header(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let date = state.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

/// Counts every request by route and status, and applies the faults to the API endpoints.
pub(super) async fn observe(
    State(state): State<Arc<SimState>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let path = matched
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let route = format!("{} {}", request.method(), path);
    let api = path.starts_with("/report/") || path.starts_with("/boarding/");
    let response = if let Some(wait) = api.then(|| over_key_limit(&state)).flatten() {
        let mut response = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "API rate limit exceeded for this API key",
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
        );
        response
    } else if api {
        with_faults(&state.faults(), request, next).await
    } else {
        next.run(request).await
    };
    state.stats.count_request(route, response.status().as_u16());
    response
}

/// How long until the key may send again, if this request is over its limit.
fn over_key_limit(state: &SimState) -> Option<Duration> {
    state.key_limit.as_ref()?.admit().err()
}

async fn with_faults(faults: &Faults, request: Request, next: Next) -> Response {
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let (throttle, error, truncate, malformed) = {
        let mut rng = rand::thread_rng();
        (
            rng.gen_bool(faults.throttle_rate.clamp(0.0, 1.0)),
            rng.gen_bool(faults.error_rate.clamp(0.0, 1.0)),
            rng.gen_bool(faults.truncate_rate.clamp(0.0, 1.0)),
            rng.gen_bool(faults.malformed_rate.clamp(0.0, 1.0)),
        )
    };
    if throttle {
        let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(faults.retry_after_secs),
        );
        return response;
    }
    if error {
        let status = faults
            .error_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return json_error(status, "Simulated server error");
    }
    let response = next.run(request).await;
    if response.status() != StatusCode::OK || !(truncate || malformed) {
        return response;
    }
    if malformed {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
        )
            .into_response();
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}
