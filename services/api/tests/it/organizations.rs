use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{problem, spawn_app};

#[tokio::test]
async fn an_admin_creates_an_organization_and_reads_it_back() {
    let api = spawn_app().await;
    let response = api
        .post(
            "/v1/organizations",
            &api.admin,
            &json!({"name": "SunPeak Aggregation", "kind": "aggregator"}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let created: Value = response.json().await.expect("json");
    assert_eq!(
        location,
        format!("/v1/organizations/{}", created["id"].as_str().expect("id"))
    );
    let read: Value = api
        .get(&location, &api.admin)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(read, created);
    let list: Value = api
        .get("/v1/organizations", &api.admin)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(
        list["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|o| o["id"] == created["id"]))
    );
}

#[tokio::test]
async fn a_taken_name_is_a_conflict() {
    let api = spawn_app().await;
    let body = json!({"name": "Twice", "kind": "aggregator"});
    let first = api
        .post("/v1/organizations", &api.admin, &body)
        .send()
        .await
        .expect("request");
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = api
        .post("/v1/organizations", &api.admin, &body)
        .send()
        .await
        .expect("request");
    problem(second, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn only_admins_manage_organizations() {
    let api = spawn_app().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let response = api
        .post(
            "/v1/organizations",
            &aggregator.token,
            &json!({"name": "Mine", "kind": "aggregator"}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
    let response = api
        .get("/v1/organizations", &aggregator.token)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn an_aggregator_sees_its_own_organization_and_not_others() {
    let api = spawn_app().await;
    let mine = api.caller("aggregator", &["aggregator"]).await;
    let theirs = api.caller("aggregator", &["aggregator"]).await;
    let own = api
        .get(
            &format!("/v1/organizations/{}", mine.organization_id),
            &mine.token,
        )
        .send()
        .await
        .expect("request");
    assert_eq!(own.status(), StatusCode::OK);
    let other = api
        .get(
            &format!("/v1/organizations/{}", theirs.organization_id),
            &mine.token,
        )
        .send()
        .await
        .expect("request");
    problem(other, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn client_secrets_are_shown_once_and_stored_hashed() {
    let api = spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let (hash,): (String,) =
        sqlx::query_as("select secret_hash from pm.api_client where organization_id = $1")
            .bind(caller.organization_id)
            .fetch_one(&api.db.pool)
            .await
            .expect("client row");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

#[tokio::test]
async fn utility_roles_are_refused_for_other_organizations_and_unknown_ones_404() {
    let api = spawn_app().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let response = api
        .post(
            &format!("/v1/organizations/{}/clients", aggregator.organization_id),
            &api.admin,
            &json!({"name": "sneaky", "roles": ["admin"]}),
        )
        .send()
        .await
        .expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "/roles");
    let response = api
        .post(
            &format!("/v1/organizations/{}/clients", Uuid::now_v7()),
            &api.admin,
            &json!({"name": "ghost", "roles": ["viewer"]}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}
