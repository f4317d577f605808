//! Bad input answers a 4xx problem document, never a 500.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{problem, spawn_app};

#[tokio::test]
async fn malformed_json_is_400_and_the_wrong_content_type_415() {
    let api = spawn_app().await;
    let response = api
        .raw()
        .post(api.url("/v1/organizations"))
        .bearer_auth(&api.admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::BAD_REQUEST).await;
    let response = api
        .raw()
        .post(api.url("/v1/organizations"))
        .bearer_auth(&api.admin)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_422_naming_the_problem() {
    let api = spawn_app().await;
    let response = api
        .post(
            "/v1/organizations",
            &api.admin,
            &json!({"name": "x", "kind": "utility", "color": "red"}),
        )
        .send()
        .await
        .expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("color")),
        "{body}"
    );
    let response = api
        .post(
            "/v1/organizations",
            &api.admin,
            &json!({"name": "x", "kind": "planet"}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn bad_path_ids_and_query_strings_are_400() {
    let api = spawn_app().await;
    let response = api
        .get("/v1/programs/not-a-uuid", &api.admin)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::BAD_REQUEST).await;
    let response = api
        .get("/v1/programs?limit=abc", &api.admin)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::BAD_REQUEST).await;
    let response = api
        .get("/v1/programs?status=sleeping", &api.admin)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::BAD_REQUEST).await;
    let response = api
        .get("/v1/programs?limit=1000", &api.admin)
        .send()
        .await
        .expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "limit");
    let response = api
        .get("/v1/programs?cursor=zzzz", &api.admin)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let api = spawn_app().await;
    let huge = "x".repeat(pmcore_api::BODY_LIMIT_BYTES + 10);
    let response = api
        .post(
            "/v1/organizations",
            &api.admin,
            &json!({"name": huge, "kind": "utility"}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let api = spawn_app().await;
    let response = api
        .get("/v1/nothing-here", &api.admin)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn dates_the_database_cannot_store_are_client_errors_not_500s() {
    let api = spawn_app().await;
    // chrono parses years back to 262144 BC; Postgres stores from 4713 BC. (Its upper
    // end, 294276 AD, is past chrono's, so only the early side can overflow.)
    let path = "/v1/settlements?from=-9999-01-01T00%3A00%3A00Z&to=2026-01-01T00%3A00%3A00Z";
    let response = api.get(path, &api.admin).send().await.expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body.to_string()
            .contains("outside what the database stores"),
        "{body}"
    );
    let path = "/v1/settlements?from=2026-01-01T00%3A00%3A00Z&to=%2B262000-01-01T00%3A00%3A00Z";
    let response = api.get(path, &api.admin).send().await.expect("request");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a far but storable year is fine"
    );
}
