//! Loading and validating configuration: every error at once, each with its key path.

use mxc_relay::config::{Config, GroupSize};

/// A sink and a route, so that tests about other sections see no error about them.
const ROUTED: &str = "\n[sinks.out]\nkind = \"stdout\"\n[[routes]]\nsink = \"out\"\n";

fn no_env(_: &str) -> Option<String> {
    None
}

/// Every error of `text` as loaded, one string each; none when it loads.
fn errors_of(text: &str) -> Vec<String> {
    match Config::from_toml(text, "test.toml", &no_env) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// Every error of `text` as `run` would load it: with what it needs of this machine.
fn errors_for_run(text: &str) -> Vec<String> {
    match Config::from_toml_for_run(text, "test.toml", &no_env) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// A directory this process cannot write in: without write permission, or — as root, whom
/// permissions do not bind — a read-only tmpfs mounted on it (unmounted on drop).
struct ReadOnlyDir {
    path: std::path::PathBuf,
    /// What writing in it fails with.
    why: std::io::Error,
    mounted: bool,
}

impl ReadOnlyDir {
    fn new(path: &std::path::Path) -> Result<ReadOnlyDir, String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(path).map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))
                .map_err(|e| e.to_string())?;
            return Ok(ReadOnlyDir {
                path: path.to_path_buf(),
                why: std::io::Error::from_raw_os_error(libc::EACCES),
                mounted: false,
            });
        }
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| {
                format!(
                    "running as root, where permissions do not bind, and `mount` cannot run: {e}"
                )
            })?;
        if !mounted.status.success() {
            return Err(format!(
                "running as root, where permissions do not bind, and a read-only tmpfs cannot be mounted: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            ));
        }
        Ok(ReadOnlyDir {
            path: path.to_path_buf(),
            why: std::io::Error::from_raw_os_error(libc::EROFS),
            mounted: true,
        })
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

/// The errors of `text` with a valid sink and route added.
fn errors(text: &str) -> Vec<String> {
    errors_of(&format!("{text}{ROUTED}"))
}

#[test]
fn the_annotated_example_is_valid_with_a_key_from_the_environment() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/mxc-relay.toml"
    ));
    let env = |name: &str| (name == "MXC_API_KEY").then(|| "API_from_env".to_string());
    let config = Config::from_toml(text, "mxc-relay.toml", &env).expect("valid");
    assert_eq!(config.mxc.api_key.expose(), "API_from_env");
    assert_eq!(config.pollers.xmids.len(), 2);
    // Without the key it says where to put it.
    assert_eq!(
        errors(text),
        ["mxc.api_key: missing: set MXC_API_KEY in the environment (or mxc.api_key in the file)"]
    );
}

#[test]
fn every_error_is_reported_with_its_key_path() {
    let text = r#"
        [mxc]
        api_key = "API_x"
        base_url = "ftp://example.com"
        page_size = 250
        colour = "blue"

        [pollers]
        xmids = ["A1", "A1", "bad xmid"]
        interval = "0s"
        group_size = 0
        requests_per_second = -1.0
        start = "yesterday"

        [log]
        level = "info"

        [telemetry]
        listen = "everywhere"

        [sinkz]
        x = 1
    "#;
    let text = text.replace("[sinkz]", &format!("{ROUTED}\n[sinkz]"));
    let found = errors_of(&text);
    let expected = [
        "mxc.colour: unknown key",
        "sinkz: unknown section or key (known: mxc, pollers, store, delivery, sinks, routes, log, telemetry, cluster, admin)",
        "mxc.base_url: must be an http(s) URL with a host, got \"ftp://example.com\" (scheme ftp)",
        "mxc.page_size: must be 1 to 100, got 250",
        "pollers.xmids[1]: \"A1\" is listed twice",
        "pollers.xmids[2]: an XMID is letters, digits, '-' or '_', got \"bad xmid\"",
        "pollers.interval: must be at least 1s, got 0s",
        "pollers.group_size: must be \"auto\" or 1 to 100, got 0",
        "pollers.requests_per_second: must be above 0 and at most 10000, got -1",
        "telemetry.listen: an IP:PORT such as 127.0.0.1:9464 (or \"\" for none), got \"everywhere\"",
    ];
    for e in expected {
        assert!(found.iter().any(|f| f == e), "missing {e:?} in {found:#?}");
    }
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("pollers.start: must be \"now\" or an ISO-8601 instant")),
        "{found:#?}"
    );
    assert_eq!(found.len(), expected.len() + 1, "{found:#?}");
}

#[test]
fn group_size_is_auto_by_default_or_a_number() {
    let group_size = |line: &str| {
        Config::from_toml(
            &format!("[mxc]\napi_key = \"API_x\"\n[pollers]\nxmids = [\"A1\"]\n{line}\n{ROUTED}"),
            "test.toml",
            &no_env,
        )
        .map(|c| c.pollers.group_size)
        .unwrap()
    };
    assert_eq!(group_size(""), GroupSize::Auto);
    assert_eq!(group_size("group_size = \"auto\""), GroupSize::Auto);
    assert_eq!(group_size("group_size = 20"), GroupSize::Fixed(20));
    assert_eq!(GroupSize::Auto.max_xmids(), 50);
    assert_eq!(GroupSize::Fixed(1).max_xmids(), 1);
}

#[test]
fn type_errors_in_several_sections_are_all_reported() {
    let found = errors(
        r#"
        [mxc]
        api_key = "API_x"
        timeout = 30
        [pollers]
        xmids = ["A1"]
        interval = "often"
        [log]
        format = "xml"
    "#,
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("mxc.timeout: invalid type: integer `30`, expected a string"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("pollers.interval: invalid duration \"often\""),
        "{}",
        found[1]
    );
    assert!(
        found[2].starts_with("log.format: unknown variant `xml`, expected `pretty` or `json`"),
        "{}",
        found[2]
    );
}

#[test]
fn a_syntax_error_names_line_and_column() {
    let found = errors("[mxc]\napi_key = \"x\"\npage_size = = 3\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("(syntax): "), "{}", found[0]);
    assert!(found[0].contains("line 3"), "{}", found[0]);
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let text = "[mxc]\napi_key = \"API_canary_key_123\"\nusername = \"ops\"\npassword = \"canary-password-456\"\n[pollers]\nxmids = [\"A1\"]\n";
    let config = Config::from_toml(&format!("{text}{ROUTED}"), "t.toml", &no_env).unwrap();
    let debug = format!("{config:?} {:?}", config.mxc.client_config());
    assert!(debug.contains("[redacted]"));
    assert!(
        !debug.contains("API_canary_key_123") && !debug.contains("canary-password-456"),
        "{debug}"
    );
}

#[test]
fn routes_and_sinks_are_checked() {
    let text = r#"
        [mxc]
        api_key = "API_x"
        [pollers]
        xmids = ["A1"]
        [sinks.alerts]
        kind = "file"
        path = ""
        [sinks.bad]
        kind = "kafkaz"
        [[routes]]
        sink = "alertz"
        event_type = "Authorization Declined"
        filter = 'authorizedAmount >'
        redact.drop = ["card..data"]
        [[routes]]
        name = "x"
        sink = "alerts"
        colour = 1
    "#;
    let found = errors_of(text);
    for e in [
        "sinks.bad.kind: unknown variant `kafkaz`, expected one of `stdout`, `file`, `kafka`, `webhook`",
        "routes[1].colour: unknown field `colour`, expected one of `name`, `sink`, `resource`, `alerts`, `event_type`, `filter`, `redact`",
    ] {
        assert!(found.iter().any(|f| f == e), "missing {e:?} in {found:#?}");
    }
    // Sections that failed to load are not checked further; fix them and the rest shows.
    let text = text
        .replace("kind = \"kafkaz\"", "kind = \"stdout\"")
        .replace("colour = 1", "");
    let found = errors_of(&text);
    assert_eq!(
        found,
        [
            "sinks.alerts.path: must name a file",
            "routes[0].sink: no sink named \"alertz\" (defined: alerts, bad)",
            "routes[0].event_type: lower-case letters, digits, '.', '_' or '-', like authorization.declined; got \"Authorization Declined\"",
            "routes[0].filter: expected a value (\"text\", a number, true, false or null), found the end at column 19: authorizedAmount >",
            "routes[0].redact.drop[0]: \"card..data\" is not a dotted field path like cardNumber.data",
        ]
    );
}

#[test]
fn kafka_sinks_are_checked_and_their_properties_never_printed() {
    let text = r#"
        [mxc]
        api_key = "API_x"
        [pollers]
        xmids = ["A1"]
        [sinks.events]
        kind = "kafka"
        brokers = "localhost"
        topic = "mxc authorizations"
        compression = "zstd"
        [sinks.events.properties]
        "sasl.password" = "canary-kafka-password"
        [[routes]]
        sink = "events"
    "#;
    let found = errors(text.trim_end_matches(char::is_whitespace));
    assert!(
        found.contains(
            &"sinks.events.brokers: must be host:port[,host:port…], got \"localhost\"".to_string()
        ),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("sinks.events.topic: a topic is letters")),
        "{found:#?}"
    );
    assert!(
        found.contains(
            &"sinks.events.compression: must be lz4, snappy, gzip or none, got \"zstd\""
                .to_string()
        ),
        "{found:#?}"
    );
    let fixed = text
        .replace("\"localhost\"", "\"localhost:9092\"")
        .replace("mxc authorizations", "mxc.{type}")
        .replace("zstd", "lz4");
    let config = Config::from_toml(&fixed, "t.toml", &no_env).unwrap();
    assert!(!format!("{config:?}").contains("canary-kafka-password"));
}

#[test]
fn absurd_durations_are_refused_not_overflowed() {
    let found = errors(
        "[mxc]\napi_key = \"API_x\"\n[pollers]\nxmids = [\"A1\"]\ninterval = \"300000000000y\"\nlook_back = \"300000000000y\"\n[store]\nseen_retention = \"1000000y\"\n",
    );
    for expected in [
        "pollers.interval: must be at most 1d, got 300000000000years",
        "pollers.look_back: must be at most 7d, got 300000000000years",
        "store.seen_retention: must be at most 366d, got 1000000years",
    ] {
        assert!(
            found.contains(&expected.to_string()),
            "{expected:?} missing from {found:#?}"
        );
    }
}

#[test]
fn webhook_sinks_are_checked_and_their_secrets_never_printed() {
    let text = r#"
        [mxc]
        api_key = "API_x"
        [pollers]
        xmids = ["A1"]
        [sinks.alerts]
        kind = "webhook"
        url = "http://hooks.example.com/mxc?token=canary-url-token"
        secrets = ["whsec_tooshort", "canary-not-a-secret"]
        timeout = "0s"
        max_in_flight = 0
        schedule = []
        jitter = 0.9
        [sinks.alerts.headers]
        "webhook-signature" = "mine"
        "Authorization" = "Bearer canary-header-token"
        [[routes]]
        sink = "alerts"
    "#;
    let found = errors_of(text);
    let expected = [
        "sinks.alerts.url: \"http://hooks.example.com/mxc?…\" is plain http: use https, or set allow_insecure = true for a local receiver",
        "sinks.alerts.secrets[0]: a webhook secret is `whsec_` followed by base64 of at least 24 bytes",
        "sinks.alerts.secrets[1]: a webhook secret is `whsec_` followed by base64 of at least 24 bytes",
        "sinks.alerts.timeout: must be 1s to 5m, got 0s",
        "sinks.alerts.max_in_flight: must be 1 to 1000, got 0",
        "sinks.alerts.headers.webhook-signature: set by mxc-relay itself; it cannot be configured",
        "sinks.alerts.schedule: list 1 to 50 delays (one per attempt), got 0",
        "sinks.alerts.jitter: a fraction from 0 to 0.5, got 0.9",
    ];
    for e in expected {
        assert!(
            found.contains(&e.to_string()),
            "{e:?} missing from {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    let joined = found.join("\n");
    for canary in [
        "canary-not-a-secret",
        "canary-header-token",
        "canary-url-token",
    ] {
        assert!(!joined.contains(canary), "{canary} in {joined}");
    }

    // Fixed, with the secrets from the environment (rotation: two of them).
    let (a, b) = (
        mxc_relay::signature::WebhookSecret::generate(),
        mxc_relay::signature::WebhookSecret::generate(),
    );
    let both = format!("{} {}", a.expose(), b.expose());
    let env = |name: &str| (name == "ALERTS_SECRETS").then(|| both.clone());
    let fixed = text
        .replace("http://", "https://")
        .replace(
            r#"secrets = ["whsec_tooshort", "canary-not-a-secret"]"#,
            r#"secrets_env = "ALERTS_SECRETS""#,
        )
        .replace("timeout = \"0s\"", "")
        .replace("max_in_flight = 0", "")
        .replace("schedule = []", "schedule = [\"0s\", \"1m\"]")
        .replace("jitter = 0.9", "")
        .replace("\"webhook-signature\" = \"mine\"", "");
    let config = Config::from_toml(&fixed, "t.toml", &env).unwrap();
    let debug = format!("{config:?}");
    for secret in [a.expose(), b.expose(), "canary-header-token"] {
        assert!(!debug.contains(secret));
    }
    let Some(mxc_relay::config::SinkConfig::Webhook(w)) = config.sinks.get("alerts") else {
        panic!("a webhook sink")
    };
    assert_eq!(w.signing_secrets().unwrap().len(), 2);
    assert_eq!(w.timeout, std::time::Duration::from_secs(15), "the default");
    // Without the variable, it says which one is missing.
    assert!(errors_of(&fixed).contains(
        &"sinks.alerts.secrets: no signing secret: the list is empty and ALERTS_SECRETS (secrets_env) is not set".to_string()
    ));
}

#[test]
fn the_commented_webhook_example_is_valid_once_uncommented() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/mxc-relay.toml"
    ));
    let start = text.find("# [sinks.alerts]").expect("the example is there");
    let block: String = text[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if !rest.starts_with('#') => format!("{rest}\n"),
            _ => "\n".to_string(),
        })
        .collect();
    let secret = mxc_relay::signature::WebhookSecret::generate();
    let env = |name: &str| match name {
        "MXC_API_KEY" => Some("API_x".to_string()),
        "MXC_ALERTS_WEBHOOK_SECRETS" => Some(secret.expose().to_string()),
        _ => None,
    };
    let config = Config::from_toml(
        &format!("{text}\n{block}\n[[routes]]\nsink = \"alerts\"\n"),
        "t.toml",
        &env,
    )
    .unwrap_or_else(|e| panic!("{e}\n{block}"));
    let Some(mxc_relay::config::SinkConfig::Webhook(w)) = config.sinks.get("alerts") else {
        panic!("a webhook sink")
    };
    assert_eq!(w.schedule, mxc_relay::config::default_schedule());
    assert_eq!(w.headers.len(), 1);
}

#[test]
fn a_table_of_invalid_configs_each_with_its_exact_message() {
    // The secret values used in the rows: no message may quote one.
    const SECRETS: &[&str] = &[
        "API_canary_row_key",
        "canary-row-password",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "canary-not-whsec",
        "whsec_canary!!notbase64",
        "canary-url-token",
        "canary-header-token",
        "canary-kafka-password",
    ];
    // (name, a whole configuration wrong in exactly one way, its one error); inline tables
    // keep each configuration to a few lines.
    let rows: &[(&str, &str, &str)] = &[
        (
            "api key missing (env not set)",
            r#"
mxc = {}
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.api_key: missing: set MXC_API_KEY in the environment (or mxc.api_key in the file)",
        ),
        (
            "base_url not a URL",
            r#"
mxc = { api_key = "API_canary_row_key", base_url = "api.mxconnect.com" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"mxc.base_url: not a URL (relative URL without a base): "api.mxconnect.com""#,
        ),
        (
            "base_url with credentials",
            r#"
mxc = { api_key = "API_canary_row_key", base_url = "https://someone:canary-url-secret@api.mxconnect.com" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.base_url: holds credentials (https://api.mxconnect.com/): give them in MXC_USERNAME and MXC_PASSWORD instead",
        ),
        (
            "base_url not http(s)",
            r#"
mxc = { api_key = "API_canary_row_key", base_url = "ftp://api.mxconnect.com" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"mxc.base_url: must be an http(s) URL with a host, got "ftp://api.mxconnect.com" (scheme ftp)"#,
        ),
        (
            "password without a username",
            r#"
mxc = { api_key = "API_canary_row_key", password = "canary-row-password" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.username: a password is set but no username: set MXC_USERNAME (or mxc.username)",
        ),
        (
            "refresh_margin not below the token ttl",
            r#"
mxc = { api_key = "API_canary_row_key", refresh_margin = "10m" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.refresh_margin: must be shorter than mxc.assumed_token_ttl (10m), got 10m",
        ),
        (
            "page_size zero",
            r#"
mxc = { api_key = "API_canary_row_key", page_size = 0 }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.page_size: must be 1 to 100, got 0",
        ),
        (
            "page_size above the maximum",
            r#"
mxc = { api_key = "API_canary_row_key", page_size = 101 }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.page_size: must be 1 to 100, got 101",
        ),
        (
            "max_result_window below page_size",
            r#"
mxc = { api_key = "API_canary_row_key", max_result_window = 50 }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.max_result_window: must be at least mxc.page_size (100), got 50",
        ),
        (
            "page_size a string",
            r#"
mxc = { api_key = "API_canary_row_key", page_size = "50" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"mxc.page_size: invalid type: string "50", expected u32"#,
        ),
        (
            "unknown key in mxc",
            r#"
mxc = { api_key = "API_canary_row_key", base_ulr = "https://api.mxconnect.com" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "mxc.base_ulr: unknown key",
        ),
        (
            "xmids empty",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = [] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.xmids: list at least one XMID to poll (or \"roster\")",
        ),
        (
            "xmid empty",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1", ""] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.xmids[1]: an XMID is letters, digits, '-' or '_', got """#,
        ),
        (
            "xmid malformed",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1", "A 2"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.xmids[1]: an XMID is letters, digits, '-' or '_', got "A 2""#,
        ),
        (
            "xmid duplicated",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1", "B2", "A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.xmids[2]: "A1" is listed twice"#,
        ),
        (
            "xmid a number",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = [12345] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.xmids[0]: invalid type: integer `12345`, expected a string",
        ),
        (
            "interval zero",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], interval = "0s" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.interval: must be at least 1s, got 0s",
        ),
        (
            "interval in parsecs",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], interval = "5 parsecs" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.interval: invalid duration "5 parsecs" (unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like 30s, 10m, 1h30m or 250ms"#,
        ),
        (
            "look_back over 7 days",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], look_back = "8d" }
store = { seen_retention = "30d" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.look_back: must be at most 7d, got 8days",
        ),
        (
            "look_back negative",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], look_back = "-5m" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.look_back: invalid duration "-5m" (expected number at 0); write it like 30s, 10m, 1h30m or 250ms"#,
        ),
        (
            "cursor of an unknown kind",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], cursor = "newest" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.cursor: unknown variant `newest`, expected one of `auto`, `created`, `transaction_time`",
        ),
        (
            "settle over an hour",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], settle = "2h" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.settle: must be at most 1h, got 2h",
        ),
        (
            "reconcile_every too short",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], reconcile_every = "5s" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.reconcile_every: must be 0s (off) or at least 10s, got 5s",
        ),
        (
            "reconcile_window over 7 days",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], reconcile_window = "8d" }
store = { seen_retention = "30d" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.reconcile_window: must be at least pollers.interval (30s) and at most 7d, got 8days",
        ),
        (
            "seen_retention not above the sweep's window",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
store = { seen_retention = "1d" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "store.seen_retention: must be longer than pollers.reconcile_window (1day 2h), or the sweep would send again what it no longer recognises; got 1day",
        ),
        (
            "roster grace shorter than settle + interval",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = "roster", roster = { grace = "10s" } }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.roster.grace: must be at least pollers.settle + pollers.interval (35s): what a merchant receives just before it leaves is read only once it settled; got 10s",
        ),
        (
            "group_size above 100",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], group_size = 101 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.group_size: must be "auto" or 1 to 100, got 101"#,
        ),
        (
            "group_size a word other than auto",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], group_size = "big" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.group_size: invalid value: string "big", expected "auto" or a number of XMIDs per query"#,
        ),
        (
            "group_size negative",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], group_size = -3 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.group_size: invalid value: integer `-3`, expected "auto" or a number of XMIDs per query"#,
        ),
        (
            "group_size a fraction",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], group_size = 2.5 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.group_size: invalid type: floating point `2.5`, expected "auto" or a number of XMIDs per query"#,
        ),
        (
            "requests_per_second zero",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], requests_per_second = 0.0 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.requests_per_second: must be above 0 and at most 10000, got 0",
        ),
        (
            "requests_per_second negative",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], requests_per_second = -2.5 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.requests_per_second: must be above 0 and at most 10000, got -2.5",
        ),
        (
            "burst zero",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], burst = 0 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.burst: must be at least 1, got 0",
        ),
        (
            "burst negative",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], burst = -1 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.burst: invalid value: integer `-1`, expected u32",
        ),
        (
            "burst and requests_per_second negative: a type error hides nothing else of its table",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], requests_per_second = -5, burst = -1 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.burst: invalid value: integer `-1`, expected u32\n\
             pollers.requests_per_second: must be above 0 and at most 10000, got -5",
        ),
        (
            "start in the future",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], start = "2999-01-01T00:00:00Z" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.start: "2999-01-01T00:00:00Z" is in the future"#,
        ),
        (
            "unknown key in pollers",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], intervall = "30s" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.intervall: unknown key",
        ),
        (
            "store path empty",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
store = { path = "" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "store.path: must name a directory",
        ),
        (
            "store cache_mib too small",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
store = { cache_mib = 1 }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "store.cache_mib: must be at least 8, got 1",
        ),
        (
            "seen_retention not above look_back + interval",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], reconcile_every = "0s" }
store = { seen_retention = "10m" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "store.seen_retention: must be longer than pollers.look_back + pollers.interval (10m 30s), got 10m",
        ),
        (
            "retry_max below retry_min",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
delivery = { retry_min = "10s", retry_max = "5s" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "delivery.retry_max: must be at least delivery.retry_min (10s), got 5s",
        ),
        (
            "unknown section",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sink = { kind = "stdout" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "sink: unknown section or key (known: mxc, pollers, store, delivery, sinks, routes, log, telemetry, cluster, admin)",
        ),
        (
            "section not a table",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
store = "data"
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "store: must be a table, got a string",
        ),
        (
            "no routes",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
"#,
            "routes: add at least one [[routes]] entry (a sink and, optionally, a filter)",
        ),
        (
            "route to an unknown sink",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "outt" }]
"#,
            r#"routes[0].sink: no sink named "outt" (defined: out)"#,
        ),
        (
            "route filter does not parse",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out", filter = "authorizedAmount >=" }]
"#,
            r#"routes[0].filter: expected a value ("text", a number, true, false or null), found the end at column 20: authorizedAmount >="#,
        ),
        (
            "route names duplicated",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ name = "all", sink = "out" }, { name = "all", sink = "out" }]
"#,
            r#"routes[1].name: "all" is used by another route"#,
        ),
        (
            "route event_type upper case",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out", event_type = "Authorization.Created" }]
"#,
            r#"routes[0].event_type: lower-case letters, digits, '.', '_' or '-', like authorization.declined; got "Authorization.Created""#,
        ),
        (
            "unknown resource polled",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], resources = ["authorizations", "chargebacks"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"pollers.resources[1]: no resource named "chargebacks" (known: authorizations, disputes, batches, ach)"#,
        ),
        (
            "resource polled twice",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], resources = ["disputes", "disputes"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out", resource = "disputes" }]
"#,
            r#"pollers.resources[1]: "disputes" is listed twice"#,
        ),
        (
            "no resource polled",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], resources = [] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "pollers.resources: poll at least one of: authorizations, disputes, batches, ach",
        ),
        (
            "route over a resource not polled",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out", resource = "batches", alerts = true }]
"#,
            r#"routes[0].resource: "batches" is not polled: add it to pollers.resources (now ["authorizations"])"#,
        ),
        (
            "route over an unknown resource",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"], resources = ["ach"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out", resource = "deposits" }]
"#,
            r#"routes[0].resource: no resource named "deposits" (known: authorizations, disputes, batches, ach)"#,
        ),
        (
            "cluster shards zero",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
cluster = { brokers = "kafka:9092", shards = 0 }
"#,
            "cluster.shards: must be 1 to 1000, got 0",
        ),
        (
            "cluster state topic is the control topic",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
cluster = { brokers = "kafka:9092", control_topic = "relay", state_topic = "relay" }
"#,
            "cluster.state_topic: must differ from cluster.control_topic",
        ),
        (
            "cluster session timeout too short",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
cluster = { brokers = "kafka:9092", session_timeout = "1s" }
"#,
            "cluster.session_timeout: must be 6s to 5m (the brokers' usual bounds), got 1s",
        ),
        (
            "route redact path malformed",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out", redact = { mask = ["cardNumber..data"] } }]
"#,
            r#"routes[0].redact.mask[0]: "cardNumber..data" is not a dotted field path like cardNumber.data"#,
        ),
        (
            "route unknown key",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out", fliter = "cardType == \"Visa\"" }]
"#,
            "routes[0].fliter: unknown field `fliter`, expected one of `name`, `sink`, `resource`, `alerts`, `event_type`, `filter`, `redact`",
        ),
        (
            "sink of unknown kind",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafkaz" }
routes = [{ sink = "out" }]
"#,
            "sinks.out.kind: unknown variant `kafkaz`, expected one of `stdout`, `file`, `kafka`, `webhook`",
        ),
        (
            "sink without kind",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { format = "json" }
routes = [{ sink = "out" }]
"#,
            "sinks.out: missing field `kind`",
        ),
        (
            "sink name malformed",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks."o u t" = { kind = "stdout" }
routes = [{ sink = "o u t" }]
"#,
            "sinks.o u t: a sink name is letters, digits, '-' or '_'",
        ),
        (
            "stdout sink unknown key",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout", formt = "compact" }
routes = [{ sink = "out" }]
"#,
            "sinks.out.formt: unknown key",
        ),
        (
            "stdout format unknown",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "stdout", format = "xml" }
routes = [{ sink = "out" }]
"#,
            "sinks.out.format: unknown variant `xml`, expected `json` or `compact`",
        ),
        (
            "file sink path empty",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "file", path = "" }
routes = [{ sink = "out" }]
"#,
            "sinks.out.path: must name a file",
        ),
        (
            "kafka brokers empty",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka", brokers = "" }
routes = [{ sink = "out" }]
"#,
            r#"sinks.out.brokers: must be host:port[,host:port…], got """#,
        ),
        (
            "kafka brokers missing",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka" }
routes = [{ sink = "out" }]
"#,
            "sinks.out: missing field `brokers`",
        ),
        (
            "kafka topic empty",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka", brokers = "localhost:9092", topic = "" }
routes = [{ sink = "out" }]
"#,
            r#"sinks.out.topic: a topic is letters, digits, '.', '_' or '-' (placeholders {resource}, {type} and {route} allowed), got """#,
        ),
        (
            "kafka compression unknown",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka", brokers = "localhost:9092", compression = "zstd", properties = { "sasl.password" = "canary-kafka-password" } }
routes = [{ sink = "out" }]
"#,
            r#"sinks.out.compression: must be lz4, snappy, gzip or none, got "zstd""#,
        ),
        (
            "kafka key unknown",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka", brokers = "localhost:9092", key = "partition" }
routes = [{ sink = "out" }]
"#,
            "sinks.out.key: unknown variant `partition`, expected `xmid` or `record_id`",
        ),
        (
            "kafka property librdkafka refuses",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka", brokers = "localhost:9092", properties = { "security.protocol" = "bogus", "sasl.password" = "canary-kafka-password" } }
routes = [{ sink = "out" }]
"#,
            r#"sinks.out.properties: librdkafka refused the property "security.protocol" (its value is not shown)"#,
        ),
        (
            "cluster property librdkafka refuses",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
cluster = { brokers = "kafka:9092", properties = { "security.protocol" = "bogus", "sasl.password" = "canary-kafka-password" } }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"cluster.properties: librdkafka refused the property "security.protocol" (its value is not shown)"#,
        ),
        (
            "kafka properties librdkafka refuses together (idempotence needs acks=all)",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka", brokers = "localhost:9092", properties = { "acks" = "1" } }
routes = [{ sink = "out" }]
"#,
            "sinks.out.properties: librdkafka refused these settings: Client creation error: `acks` must be set to `all` when `enable.idempotence` is true",
        ),
        (
            "kafka unknown key",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
sinks.out = { kind = "kafka", brokers = "localhost:9092", topc = "mxc.events" }
routes = [{ sink = "out" }]
"#,
            "sinks.out.topc: unknown key",
        ),
        (
            "webhook url plain http",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "http://hooks.example.com/mxc?token=canary-url-token"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#,
            r#"sinks.out.url: "http://hooks.example.com/mxc?…" is plain http: use https, or set allow_insecure = true for a local receiver"#,
        ),
        (
            "webhook url mailto:",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "mailto:ops@example.com?token=canary-url-token"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#,
            r#"sinks.out.url: "mailto:ops@example.com?…" has the scheme "mailto": a webhook URL is https (or http with allow_insecure = true)"#,
        ),
        (
            "webhook url file://, whose host the URL parser drops",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "file://localhost/etc/passwd"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#,
            r#"sinks.out.url: "file://localhost/etc/passwd" has the scheme "file": a webhook URL is https (or http with allow_insecure = true)"#,
        ),
        (
            "webhook url not a URL",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "hooks.example.com/mxc?token=canary-url-token"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#,
            "sinks.out.url: not a URL (relative URL without a base)",
        ),
        (
            "webhook secret without whsec_",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["canary-not-whsec"]
"#,
            "sinks.out.secrets[0]: a webhook secret is `whsec_` followed by base64 of at least 24 bytes",
        ),
        (
            "webhook secret not base64",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_canary!!notbase64"]
"#,
            "sinks.out.secrets[0]: a webhook secret is `whsec_` followed by base64 of at least 24 bytes",
        ),
        (
            "webhook secrets_env not set",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets_env = "HOOK_SECRETS"
"#,
            "sinks.out.secrets: no signing secret: the list is empty and HOOK_SECRETS (secrets_env) is not set",
        ),
        (
            "webhook schedule empty",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
schedule = []
"#,
            "sinks.out.schedule: list 1 to 50 delays (one per attempt), got 0",
        ),
        (
            "webhook schedule in parsecs",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
schedule = ["0s", "5 parsecs"]
"#,
            r#"sinks.out.schedule: invalid duration "5 parsecs" (unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like 30s, 10m, 1h30m or 250ms"#,
        ),
        (
            "webhook jitter above 0.5",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
jitter = 0.9
"#,
            "sinks.out.jitter: a fraction from 0 to 0.5, got 0.9",
        ),
        (
            "webhook jitter negative",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
jitter = -0.1
"#,
            "sinks.out.jitter: a fraction from 0 to 0.5, got -0.1",
        ),
        (
            "webhook jitter a string",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
jitter = "0.1"
"#,
            r#"sinks.out.jitter: invalid type: string "0.1", expected f64"#,
        ),
        (
            "webhook reserved header",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
headers = { "Webhook-Id" = "canary-header-token" }
"#,
            "sinks.out.headers.Webhook-Id: set by mxc-relay itself; it cannot be configured",
        ),
        (
            "webhook unknown key",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
routes = [{ sink = "out" }]
[sinks.out]
kind = "webhook"
url = "https://hooks.example.com/mxc"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
allow_insecur = true
"#,
            "sinks.out.allow_insecur: unknown key",
        ),
        (
            "log format unknown",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
log = { format = "xml" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "log.format: unknown variant `xml`, expected `pretty` or `json`",
        ),
        (
            "telemetry listen not an address",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
telemetry = { listen = "localhost:9464" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"telemetry.listen: an IP:PORT such as 127.0.0.1:9464 (or "" for none), got "localhost:9464""#,
        ),
        (
            "admin API on every interface without a token",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
admin = { listen = "0.0.0.0:9465" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "admin.listen: 0.0.0.0:9465 is reachable from other hosts: set a token (MXC_ADMIN_TOKEN or admin.token_file), or listen on 127.0.0.1",
        ),
        (
            "admin listen not an address",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
admin = { listen = "localhost" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            r#"admin.listen: an IP:PORT such as 127.0.0.1:9465 (or "" for none), got "localhost""#,
        ),
        (
            "admin token file missing",
            r#"
mxc = { api_key = "API_canary_row_key" }
pollers = { xmids = ["A1"] }
admin = { token_file = "/nonexistent/admin-token" }
sinks.out = { kind = "stdout" }
routes = [{ sink = "out" }]
"#,
            "admin.token_file: cannot read /nonexistent/admin-token: No such file or directory (os error 2)",
        ),
    ];
    // Rows about the machine `run` would start on: the store's directory.
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<(String, String, String)> = rows
        .iter()
        .map(|(name, text, expected)| (name.to_string(), text.to_string(), expected.to_string()))
        .collect();
    let store_at = |path: &std::path::Path| {
        format!(
            "mxc = {{ api_key = \"API_canary_row_key\" }}\npollers = {{ xmids = [\"A1\"] }}\nstore = {{ path = {:?} }}\nsinks.out = {{ kind = \"stdout\" }}\nroutes = [{{ sink = \"out\" }}]\n",
            path.display().to_string()
        )
    };
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    rows.push((
        "store path a file".into(),
        store_at(&file),
        format!("store.path: {file:?} is a file, not a directory"),
    ));
    let under = file.join("store");
    rows.push((
        "store path under a file".into(),
        store_at(&under),
        format!("store.path: {under:?} cannot be created: {file:?} is a file"),
    ));
    let read_only = ReadOnlyDir::new(&dir.path().join("read-only"));
    match &read_only {
        Ok(ro) => {
            let store = ro.path.join("store");
            rows.push((
                "store in a read-only directory".into(),
                store_at(&store),
                format!(
                    "store.path: {store:?} cannot be created: cannot write in {:?} ({})",
                    ro.path, ro.why
                ),
            ));
        }
        Err(reason) => println!("row \"store in a read-only directory\" skipped: {reason}"),
    }
    for (name, text, expected) in &rows {
        let found = errors_for_run(text);
        assert_eq!(found.join("\n"), *expected, "row {name:?}");
        for secret in SECRETS {
            assert!(
                !found.iter().any(|f| f.contains(secret)),
                "row {name:?} quotes {secret:?}"
            );
        }
    }
    // Nothing was created to find out.
    assert!(!under.exists());
    if let Ok(ro) = &read_only {
        assert!(!ro.path.join("store").exists());
    }
}
