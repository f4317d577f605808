use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    gateways::register,
    helpers::{Caller, TestApi, problem, program_in, spawn_app},
};

pub(crate) struct Scene {
    pub(crate) api: TestApi,
    pub(crate) manager: String,
    pub(crate) aggregator: Caller,
    pub(crate) program: String,
    pub(crate) der: String,
}

/// An active program (`limits` overridable) with one actively enrolled DER.
pub(crate) async fn scene(max_events: i32) -> Scene {
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

pub(crate) fn event(s: &Scene, starts_in_min: i64, minutes: i64) -> Value {
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

pub(crate) async fn schedule(s: &Scene, body: &Value) -> reqwest::Response {
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

#[tokio::test]
async fn reasons_longer_than_a_thousand_characters_are_refused() {
    let s = scene(5).await;
    let created: Value = schedule(&s, &event(&s, 24 * 60, 60))
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let long = "x".repeat(1001);
    for (url, token, body) in [
        (
            format!("/v1/dispatch-events/{id}/opt-outs"),
            &s.aggregator.token,
            json!({"der_id": s.der, "reason": long}),
        ),
        (
            format!("/v1/dispatch-events/{id}/cancel"),
            &s.manager,
            json!({"reason": long}),
        ),
    ] {
        let p = problem(
            s.api
                .post(&url, token, &body)
                .send()
                .await
                .expect("request"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(p["errors"][0]["field"], "/reason", "{url}");
    }
    let enrollment: String = sqlx::query_scalar("select id::text from pm.enrollment limit 1")
        .fetch_one(&s.api.db.pool)
        .await
        .expect("enrollment");
    problem(
        s.api
            .post(
                &format!("/v1/enrollments/{enrollment}/reject"),
                &s.manager,
                &json!({"reason": "y".repeat(1001)}),
            )
            .send()
            .await
            .expect("request"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

/// What the scheduler and a relay would have recorded for the scene's DER: the
/// event started an hour ago, its command delivered and applied; telemetry says the
/// DER drew 3 kW in the hour before and 1 kW since.
async fn run_event(s: &Scene, id: &str) {
    let pool = &s.api.db.pool;
    let statements = [
        "update pm.dispatch_event set status = 'active', starts_at = now() - interval '1 hour',
             ends_at = now() + interval '1 hour', started_at = date_trunc('minute', now()) - interval '1 hour',
             late_by_ms = 0, allocated_kw = 4, participant_count = 1 where id = $1::uuid",
        "insert into pm.dispatch_allocation (event_id, der_id, gateway_id, organization_id,
             committed_kw, allocated_kw, command_id, command_kind, command_value_kw, command_sent_at)
         select e.id, d.id, d.gateway_id, d.organization_id, 4, 4, gen_random_uuid(), 'curtail_kw', 4,
                now() - interval '1 hour'
           from pm.dispatch_event e, pm.der d where e.id = $1::uuid",
        "insert into pm.der_command (id, gateway_id, der_id, event_id, kind, value_kw, start_at, end_at,
             expires_at, status, delivered_at, acked_at)
         select command_id, gateway_id, der_id, event_id, 'curtail_kw', 4, now(), now(), now(),
                'applied', now() - interval '59 minutes', now() - interval '59 minutes'
           from pm.dispatch_allocation where event_id = $1::uuid",
        "insert into pm.telemetry_1m (der_id, bucket, sum_kw, min_kw, max_kw, samples)
         select a.der_id, date_trunc('minute', now()) - make_interval(mins => m),
                case when m > 60 then 180 else 60 end, 1, 3, 60
           from pm.dispatch_allocation a, generate_series(1, 119) m where a.event_id = $1::uuid",
    ];
    for sql in statements {
        sqlx::query(sql).bind(id).execute(pool).await.expect(sql);
    }
}

#[tokio::test]
async fn a_running_event_shows_each_ders_command_and_the_fleets_response() {
    let s = scene(5).await;
    let created: Value = schedule(&s, &event(&s, 24 * 60, 60))
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    run_event(&s, id).await;

    let commands: Value = s
        .api
        .get(
            &format!("/v1/dispatch-events/{id}/commands"),
            &s.aggregator.token,
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let command = &commands["items"][0];
    assert_eq!(command["der_id"], s.der.as_str());
    assert_eq!(
        (command["status"].as_str(), command["allocated_kw"].as_f64()),
        (Some("applied"), Some(4.0))
    );
    let none: Value = s
        .api
        .get(
            &format!("/v1/dispatch-events/{id}/commands?status=pending"),
            &s.manager,
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));

    let status: Value = s
        .api
        .get(&format!("/v1/dispatch-events/{id}/status"), &s.manager)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "active");
    assert_eq!(status["commands"]["applied"], 1);
    assert_eq!(status["participants"], 1);
    assert_eq!(status["allocated_kw"], 4.0);
    let delivered = status["delivered_kw"].as_f64().expect("delivered");
    assert!(
        (delivered - 2.0).abs() < 1e-9,
        "3 kW before, 1 kW during: {status}"
    );
    let event: Value = s
        .api
        .get(&format!("/v1/dispatch-events/{id}"), &s.manager)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(event["late_by_ms"], 0);
    assert_eq!(event["participant_count"], 1);

    // An aggregator that takes no part sees neither.
    let stranger = s.api.caller("aggregator", &["aggregator"]).await;
    for path in ["commands", "status"] {
        problem(
            s.api
                .get(&format!("/v1/dispatch-events/{id}/{path}"), &stranger.token)
                .send()
                .await
                .expect("request"),
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    // A running event can be cancelled; the scheduler then releases its DERs.
    let cancelled = s
        .api
        .post(
            &format!("/v1/dispatch-events/{id}/cancel"),
            &s.manager,
            &json!({"reason": "grid is fine"}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(cancelled.status(), StatusCode::OK);
}
