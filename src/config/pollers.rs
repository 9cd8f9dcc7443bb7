//! `[pollers]` and `[pollers.roster]`: which merchants are polled and how often, and their checks.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::{self, fmt};
use super::{ConfigError, StoreConfig};
use mxc::Resource;

/// `[pollers]`: which merchants to watch and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PollersConfig {
    /// The XMIDs (merchant account numbers) to poll. `"roster"` (alone, `xmids = "roster"`, or
    /// among them) adds every merchant the roster lists, as `[pollers.roster]` selects them.
    /// Default: none (at least one is required).
    #[serde(deserialize_with = "one_or_many")]
    pub xmids: Vec<String>,
    /// Time between two polls of one XMID (or group).
    /// Default: `"30s"`.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// What a poll's cursor follows. `auto` (the default): MXC's ingestion time (`created`)
    /// where the resource has one, falling back to `transaction_time` for a resource whose
    /// `created` queries MXC refuses (HTTP 400; said once in the log, in
    /// `mxc_relay_cursor_fallback` and on `/readyz`). `created`: only the ingestion time (a
    /// refusal is an error). `transaction_time`: windows on the record's own time, re-reading
    /// `look_back` each poll (records later than that are missed, except by the sweep).
    /// Default: `"auto"`.
    pub cursor: CursorMode,
    /// A poll on `created` stops this far short of MXC's now (its clock, from the `Date` of
    /// its answers), so records still being indexed are read by the next poll.
    /// Default: `"5s"`.
    #[serde(with = "duration")]
    pub settle: Duration,
    /// A poll on `created` re-reads this much below its cursor, as a guard against records
    /// indexed late (their ids deduplicate what is read twice).
    /// Default: `"5s"`.
    #[serde(with = "duration")]
    pub overlap: Duration,
    /// With the `transaction_time` cursor (chosen, or fallen back to), and for resources
    /// without an ingestion time: each poll re-reads this much before its cursor, to catch
    /// records that appear late.
    /// Default: `"10m"`.
    #[serde(with = "duration")]
    pub look_back: Duration,
    /// The safety net: this often, each group re-reads `reconcile_window` of transaction time
    /// (one export, at low priority under the request budget: it never delays a poll) and
    /// admits what the cursor missed, counted as `mxc_relay_records_total{outcome="reconciled"}`
    /// and logged with XMID and id. A healthy run counts 0. `0s` switches it off. A sweep
    /// reads at most its group's part of half the budget over this period; one that reaches
    /// it stops (`outcome="partial"`) and the next goes on from there.
    /// Default: `"1h"`.
    #[serde(with = "duration")]
    pub reconcile_every: Duration,
    /// How far back (in transaction time) the sweep re-reads; at most `store.seen_retention`,
    /// so what it re-reads is still recognised.
    /// Default: `"26h"`.
    #[serde(with = "duration")]
    pub reconcile_window: Duration,
    /// XMIDs per query (`accountNumbers` takes many): `"auto"` (the default) or a number from
    /// 1 to 100. `"auto"` polls listed and roster merchants alike in groups of up to 50
    /// XMIDs ([`GroupSize::AUTO`]), of even sizes: 10,000 merchants cost 200 requests per
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
    /// Default: `"auto"`.
    pub group_size: GroupSize,
    /// Budget of MXC requests per second for the API key: all of it for one instance; in a
    /// cluster each instance spends the share of the shards it owns, re-divided on every
    /// rebalance, so the fleet never asks more of the key than this.
    /// Default: `10.0`.
    pub requests_per_second: f64,
    /// Requests allowed at once above that rate (divided like it in a cluster).
    /// Default: `10`.
    pub burst: u32,
    /// Where a new XMID starts: `now`, or an ISO-8601 instant to backfill from.
    /// Default: `"now"`.
    pub start: String,
    /// Discovery from the merchant roster, when `xmids` includes `"roster"`.
    pub roster: RosterConfig,
    /// What is polled for each merchant: `authorizations`, `disputes` (chargebacks and
    /// retrieval requests), `batches` (settlement batches) and `ach` (ACH deposits). Each
    /// resource of each group of XMIDs has its own cursor and schedule, so one that fails does
    /// not hold the others back; all share the request budget.
    /// Default: `["authorizations"]`.
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
    /// Default: `"5m"`.
    #[serde(with = "duration")]
    pub refresh: Duration,
    /// Only merchants whose account is active.
    /// Default: `true`.
    pub active_only: bool,
    /// Only these products (`account.product.id`; "3" is TSYS); empty: any.
    /// Default: `[]`.
    pub product_ids: Vec<String>,
    /// Only these account statuses (e.g. "Approved"); empty: any.
    /// Default: `[]`.
    pub statuses: Vec<String>,
    /// Never polled, whatever the roster says.
    /// Default: `[]`.
    pub exclude: Vec<String>,
    /// A merchant that leaves the roster (or stops matching: closed) is polled this much
    /// longer, to catch its last records; then it stops. Its state stays in the store.
    /// Default: `"1h"`.
    #[serde(with = "duration")]
    pub grace: Duration,
    /// A merchant new to the roster is read from this far back.
    /// Default: `"1h"`.
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
    /// `[pollers]`'s errors (`store`: the retention must outlast what a poll re-reads), in the
    /// order they are reported.
    pub(super) fn validate(&self, store: &StoreConfig, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        self.validate_xmids(&mut error);
        self.validate_roster(&mut error);
        self.validate_resources(&mut error);
        self.validate_windows(&mut error);
        self.validate_sweep(store, &mut error);
        self.validate_budget(&mut error);
    }

    /// `xmids`: at least one, each well-formed and listed once.
    fn validate_xmids(&self, error: &mut impl FnMut(&str, String)) {
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
    }

    /// `[pollers.roster]`: its periods, and exclusions that are not also listed.
    fn validate_roster(&self, error: &mut impl FnMut(&str, String)) {
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
    }

    /// `resources`: at least one, each known and listed once.
    fn validate_resources(&self, error: &mut impl FnMut(&str, String)) {
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
    }

    /// What one poll reads: `interval`, `look_back`, `settle` and `overlap`.
    fn validate_windows(&self, error: &mut impl FnMut(&str, String)) {
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
    }

    /// The sweep (`reconcile_every`, `reconcile_window`), whose window the store must outlast.
    fn validate_sweep(&self, store: &StoreConfig, error: &mut impl FnMut(&str, String)) {
        if self.reconcile_every.is_zero() {
            return;
        }
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

    /// What the polls may ask of MXC: `group_size`, `requests_per_second`, `burst`, and where
    /// they start.
    fn validate_budget(&self, error: &mut impl FnMut(&str, String)) {
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
