//! Loading and validating configuration: every error at once, each with its key path.

use mxc_relay::config::Config;

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

/// The errors of `text` with a valid sink and route added.
fn errors(text: &str) -> Vec<String> {
    errors_of(&format!("{text}{ROUTED}"))
}

#[test]
fn the_annotated_example_is_valid_with_a_key_from_the_environment() {
    let text = include_str!("../config/mxc-relay.toml");
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
        "sinkz: unknown section or key (known: mxc, pollers, store, delivery, sinks, routes, log, telemetry)",
        "mxc.base_url: must be an http(s) URL with a host, got \"ftp://example.com\" (scheme ftp)",
        "mxc.page_size: must be 1 to 100, got 250",
        "pollers.xmids[1]: \"A1\" is listed twice",
        "pollers.xmids[2]: an XMID is letters, digits, '-' or '_', got \"bad xmid\"",
        "pollers.interval: must be at least 1s, got 0s",
        "pollers.group_size: must be 1 to 100, got 0",
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
        "routes[1].colour: unknown field `colour`, expected one of `name`, `sink`, `event_type`, `filter`, `redact`",
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
    let text = include_str!("../config/mxc-relay.toml");
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
