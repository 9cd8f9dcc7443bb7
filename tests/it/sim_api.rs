//! The simulator's HTTP surface as a raw client sees it: the parameters of mxc-api.md, JWT
//! checks, 400s with {code, message}, and the /_sim control endpoints.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;
use mxc_sim::{SimConfig, StatsSnapshot};

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

// ---- Queries on `created`, the index delay, the created faults, the clock and `Date` ----

const AUTHORIZATIONS: &str = "/report/v1/tsys/authorization";
const EXPORT: &str = "/report/v1/tsys/authorization/export";

/// An instant as the relay writes it in a `range` on `created`.
fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn ms_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// The `filter` of the relay's created mode.
fn created_filter(gte: i64, lte: i64) -> String {
    json!({"must": [{"range": {"created": {"gte": iso(gte), "lte": iso(lte)}}}]}).to_string()
}

fn ids(body: &Value) -> Vec<String> {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

impl Raw {
    async fn post(&self, path: &str, query: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// Every record an export returns, opened with `{}` as a public client does.
    async fn export_all(&self, query: &[(&str, &str)]) -> Vec<Value> {
        let (status, mut page) = self.post(EXPORT, query, "{}").await;
        assert_eq!(status, 200, "{page}");
        let mut out = Vec::new();
        loop {
            let records = page["records"].as_array().unwrap().clone();
            if records.is_empty() {
                return out;
            }
            out.extend(records);
            let id = page["_scroll_id"].as_str().unwrap().to_string();
            let (status, next) = self
                .post(EXPORT, query, &json!({ "scrollId": id }).to_string())
                .await;
            assert_eq!(status, 200, "{next}");
            page = next;
        }
    }

    /// Every page of a GET query, paged with `from`.
    async fn get_all(&self, query: &[(&str, &str)]) -> (usize, Vec<Value>) {
        let mut out = Vec::new();
        loop {
            let from = out.len().to_string();
            let mut q = query.to_vec();
            q.push(("size", "100"));
            q.push(("from", &from));
            let (status, page) = self.get(AUTHORIZATIONS, &q).await;
            assert_eq!(status, 200, "{page}");
            let records = page["records"].as_array().unwrap().clone();
            if records.is_empty() {
                return (page["totalRecords"].as_u64().unwrap() as usize, out);
            }
            out.extend(records);
        }
    }

    async fn total(&self, query: &[(&str, &str)]) -> u64 {
        let (status, body) = self.get(AUTHORIZATIONS, query).await;
        assert_eq!(status, 200, "{body}");
        body["totalRecords"].as_u64().unwrap()
    }
}

async fn set_faults(sim: &mxc_sim::RunningSim, faults: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{faults}");
}

#[tokio::test]
async fn a_created_range_sorted_by_created_returns_exactly_what_was_ingested_then() {
    // Live traffic with a 20-minute history, 30 % of it ingested up to 30 minutes late.
    let sim = start_sim(SimConfig {
        merchants: 4,
        closed_merchants: Some(0),
        rate: 10.0,
        backlog: std::time::Duration::from_secs(1200),
        late_fraction: 0.3,
        max_lateness: std::time::Duration::from_secs(1800),
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let raw = Raw::new(sim.base_url()).await;
    let accounts = serde_json::to_string(&sim.xmids()[..4]).unwrap();
    let fields = r#"["id","created","transactionDateAndTime"]"#;
    // The truth, by another road: every record of an export over transaction time.
    let all = raw
        .export_all(&[
            ("accountNumbers", &accounts),
            ("dr_type", "abs"),
            ("dr_from", &iso(0)),
            ("dr_to", &iso(i64::from(i32::MAX) * 1000)),
            ("sort", "transactionDateAndTime:asc"),
            ("size", "100"),
            ("fields", fields),
        ])
        .await;
    assert!(all.len() > 10_000, "{} records", all.len());
    let mut by_created: Vec<(i64, String, i64)> = all
        .iter()
        .map(|r| {
            (
                ms_of(&r["created"]),
                r["id"].as_str().unwrap().to_string(),
                ms_of(&r["transactionDateAndTime"]),
            )
        })
        .collect();
    by_created.sort();
    // Bounds on two records' own stamps: both ends are inclusive.
    let n = by_created.len();
    let (gte, lte) = (by_created[n / 4].0, by_created[n / 2].0);
    let expected: Vec<&(i64, String, i64)> = by_created
        .iter()
        .filter(|(c, _, _)| (gte..=lte).contains(c))
        .collect();
    assert!(
        expected.iter().any(|(c, _, tx)| c - tx > 60_000),
        "late records are in the range"
    );

    // The relay's query, on the wire.
    let filter = created_filter(gte, lte);
    let (total, got) = raw
        .get_all(&[
            ("accountNumbers", &accounts),
            ("sort", "created:asc,id:asc"),
            ("filter", &filter),
        ])
        .await;
    assert_eq!(total, expected.len());
    let got: Vec<(i64, String)> = got
        .iter()
        .map(|r| (ms_of(&r["created"]), r["id"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(i64, String)> = expected.iter().map(|(c, id, _)| (*c, id.clone())).collect();
    assert_eq!(got, expected, "same records, in created order then id");
}

#[tokio::test]
async fn records_are_searchable_only_after_the_index_delay() {
    // Long enough that the first query comes within it even from a debug build on a busy
    // machine (400 ms was not, under CI's load).
    let sim = start_sim(SimConfig {
        index_delay: std::time::Duration::from_millis(1_500),
        ..quiet_sim()
    })
    .await;
    let raw = Raw::new(sim.base_url()).await;
    let http = reqwest::Client::new();
    let before = chrono::Utc::now().timestamp_millis();
    let r = http
        .post(format!("{}/_sim/generate", sim.base_url()))
        .json(&json!({"count": 400}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = chrono::Utc::now().timestamp_millis();
    let everything = [("dr_type", "q"), ("dr_quick", "last_2_h")];
    assert_eq!(raw.total(&everything).await, 0, "none searchable at once");
    let (status, opened) = raw.post(EXPORT, &everything, "").await;
    assert_eq!(status, 200);
    assert_eq!(opened["totalRecords"], 0, "nor by an export");

    tokio::time::sleep(std::time::Duration::from_millis(1_900)).await;
    let most = raw.total(&everything).await;
    assert!(
        (340..400).contains(&most),
        "{most}: about 5 % indexed later than the delay"
    );
    tokio::time::sleep(std::time::Duration::from_millis(6_000)).await;
    let (total, records) = raw.get_all(&everything).await;
    assert_eq!(total, 400, "all of them after 5 times the delay");
    for r in &records {
        let created = ms_of(&r["created"]);
        assert!(
            (before..=after).contains(&created),
            "created when generated"
        );
    }
}

#[tokio::test]
async fn refuse_created_answers_400_to_queries_on_created() {
    let sim = start_sim(quiet_sim()).await;
    let now = chrono::Utc::now();
    sim.generate(20, &[], now - chrono::Duration::minutes(5), now)
        .unwrap();
    set_faults(&sim, json!({"refuse_created": true})).await;
    let raw = Raw::new(sim.base_url()).await;
    let filter = created_filter(now.timestamp_millis() - 600_000, now.timestamp_millis());
    let nested =
        json!({"must": [{"bool": {"should": [{"exists": {"field": "created"}}]}}]}).to_string();
    for (query, message) in [
        (
            vec![("sort", "created:asc,id:asc")],
            "No mapping found for [created]",
        ),
        (vec![("filter", filter.as_str())], "[created]"),
        (vec![("filter", nested.as_str())], "[created]"),
    ] {
        let (status, body) = raw.get(AUTHORIZATIONS, &query).await;
        assert_eq!(status, 400, "{query:?}");
        assert_eq!(body["code"], 400);
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{body}"
        );
        let (status, body) = raw.post(EXPORT, &query, "{}").await;
        assert_eq!(status, 400, "export {query:?}: {body}");
    }
    let (status, body) = raw
        .get(AUTHORIZATIONS, &[("sort", "transactionDateAndTime:asc")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["totalRecords"], 20,
        "transaction-time queries still work"
    );
    set_faults(&sim, json!({})).await;
    let (status, _) = raw.get(AUTHORIZATIONS, &[("sort", "created:asc")]).await;
    assert_eq!(status, 200, "and created ones once the fault is cleared");
}

#[tokio::test]
async fn hide_from_created_rate_hides_records_from_created_queries_only() {
    let sim = start_sim(quiet_sim()).await;
    let xmids = sim.xmids();
    let now = chrono::Utc::now();
    sim.generate(400, &xmids[..3], now - chrono::Duration::hours(3), now)
        .unwrap();
    set_faults(&sim, json!({"hide_from_created_rate": 0.25})).await;
    let raw = Raw::new(sim.base_url()).await;
    let accounts = serde_json::to_string(&xmids[..3]).unwrap();
    let filter = created_filter(now.timestamp_millis() - 60_000, i64::from(i32::MAX) * 1000);
    let created_query = [
        ("accountNumbers", accounts.as_str()),
        ("sort", "created:asc,id:asc"),
        ("filter", filter.as_str()),
    ];
    let (total, on_created) = raw.get_all(&created_query).await;
    assert_eq!(total, on_created.len());
    assert!(
        (240..360).contains(&total),
        "{total} of 400 seen by created"
    );
    let (_, again) = raw.get_all(&created_query).await;
    assert_eq!(
        ids(&json!({"records": on_created})),
        ids(&json!({"records": again})),
        "always the same ones hidden"
    );
    let sorted_only = raw
        .total(&[
            ("accountNumbers", accounts.as_str()),
            ("sort", "created:asc"),
        ])
        .await;
    assert_eq!(
        sorted_only as usize, total,
        "a sort on created hides them too"
    );

    let tx = [
        ("accountNumbers", accounts.as_str()),
        ("dr_type", "q"),
        ("dr_quick", "last_4_h"),
        ("sort", "transactionDateAndTime:asc"),
    ];
    assert_eq!(
        raw.total(&tx).await,
        400,
        "transaction-time queries see all"
    );
    let exported = raw.export_all(&tx).await;
    assert_eq!(exported.len(), 400, "and so do exports");
    let seen: std::collections::HashSet<String> =
        ids(&json!({ "records": on_created })).into_iter().collect();
    assert!(exported
        .iter()
        .any(|r| !seen.contains(r["id"].as_str().unwrap())));
}

/// The `Date` header of an answer, which must be there once.
fn date_of(r: &reqwest::Response) -> i64 {
    let dates: Vec<_> = r.headers().get_all("date").iter().collect();
    assert_eq!(dates.len(), 1, "one Date header: {dates:?}");
    chrono::DateTime::parse_from_rfc2822(dates[0].to_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn a_clock_offset_moves_created_stamps_and_the_date_header() {
    let hour = 3_600_000;
    let sim = start_sim(SimConfig {
        faults: mxc_sim::Faults {
            clock_offset_ms: hour,
            ..Default::default()
        },
        ..quiet_sim()
    })
    .await;
    let raw = Raw::new(sim.base_url()).await;
    let http = reqwest::Client::new();
    // Transaction times in the half hour before the simulator's clock.
    let ahead = chrono::Utc::now() + chrono::Duration::milliseconds(hour);
    let r = http
        .post(format!("{}/_sim/generate", sim.base_url()))
        .json(&json!({"count": 10, "from": ahead - chrono::Duration::minutes(30), "to": ahead}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let now = chrono::Utc::now().timestamp_millis();
    let answer = http
        .get(format!("{}{AUTHORIZATIONS}", sim.base_url()))
        .bearer_auth(&raw.token)
        .send()
        .await
        .unwrap();
    let date = date_of(&answer);
    assert!((date - (now + hour)).abs() < 3_000, "Date one hour ahead");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["totalRecords"], 10);
    for r in body["records"].as_array().unwrap() {
        let created = ms_of(&r["created"]);
        assert!(
            (created - (now + hour)).abs() < 3_000,
            "created one hour ahead"
        );
    }
    // Every answer carries it: an error, the control surface, an unknown path.
    for url in ["/_sim/stats", "/no/such/path", AUTHORIZATIONS] {
        let r = http
            .get(format!("{}{url}", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert!((date_of(&r) - (now + hour)).abs() < 3_000, "{url}");
    }
    // dr_quick follows the clock: the records are in its last hour (not the machine's).
    let recent = raw
        .total(&[("dr_type", "q"), ("dr_quick", "last_1_h")])
        .await;
    assert_eq!(recent, 10);

    // Set at run time, behind the machine's clock.
    set_faults(&sim, json!({"clock_offset_ms": -600_000})).await;
    let r = http
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        (date_of(&r) - (now - 600_000)).abs() < 3_000,
        "Date ten minutes behind"
    );
    let bad = http
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"clock_offset_ms": 30 * 86_400_000i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn exports_open_as_public_clients_open_them() {
    let sim = start_sim(quiet_sim()).await;
    let now = chrono::Utc::now();
    sim.generate(150, &[], now - chrono::Duration::minutes(30), now)
        .unwrap();
    let raw = Raw::new(sim.base_url()).await;
    let query = [("size", "100"), ("sort", "transactionDateAndTime:asc")];
    // Exactly what a public client sends: POST, Content-Type application/json, body {}.
    let r = raw
        .http
        .post(format!("{}{EXPORT}", sim.base_url()))
        .query(&query)
        .bearer_auth(&raw.token)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["recordCount"], 100);
    assert_eq!(first["totalRecords"], 150);
    let scroll = first["_scroll_id"].as_str().unwrap().to_string();
    // The next page, with a key the simulator does not know.
    let (status, second) = raw
        .post(
            EXPORT,
            &query,
            &json!({"scrollId": scroll, "size": 100}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["recordCount"], 50);
    for body in ["", "  \n", r#"{"scrollId": null}"#] {
        let (status, page) = raw.post(EXPORT, &query, body).await;
        assert_eq!(status, 200, "{body:?}: {page}");
        assert_eq!(page["recordCount"], 100, "{body:?} opens");
    }
    for body in ["[1]", r#"{"scrollId": 7}"#, "{"] {
        let (status, page) = raw.post(EXPORT, &query, body).await;
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(page["code"], 400);
    }
}

#[tokio::test]
async fn what_an_elasticsearch_backed_api_accepts_is_accepted() {
    let sim = start_sim(quiet_sim()).await;
    let now = chrono::Utc::now();
    sim.generate(30, &[], now - chrono::Duration::minutes(30), now)
        .unwrap();
    let raw = Raw::new(sim.base_url()).await;
    // size=0: the count without records.
    let (status, body) = raw.get(AUTHORIZATIONS, &[("size", "0")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["totalRecords"].as_u64(), body["recordCount"].as_u64()),
        (Some(30), Some(0))
    );
    // Spaces after commas, an upper-case direction, a trailing comma.
    let (status, spaced) = raw
        .get(
            AUTHORIZATIONS,
            &[("sort", "created:asc, id:ASC,"), ("size", "30")],
        )
        .await;
    assert_eq!(status, 200, "{spaced}");
    let (_, plain) = raw
        .get(
            AUTHORIZATIONS,
            &[("sort", "created:asc,id:asc"), ("size", "30")],
        )
        .await;
    assert_eq!(ids(&spaced), ids(&plain));
    // Unknown parameters are ignored; `from` past the end is an empty page.
    let (status, body) = raw
        .get(
            AUTHORIZATIONS,
            &[("from", "500"), ("timezone", "UTC"), ("_", "1")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["totalRecords"].as_u64(), body["recordCount"].as_u64()),
        (Some(30), Some(0))
    );
    // A `created` bound that is no instant is refused, as Elasticsearch refuses it.
    let bad = json!({"must": [{"range": {"created": {"gte": "yesterday-ish"}}}]}).to_string();
    let (status, body) = raw.get(AUTHORIZATIONS, &[("filter", &bad)]).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("failed to parse date field"),
        "{body}"
    );
}
