//! The API endpoints, as the real MXC serves them: authentication, the report resources
//! (query and export form) and the roster, with its error answers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;

use crate::data::{Dataset, SimRecord};
use crate::query::ReportQuery;
use mxc::Resource;

use super::answer::{json_body, json_error, ApiError};
use super::state::{Scroll, SimState, SCROLL_IDLE};
#[derive(Deserialize)]
struct AuthBody {
    value: String,
}

pub(super) async fn authenticate(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.stats.auth_calls.fetch_add(1, Ordering::Relaxed);
    let Ok(AuthBody { value }) = serde_json::from_slice(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Body must be {\"value\": \"<API key>\"}",
        );
    };
    let reject = |message: &str| {
        state.stats.auth_rejected.fetch_add(1, Ordering::Relaxed);
        json_error(StatusCode::UNAUTHORIZED, message)
    };
    if value != state.config.api_key {
        return reject("Invalid API key");
    }
    // The Basic header is optional (a public client omits it), but checked when present.
    if let Some(basic) = headers.get(header::AUTHORIZATION) {
        let decoded = basic
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let expected = format!("{}:{}", state.config.username, state.config.password);
        if decoded.as_deref() != Some(expected.as_str()) {
            return reject("Bad credentials");
        }
    }
    let iat = state.config.clock.now().timestamp();
    let ttl = state.config.jwt_ttl.as_secs().max(1) as i64;
    let jti = state.next_id.fetch_add(1, Ordering::Relaxed);
    let token = state
        .jwt
        .issue(&state.config.username, "00000000001", iat, iat + ttl, jti);
    state.stats.tokens_issued.fetch_add(1, Ordering::Relaxed);
    Json(serde_json::json!({ "token": token })).into_response()
}

pub(super) async fn report(
    resource: &'static Resource,
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(error) = state.authorize(&headers) {
        return error.into_response();
    }
    let query = match parse_report_query(resource, &state, &headers, &params) {
        Ok(q) => q,
        Err(error) => return error.into_response(),
    };
    if query.offset.saturating_add(query.size) > state.config.max_result_window {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Result window is too large, from + size must be less than or equal to: [{}] but was [{}]",
                state.config.max_result_window,
                query.offset.saturating_add(query.size)
            ),
        );
    }
    let page = match state.page(&query, query.offset, query.size) {
        Ok(page) => page,
        Err(error) => return error.into_response(),
    };
    json_body(envelope(
        &state,
        &query,
        &page.records,
        page.total,
        page.total_amount,
        None,
    ))
}

/// Parses a report query and applies the `fail_xmids` fault.
fn parse_report_query(
    resource: &'static Resource,
    state: &SimState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<ReportQuery, ApiError> {
    let mut query = ReportQuery::parse(resource, params, state.now())
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    if query.created_range.is_some() && state.faults().ignore_created_filter {
        // A server that drops the range (and the rest of the filter) but keeps the sort.
        let mut unfiltered = params.clone();
        unfiltered.remove("filter");
        query = ReportQuery::parse(resource, &unfiltered, state.now())
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    }
    if query.on_created && state.faults().refuse_created {
        // What an index without a usable `created` answers.
        let message = if query.sorts_by("created") {
            "No mapping found for [created] in order to sort on"
        } else {
            "Cannot search on field [created] since it is not indexed."
        };
        return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
    }
    if let Some(xmids) = &query.xmids {
        let client = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        state.stats.count_query(xmids, client);
        let failing = state.faults().fail_xmids;
        if xmids.iter().any(|x| failing.contains(x)) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Simulated failure for this account",
            ));
        }
    }
    Ok(query)
}

/// The documented envelope, assembled from the pre-rendered records.
fn envelope(
    state: &SimState,
    query: &ReportQuery,
    page: &[Arc<SimRecord>],
    total: usize,
    total_amount: f64,
    scroll_id: Option<&str>,
) -> String {
    let mut body =
        String::with_capacity(128 + page.iter().map(|r| r.json.len() + 1).sum::<usize>());
    let _ = write!(
        body,
        r#"{{"aggregations":{{"totalAmount":{{"value":{}}}}},"totalRecords":{},"recordCount":{},"#,
        serde_json::Value::from(total_amount),
        total,
        page.len()
    );
    if let Some(id) = scroll_id {
        let _ = write!(body, r#""_scroll_id":{},"#, serde_json::Value::from(id));
    }
    body.push_str(r#""records":["#);
    for (i, record) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&query.render(record));
    }
    body.push_str("]}");
    state
        .stats
        .records_served
        .fetch_add(page.len() as u64, Ordering::Relaxed);
    body
}

/// What the body of `POST …/export` asks for.
#[derive(Debug, PartialEq)]
enum ExportBody {
    /// Open a scroll: an empty or blank body, `{}`, or `{"scrollId": null}`.
    Open,
    /// The next page of a scroll: `{"scrollId": "…"}`, other keys ignored.
    Continue(String),
}

fn export_body(body: &[u8]) -> Result<ExportBody, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExportBody::Open);
    }
    let bad = || "Body must be {\"scrollId\": \"…\"}, {} or empty".to_string();
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("{} ({e})", bad()))?;
    let object = value.as_object().ok_or_else(bad)?;
    match object.get("scrollId") {
        None | Some(serde_json::Value::Null) => Ok(ExportBody::Open),
        Some(serde_json::Value::String(id)) => Ok(ExportBody::Continue(id.clone())),
        Some(_) => Err(bad()),
    }
}

pub(super) async fn export(
    resource: &'static Resource,
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(error) = state.authorize(&headers) {
        return error.into_response();
    }
    let Ok(mut scrolls) = state.scrolls.lock() else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulator state is poisoned",
        );
    };
    scrolls.retain(|_, s| s.last_used.elapsed() < SCROLL_IDLE);
    let asked = match export_body(&body) {
        Ok(asked) => asked,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    if let ExportBody::Continue(scroll_id) = asked {
        let every = state.faults().expire_scroll_every;
        let n = state.continuations.fetch_add(1, Ordering::Relaxed) + 1;
        if every > 0 && n % u64::from(every) == 0 {
            scrolls.remove(&scroll_id);
        }
        let Some(scroll) = scrolls.get_mut(&scroll_id) else {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("No search context found for id [{scroll_id}]"),
            );
        };
        let start = scroll.position.min(scroll.records.len());
        let end = (start + scroll.query.size.max(1)).min(scroll.records.len());
        scroll.position = end;
        scroll.last_used = Instant::now();
        let body = envelope(
            &state,
            &scroll.query,
            &scroll.records[start..end],
            scroll.records.len(),
            scroll.total_amount,
            Some(&scroll_id),
        );
        if start == end {
            scrolls.remove(&scroll_id);
        }
        return json_body(body);
    }
    drop(scrolls);
    let mut query = match parse_report_query(resource, &state, &headers, &params) {
        Ok(q) => q,
        Err(error) => return error.into_response(),
    };
    query.offset = 0;
    let (records, total_amount) = match state.matching(&query) {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let end = query.size.max(1).min(records.len());
    let id = format!(
        "sim-scroll-{}",
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let body = envelope(
        &state,
        &query,
        &records[..end],
        records.len(),
        total_amount,
        Some(&id),
    );
    if let Ok(mut scrolls) = state.scrolls.lock() {
        scrolls.insert(
            id,
            Scroll {
                query,
                records,
                position: end,
                total_amount,
                last_used: Instant::now(),
            },
        );
    }
    json_body(body)
}

pub(super) async fn roster_page(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(error) = state.authorize(&headers) {
        return error.into_response();
    }
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        match params.get(name) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name} must be a whole number, got {s:?}"),
                )
            }),
        }
    };
    let (size, from) = match (number("size", 10), number("from", 0)) {
        (Ok(s), Ok(f)) => (s, f),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    if size > 100 {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("size must be at most 100, got {size}"),
        );
    }
    // Rendered per request: the roster changes when merchants board or close.
    let (total, entries) = match state.data.lock() {
        Ok(data) => {
            let start = from.min(data.merchants.len());
            let end = (start + size).min(data.merchants.len());
            let entries: Vec<String> = data.merchants[start..end]
                .iter()
                .map(|m| Dataset::roster_entry(m).to_string())
                .collect();
            (data.merchants.len(), entries)
        }
        Err(_) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulator state poisoned",
            )
        }
    };
    let mut body = format!(
        r#"{{"totalRecords":{total},"recordCount":{},"records":["#,
        entries.len()
    );
    body.push_str(&entries.join(","));
    body.push_str("]}");
    json_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_opens_with_an_empty_body_or_an_object_without_scroll_id() {
        for body in [
            "",
            " \n\t",
            "{}",
            r#"{"scrollId": null}"#,
            r#"{"size": 100}"#,
        ] {
            assert_eq!(
                export_body(body.as_bytes()),
                Ok(ExportBody::Open),
                "{body:?}"
            );
        }
        assert_eq!(
            export_body(br#"{"scrollId": "s-1", "scroll": "5m"}"#),
            Ok(ExportBody::Continue("s-1".into()))
        );
        for body in ["[]", "\"s-1\"", r#"{"scrollId": 1}"#, "{"] {
            assert!(export_body(body.as_bytes()).is_err(), "{body:?}");
        }
    }
}
