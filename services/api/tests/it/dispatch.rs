use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    gateways::register,
    helpers::{Caller, TestApi, problem, program_in, spawn_app},
};

struct Scene {
    api: TestApi,
    manager: String,
    aggregator: Caller,
    program: String,
    der: String,
}

/// An active program (`limits` overridable) with one actively enrolled DER.
async fn scene(max_events: i32) -> Scene {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let mut body = program_in();
    body["limits"]["max_events_per_season"] = json!(max_events);
    let program: Value = api
        .post("/v1/programs", &manager, &body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let program = program["id"].as_str().expect("id").to_owned();
    for action in ["open", "activate"] {
        let r = api
            .post(
                &format!("/v1/programs/{program}/{action}"),
                &manager,
                &json!({}),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let gateway = register(&api, &aggregator.token).await;
    let der: Value = api
        .post(
            "/v1/ders",
            &aggregator.token,
            &json!({"der_type": "battery", "nameplate_kw": 5.0, "gateway_id": gateway["id"]}),
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let der = der["id"].as_str().expect("id").to_owned();
    let enrollment: Value = api
        .post(
            "/v1/enrollments",
            &aggregator.token,
            &json!({"program_id": program, "der_id": der, "committed_kw": 4.0}),
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let approved: Value = api
        .post(
            &format!(
                "/v1/enrollments/{}/approve",
                enrollment["id"].as_str().expect("id")
            ),
            &manager,
            &json!({}),
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        approved["status"], "active",
        "approval in a running program takes effect at once"
    );
    Scene {
        api,
        manager,
        aggregator,
        program,
        der,
    }
}

fn event(s: &Scene, starts_in_min: i64, minutes: i64) -> Value {
    let starts = Utc::now() + Duration::minutes(starts_in_min);
    json!({
        "program_id": s.program,
        "starts_at": starts,
        "ends_at": starts + Duration::minutes(minutes),
        "target_kw": 2000.0,
        "signal": "curtail_kw",
        "signal_value": 2000.0,
    })
}

async fn schedule(s: &Scene, body: &Value) -> reqwest::Response {
    s.api
        .post("/v1/dispatch-events", &s.manager, body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_manager_schedules_an_event_within_the_limits_and_participants_see_it() {
    let s = scene(5).await;
    let response = schedule(&s, &event(&s, 24 * 60, 120)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["status"], "scheduled");
    let id = created["id"].as_str().expect("id");
    let seen: Value = s
        .api
        .get(&format!("/v1/dispatch-events/{id}"), &s.aggregator.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["id"], created["id"]);
    let tomorrow = Utc::now() + Duration::hours(20);
    let window = format!(
        "/v1/dispatch-events?program_id={}&from={}&to={}",
        s.program,
        tomorrow.format("%Y-%m-%dT%H:%M:%SZ"),
        (tomorrow + Duration::hours(10)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let listed: Value = s
        .api
        .get(&window, &s.aggregator.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    let outsider = s.api.caller("aggregator", &["aggregator"]).await;
    let response = s
        .api
        .get(&format!("/v1/dispatch-events/{id}"), &outsider.token)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn events_outside_the_programs_limits_are_refused() {
    let s = scene(1).await;
    let body = problem(
        schedule(&s, &event(&s, 10, 60)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        body["errors"][0]["field"], "/starts_at",
        "60 minutes' notice"
    );
    let body = problem(
        schedule(&s, &event(&s, 24 * 60, 300)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        body["errors"][0]["field"], "/ends_at",
        "at most 240 minutes"
    );
    problem(
        schedule(&s, &event(&s, 24 * 60, -5)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        schedule(&s, &event(&s, 24 * 60, 60)).await.status(),
        StatusCode::CREATED
    );
    problem(
        schedule(&s, &event(&s, 48 * 60, 60)).await,
        StatusCode::CONFLICT,
    )
    .await;
    let response = s
        .api
        .post(
            "/v1/dispatch-events",
            &s.aggregator.token,
            &event(&s, 24 * 60, 60),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_program_without_active_enrollments_or_not_running_cannot_dispatch() {
    let s = scene(5).await;
    let draft: Value = s
        .api
        .post("/v1/programs", &s.manager, &program_in())
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let mut body = event(&s, 24 * 60, 60);
    body["program_id"] = draft["id"].clone();
    problem(schedule(&s, &body).await, StatusCode::CONFLICT).await;
    let id = draft["id"].as_str().expect("id");
    for action in ["open", "activate"] {
        s.api
            .post(
                &format!("/v1/programs/{id}/{action}"),
                &s.manager,
                &json!({}),
            )
            .send()
            .await
            .expect("request");
    }
    let body = problem(schedule(&s, &body).await, StatusCode::CONFLICT).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no active enrollments"))
    );
}

#[tokio::test]
async fn a_scheduled_event_can_be_cancelled_once_with_a_reason() {
    let s = scene(5).await;
    let created: Value = schedule(&s, &event(&s, 24 * 60, 60))
        .await
        .json()
        .await
        .expect("json");
    let url = format!(
        "/v1/dispatch-events/{}/cancel",
        created["id"].as_str().expect("id")
    );
    problem(
        s.api
            .post(&url, &s.manager, &json!({"reason": " "}))
            .send()
            .await
            .expect("request"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let response = s
        .api
        .post(&url, &s.manager, &json!({"reason": "forecast changed"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let cancelled: Value = response.json().await.expect("json");
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["cancelled_reason"].as_str()
        ),
        (Some("cancelled"), Some("forecast changed"))
    );
    problem(
        s.api
            .post(&url, &s.manager, &json!({"reason": "again"}))
            .send()
            .await
            .expect("request"),
        StatusCode::CONFLICT,
    )
    .await;
}

#[tokio::test]
async fn a_participant_opts_an_enrolled_der_out_once() {
    let s = scene(5).await;
    let created: Value = schedule(&s, &event(&s, 24 * 60, 60))
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let url = format!("/v1/dispatch-events/{id}/opt-outs");
    let response = s
        .api
        .post(
            &url,
            &s.aggregator.token,
            &json!({"der_id": s.der, "reason": "customer away"}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    problem(
        s.api
            .post(&url, &s.aggregator.token, &json!({"der_id": s.der}))
            .send()
            .await
            .expect("request"),
        StatusCode::CONFLICT,
    )
    .await;
    let seen: Value = s
        .api
        .get(&format!("/v1/dispatch-events/{id}"), &s.aggregator.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["opt_outs"][0]["der_id"], s.der.as_str());

    // A DER that is not enrolled, and another organization's DER.
    let other: Value = s
        .api
        .post(
            "/v1/ders",
            &s.aggregator.token,
            &json!({"der_type": "battery", "nameplate_kw": 5.0}),
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let body = problem(
        s.api
            .post(&url, &s.aggregator.token, &json!({"der_id": other["id"]}))
            .send()
            .await
            .expect("request"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "/der_id");
    let outsider = s.api.caller("aggregator", &["aggregator"]).await;
    let response = s
        .api
        .post(&url, &outsider.token, &json!({"der_id": s.der}))
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}
