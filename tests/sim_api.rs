//! The simulator's HTTP surface as a raw client sees it: the parameters of mxc-api.md, JWT
//! checks, 400s with {code, message}, and the /_sim control endpoints.

mod common;

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::*;
use mxc_relay::sim::{SimConfig, StatsSnapshot};

struct Raw {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Raw {
    async fn new(base: String) -> Raw {
        let http = reqwest::Client::new();
        let token = http
            .post(format!("{base}/security/v1/apiKey/authenticate"))
            .basic_auth("sim", Some("sim-password"))
            .json(&json!({"value": "API_sim_key"}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        Raw { http, base, token }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn tokens_are_real_jwts_and_bad_ones_get_401() {
    let sim = start_sim(quiet_sim()).await;
    let raw = Raw::new(sim.base_url()).await;
    let parts: Vec<&str> = raw.token.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert!(claims["domain"]["id"].is_string());

    let url = format!("{}/report/v1/tsys/authorization", sim.base_url());
    let forged = format!("{}.{}.{}", parts[0], parts[1], "AAAA");
    for (token, message) in [
        (None, "missing bearer token"),
        (Some(forged.as_str()), "signature"),
        (Some("garbage"), "malformed"),
    ] {
        let mut req = raw.http.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], 401);
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }
}

#[tokio::test]
async fn expired_tokens_get_401() {
    let sim = start_sim(SimConfig {
        jwt_ttl: std::time::Duration::from_secs(1),
        ..quiet_sim()
    })
    .await;
    let raw = Raw::new(sim.base_url()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = raw.get("/report/v1/tsys/authorization", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "JWT expired");
}

#[tokio::test]
async fn fields_filter_sort_and_quick_ranges_are_honoured() {
    let sim = start_sim(quiet_sim()).await;
    let xmids = sim.xmids();
    let now = chrono::Utc::now();
    sim.generate(300, &xmids[..2], now - chrono::Duration::hours(2), now)
        .unwrap();
    let raw = Raw::new(sim.base_url()).await;
    let accounts = serde_json::to_string(&xmids[..2]).unwrap();

    // fields: only those come back, nested ones as nested objects.
    let (status, body) = raw
        .get(
            "/report/v1/tsys/authorization",
            &[
                ("accountNumbers", &accounts),
                ("size", "5"),
                ("fields", r#"["id","authorizedAmount","cardNumber.mask"]"#),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["recordCount"], 5);
    assert_eq!(body["totalRecords"], 300);
    for r in body["records"].as_array().unwrap() {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "authorizedAmount", "cardNumber"]);
        assert!(r["cardNumber"].as_object().unwrap().keys().eq(["mask"]));
    }

    // filter: declines of one XMID at or above $20, amounts sorted descending.
    let filter = json!({"must": [
        {"terms": {"accountNumber": [xmids[0]]}},
        {"range": {"authorizedAmount": {"gte": 20}}}],
        "must_not": [{"term": {"authorizationResponse": "00"}}]})
    .to_string();
    let (status, body) = raw
        .get(
            "/report/v1/tsys/authorization",
            &[
                ("accountNumbers", &accounts),
                ("size", "100"),
                ("filter", &filter),
                ("sort", "authorizedAmount:desc"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().unwrap();
    let amounts: Vec<f64> = records
        .iter()
        .map(|r| r["authorizedAmount"].as_f64().unwrap())
        .collect();
    assert!(
        amounts.windows(2).all(|w| w[0] >= w[1]),
        "sorted descending"
    );
    assert!(records
        .iter()
        .all(|r| r["accountNumber"] == xmids[0].as_str()
            && r["authorizationResponseStatus"] == "Declined"
            && r["authorizedAmount"].as_f64().unwrap() >= 20.0));

    // dr_type=q with last_1_h: about half of two hours.
    let (_, last_hour) = raw
        .get(
            "/report/v1/tsys/authorization",
            &[
                ("accountNumbers", &accounts),
                ("dr_type", "q"),
                ("dr_quick", "last_1_h"),
            ],
        )
        .await;
    let n = last_hour["totalRecords"].as_u64().unwrap();
    assert!((100..200).contains(&n), "{n} of 300 in the last hour");
}

#[tokio::test]
async fn bad_parameters_get_400_with_code_and_message() {
    let sim = start_sim(quiet_sim()).await;
    let raw = Raw::new(sim.base_url()).await;
    for (query, expected) in [
        (vec![("size", "500")], "size must be at most 100"),
        (
            vec![
                ("dr_type", "abs"),
                ("dr_from", "2026-13-45"),
                ("dr_to", "2026-01-01"),
            ],
            "dr_from",
        ),
        (
            vec![("accountNumbers", "123,456")],
            "accountNumbers must be a JSON array",
        ),
        (
            vec![("filter", r#"{"must":[{"regexp":{"a":"b"}}]}"#)],
            "unsupported filter clause \"regexp\"",
        ),
        (
            vec![("from", "9990"), ("size", "20")],
            "Result window is too large",
        ),
    ] {
        let (status, body) = raw.get("/report/v1/tsys/authorization", &query).await;
        assert_eq!(status, 400, "{query:?}");
        assert_eq!(body["code"], 400);
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{query:?}: {body}"
        );
    }
}

#[tokio::test]
async fn the_control_surface_counts_and_sets_faults() {
    let sim = start_sim(quiet_sim()).await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let set = http
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"throttle_rate": 1.0, "retry_after_secs": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let bad = http
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"throttle_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let raw = Raw::new(base.clone()).await;
    let r = raw
        .http
        .get(format!("{base}/report/v1/tsys/authorization"))
        .bearer_auth(&raw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let generated = http
        .post(format!("{base}/_sim/generate"))
        .json(&json!({"count": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.status(), 200);
    let stats: StatsSnapshot = http
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.auth_calls, 1);
    assert_eq!(stats.tokens_issued, 1);
    assert_eq!(stats.records_generated, 25);
    assert_eq!(
        stats.requests_with("GET /report/v1/tsys/authorization", 429),
        1
    );
}
