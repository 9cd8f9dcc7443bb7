//! The JWT manager against the simulator's Security API, counted by the simulator.

use std::time::Duration;

use chrono::Utc;
use mxc::Secret;
use mxc::{Client, Credentials, MxcError, ReportQuery, TokenPolicy};
use mxc_sim::{Faults, SimConfig};

use crate::support::*;

const AUTH: &str = "POST /security/v1/apiKey/authenticate";

async fn one_query(client: &Client, xmid: &str) -> Result<(), MxcError> {
    let q = ReportQuery::new(
        vec![xmid.to_string()],
        Utc::now() - chrono::Duration::hours(1),
        Utc::now(),
    );
    client.report(&q, 0).await.map(|_| ())
}

/// `n` queries at once, each on its own task.
async fn concurrent_queries(client: &Client, xmid: &str, n: usize) -> Vec<Result<(), MxcError>> {
    let calls = (0..n).map(|_| {
        let (c, x) = (client.clone(), xmid.to_string());
        tokio::spawn(async move { one_query(&c, &x).await })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.expect("task"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_callers_share_one_auth_call() {
    let sim = start_sim(quiet_sim()).await;
    let client = client(&sim);
    let xmid = sim.xmids()[0].clone();
    for result in concurrent_queries(&client, &xmid, 100).await {
        result.unwrap();
    }
    let stats = sim.stats();
    assert_eq!(stats.auth_calls, 1);
    assert_eq!(
        stats.requests_with("GET /report/v1/tsys/authorization", 200),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_refreshed_ahead_of_expiry_by_one_caller() {
    // Tokens live 4 s; the margin (2 s, capped at half the lifetime) makes the client refresh
    // from 2 s on, before the server would refuse the token.
    let sim = start_sim(SimConfig {
        jwt_ttl: Duration::from_secs(4),
        ..quiet_sim()
    })
    .await;
    let mut config = client_config(&sim);
    config.tokens = TokenPolicy {
        refresh_margin: Duration::from_secs(60),
        ..TokenPolicy::default()
    };
    let client = Client::new(config).unwrap();
    let xmid = sim.xmids()[0].clone();

    one_query(&client, &xmid).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    one_query(&client, &xmid).await.unwrap();
    assert_eq!(sim.stats().auth_calls, 1, "a fresh token is reused");

    tokio::time::sleep(Duration::from_millis(2_000)).await;
    for result in concurrent_queries(&client, &xmid, 100).await {
        result.unwrap();
    }
    let stats = sim.stats();
    assert_eq!(
        stats.auth_calls, 2,
        "one refresh for 100 callers inside the margin"
    );
    assert_eq!(
        stats.requests_with("GET /report/v1/tsys/authorization", 401),
        0,
        "refreshed before the server refused it"
    );
}

#[tokio::test]
async fn a_401_reauthenticates_once_and_the_call_succeeds() {
    let sim = start_sim(quiet_sim()).await;
    let client = client(&sim);
    let xmid = sim.xmids()[0].clone();
    one_query(&client, &xmid).await.unwrap();
    // The server now refuses every token older than 1 s: the cached one dies early.
    sim.set_faults(Faults {
        jwt_max_age_secs: Some(1),
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    one_query(&client, &xmid).await.unwrap();
    let stats = sim.stats();
    assert_eq!(stats.auth_calls, 2);
    assert_eq!(
        stats.requests_with("GET /report/v1/tsys/authorization", 401),
        1
    );
    assert_eq!(
        stats.requests_with("GET /report/v1/tsys/authorization", 200),
        2
    );
}

#[tokio::test]
async fn a_token_refused_even_when_fresh_is_an_error_not_a_loop() {
    let sim = start_sim(quiet_sim()).await;
    sim.set_faults(Faults {
        jwt_max_age_secs: Some(0),
        ..Faults::default()
    });
    let client = client(&sim);
    let err = one_query(&client, &sim.xmids()[0]).await.unwrap_err();
    assert!(matches!(err, MxcError::Unauthorized { .. }), "{err}");
    assert_eq!(sim.stats().auth_calls, 2, "the first token and one retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_a_clear_error_without_a_retry_storm() {
    let sim = start_sim(quiet_sim()).await;
    let mut config = client_config(&sim);
    config.credentials.api_key = Secret::new("API_wrong_key_canary");
    let client = Client::new(config).unwrap();
    let xmid = sim.xmids()[0].clone();
    let results = concurrent_queries(&client, &xmid, 50).await;
    for result in &results {
        let err = result.as_ref().unwrap_err();
        assert!(
            matches!(err, MxcError::AuthRejected { status: 401, .. }),
            "{err}"
        );
        assert!(!err.is_transient());
    }
    // Later calls within the hold get the same answer without asking again.
    let err = one_query(&client, &xmid).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(
        text.contains("MXC_API_KEY"),
        "says which credential to check: {text}"
    );
    assert!(
        text.contains("Invalid API key"),
        "quotes the server: {text}"
    );
    assert!(
        !text.contains("API_wrong_key_canary")
            && !format!("{err:?}").contains("API_wrong_key_canary")
    );
    let stats = sim.stats();
    assert_eq!(
        stats.auth_calls, 1,
        "51 callers, one call to the Security API"
    );
    assert_eq!(stats.requests_to("GET /report/v1/tsys/authorization"), 0);
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_no_basic_header_is_accepted() {
    let sim = start_sim(quiet_sim()).await;
    let mut config = client_config(&sim);
    config.credentials.password = Secret::new("not-the-password");
    let err = Client::new(config)
        .unwrap()
        .authenticate()
        .await
        .unwrap_err();
    assert!(matches!(err, MxcError::AuthRejected { .. }), "{err}");
    assert!(err.to_string().contains("MXC_PASSWORD"), "{err}");

    // A public client sends no Basic header; the service answers it.
    let mut config = client_config(&sim);
    config.credentials = Credentials {
        username: None,
        ..credentials()
    };
    Client::new(config).unwrap().authenticate().await.unwrap();
    assert_eq!(sim.stats().requests_with(AUTH, 200), 1);
}

#[tokio::test]
async fn an_unreachable_security_api_is_a_transport_error() {
    let sim = start_sim(quiet_sim()).await;
    let base = sim.base_url();
    sim.shutdown().await.unwrap();
    let mut config = mxc::ClientConfig::new(base, credentials());
    config.timeout = Duration::from_secs(2);
    let err = Client::new(config)
        .unwrap()
        .authenticate()
        .await
        .unwrap_err();
    assert!(matches!(err, MxcError::Transport { .. }), "{err}");
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .starts_with("POST /security/v1/apiKey/authenticate: transport error"),
        "{err}"
    );
}
