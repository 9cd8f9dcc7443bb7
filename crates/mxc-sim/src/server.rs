//! The simulator's HTTP surface: the API endpoints, the `/_sim` control endpoints, and the
//! middleware that counts requests and injects faults.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::data::{unit_hash, Dataset, GenerationConfig, Shape, SimRecord, SALT_HIDDEN};
use super::faults::Faults;
use super::jwt::{JwtKey, Rejection};
use super::query::ReportQuery;
use super::stats::{Stats, StatsSnapshot};
use super::SimConfig;
use mxc::paths::{AUTH_PATH, ROSTER_PATH};
use mxc::{Resource, AUTHORIZATIONS, RESOURCES};

/// An export scroll is forgotten after this long without use.
const SCROLL_IDLE: Duration = Duration::from_secs(300);

struct SimState {
    config: SimConfig,
    jwt: JwtKey,
    data: Mutex<Dataset>,
    faults: RwLock<Faults>,
    stats: Stats,
    scrolls: Mutex<HashMap<String, Scroll>>,
    /// Requests that continued a scroll (for `Faults::expire_scroll_every`).
    continuations: AtomicU64,
    next_id: AtomicU64,
}

struct Scroll {
    query: ReportQuery,
    records: Vec<Arc<SimRecord>>,
    position: usize,
    total_amount: f64,
    last_used: Instant,
}

/// A simulator serving in the background.
pub struct RunningSim {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: CancellationToken,
    server: http_kit::Server,
}

impl RunningSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`: the base URL to give a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The XMIDs of the roster, active ones first.
    pub fn xmids(&self) -> Vec<String> {
        self.state
            .data
            .lock()
            .map(|d| d.merchants.iter().map(|m| m.xmid.clone()).collect())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.snapshot(false)
    }

    /// Boards `count` new active merchants; returns their XMIDs.
    pub fn add_merchants(&self, count: usize) -> Vec<String> {
        match self.state.data.lock() {
            Ok(mut data) => (0..count).map(|_| data.add_merchant()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Closes a merchant (see [`Dataset::close_merchant`]); false if unknown.
    pub fn close_merchant(&self, xmid: &str) -> bool {
        self.state
            .data
            .lock()
            .is_ok_and(|mut data| data.close_merchant(xmid))
    }

    /// Sets the faults (not validated: see [`Faults::validate`]). A new `clock_offset_ms`
    /// sets the simulator's clock forward or back from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// The simulator's clock: the machine's plus the `clock_offset_ms` fault.
    pub fn now(&self) -> DateTime<Utc> {
        self.state.now()
    }

    /// Adds `count` authorizations for `xmids` (all active merchants if empty) with
    /// transaction times spread over `[from, to]`.
    pub fn generate(
        &self,
        count: usize,
        xmids: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(), String> {
        self.generate_shaped(count, xmids, from, to, Shape::NORMAL)
    }

    /// Like [`RunningSim::generate`], with records of another [`Shape`] (without an id,
    /// oversize …).
    pub fn generate_shaped(
        &self,
        count: usize,
        xmids: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        shape: Shape,
    ) -> Result<(), String> {
        self.state.generate(count, xmids, from, to, shape)
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.stop.cancel();
        self.server.stopped().await;
        Ok(())
    }

    /// Serves until the process is told to stop (used by `mxc-relay sim`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.stopped().await;
        Ok(())
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) async fn start(config: SimConfig) -> std::io::Result<RunningSim> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let now_ms = Utc::now().timestamp_millis() + config.faults.clock_offset_ms;
    let generation = GenerationConfig {
        seed: config.seed,
        merchants: config.merchants,
        closed_merchants: config.closed_merchants.unwrap_or(config.merchants / 10),
        rate: config.rate,
        backlog_ms: config.backlog.as_millis() as i64,
        decline_rate: config.decline_rate,
        late_fraction: config.late_fraction,
        max_lateness_ms: config.max_lateness.as_millis() as i64,
        index_delay_ms: config.index_delay.as_millis() as i64,
        settlement: config.settlement.clone(),
    };
    // Generating a large backlog takes a while: keep it off the async workers.
    let data = tokio::task::spawn_blocking(move || Dataset::new(generation, now_ms))
        .await
        .map_err(std::io::Error::other)?;
    let mut key = config.seed.to_le_bytes().to_vec();
    key.extend_from_slice(&rand::thread_rng().gen::<[u8; 24]>());
    let state = Arc::new(SimState {
        jwt: JwtKey::new(key),
        data: Mutex::new(data),
        faults: RwLock::new(config.faults.clone()),
        stats: Stats::default(),
        scrolls: Mutex::new(HashMap::new()),
        continuations: Default::default(),
        next_id: AtomicU64::new(1),
        config,
    });
    let mut app = Router::new().route(AUTH_PATH, post(authenticate));
    // Every report resource: the same query language, envelope and export form.
    for resource in RESOURCES {
        app = app
            .route(
                resource.path,
                get(move |state, headers, params| report(resource, state, headers, params)),
            )
            .route(
                resource.export_path,
                post(move |state, headers, params, body| {
                    export(resource, state, headers, params, body)
                }),
            );
    }
    let app = app
        .route(ROSTER_PATH, get(roster_page))
        .route("/_sim/stats", get(stats))
        .route("/_sim/faults", get(get_faults).post(set_faults))
        .route("/_sim/generate", post(generate))
        .route("/_sim/merchants", post(change_merchants))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "No such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), date_header))
        .with_state(state.clone());
    let stop = CancellationToken::new();
    let limits = http_kit::Limits::standard(http_kit::Limits::DEFAULT_MAX_CONNECTIONS);
    let server = http_kit::serve(listener, app, limits, stop.clone());
    Ok(RunningSim {
        addr,
        state,
        stop,
        server,
    })
}

impl SimState {
    /// The simulator's clock, in unix milliseconds: the machine's plus the offset fault.
    fn now_ms(&self) -> i64 {
        let offset = self.faults.read().map(|f| f.clock_offset_ms).unwrap_or(0);
        Utc::now().timestamp_millis().saturating_add(offset)
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_else(Utc::now)
    }

    /// Sets the faults; a changed clock offset moves the clock of the data with it.
    fn set_faults(&self, faults: Faults) {
        // Data first, then faults: the order every other path takes them in.
        let mut data = self.data.lock().ok();
        let Ok(mut current) = self.faults.write() else {
            return;
        };
        let delta = faults.clock_offset_ms - current.clock_offset_ms;
        if let Some(data) = data.as_mut().filter(|_| delta != 0) {
            // What arrived on the old clock first, then arrivals go on from the new reading.
            data.advance(Utc::now().timestamp_millis() + current.clock_offset_ms);
            data.shift_clock(delta);
        }
        *current = faults;
    }

    fn snapshot(&self, by_xmid: bool) -> StatsSnapshot {
        let now = self.now_ms();
        let generated = self
            .data
            .lock()
            .map(|mut d| {
                d.advance(now);
                d.generated
            })
            .unwrap_or(0);
        self.stats.snapshot(generated, by_xmid)
    }

    fn faults(&self) -> Faults {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// Checks the bearer token; the error is the 401 answer.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let rejection = match token {
            None => Some(Rejection::Missing),
            Some(token) => {
                let max_age = self.faults().jwt_max_age_secs.map(|s| s as i64);
                self.jwt
                    .verify(token.trim(), Utc::now().timestamp(), max_age)
                    .err()
            }
        };
        match rejection {
            None => Ok(()),
            Some(r) => Err(ApiError::new(StatusCode::UNAUTHORIZED, r.message())),
        }
    }

    /// The records a report query selects, in its order, with their total amount: only
    /// those already searchable, and none the `hide_from_created_rate` fault hides from a
    /// query on `created`.
    /// A poisoned lock is a 500, never an empty page a client would take for "no records".
    fn matching(&self, query: &ReportQuery) -> Result<(Vec<Arc<SimRecord>>, f64), ApiError> {
        let now = self.now_ms();
        let hide_rate = if query.on_created {
            self.faults().hide_from_created_rate
        } else {
            0.0
        };
        let mut records = match self.data.lock() {
            Ok(mut data) => {
                data.advance(now);
                let merchants: Vec<usize> = match &query.xmids {
                    Some(xmids) => xmids
                        .iter()
                        .filter_map(|x| data.merchant_index(x))
                        .collect(),
                    None => (0..data.merchants.len()).collect(),
                };
                match query.created_range {
                    // Bounded by `created` only: the index by `created` answers.
                    Some((from, to)) if !query.has_dr_type && query.resource == &AUTHORIZATIONS => {
                        data.select_created(&merchants, from, to)
                    }
                    _ => data.select(query.resource, &merchants, query.from_ms, query.to_ms),
                }
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "simulator state is poisoned",
                ))
            }
        };
        records.retain(|r| {
            query.matches(r)
                && !(hide_rate > 0.0
                    && r.resource == &AUTHORIZATIONS
                    && unit_hash(r.seq, SALT_HIDDEN) < hide_rate)
        });
        query.sort(&mut records);
        let total = records.iter().map(|r| r.amount).sum::<f64>();
        Ok((records, (total * 100.0).round() / 100.0))
    }

    fn generate(
        &self,
        count: usize,
        xmids: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        shape: Shape,
    ) -> Result<(), String> {
        let mut data = self
            .data
            .lock()
            .map_err(|_| "simulator state is poisoned".to_string())?;
        let mut merchants = Vec::with_capacity(xmids.len());
        for xmid in xmids {
            merchants.push(
                data.merchant_index(xmid)
                    .ok_or_else(|| format!("unknown XMID {xmid:?}"))?,
            );
        }
        if from > to {
            return Err(format!("from {from} is after to {to}"));
        }
        let now = self.now_ms();
        data.generate(
            count,
            &merchants,
            from.timestamp_millis(),
            to.timestamp_millis(),
            now,
            shape,
        );
        Ok(())
    }
}

/// Sets `Date` on every answer from the simulator's clock (hyper then adds none of its own).
async fn date_header(State(state): State<Arc<SimState>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let date = state.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

/// Counts every request by route and status, and applies the faults to the API endpoints.
async fn observe(
    State(state): State<Arc<SimState>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let path = matched
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let route = format!("{} {}", request.method(), path);
    let response = if path.starts_with("/report/") || path.starts_with("/boarding/") {
        with_faults(&state.faults(), request, next).await
    } else {
        next.run(request).await
    };
    state.stats.count_request(route, response.status().as_u16());
    response
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

fn json_error(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, message).into_response()
}

/// An error answer: `{"code": status, "message": …}`, as the real API sends them.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

fn json_body(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Deserialize)]
struct AuthBody {
    value: String,
}

async fn authenticate(
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
    let iat = Utc::now().timestamp();
    let ttl = state.config.jwt_ttl.as_secs().max(1) as i64;
    let jti = state.next_id.fetch_add(1, Ordering::Relaxed);
    let token = state
        .jwt
        .issue(&state.config.username, "00000000001", iat, iat + ttl, jti);
    state.stats.tokens_issued.fetch_add(1, Ordering::Relaxed);
    Json(serde_json::json!({ "token": token })).into_response()
}

async fn report(
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
    let (records, total_amount) = match state.matching(&query) {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let start = query.offset.min(records.len());
    let end = (start + query.size).min(records.len());
    json_body(envelope(
        &state,
        &query,
        &records[start..end],
        records.len(),
        total_amount,
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
    let query = ReportQuery::parse(resource, params, state.now())
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
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

async fn export(
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

async fn roster_page(
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

#[derive(Deserialize)]
struct StatsParams {
    #[serde(default)]
    by_xmid: bool,
}

async fn stats(State(state): State<Arc<SimState>>, Query(params): Query<StatsParams>) -> Response {
    Json(state.snapshot(params.by_xmid)).into_response()
}

async fn get_faults(State(state): State<Arc<SimState>>) -> Response {
    Json(state.faults()).into_response()
}

async fn set_faults(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
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
}

async fn generate(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let request: GenerateBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("generate: {e}")),
    };
    let to = request.to.unwrap_or_else(|| state.now());
    let from = request.from.unwrap_or(to - chrono::Duration::hours(1));
    let shape = Shape {
        with_id: !request.without_id,
        pad_bytes: request.pad_bytes,
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

async fn change_merchants(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
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
