use std::time::Duration;

use pmcore_testkit::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    gateways::register,
    helpers::{Caller, TestApi, problem, program_in, spawn_app, spawn_worker},
};

struct Scene {
    api: TestApi,
    manager: String,
    aggregator: Caller,
    program: String,
}

/// An open battery program, an aggregator, and the worker deciding eligibility.
async fn scene() -> (Scene, pmcore_testkit::Running) {
    let api = spawn_app().await;
    let worker = spawn_worker(&api).await;
    let manager = api.program_manager().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let response = api
        .post("/v1/programs", &manager, &program_in())
        .send()
        .await
        .expect("request");
    let program: Value = response.json().await.expect("json");
    let program = program["id"].as_str().expect("id").to_owned();
    let opened = api
        .post(
            &format!("/v1/programs/{program}/open"),
            &manager,
            &json!({}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(opened.status(), StatusCode::OK);
    (
        Scene {
            api,
            manager,
            aggregator,
            program,
        },
        worker,
    )
}

async fn der(s: &Scene, der_type: &str, with_gateway: bool) -> String {
    let gateway = if with_gateway {
        register(&s.api, &s.aggregator.token).await["id"].clone()
    } else {
        Value::Null
    };
    let body = json!({"der_type": der_type, "nameplate_kw": 5.0, "gateway_id": gateway});
    let response = s
        .api
        .post("/v1/ders", &s.aggregator.token, &body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn enroll(s: &Scene, der: &str, kw: f64) -> reqwest::Response {
    s.api
        .post(
            "/v1/enrollments",
            &s.aggregator.token,
            &json!({"program_id": s.program, "der_id": der, "committed_kw": kw}),
        )
        .send()
        .await
        .expect("request")
}

async fn decided(s: &Scene, id: &str) -> Value {
    eventually(Duration::from_secs(60), "the worker's decision", || async {
        let e: Value = s
            .api
            .get(&format!("/v1/enrollments/{id}"), &s.aggregator.token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (e["status"] != "requested").then_some(e)
    })
    .await
}

#[tokio::test]
async fn an_eligible_der_is_approved_by_the_worker_with_its_checks_recorded() {
    let (s, _worker) = scene().await;
    let der = der(&s, "battery", true).await;
    let response = enroll(&s, &der, 4.0).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let requested: Value = response.json().await.expect("json");
    assert_eq!(requested["status"], "requested");
    let e = decided(&s, requested["id"].as_str().expect("id")).await;
    assert_eq!(e["status"], "approved", "{e}");
    assert_eq!(e["decided_by"], "worker:eligibility");
    assert!(
        e["eligibility"]["checks"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["passed"] == true))
    );
}

#[tokio::test]
async fn an_ineligible_der_is_rejected_with_the_reasons() {
    let (s, _worker) = scene().await;
    let der = der(&s, "ev_charger", false).await;
    let requested: Value = enroll(&s, &der, 4.0).await.json().await.expect("json");
    let e = decided(&s, requested["id"].as_str().expect("id")).await;
    assert_eq!(e["status"], "rejected");
    let reason = e["reason"].as_str().expect("reason");
    assert!(
        reason.contains("der_type") && reason.contains("gateway_assigned"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_program_manager_can_override_and_a_participant_can_withdraw() {
    let (s, _worker) = scene().await;
    let der = der(&s, "ev_charger", true).await;
    let requested: Value = enroll(&s, &der, 2.0).await.json().await.expect("json");
    let id = requested["id"].as_str().expect("id");
    assert_eq!(decided(&s, id).await["status"], "rejected");

    let url = |action: &str| format!("/v1/enrollments/{id}/{action}");
    let response = s
        .api
        .post(&url("approve"), &s.aggregator.token, &json!({}))
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
    let response = s
        .api
        .post(
            &url("approve"),
            &s.manager,
            &json!({"reason": "pilot exception"}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let approved: Value = response.json().await.expect("json");
    assert_eq!(
        (approved["status"].as_str(), approved["reason"].as_str()),
        (Some("approved"), Some("pilot exception"))
    );

    let response = s
        .api
        .post(&url("reject"), &s.manager, &json!({}))
        .send()
        .await
        .expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "/reason");

    let response = s
        .api
        .post(&url("withdraw"), &s.aggregator.token, &json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.json::<Value>().await.expect("json")["status"],
        "withdrawn"
    );
    let response = s
        .api
        .post(&url("withdraw"), &s.aggregator.token, &json!({}))
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn approved_enrollments_become_active_when_the_program_starts() {
    let (s, _worker) = scene().await;
    let der = der(&s, "battery", true).await;
    let requested: Value = enroll(&s, &der, 4.0).await.json().await.expect("json");
    let id = requested["id"].as_str().expect("id");
    assert_eq!(decided(&s, id).await["status"], "approved");
    let started = s
        .api
        .post(
            &format!("/v1/programs/{}/activate", s.program),
            &s.manager,
            &json!({}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(started.status(), StatusCode::OK);
    let e: Value = s
        .api
        .get(&format!("/v1/enrollments/{id}"), &s.aggregator.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(e["status"], "active");
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_stored() {
    let (s, _worker) = scene().await;
    let der = der(&s, "battery", true).await;
    problem(
        enroll(&s, &der, 50.0).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(enroll(&s, &der, 4.0).await.status(), StatusCode::CREATED);
    problem(enroll(&s, &der, 4.0).await, StatusCode::CONFLICT).await;

    let other = s.api.caller("aggregator", &["aggregator"]).await;
    let response = s
        .api
        .post(
            "/v1/enrollments",
            &other.token,
            &json!({"program_id": s.program, "der_id": der, "committed_kw": 1.0}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;

    let draft: Value = s
        .api
        .post("/v1/programs", &s.manager, &program_in())
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let response = s
        .api
        .post(
            "/v1/enrollments",
            &s.aggregator.token,
            &json!({"program_id": draft["id"], "der_id": der, "committed_kw": 1.0}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn enrollments_list_per_program_and_per_der_within_the_callers_organization() {
    let (s, _worker) = scene().await;
    let first = der(&s, "battery", true).await;
    let second = der(&s, "battery", true).await;
    for d in [&first, &second] {
        assert_eq!(enroll(&s, d, 1.0).await.status(), StatusCode::CREATED);
    }
    let per_program: Value = s
        .api
        .get(
            &format!("/v1/enrollments?program_id={}", s.program),
            &s.aggregator.token,
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(per_program["items"].as_array().map(Vec::len), Some(2));
    let per_der: Value = s
        .api
        .get(
            &format!("/v1/enrollments?der_id={first}"),
            &s.aggregator.token,
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(per_der["items"].as_array().map(Vec::len), Some(1));
    let other = s.api.caller("aggregator", &["aggregator"]).await;
    let theirs: Value = s
        .api
        .get(
            &format!("/v1/enrollments?program_id={}", s.program),
            &other.token,
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["items"].as_array().map(Vec::len), Some(0));
}
