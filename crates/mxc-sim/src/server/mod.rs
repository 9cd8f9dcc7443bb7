//! The simulator's HTTP surface: its state, the router, and the server running it. The API
//! endpoints are in `api`, the `/_sim` control endpoints in `control`, and the middleware that
//! counts requests and injects faults in `layers`; `plan` and `pages` answer report queries.

mod answer;
mod api;
mod control;
mod key_limit;
mod layers;
mod pages;
mod plan;
mod state;

use answer::json_error;
use api::{authenticate, export, report, roster_page};
use control::{change_merchants, generate, get_faults, get_gaps, reset_gaps, set_faults, stats};
use key_limit::KeyLimit;
use layers::{date_header, observe};
pub use state::GenerateError;
use state::SimState;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::StatusCode;
use axum::middleware::{self};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::data::{Dataset, GenerationConfig, Shape};
use crate::faults::Faults;
use crate::jwt::JwtKey;
use crate::stats::{Stats, StatsSnapshot};
use crate::SimConfig;
use mxc::paths::{AUTH_PATH, ROSTER_PATH};
use mxc::RESOURCES;

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

    /// Closes a merchant (see `Dataset::close_merchant`); false if unknown.
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
    ) -> Result<(), GenerateError> {
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
    ) -> Result<(), GenerateError> {
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
    let now_ms = config.clock.now().timestamp_millis() + config.faults.clock_offset_ms;
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
        pages: Default::default(),
        key_limit: config.key_requests_per_second.map(KeyLimit::new),
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
        .route("/_sim/gaps", get(get_gaps).post(reset_gaps))
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
