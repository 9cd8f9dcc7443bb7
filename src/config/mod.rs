//! The configuration: typed sections whose doc comments are the reference, loaded from TOML
//! with secrets from the environment, and validated up front with every error reported at once.
//!
//! `config/mxc-relay.toml` is the annotated example; keep the two in step.

mod admin;
mod error;
pub(crate) mod kafka;
mod load;
mod preflight;
mod section;
mod validate;
mod webhook;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::filter::{Filter, Path};
use mxc::Secret;
use mxc::{Resource, MAX_PAGE_SIZE};

pub use admin::{AdminConfig, ADMIN_TOKEN_ENV, MIN_TOKEN_LEN};
pub use error::ValueError;
pub use load::{ConfigError, ConfigErrors, ENV_OVERRIDES};
use validate::fmt;
pub use webhook::{default_schedule, WebhookConfig};

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub mxc: MxcConfig,
    pub pollers: PollersConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    /// `[sinks.NAME]`: where events go, by name.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[[routes]]`: which records go to which sink.
    pub routes: Vec<RouteConfig>,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    /// `[cluster]`: several instances sharing the merchants.
    pub cluster: ClusterConfig,
    /// `[admin]`: the API that operates the running service.
    pub admin: AdminConfig,
}

impl Config {
    /// Defaults, pointed at a simulator at `base_url` with its default credentials, polling
    /// `xmids`; no sinks or routes yet. For the demo, tests and benchmarks.
    pub fn for_simulator(base_url: String, xmids: Vec<String>) -> Config {
        let mut config = Config::default();
        config.mxc.base_url = base_url;
        config.mxc.api_key = Secret::new(mxc_sim::DEFAULT_API_KEY);
        config.mxc.username = mxc_sim::DEFAULT_USERNAME.to_string();
        config.mxc.password = Secret::new(mxc_sim::DEFAULT_PASSWORD);
        config.pollers.xmids = xmids;
        // Any free port: several of these may run side by side.
        config.telemetry.listen = "127.0.0.1:0".into();
        config.admin.listen = "127.0.0.1:0".into();
        config
    }
}

/// `[mxc]`: how to reach MX Connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MxcConfig {
    /// API base URL. The production API is `https://api.mxconnect.com`; a simulator is
    /// `http://127.0.0.1:PORT`. Env: `MXC_BASE_URL`.
    pub base_url: String,
    /// The portal's API key (`API_…`). Env: `MXC_API_KEY` (preferred: keep it out of files).
    pub api_key: Secret,
    /// MXC user for the Security API's Basic header; empty sends no Basic header.
    /// Env: `MXC_USERNAME`.
    pub username: String,
    /// That user's password. Env: `MXC_PASSWORD`.
    pub password: Secret,
    /// Whole-request timeout.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Refresh the JWT this long before it expires (capped at half its lifetime).
    #[serde(with = "duration")]
    pub refresh_margin: Duration,
    /// Lifetime assumed for a JWT without an `exp` claim (MXC documents ten minutes).
    #[serde(with = "duration")]
    pub assumed_token_ttl: Duration,
    /// After the Security API refuses the credentials, wait this long before asking again.
    #[serde(with = "duration")]
    pub rejection_hold: Duration,
    /// Records per page, 1 to 100 (the API's maximum).
    pub page_size: u32,
    /// The server's largest `from + size` (Elasticsearch's default 10,000); past it the pager
    /// re-anchors the window on the last record's time.
    pub max_result_window: u32,
}

impl Default for MxcConfig {
    fn default() -> Self {
        MxcConfig {
            base_url: mxc::DEFAULT_BASE_URL.to_string(),
            api_key: Secret::default(),
            username: String::new(),
            password: Secret::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(60),
            assumed_token_ttl: Duration::from_secs(600),
            rejection_hold: Duration::from_secs(30),
            page_size: mxc::MAX_PAGE_SIZE,
            max_result_window: mxc::DEFAULT_MAX_RESULT_WINDOW,
        }
    }
}

impl MxcConfig {
    /// The client's settings.
    pub fn client_config(&self) -> mxc::ClientConfig {
        let mut config = mxc::ClientConfig::new(
            self.base_url.clone(),
            mxc::Credentials {
                api_key: self.api_key.clone(),
                username: Some(self.username.clone()).filter(|u| !u.is_empty()),
                password: self.password.clone(),
            },
        );
        config.tokens = mxc::TokenPolicy {
            refresh_margin: self.refresh_margin,
            assumed_ttl: self.assumed_token_ttl,
            rejection_hold: self.rejection_hold,
        };
        config.timeout = self.timeout;
        config.connect_timeout = self.connect_timeout;
        config
    }
}

impl MxcConfig {
    /// `[mxc]`'s errors, in the order [`Config::validate`] reports them.
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        match url::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(url) => error(
                "mxc.base_url",
                format!(
                    "must be an http(s) URL with a host, got {:?} (scheme {})",
                    self.base_url,
                    url.scheme()
                ),
            ),
            Err(e) => error(
                "mxc.base_url",
                format!("not a URL ({e}): {:?}", self.base_url),
            ),
        }
        if self.api_key.is_empty() {
            error(
                "mxc.api_key",
                "missing: set MXC_API_KEY in the environment (or mxc.api_key in the file)".into(),
            );
        }
        if self.username.is_empty() && !self.password.is_empty() {
            error(
                "mxc.username",
                "a password is set but no username: set MXC_USERNAME (or mxc.username)".into(),
            );
        }
        if self.timeout < Duration::from_secs(1) {
            error(
                "mxc.timeout",
                format!("must be at least 1s, got {}", fmt(self.timeout)),
            );
        }
        if self.connect_timeout < Duration::from_millis(100) {
            error(
                "mxc.connect_timeout",
                format!("must be at least 100ms, got {}", fmt(self.connect_timeout)),
            );
        }
        if self.assumed_token_ttl < Duration::from_secs(10) {
            error(
                "mxc.assumed_token_ttl",
                format!("must be at least 10s, got {}", fmt(self.assumed_token_ttl)),
            );
        }
        if self.refresh_margin >= self.assumed_token_ttl {
            error(
                "mxc.refresh_margin",
                format!(
                    "must be shorter than mxc.assumed_token_ttl ({}), got {}",
                    fmt(self.assumed_token_ttl),
                    fmt(self.refresh_margin)
                ),
            );
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            error(
                "mxc.page_size",
                format!("must be 1 to {MAX_PAGE_SIZE}, got {}", self.page_size),
            );
        }
        if self.max_result_window < self.page_size {
            error(
                "mxc.max_result_window",
                format!(
                    "must be at least mxc.page_size ({}), got {}",
                    self.page_size, self.max_result_window
                ),
            );
        }
    }
}

/// `[pollers]`: which merchants to watch and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PollersConfig {
    /// The XMIDs (merchant account numbers) to poll. `"roster"` (alone, `xmids = "roster"`, or
    /// among them) adds every merchant the roster lists, as `[pollers.roster]` selects them.
    #[serde(deserialize_with = "one_or_many")]
    pub xmids: Vec<String>,
    /// Time between two polls of one XMID (or group).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// What a poll's cursor follows. `auto` (the default): MXC's ingestion time (`created`)
    /// where the resource has one, falling back to `transaction_time` for a resource whose
    /// `created` queries MXC refuses (HTTP 400; said once in the log, in
    /// `mxc_relay_cursor_fallback` and on `/readyz`). `created`: only the ingestion time (a
    /// refusal is an error). `transaction_time`: windows on the record's own time, re-reading
    /// `look_back` each poll (records later than that are missed, except by the sweep).
    pub cursor: CursorMode,
    /// A poll on `created` stops this far short of MXC's now (its clock, from the `Date` of
    /// its answers), so records still being indexed are read by the next poll.
    #[serde(with = "duration")]
    pub settle: Duration,
    /// A poll on `created` re-reads this much below its cursor, as a guard against records
    /// indexed late (their ids deduplicate what is read twice).
    #[serde(with = "duration")]
    pub overlap: Duration,
    /// With the `transaction_time` cursor (chosen, or fallen back to), and for resources
    /// without an ingestion time: each poll re-reads this much before its cursor, to catch
    /// records that appear late.
    #[serde(with = "duration")]
    pub look_back: Duration,
    /// The safety net: this often, each group re-reads `reconcile_window` of transaction time
    /// (one export, at low priority under the request budget: it never delays a poll) and
    /// admits what the cursor missed, counted as `mxc_relay_records_total{outcome="reconciled"}`
    /// and logged with XMID and id. A healthy run counts 0. `0s` switches it off.
    #[serde(with = "duration")]
    pub reconcile_every: Duration,
    /// How far back (in transaction time) the sweep re-reads; at most `store.seen_retention`,
    /// so what it re-reads is still recognised.
    #[serde(with = "duration")]
    pub reconcile_window: Duration,
    /// XMIDs per query (`accountNumbers` takes many): `"auto"` (the default) or a number from
    /// 1 to 100. `"auto"` polls listed and roster merchants alike in groups of up to
    /// [`GroupSize::AUTO`] (50) XMIDs, of even sizes: 10,000 merchants cost 200 requests per
    /// interval instead of 10,000. A number `n` makes groups of up to `n`; 1 polls each XMID on
    /// its own. Roster groups that shrink (merchants leave) are merged at a later roster read
    /// when together they fit in one; cursors stay per XMID.
    ///
    /// What a group costs: it is polled as one (one request per page for all its members), so
    /// an error MXC gives for one member's query fails the whole group's polls, which back off
    /// together (the warning names the group's XMIDs), and the group's window starts at its
    /// earliest member's cursor, so a member that lags (boarded with a backfill, back after a
    /// pause) makes the others' records re-read, and dropped as outside their windows, until it
    /// caught up. 1 isolates every XMID, at one request per XMID and interval.
    pub group_size: GroupSize,
    /// Budget of MXC requests per second for the whole process.
    pub requests_per_second: f64,
    /// Requests allowed at once above that rate.
    pub burst: u32,
    /// Where a new XMID starts: `now`, or an ISO-8601 instant to backfill from.
    pub start: String,
    /// Discovery from the merchant roster, when `xmids` includes `"roster"`.
    pub roster: RosterConfig,
    /// What is polled for each merchant: `authorizations`, `disputes` (chargebacks and
    /// retrieval requests), `batches` (settlement batches) and `ach` (ACH deposits). Each
    /// resource of each group of XMIDs has its own cursor and schedule, so one that fails does
    /// not hold the others back; all share the request budget.
    pub resources: Vec<String>,
}

/// `pollers.cursor`: what a poll's cursor follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorMode {
    /// `created` where MXC answers such queries, else `transaction_time`, said out loud.
    Auto,
    /// MXC's ingestion time only.
    Created,
    /// The record's own time, with a look-back.
    TransactionTime,
}

/// `pollers.group_size`: how many XMIDs share one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupSize {
    /// Groups of up to [`GroupSize::AUTO`] XMIDs, of even sizes.
    #[default]
    Auto,
    /// Groups of up to this many XMIDs (1 to [`GroupSize::MAX`]).
    Fixed(usize),
}

impl GroupSize {
    /// The most XMIDs per query with `"auto"`: 10,000 merchants in 200 requests per interval,
    /// with room below the largest group accepted.
    pub const AUTO: usize = 50;
    /// The largest group accepted (`accountNumbers` of one query).
    pub const MAX: usize = 100;

    /// The most XMIDs in one group.
    pub fn max_xmids(self) -> usize {
        match self {
            GroupSize::Auto => GroupSize::AUTO,
            GroupSize::Fixed(n) => n.max(1),
        }
    }
}

impl<'de> Deserialize<'de> for GroupSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GroupSize, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GroupSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "\"auto\" or a number of XMIDs per query")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<GroupSize, E> {
                match s {
                    "auto" => Ok(GroupSize::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<GroupSize, E> {
                Ok(GroupSize::Fixed(usize::try_from(n).unwrap_or(usize::MAX)))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<GroupSize, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(n), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The entry of `pollers.xmids` that stands for the roster's merchants.
pub const ROSTER: &str = "roster";

impl PollersConfig {
    /// The resources polled (validation has checked the names).
    pub fn polled_resources(&self) -> Vec<&'static mxc::Resource> {
        mxc::RESOURCES
            .into_iter()
            .filter(|r| self.resources.iter().any(|name| name == r.name))
            .collect()
    }

    /// The XMIDs listed by hand (without `"roster"`).
    pub fn listed_xmids(&self) -> Vec<String> {
        self.xmids
            .iter()
            .filter(|x| *x != ROSTER)
            .cloned()
            .collect()
    }

    /// Whether the roster's merchants are polled too.
    pub fn uses_roster(&self) -> bool {
        self.xmids.iter().any(|x| x == ROSTER)
    }
}

/// `[pollers.roster]`: which of the roster's merchants (`GET /boarding/v1/uar`) are polled.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RosterConfig {
    /// How often the roster is read again.
    #[serde(with = "duration")]
    pub refresh: Duration,
    /// Only merchants whose account is active.
    pub active_only: bool,
    /// Only these products (`account.product.id`; "3" is TSYS); empty: any.
    pub product_ids: Vec<String>,
    /// Only these account statuses (e.g. "Approved"); empty: any.
    pub statuses: Vec<String>,
    /// Never polled, whatever the roster says.
    pub exclude: Vec<String>,
    /// A merchant that leaves the roster (or stops matching: closed) is polled this much
    /// longer, to catch its last records; then it stops. Its state stays in the store.
    #[serde(with = "duration")]
    pub grace: Duration,
    /// A merchant new to the roster is read from this far back.
    #[serde(with = "duration")]
    pub backfill: Duration,
}

impl Default for RosterConfig {
    fn default() -> Self {
        RosterConfig {
            refresh: Duration::from_secs(300),
            active_only: true,
            product_ids: Vec::new(),
            statuses: Vec::new(),
            exclude: Vec::new(),
            grace: Duration::from_secs(3600),
            backfill: Duration::from_secs(3600),
        }
    }
}

/// A string or a list of strings (each element's error keeps its index in the key path).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of XMIDs or \"roster\"")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(x) = seq.next_element::<String>()? {
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_any(OneOrMany)
}

impl Default for PollersConfig {
    fn default() -> Self {
        PollersConfig {
            xmids: Vec::new(),
            interval: Duration::from_secs(30),
            cursor: CursorMode::Auto,
            settle: Duration::from_secs(5),
            overlap: Duration::from_secs(5),
            look_back: Duration::from_secs(600),
            reconcile_every: Duration::from_secs(3600),
            reconcile_window: Duration::from_secs(26 * 3600),
            group_size: GroupSize::Auto,
            requests_per_second: 10.0,
            burst: 10,
            start: "now".to_string(),
            roster: RosterConfig::default(),
            resources: vec![mxc::AUTHORIZATIONS.name.to_string()],
        }
    }
}

impl PollersConfig {
    /// `[pollers]`'s errors (`store`: the retention must outlast what a poll re-reads).
    fn validate(&self, store: &StoreConfig, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        if self.xmids.is_empty() {
            error(
                "pollers.xmids",
                "list at least one XMID to poll (or \"roster\")".into(),
            );
        }
        let mut seen = HashSet::new();
        for (i, xmid) in self.xmids.iter().enumerate() {
            let path = format!("pollers.xmids[{i}]");
            if xmid.is_empty()
                || !xmid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                error(
                    &path,
                    format!("an XMID is letters, digits, '-' or '_', got {xmid:?}"),
                );
            } else if !seen.insert(xmid) {
                error(&path, format!("{xmid:?} is listed twice"));
            }
        }
        let roster = &self.roster;
        if roster.refresh < Duration::from_secs(1) {
            error(
                "pollers.roster.refresh",
                format!("must be at least 1s, got {}", fmt(roster.refresh)),
            );
        }
        let settled = self.settle.saturating_add(self.interval);
        if self.uses_roster() && roster.grace < settled {
            error(
                "pollers.roster.grace",
                format!(
                    "must be at least pollers.settle + pollers.interval ({}): what a merchant receives just before it leaves is read only once it settled; got {}",
                    fmt(settled),
                    fmt(roster.grace)
                ),
            );
        }
        for (key, value, max) in [
            ("grace", roster.grace, Duration::from_secs(90 * 86_400)),
            (
                "backfill",
                roster.backfill,
                Duration::from_secs(366 * 86_400),
            ),
        ] {
            if value > max {
                error(
                    &format!("pollers.roster.{key}"),
                    format!("must be at most {}, got {}", fmt(max), fmt(value)),
                );
            }
        }
        for (i, xmid) in roster.exclude.iter().enumerate() {
            if self.xmids.contains(xmid) {
                error(
                    &format!("pollers.roster.exclude[{i}]"),
                    format!("{xmid:?} is also listed in pollers.xmids"),
                );
            }
        }
        if self.resources.is_empty() {
            error(
                "pollers.resources",
                format!("poll at least one of: {}", Resource::names()),
            );
        }
        let mut polled = HashSet::new();
        for (i, name) in self.resources.iter().enumerate() {
            let at = format!("pollers.resources[{i}]");
            if Resource::named(name).is_none() {
                error(
                    &at,
                    format!("no resource named {name:?} (known: {})", Resource::names()),
                );
            } else if !polled.insert(name) {
                error(&at, format!("{name:?} is listed twice"));
            }
        }
        if self.interval < Duration::from_secs(1) {
            error(
                "pollers.interval",
                format!("must be at least 1s, got {}", fmt(self.interval)),
            );
        }
        if self.look_back > Duration::from_secs(7 * 86_400) {
            error(
                "pollers.look_back",
                format!("must be at most 7d, got {}", fmt(self.look_back)),
            );
        }
        for (path, value) in [
            ("pollers.settle", self.settle),
            ("pollers.overlap", self.overlap),
        ] {
            if value > Duration::from_secs(3600) {
                error(path, format!("must be at most 1h, got {}", fmt(value)));
            }
        }
        if self.reconcile_every > Duration::ZERO {
            if self.reconcile_every < Duration::from_secs(10) {
                error(
                    "pollers.reconcile_every",
                    format!(
                        "must be 0s (off) or at least 10s, got {}",
                        fmt(self.reconcile_every)
                    ),
                );
            }
            if self.reconcile_window < self.interval
                || self.reconcile_window > Duration::from_secs(7 * 86_400)
            {
                error(
                    "pollers.reconcile_window",
                    format!(
                        "must be at least pollers.interval ({}) and at most 7d, got {}",
                        fmt(self.interval),
                        fmt(self.reconcile_window)
                    ),
                );
            } else if store.seen_retention <= self.reconcile_window {
                error(
                    "store.seen_retention",
                    format!(
                        "must be longer than pollers.reconcile_window ({}), or the sweep would send again what it no longer recognises; got {}",
                        fmt(self.reconcile_window),
                        fmt(store.seen_retention)
                    ),
                );
            }
        }
        if let GroupSize::Fixed(n) = self.group_size {
            if !(1..=GroupSize::MAX).contains(&n) {
                error(
                    "pollers.group_size",
                    format!("must be \"auto\" or 1 to {}, got {n}", GroupSize::MAX),
                );
            }
        }
        let rps = self.requests_per_second;
        if !(rps.is_finite() && rps > 0.0 && rps <= 10_000.0) {
            error(
                "pollers.requests_per_second",
                format!("must be above 0 and at most 10000, got {rps}"),
            );
        }
        if self.burst == 0 {
            error("pollers.burst", "must be at least 1, got 0".into());
        }
        if let Err(message) = self.start_instant() {
            error("pollers.start", message.to_string());
        }
    }
}

/// `[store]`: local state (seen ids, cursors, outbox, dead letters).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Directory of the sled database; created if missing.
    pub path: PathBuf,
    /// `batch`: every admitted page is flushed to disk before polling goes on (safest, one
    /// fsync per page). `interval`: flushed every `flush_interval` (group commit: less disk
    /// work; a crash loses at most that much admission work, and the cursor, written after the
    /// pages it covers, rolls back with it, so those records are fetched and admitted again —
    /// nothing is lost either way).
    pub durability: Durability,
    /// Flush period for `durability = "interval"`.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// How long a record id is remembered after admission; must exceed `pollers.look_back`.
    #[serde(with = "duration")]
    pub seen_retention: Duration,
    /// Polling pauses (the cursors stay where they are) while the store's file system has
    /// less free space than this, in MiB, and resumes by itself when space returns. sled
    /// cannot survive a write that hits a full disk, so the guard keeps it from getting there.
    /// Delivery goes on meanwhile (sled does not give the space of delivered entries back to
    /// the file system at once: free space on the disk).
    pub min_free_mib: u64,
    /// Memory for sled's page cache, in MiB (sled's own default is 1 GiB). Beyond it, pages
    /// are read from disk again.
    pub cache_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("data"),
            durability: Durability::Batch,
            flush_interval: Duration::from_millis(100),
            seen_retention: Duration::from_secs(3 * 86_400),
            min_free_mib: 64,
            cache_mib: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Batch,
    Interval,
}

impl StoreConfig {
    /// `[store]`'s errors (`pollers`: the retention must outlast what a poll re-reads).
    fn validate(&self, pollers: &PollersConfig, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        if self.path.as_os_str().is_empty() {
            error("store.path", "must name a directory".into());
        }
        if self.cache_mib < 8 {
            error(
                "store.cache_mib",
                format!("must be at least 8, got {}", self.cache_mib),
            );
        }

        let re_read = pollers.look_back.saturating_add(pollers.interval);
        if self.seen_retention <= re_read {
            error(
                "store.seen_retention",
                format!(
                    "must be longer than pollers.look_back + pollers.interval ({}), got {}",
                    fmt(re_read),
                    fmt(self.seen_retention)
                ),
            );
        }
        if self.flush_interval < Duration::from_millis(1) {
            error(
                "store.flush_interval",
                format!("must be at least 1ms, got {}", fmt(self.flush_interval)),
            );
        }
    }
}

/// `[delivery]`: how outbox entries are handed to sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Most events handed to a sink at once.
    pub batch_size: usize,
    /// First retry delay after a failed delivery; doubles up to `retry_max`, with jitter.
    #[serde(with = "duration")]
    pub retry_min: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// On SIGTERM/SIGINT, how long in-flight deliveries may take to finish.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_size: 100,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl DeliveryConfig {
    /// `[delivery]`'s errors.
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        if !(1..=10_000).contains(&self.batch_size) {
            error(
                "delivery.batch_size",
                format!("must be 1 to 10000, got {}", self.batch_size),
            );
        }
        if self.retry_min < Duration::from_millis(10) {
            error(
                "delivery.retry_min",
                format!("must be at least 10ms, got {}", fmt(self.retry_min)),
            );
        }
        if self.retry_max < self.retry_min {
            error(
                "delivery.retry_max",
                format!(
                    "must be at least delivery.retry_min ({}), got {}",
                    fmt(self.retry_min),
                    fmt(self.retry_max)
                ),
            );
        }
    }
}

/// `[sinks.NAME]`: one destination of events, of the `kind` named by the variant.
///
/// Externally tagged for serde: loading turns `kind = "K"` into `[sinks.NAME.K]`, which keeps
/// key paths and unknown keys in sight (an internally tagged enum would hide them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkConfig {
    /// Events on standard output.
    Stdout {
        /// `json`: one envelope per line. `compact`: one short human line per event.
        #[serde(default)]
        format: StdoutFormat,
    },
    /// Events appended to a file as JSON lines, synced to disk before they count as delivered.
    File { path: PathBuf },
    /// Events as Kafka messages from an idempotent producer (acks=all). Each message carries
    /// the envelope as its value and the headers `mxc-record-id`, `mxc-xmid`,
    /// `mxc-event-type`, `content-type` and `mxc-schema-version` (and, with `cloudevents`,
    /// the CloudEvents `ce_*` ones).
    Kafka {
        /// Bootstrap brokers, `host:port[,host:port…]`.
        brokers: String,
        /// The topic, or a template: `{resource}` is the resource (`mxc.{resource}` →
        /// `mxc.authorizations`, `mxc.disputes` …), `{type}` the event type, `{route}` the
        /// route name (`mxc.{type}` → `mxc.authorization.declined`).
        #[serde(default = "default_topic")]
        topic: String,
        /// The message key: `xmid` (per-merchant order on one partition) or `record_id`.
        #[serde(default)]
        key: KafkaKey,
        /// `lz4`, `snappy`, `gzip` or `none`.
        #[serde(default = "default_compression")]
        compression: String,
        /// Any librdkafka property (`security.protocol`, `sasl.mechanism`,
        /// `sasl.username`, `sasl.password`, `message.max.bytes` …), applied last. Values are
        /// treated as secrets: never printed.
        #[serde(default)]
        properties: BTreeMap<String, Secret>,
        /// Also mark each message as a CloudEvent in binary content mode (`ce_specversion`,
        /// `ce_id`, `ce_type`, `ce_source`, `ce_time`, `ce_subject`, `ce_dataschema`
        /// headers); the value stays the same bytes.
        #[serde(default)]
        cloudevents: bool,
    },
    /// Events POSTed to an HTTP endpoint, signed per Standard Webhooks, each retried on its
    /// own schedule; see [`WebhookConfig`].
    Webhook(Box<WebhookConfig>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaKey {
    #[default]
    Xmid,
    RecordId,
}

fn default_topic() -> String {
    "mxc.{resource}".to_string()
}

fn default_compression() -> String {
    "lz4".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdoutFormat {
    #[default]
    Json,
    Compact,
}

impl SinkConfig {
    /// `[sinks.NAME]`'s errors; a webhook's own go to `sink_errors` (reported last).
    fn validate(
        &self,
        name: &str,
        errors: &mut Vec<ConfigError>,
        sink_errors: &mut Vec<ConfigError>,
    ) {
        let mut error = validate::reporter(errors);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            error(
                &format!("sinks.{name}"),
                "a sink name is letters, digits, '-' or '_'".into(),
            );
        }
        match self {
            SinkConfig::File { path } if path.as_os_str().is_empty() => {
                error(&format!("sinks.{name}.path"), "must name a file".into());
            }
            SinkConfig::Kafka {
                brokers,
                topic,
                compression,
                ..
            } => {
                if brokers.split(',').any(|b| {
                    b.trim()
                        .rsplit_once(':')
                        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                }) {
                    error(
                        &format!("sinks.{name}.brokers"),
                        format!("must be host:port[,host:port…], got {brokers:?}"),
                    );
                }
                let bare = topic
                    .replace("{resource}", "s")
                    .replace("{type}", "t")
                    .replace("{route}", "r");
                if bare.is_empty()
                    || bare.len() > 249
                    || !bare
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    error(
                        &format!("sinks.{name}.topic"),
                        format!("a topic is letters, digits, '.', '_' or '-' (placeholders {{resource}}, {{type}} and {{route}} allowed), got {topic:?}"),
                    );
                }
                if !["lz4", "snappy", "gzip", "none"].contains(&compression.as_str()) {
                    error(
                        &format!("sinks.{name}.compression"),
                        format!("must be lz4, snappy, gzip or none, got {compression:?}"),
                    );
                }
            }
            SinkConfig::Webhook(webhook) => {
                webhook.validate(&|key| format!("sinks.{name}.{key}"), sink_errors);
            }
            _ => {}
        }
    }
}

/// `[[routes]]`: records of `resource` matching `filter` become `event_type` events for `sink`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in logs and event ids [default: the sink name and the route's index].
    #[serde(default)]
    pub name: Option<String>,
    /// A name from `[sinks]`.
    pub sink: String,
    /// Whose records: `authorizations`, `disputes`, `batches` or `ach` (one of
    /// `pollers.resources`).
    #[serde(default = "default_resource")]
    pub resource: String,
    /// Only the records someone must act on now, as the resource defines them: declined
    /// authorizations (`authorization.declined`), chargebacks (`dispute.chargeback`), rejected
    /// batches (`batch.rejected`), returned deposits (`ach.returned`). `filter` and
    /// `event_type`, when given, still win.
    #[serde(default)]
    pub alerts: bool,
    /// The event type [default: the resource's: `authorization.created`, `dispute.created`,
    /// `batch.created`, `ach.deposit`; with `alerts`, the alert's].
    #[serde(default)]
    pub event_type: Option<String>,
    /// An expression over record fields, e.g. `authorizationResponseStatus != "Approved"` or
    /// `authorizedAmount >= 500 and cardType in ["Visa", "Mastercard"]`. None: every record
    /// (with `alerts`, the resource's alert filter).
    #[serde(default)]
    pub filter: Option<String>,
    /// Fields removed or masked before the event leaves.
    #[serde(default)]
    pub redact: RedactConfig,
}

impl RouteConfig {
    /// A route taking every authorization to `sink` as `authorization.created`, unredacted.
    pub fn every_record(name: &str, sink: &str) -> RouteConfig {
        RouteConfig {
            name: Some(name.to_string()),
            sink: sink.to_string(),
            resource: default_resource(),
            alerts: false,
            event_type: None,
            filter: None,
            redact: RedactConfig::default(),
        }
    }

    /// The route's resource, if its name is one.
    pub fn resource(&self) -> Option<&'static mxc::Resource> {
        mxc::Resource::named(&self.resource)
    }

    /// The event type: its own, else the resource's (or its alert's).
    pub fn event_type(&self) -> String {
        match (&self.event_type, self.resource()) {
            (Some(t), _) => t.clone(),
            (None, Some(r)) if self.alerts => r.alert.event_type.to_string(),
            (None, Some(r)) => r.event_type.to_string(),
            (None, None) => mxc::AUTHORIZATIONS.event_type.to_string(),
        }
    }

    /// The filter: its own, else with `alerts` the resource's alert filter.
    pub fn filter(&self) -> Option<&str> {
        match (&self.filter, self.resource()) {
            (Some(f), _) => Some(f),
            (None, Some(r)) if self.alerts => r.alert.filter,
            _ => None,
        }
    }

    /// The route's name: its own, or `SINK#INDEX`.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}#{index}", self.sink))
    }
}

fn default_resource() -> String {
    mxc::AUTHORIZATIONS.name.to_string()
}

/// Dotted field paths to remove (`drop`) or mask (`mask`: strings keep their last four
/// characters) in a route's events, e.g. `cardNumber.data`, `uar.entity.taxId`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
}

impl RouteConfig {
    /// The errors of `routes[i]`: its sink must be among `sinks`, its resource polled, and its
    /// name unused (`names`).
    fn validate(
        &self,
        i: usize,
        sinks: &BTreeMap<String, SinkConfig>,
        pollers: &PollersConfig,
        names: &mut HashSet<String>,
        errors: &mut Vec<ConfigError>,
    ) {
        let mut error = validate::reporter(errors);
        let at = |key: &str| format!("routes[{i}].{key}");
        if !sinks.contains_key(&self.sink) {
            let known: Vec<&str> = sinks.keys().map(String::as_str).collect();
            error(
                &at("sink"),
                format!(
                    "no sink named {:?} (defined: {})",
                    self.sink,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        if !names.insert(self.display_name(i)) {
            error(
                &at("name"),
                format!("{:?} is used by another route", self.display_name(i)),
            );
        }
        match self.resource() {
            None => error(
                &at("resource"),
                format!(
                    "no resource named {:?} (known: {})",
                    self.resource,
                    Resource::names()
                ),
            ),
            // (With none polled, that error alone says it.)
            Some(r)
                if !pollers.resources.is_empty()
                    && !pollers.resources.iter().any(|p| p == r.name) =>
            {
                error(
                    &at("resource"),
                    format!(
                        "{:?} is not polled: add it to pollers.resources (now {:?})",
                        r.name, pollers.resources
                    ),
                )
            }
            Some(_) => {}
        }
        if let Some(event_type) = &self.event_type {
            if event_type.is_empty()
                || !event_type.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
            {
                error(
                    &at("event_type"),
                    format!("lower-case letters, digits, '.', '_' or '-', like authorization.declined; got {event_type:?}"),
                );
            }
        }
        if let Some(filter) = &self.filter {
            if let Err(e) = Filter::parse(filter) {
                error(&at("filter"), format!("{e}: {filter}"));
            }
        }
        for (key, paths) in [
            ("redact.drop", &self.redact.drop),
            ("redact.mask", &self.redact.mask),
        ] {
            for (j, p) in paths.iter().enumerate() {
                if Path::parse(p).is_none() {
                    error(
                        &format!("routes[{i}].{key}[{j}]"),
                        format!("{p:?} is not a dotted field path like cardNumber.data"),
                    );
                }
            }
        }
    }
}

/// `[telemetry]`: the HTTP endpoints for Prometheus and for orchestrators.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `""` serves nothing.
    /// `0.0.0.0:9464` in a container.
    pub listen: String,
    /// Export the poll lag of every XMID as its own series. Switch it off for fleets of many
    /// thousands: the fleet-wide max and percentiles remain.
    pub per_xmid_metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: "127.0.0.1:9464".to_string(),
            per_xmid_metrics: true,
        }
    }
}

impl TelemetryConfig {
    /// The listen address, if any (validation has checked it).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.trim().parse().ok()
    }
}

impl TelemetryConfig {
    /// `[telemetry]`'s errors.
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        let listen = self.listen.trim();
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            error(
                "telemetry.listen",
                format!("an IP:PORT such as 127.0.0.1:9464 (or \"\" for none), got {listen:?}"),
            );
        }
    }
}

/// `[cluster]`: several instances share the merchants through a Kafka consumer group. The XMIDs
/// are hashed onto the partitions of a control topic (the shards); each instance polls the
/// XMIDs of the partitions the group assigns it, and the merchants' state (cursors, recent ids)
/// moves with them through a compacted state topic. Off (one instance polls every merchant)
/// while `brokers` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`; empty: no cluster.
    pub brokers: String,
    /// The consumer group every instance joins.
    pub group: String,
    /// The control topic, whose partitions are the shards (created with `shards` partitions if
    /// missing; nothing is written to it).
    pub control_topic: String,
    /// Shards (the control topic's partitions) when the topic is created: the most instances
    /// that can share the work.
    pub shards: u32,
    /// The compacted topic holding each merchant's delivered state (cursor and the ids of its
    /// look-back window, keyed by XMID) and each instance's status; created if missing.
    pub state_topic: String,
    /// This instance's name in `mxc-relay cluster status` [default: host name and pid].
    pub instance: String,
    /// An instance silent this long loses its shards to the others (the group's session
    /// timeout): the longest gap a crash leaves.
    #[serde(with = "duration")]
    pub session_timeout: Duration,
    /// How often the delivered state of each merchant is published: after a crash, the next
    /// owner repeats (under the same ids) at most what was delivered in this much time.
    #[serde(with = "duration")]
    pub state_interval: Duration,
    /// librdkafka properties for the cluster's own clients (`security.protocol`, SASL …),
    /// applied last; values never printed.
    pub properties: BTreeMap<String, Secret>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            brokers: String::new(),
            group: "mxc-relay".into(),
            control_topic: "mxc-relay.shards".into(),
            shards: 32,
            state_topic: "mxc-relay.state".into(),
            instance: String::new(),
            session_timeout: Duration::from_secs(10),
            state_interval: Duration::from_secs(5),
            properties: BTreeMap::new(),
        }
    }
}

impl ClusterConfig {
    /// Whether this instance shares the merchants with others.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// The instance's name: its own, or host name and pid.
    pub fn instance_name(&self) -> String {
        if !self.instance.trim().is_empty() {
            return self.instance.trim().to_string();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "mxc-relay".into());
        format!("{host}-{}", std::process::id())
    }
}

impl ClusterConfig {
    /// `[cluster]`'s errors (none unless it is enabled).
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        let cluster = self;
        if cluster.enabled() {
            if !(1..=1000).contains(&cluster.shards) {
                error(
                    "cluster.shards",
                    format!("must be 1 to 1000, got {}", cluster.shards),
                );
            }
            for (key, topic) in [
                ("cluster.control_topic", &cluster.control_topic),
                ("cluster.state_topic", &cluster.state_topic),
            ] {
                if topic.is_empty()
                    || !topic
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    error(
                        key,
                        format!("a topic is letters, digits, '.', '_' or '-', got {topic:?}"),
                    );
                }
            }
            if cluster.control_topic == cluster.state_topic {
                error(
                    "cluster.state_topic",
                    "must differ from cluster.control_topic".into(),
                );
            }
            if cluster.group.trim().is_empty() {
                error("cluster.group", "must not be empty".into());
            }
            if !(Duration::from_secs(6)..=Duration::from_secs(300))
                .contains(&cluster.session_timeout)
            {
                error(
                    "cluster.session_timeout",
                    format!(
                        "must be 6s to 5m (the brokers' usual bounds), got {}",
                        fmt(cluster.session_timeout)
                    ),
                );
            }
            if !(Duration::from_millis(500)..=Duration::from_secs(600))
                .contains(&cluster.state_interval)
            {
                error(
                    "cluster.state_interval",
                    format!("must be 500ms to 10m, got {}", fmt(cluster.state_interval)),
                );
            }
        }
    }
}

/// `[log]`: what the process logs, on stderr.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `mxc_relay=debug,info` … `RUST_LOG` overrides it.
    pub level: String,
    /// `pretty` (human-readable) or `json` (one object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogConfig {
    /// `[log]`'s errors.
    fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            error(
                "log.level",
                format!("not a tracing filter ({e}): {:?}", self.level),
            );
        }
    }
}

/// Durations written as text: `30s`, `10m`, `1h30m`, `250ms`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, super::ValueError> {
        humantime::parse_duration(text.trim()).map_err(|error| super::ValueError::Duration {
            text: text.to_string(),
            error,
        })
    }
}

/// Parses a duration the way the configuration does (`30s`, `10m`, `1h30m`, `250ms`).
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    duration::parse(text)
}
