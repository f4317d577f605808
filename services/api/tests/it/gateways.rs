use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApi, problem, spawn_app};

pub(crate) async fn register(api: &TestApi, token: &str) -> Value {
    let response = api
        .post(
            "/v1/gateways",
            token,
            &json!({"name": "garage box", "firmware": "2.4.1"}),
        )
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn a_gateway_is_registered_with_a_secret_shown_once_and_stored_hashed() {
    let api = spawn_app().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let gateway = register(&api, &aggregator.token).await;
    let secret = gateway["secret"]
        .as_str()
        .expect("secret in the creation response");
    assert_eq!(
        gateway["organization_id"],
        aggregator.organization_id.to_string()
    );
    assert_eq!(gateway["online"], false);

    let id = gateway["id"].as_str().expect("id");
    let read: Value = api
        .get(&format!("/v1/gateways/{id}"), &aggregator.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(read.get("secret").is_none(), "never shown again");
    let hash: String = sqlx::query_scalar("select secret_hash from pm.gateway where id::text = $1")
        .bind(id)
        .fetch_one(&api.db.pool)
        .await
        .expect("row");
    assert!(hash.starts_with("$argon2id$") && !hash.contains(secret));
}

#[tokio::test]
async fn rotating_a_secret_replaces_it() {
    let api = spawn_app().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let gateway = register(&api, &aggregator.token).await;
    let id = gateway["id"].as_str().expect("id");
    let rotated = api
        .post(
            &format!("/v1/gateways/{id}/rotate-secret"),
            &aggregator.token,
            &json!({}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.expect("json");
    assert_ne!(rotated["secret"], gateway["secret"]);
}

#[tokio::test]
async fn another_organizations_gateway_is_404_and_lists_are_scoped() {
    let api = spawn_app().await;
    let mine = api.caller("aggregator", &["aggregator"]).await;
    let theirs = api.caller("aggregator", &["aggregator"]).await;
    let their_gateway = register(&api, &theirs.token).await;
    let id = their_gateway["id"].as_str().expect("id");
    problem(
        api.get(&format!("/v1/gateways/{id}"), &mine.token)
            .send()
            .await
            .expect("request"),
        StatusCode::NOT_FOUND,
    )
    .await;
    let response = api
        .post(
            &format!("/v1/gateways/{id}/rotate-secret"),
            &mine.token,
            &json!({}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
    let response = api
        .post(
            "/v1/gateways",
            &mine.token,
            &json!({"name": "x", "organization_id": theirs.organization_id}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
    register(&api, &mine.token).await;
    let list: Value = api
        .get(
            &format!("/v1/gateways?organization_id={}", theirs.organization_id),
            &mine.token,
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let owners: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|g| g["organization_id"].as_str())
        .collect();
    assert_eq!(
        owners,
        [mine.organization_id.to_string().as_str()],
        "a participant only ever sees its own"
    );
}

#[tokio::test]
async fn viewers_cannot_register_gateways() {
    let api = spawn_app().await;
    let viewer = api.caller("aggregator", &["viewer"]).await;
    let response = api
        .post("/v1/gateways", &viewer.token, &json!({"name": "x"}))
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
}
