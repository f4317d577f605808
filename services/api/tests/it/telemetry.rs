use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApi, problem, spawn_app};

/// Two hours of 1 Hz readings from 2026-01-05T00:00Z, each minute a saw from 0 to
/// 59 kW, written as the worker writes them (raw rows and one-minute rollups).
async fn two_hours(api: &TestApi, der: &str) {
    sqlx::query("select pm.ensure_telemetry_partition('2026-01-05')")
        .execute(&api.db.pool)
        .await
        .expect("partition");
    sqlx::query(
        "with ins as (
             insert into pm.telemetry (der_id, ts, power_kw)
             select $1::uuid, ts, extract(second from ts)::float8
             from generate_series(timestamptz '2026-01-05T00:00:00Z', timestamptz '2026-01-05T01:59:59Z', interval '1 second') ts
             returning der_id, ts, power_kw)
         insert into pm.telemetry_1m (der_id, bucket, sum_kw, min_kw, max_kw, samples)
         select der_id, date_trunc('minute', ts), sum(power_kw), min(power_kw), max(power_kw), count(*)
         from ins group by 1, 2",
    )
    .bind(der)
    .execute(&api.db.pool)
    .await
    .expect("readings");
}

async fn der(api: &TestApi, token: &str, feeder: &str) -> String {
    let response = api
        .post(
            "/v1/ders",
            token,
            &json!({"der_type": "battery", "nameplate_kw": 60.0, "location": {"feeder": feeder}}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn get(api: &TestApi, token: &str, path: &str) -> (StatusCode, Value) {
    let response = api.get(path, token).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn one_der_downsampled_to_the_requested_resolution() {
    let api = spawn_app().await;
    let owner = api.caller("aggregator", &["aggregator"]).await;
    let id = der(&api, &owner.token, "F-9").await;
    two_hours(&api, &id).await;
    let base = format!("/v1/ders/{id}/telemetry?from=2026-01-05T00:00:00Z&to=2026-01-05T02:00:00Z");

    let (status, body) = get(&api, &owner.token, &format!("{base}&resolution=15m")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let points = body["points"].as_array().expect("points");
    assert_eq!(points.len(), 8);
    assert_eq!(points[1]["ts"], "2026-01-05T00:15:00Z");
    assert_eq!(points[1]["samples"], 900);
    assert_eq!(points[1]["avg_kw"], 29.5);
    assert_eq!(points[1]["min_kw"], 0.0);
    assert_eq!(points[1]["max_kw"], 59.0);

    let (_, body) = get(&api, &owner.token, &format!("{base}&resolution=1h")).await;
    assert_eq!(body["points"].as_array().map(Vec::len), Some(2));
    let (_, body) = get(
        &api,
        &owner.token,
        &format!("/v1/ders/{id}/telemetry?from=2026-01-05T00:00:00Z&to=2026-01-05T00:01:00Z&resolution=raw"),
    )
    .await;
    assert_eq!(body["points"].as_array().map(Vec::len), Some(60));
    assert_eq!(body["points"][7]["avg_kw"], 7.0);

    let stranger = api.caller("aggregator", &["aggregator"]).await;
    let (status, _) = get(&api, &stranger.token, &format!("{base}&resolution=15m")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another organization's DER is not there"
    );
}

#[tokio::test]
async fn ranges_that_cannot_be_answered_are_explained() {
    let api = spawn_app().await;
    let owner = api.caller("aggregator", &["aggregator"]).await;
    let id = der(&api, &owner.token, "F-9").await;
    let cases = [
        (
            "from=2026-01-05T02:00:00Z&to=2026-01-05T01:00:00Z",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "from=2026-01-05T00:00:00Z&to=2026-01-05T07:00:00Z&resolution=raw",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&resolution=1m",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "from=2026-01-05T00:00:00Z&to=2026-01-05T01:00:00Z&resolution=5m",
            StatusCode::BAD_REQUEST,
        ),
        ("to=2026-01-05T01:00:00Z", StatusCode::BAD_REQUEST),
    ];
    for (query, expected) in cases {
        let response = api
            .get(&format!("/v1/ders/{id}/telemetry?{query}"), &owner.token)
            .send()
            .await
            .expect("request");
        problem(response, expected).await;
    }
    let response = api
        .get(
            &format!(
                "/v1/ders/{}/telemetry?from=2026-01-05T00:00:00Z&to=2026-01-05T01:00:00Z",
                Uuid::now_v7()
            ),
            &owner.token,
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_feeder_aggregates_its_ders_the_caller_may_see() {
    let api = spawn_app().await;
    let owner = api.caller("aggregator", &["aggregator"]).await;
    let feeder = format!("F-{}", Uuid::now_v7().simple());
    for _ in 0..2 {
        let id = der(&api, &owner.token, &feeder).await;
        two_hours(&api, &id).await;
    }
    let query = format!(
        "/v1/telemetry/aggregate?feeder={feeder}&from=2026-01-05T00:00:00Z&to=2026-01-05T02:00:00Z&resolution=1h"
    );
    let (status, body) = get(&api, &owner.token, &query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ders"], 2);
    assert_eq!(body["points"][0]["total_kw"], 59.0);
    assert_eq!(body["points"][0]["ders_reporting"], 2);
    let stranger = api.caller("aggregator", &["aggregator"]).await;
    let (_, body) = get(&api, &stranger.token, &query).await;
    assert_eq!(body["ders"], 0);
    assert_eq!(body["points"], json!([]));
    let (status, _) = get(
        &api,
        &owner.token,
        "/v1/telemetry/aggregate?from=2026-01-05T00:00:00Z&to=2026-01-05T02:00:00Z",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "feeder or program_id is required"
    );
}

#[tokio::test]
async fn anomalies_are_listed_for_their_organization() {
    let api = spawn_app().await;
    let owner = api.caller("aggregator", &["aggregator"]).await;
    let id = der(&api, &owner.token, "F-1").await;
    sqlx::query(
        "insert into pm.telemetry_anomaly (id, organization_id, der_id, kind, detail, value_kw, observed_at)
         values ($1, $2, $3::uuid, 'out_of_range', 'too much', 99, now())",
    )
    .bind(Uuid::now_v7())
    .bind(owner.organization_id)
    .bind(&id)
    .execute(&api.db.pool)
    .await
    .expect("anomaly");
    let (status, body) = get(
        &api,
        &owner.token,
        &format!("/v1/telemetry/anomalies?der_id={id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["kind"], "out_of_range");
    assert_eq!(body["items"][0]["value_kw"], 99.0);
    let (_, body) = get(
        &api,
        &owner.token,
        "/v1/telemetry/anomalies?kind=stuck_value",
    )
    .await;
    assert_eq!(body["items"], json!([]));
    let stranger = api.caller("aggregator", &["aggregator"]).await;
    let (_, body) = get(&api, &stranger.token, "/v1/telemetry/anomalies").await;
    assert_eq!(body["items"], json!([]));
    let (status, _) = get(&api, &owner.token, "/v1/telemetry/anomalies?kind=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_program_aggregates_its_approved_ders_only() {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let owner = api.caller("aggregator", &["aggregator"]).await;
    let program: Value = api
        .post("/v1/programs", &manager, &crate::helpers::program_in())
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let program = program["id"].as_str().expect("id").to_owned();
    for status in ["approved", "rejected"] {
        let id = der(&api, &owner.token, "F-1").await;
        two_hours(&api, &id).await;
        sqlx::query(
            "insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw, status)
             values ($1, $2::uuid, $3::uuid, $4, 5, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(&program)
        .bind(&id)
        .bind(owner.organization_id)
        .bind(status)
        .execute(&api.db.pool)
        .await
        .expect("enrollment");
    }
    let (status, body) = get(
        &api,
        &manager,
        &format!("/v1/telemetry/aggregate?program_id={program}&from=2026-01-05T00:00:00Z&to=2026-01-05T01:00:00Z&resolution=1h"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ders"], 1, "the rejected DER is not in the program");
    assert_eq!(body["points"][0]["total_kw"], 29.5);
}
