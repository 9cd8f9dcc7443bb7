//! Server misbehaviour surfaces as typed errors naming the endpoint, never as a panic.

use std::time::Duration;

use chrono::Utc;
use mxc::{Client, MxcError, ReportQuery};
use mxc_sim::Faults;

use crate::support::*;

fn query(xmid: &str) -> ReportQuery {
    ReportQuery::new(
        vec![xmid.to_string()],
        Utc::now() - chrono::Duration::hours(1),
        Utc::now(),
    )
}

async fn with_fault(faults: Faults) -> MxcError {
    let sim = start_sim(quiet_sim()).await;
    let xmid = sim.xmids()[0].clone();
    sim.generate(
        20,
        std::slice::from_ref(&xmid),
        Utc::now() - chrono::Duration::minutes(5),
        Utc::now(),
    )
    .unwrap();
    sim.set_faults(faults);
    client(&sim).report(&query(&xmid), 0).await.unwrap_err()
}

#[tokio::test]
async fn a_429_with_retry_after_is_throttled_with_its_delay() {
    let err = with_fault(Faults {
        throttle_rate: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    })
    .await;
    match &err {
        MxcError::Throttled {
            endpoint,
            retry_after,
        } => {
            assert_eq!(endpoint, "GET /report/v1/tsys/authorization");
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected Throttled, got {other}"),
    }
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_5xx_is_a_server_error_with_the_body() {
    let err = with_fault(Faults {
        error_rate: 1.0,
        error_status: Some(502),
        ..Faults::default()
    })
    .await;
    assert!(matches!(err, MxcError::Server { status: 502, .. }), "{err}");
    assert!(err.to_string().contains("Simulated server error"), "{err}");
}

#[tokio::test]
async fn a_truncated_body_is_a_malformed_response() {
    let err = with_fault(Faults {
        truncate_rate: 1.0,
        ..Faults::default()
    })
    .await;
    assert!(
        matches!(err, MxcError::Malformed { status: 200, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("GET /report/v1/tsys/authorization: malformed response (HTTP 200)"),
        "{text}"
    );
    assert!(text.contains("body starts: {\"aggregations\""), "{text}");
}

#[tokio::test]
async fn an_html_body_is_a_malformed_response_with_a_short_excerpt() {
    let err = with_fault(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let MxcError::Malformed {
        excerpt, detail, ..
    } = &err
    else {
        panic!("expected Malformed, got {err}")
    };
    assert!(excerpt.starts_with("<html>"), "{excerpt}");
    assert!(excerpt.len() <= mxc::EXCERPT_LIMIT + 3);
    assert!(detail.contains("expected value"), "{detail}");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let sim = start_sim(quiet_sim()).await;
    let xmid = sim.xmids()[0].clone();
    let mut config = client_config(&sim);
    config.timeout = Duration::from_millis(300);
    let client = Client::new(config).unwrap();
    client.authenticate().await.unwrap();
    sim.set_faults(Faults {
        latency_ms: 2_000,
        ..Faults::default()
    });
    let err = client.report(&query(&xmid), 0).await.unwrap_err();
    assert!(matches!(err, MxcError::Timeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "GET /report/v1/tsys/authorization: no answer within 300ms"
    );
}

#[tokio::test]
async fn a_failing_xmid_fails_alone() {
    let sim = start_sim(quiet_sim()).await;
    let xmids = sim.xmids();
    sim.set_faults(Faults {
        fail_xmids: vec![xmids[0].clone()],
        ..Faults::default()
    });
    let client = client(&sim);
    let err = client.report(&query(&xmids[0]), 0).await.unwrap_err();
    assert!(matches!(err, MxcError::Server { status: 500, .. }), "{err}");
    client.report(&query(&xmids[1]), 0).await.unwrap();
}

#[tokio::test]
async fn a_bad_request_is_refused_with_the_servers_message() {
    let sim = start_sim(quiet_sim()).await;
    let client = client(&sim);
    // Past the result window: the server refuses with 400.
    let err = client
        .report(&query(&sim.xmids()[0]), 9_950)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MxcError::Refused { status: 400, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("Result window is too large"),
        "{err}"
    );
    assert!(!err.is_transient());
}
