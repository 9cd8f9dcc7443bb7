//! Semantic checks, each naming its key path and what was found.

use std::collections::HashSet;
use std::time::Duration;

use super::{Config, ConfigError, GroupSize, SinkConfig};
use crate::filter::{Filter, Path};
use crate::mxc::{Resource, MAX_PAGE_SIZE};

impl Config {
    /// Everything wrong with the values (types and unknown keys are checked while loading).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut error = |path: &str, message: String| {
            errors.push(ConfigError {
                path: path.to_string(),
                message,
            })
        };
        let fmt = |d: Duration| humantime::format_duration(d).to_string();

        // [mxc]
        match url::Url::parse(&self.mxc.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(url) => error(
                "mxc.base_url",
                format!(
                    "must be an http(s) URL with a host, got {:?} (scheme {})",
                    self.mxc.base_url,
                    url.scheme()
                ),
            ),
            Err(e) => error(
                "mxc.base_url",
                format!("not a URL ({e}): {:?}", self.mxc.base_url),
            ),
        }
        if self.mxc.api_key.is_empty() {
            error(
                "mxc.api_key",
                "missing: set MXC_API_KEY in the environment (or mxc.api_key in the file)".into(),
            );
        }
        if self.mxc.username.is_empty() && !self.mxc.password.is_empty() {
            error(
                "mxc.username",
                "a password is set but no username: set MXC_USERNAME (or mxc.username)".into(),
            );
        }
        if self.mxc.timeout < Duration::from_secs(1) {
            error(
                "mxc.timeout",
                format!("must be at least 1s, got {}", fmt(self.mxc.timeout)),
            );
        }
        if self.mxc.connect_timeout < Duration::from_millis(100) {
            error(
                "mxc.connect_timeout",
                format!(
                    "must be at least 100ms, got {}",
                    fmt(self.mxc.connect_timeout)
                ),
            );
        }
        if self.mxc.assumed_token_ttl < Duration::from_secs(10) {
            error(
                "mxc.assumed_token_ttl",
                format!(
                    "must be at least 10s, got {}",
                    fmt(self.mxc.assumed_token_ttl)
                ),
            );
        }
        if self.mxc.refresh_margin >= self.mxc.assumed_token_ttl {
            error(
                "mxc.refresh_margin",
                format!(
                    "must be shorter than mxc.assumed_token_ttl ({}), got {}",
                    fmt(self.mxc.assumed_token_ttl),
                    fmt(self.mxc.refresh_margin)
                ),
            );
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.mxc.page_size) {
            error(
                "mxc.page_size",
                format!("must be 1 to {MAX_PAGE_SIZE}, got {}", self.mxc.page_size),
            );
        }
        if self.mxc.max_result_window < self.mxc.page_size {
            error(
                "mxc.max_result_window",
                format!(
                    "must be at least mxc.page_size ({}), got {}",
                    self.mxc.page_size, self.mxc.max_result_window
                ),
            );
        }

        // [pollers]
        if self.pollers.xmids.is_empty() {
            error(
                "pollers.xmids",
                "list at least one XMID to poll (or \"roster\")".into(),
            );
        }
        let mut seen = HashSet::new();
        for (i, xmid) in self.pollers.xmids.iter().enumerate() {
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
        let roster = &self.pollers.roster;
        if roster.refresh < Duration::from_secs(1) {
            error(
                "pollers.roster.refresh",
                format!("must be at least 1s, got {}", fmt(roster.refresh)),
            );
        }
        let settled = self.pollers.settle.saturating_add(self.pollers.interval);
        if self.pollers.uses_roster() && roster.grace < settled {
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
            if self.pollers.xmids.contains(xmid) {
                error(
                    &format!("pollers.roster.exclude[{i}]"),
                    format!("{xmid:?} is also listed in pollers.xmids"),
                );
            }
        }
        if self.pollers.resources.is_empty() {
            error(
                "pollers.resources",
                format!("poll at least one of: {}", Resource::names()),
            );
        }
        let mut polled = HashSet::new();
        for (i, name) in self.pollers.resources.iter().enumerate() {
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
        if self.pollers.interval < Duration::from_secs(1) {
            error(
                "pollers.interval",
                format!("must be at least 1s, got {}", fmt(self.pollers.interval)),
            );
        }
        if self.pollers.look_back > Duration::from_secs(7 * 86_400) {
            error(
                "pollers.look_back",
                format!("must be at most 7d, got {}", fmt(self.pollers.look_back)),
            );
        }
        for (path, value) in [
            ("pollers.settle", self.pollers.settle),
            ("pollers.overlap", self.pollers.overlap),
        ] {
            if value > Duration::from_secs(3600) {
                error(path, format!("must be at most 1h, got {}", fmt(value)));
            }
        }
        if self.pollers.reconcile_every > Duration::ZERO {
            if self.pollers.reconcile_every < Duration::from_secs(10) {
                error(
                    "pollers.reconcile_every",
                    format!(
                        "must be 0s (off) or at least 10s, got {}",
                        fmt(self.pollers.reconcile_every)
                    ),
                );
            }
            if self.pollers.reconcile_window < self.pollers.interval
                || self.pollers.reconcile_window > Duration::from_secs(7 * 86_400)
            {
                error(
                    "pollers.reconcile_window",
                    format!(
                        "must be at least pollers.interval ({}) and at most 7d, got {}",
                        fmt(self.pollers.interval),
                        fmt(self.pollers.reconcile_window)
                    ),
                );
            } else if self.store.seen_retention <= self.pollers.reconcile_window {
                error(
                    "store.seen_retention",
                    format!(
                        "must be longer than pollers.reconcile_window ({}), or the sweep would send again what it no longer recognises; got {}",
                        fmt(self.pollers.reconcile_window),
                        fmt(self.store.seen_retention)
                    ),
                );
            }
        }
        if let GroupSize::Fixed(n) = self.pollers.group_size {
            if !(1..=GroupSize::MAX).contains(&n) {
                error(
                    "pollers.group_size",
                    format!("must be \"auto\" or 1 to {}, got {n}", GroupSize::MAX),
                );
            }
        }
        let rps = self.pollers.requests_per_second;
        if !(rps.is_finite() && rps > 0.0 && rps <= 10_000.0) {
            error(
                "pollers.requests_per_second",
                format!("must be above 0 and at most 10000, got {rps}"),
            );
        }
        if self.pollers.burst == 0 {
            error("pollers.burst", "must be at least 1, got 0".into());
        }
        if let Err(message) = self.pollers.start_instant() {
            error("pollers.start", message);
        }

        // [store]
        if self.store.path.as_os_str().is_empty() {
            error("store.path", "must name a directory".into());
        }
        if self.store.cache_mib < 8 {
            error(
                "store.cache_mib",
                format!("must be at least 8, got {}", self.store.cache_mib),
            );
        }

        let re_read = self.pollers.look_back.saturating_add(self.pollers.interval);
        if self.store.seen_retention <= re_read {
            error(
                "store.seen_retention",
                format!(
                    "must be longer than pollers.look_back + pollers.interval ({}), got {}",
                    fmt(re_read),
                    fmt(self.store.seen_retention)
                ),
            );
        }
        if self.store.flush_interval < Duration::from_millis(1) {
            error(
                "store.flush_interval",
                format!(
                    "must be at least 1ms, got {}",
                    fmt(self.store.flush_interval)
                ),
            );
        }
        // Upper bounds: beyond them a value is a typo, and time arithmetic would overflow.
        let day = Duration::from_secs(86_400);
        let hour = Duration::from_secs(3600);
        for (path, value, max, max_text) in [
            ("mxc.timeout", self.mxc.timeout, hour, "1h"),
            ("mxc.connect_timeout", self.mxc.connect_timeout, hour, "1h"),
            ("mxc.refresh_margin", self.mxc.refresh_margin, day, "1d"),
            (
                "mxc.assumed_token_ttl",
                self.mxc.assumed_token_ttl,
                day,
                "1d",
            ),
            ("mxc.rejection_hold", self.mxc.rejection_hold, day, "1d"),
            ("pollers.interval", self.pollers.interval, day, "1d"),
            (
                "store.flush_interval",
                self.store.flush_interval,
                Duration::from_secs(60),
                "1m",
            ),
            (
                "store.seen_retention",
                self.store.seen_retention,
                366 * day,
                "366d",
            ),
            ("delivery.retry_min", self.delivery.retry_min, day, "1d"),
            ("delivery.retry_max", self.delivery.retry_max, day, "1d"),
            (
                "delivery.shutdown_timeout",
                self.delivery.shutdown_timeout,
                hour,
                "1h",
            ),
        ] {
            if value > max {
                error(
                    path,
                    format!("must be at most {max_text}, got {}", fmt(value)),
                );
            }
        }

        // [delivery]
        if !(1..=10_000).contains(&self.delivery.batch_size) {
            error(
                "delivery.batch_size",
                format!("must be 1 to 10000, got {}", self.delivery.batch_size),
            );
        }
        if self.delivery.retry_min < Duration::from_millis(10) {
            error(
                "delivery.retry_min",
                format!(
                    "must be at least 10ms, got {}",
                    fmt(self.delivery.retry_min)
                ),
            );
        }
        if self.delivery.retry_max < self.delivery.retry_min {
            error(
                "delivery.retry_max",
                format!(
                    "must be at least delivery.retry_min ({}), got {}",
                    fmt(self.delivery.retry_min),
                    fmt(self.delivery.retry_max)
                ),
            );
        }

        // [sinks] and [[routes]]
        let mut sink_errors = Vec::new();
        for (name, sink) in &self.sinks {
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
            match sink {
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
                    webhook.validate(&|key| format!("sinks.{name}.{key}"), &mut sink_errors);
                }
                _ => {}
            }
        }
        if self.routes.is_empty() {
            error(
                "routes",
                "add at least one [[routes]] entry (a sink and, optionally, a filter)".into(),
            );
        }
        let mut names = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = |key: &str| format!("routes[{i}].{key}");
            if !self.sinks.contains_key(&route.sink) {
                let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
                error(
                    &at("sink"),
                    format!(
                        "no sink named {:?} (defined: {})",
                        route.sink,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if !names.insert(route.display_name(i)) {
                error(
                    &at("name"),
                    format!("{:?} is used by another route", route.display_name(i)),
                );
            }
            match route.resource() {
                None => error(
                    &at("resource"),
                    format!(
                        "no resource named {:?} (known: {})",
                        route.resource,
                        Resource::names()
                    ),
                ),
                // (With none polled, that error alone says it.)
                Some(r)
                    if !self.pollers.resources.is_empty()
                        && !self.pollers.resources.iter().any(|p| p == r.name) =>
                {
                    error(
                        &at("resource"),
                        format!(
                            "{:?} is not polled: add it to pollers.resources (now {:?})",
                            r.name, self.pollers.resources
                        ),
                    )
                }
                Some(_) => {}
            }
            if let Some(event_type) = &route.event_type {
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
            if let Some(filter) = &route.filter {
                if let Err(e) = Filter::parse(filter) {
                    error(&at("filter"), format!("{e}: {filter}"));
                }
            }
            for (key, paths) in [
                ("redact.drop", &route.redact.drop),
                ("redact.mask", &route.redact.mask),
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

        // [log]
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            error(
                "log.level",
                format!("not a tracing filter ({e}): {:?}", self.log.level),
            );
        }
        // [telemetry]
        let listen = self.telemetry.listen.trim();
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            error(
                "telemetry.listen",
                format!("an IP:PORT such as 127.0.0.1:9464 (or \"\" for none), got {listen:?}"),
            );
        }
        // [admin]
        for e in self.admin.validate() {
            error(&e.path, e.message);
        }
        // [cluster]
        let cluster = &self.cluster;
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
        errors.extend(sink_errors);
        errors
    }
}

impl super::PollersConfig {
    /// `start` as an instant: `None` for "now".
    pub fn start_instant(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        if self.start.trim() == "now" {
            return Ok(None);
        }
        let t = chrono::DateTime::parse_from_rfc3339(self.start.trim()).map_err(|e| {
            format!(
                "must be \"now\" or an ISO-8601 instant such as 2026-01-01T00:00:00Z, got {:?} ({e})",
                self.start
            )
        })?;
        let t = t.with_timezone(&chrono::Utc);
        if t > chrono::Utc::now() {
            return Err(format!("{:?} is in the future", self.start));
        }
        Ok(Some(t))
    }
}
