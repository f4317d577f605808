use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    gateways::register,
    helpers::{TestApi, problem, spawn_app},
};

fn der(n: usize, gateway: Option<&str>) -> Value {
    json!({
        "external_id": format!("meter-{n}"),
        "der_type": if n.is_multiple_of(2) { "battery" } else { "thermostat" },
        "nameplate_kw": 5.0,
        "nameplate_kwh": if n.is_multiple_of(2) { json!(13.5) } else { json!(null) },
        "location": {"latitude": 37.77, "longitude": -122.42, "feeder": format!("F-{}", n % 3), "substation": "S-1"},
        "gateway_id": gateway,
    })
}

async fn list(api: &TestApi, token: &str, query: &str) -> Vec<Value> {
    let page: Value = api
        .get(&format!("/v1/ders?{query}"), token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    page["items"].as_array().cloned().expect("items")
}

#[tokio::test]
async fn a_der_is_registered_read_edited_and_decommissioned() {
    let api = spawn_app().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let gateway = register(&api, &aggregator.token).await;
    let gateway_id = gateway["id"].as_str().expect("id");
    let response = api
        .post("/v1/ders", &aggregator.token, &der(0, Some(gateway_id)))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "active");
    assert_eq!(created["gateway_id"], gateway_id);

    let edited = api
        .patch(
            &format!("/v1/ders/{id}"),
            &aggregator.token,
            &json!({"nameplate_kw": 7.5}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(edited.status(), StatusCode::OK);
    assert_eq!(
        edited.json::<Value>().await.expect("json")["nameplate_kw"],
        7.5
    );

    let gone = api
        .post(
            &format!("/v1/ders/{id}/decommission"),
            &aggregator.token,
            &json!({}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(gone.status(), StatusCode::OK);
    assert_eq!(
        gone.json::<Value>().await.expect("json")["status"],
        "decommissioned"
    );
    let again = api
        .post(
            &format!("/v1/ders/{id}/decommission"),
            &aggregator.token,
            &json!({}),
        )
        .send()
        .await
        .expect("request");
    problem(again, StatusCode::CONFLICT).await;
    let edit = api
        .patch(
            &format!("/v1/ders/{id}"),
            &aggregator.token,
            &json!({"nameplate_kw": 1.0}),
        )
        .send()
        .await
        .expect("request");
    problem(edit, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_bulk_registration_is_all_or_nothing_with_errors_per_item() {
    let api = spawn_app().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let mut items: Vec<Value> = (0..10).map(|n| der(n, None)).collect();
    items[3]["nameplate_kw"] = json!(-1);
    items[7]["gateway_id"] = json!(Uuid::now_v7());
    items[9]["external_id"] = json!("meter-0");
    let response = api
        .post("/v1/ders/bulk", &aggregator.token, &json!({"items": items}))
        .send()
        .await
        .expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"/items/3/nameplate_kw"), "{fields:?}");
    assert!(fields.contains(&"/items/7/gateway_id"), "{fields:?}");
    assert!(fields.contains(&"/items/9/external_id"), "{fields:?}");
    assert!(
        list(&api, &aggregator.token, "").await.is_empty(),
        "a bad batch registers nothing"
    );

    let good: Vec<Value> = (0..10).map(|n| der(n, None)).collect();
    let response = api
        .post("/v1/ders/bulk", &aggregator.token, &json!({"items": good}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(list(&api, &aggregator.token, "limit=100").await.len(), 10);

    let response = api
        .post(
            "/v1/ders/bulk",
            &aggregator.token,
            &json!({"items": [der(0, None)]}),
        )
        .send()
        .await
        .expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        body["errors"][0]["field"], "/items/0/external_id",
        "already used by this organization"
    );
    let response = api
        .post("/v1/ders/bulk", &aggregator.token, &json!({"items": []}))
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn lists_filter_by_type_feeder_substation_gateway_and_status() {
    let api = spawn_app().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let gateway = register(&api, &aggregator.token).await;
    let gateway_id = gateway["id"].as_str().expect("id");
    let items: Vec<Value> = (0..9)
        .map(|n| der(n, (n < 2).then_some(gateway_id)))
        .collect();
    let response = api
        .post("/v1/ders/bulk", &aggregator.token, &json!({"items": items}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let t = &aggregator.token;
    assert_eq!(list(&api, t, "der_type=battery").await.len(), 5);
    assert_eq!(list(&api, t, "feeder=F-1").await.len(), 3);
    assert_eq!(
        list(&api, t, "feeder=F-1&der_type=thermostat").await.len(),
        2
    );
    assert_eq!(list(&api, t, "substation=S-1").await.len(), 9);
    assert_eq!(
        list(&api, t, &format!("gateway_id={gateway_id}"))
            .await
            .len(),
        2
    );
    assert_eq!(list(&api, t, "status=decommissioned").await.len(), 0);
    let response = api
        .get("/v1/ders?der_type=windmill", t)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn an_aggregator_never_sees_or_touches_another_organizations_ders() {
    let api = spawn_app().await;
    let mine = api.caller("aggregator", &["aggregator"]).await;
    let theirs = api.caller("aggregator", &["aggregator"]).await;
    let response = api
        .post("/v1/ders", &theirs.token, &der(1, None))
        .send()
        .await
        .expect("request");
    let their_der: Value = response.json().await.expect("json");
    let id = their_der["id"].as_str().expect("id");
    problem(
        api.get(&format!("/v1/ders/{id}"), &mine.token)
            .send()
            .await
            .expect("request"),
        StatusCode::NOT_FOUND,
    )
    .await;
    let patch = api
        .patch(
            &format!("/v1/ders/{id}"),
            &mine.token,
            &json!({"nameplate_kw": 1.0}),
        )
        .send()
        .await
        .expect("request");
    problem(patch, StatusCode::NOT_FOUND).await;
    let gone = api
        .post(
            &format!("/v1/ders/{id}/decommission"),
            &mine.token,
            &json!({}),
        )
        .send()
        .await
        .expect("request");
    problem(gone, StatusCode::NOT_FOUND).await;
    assert!(
        list(
            &api,
            &mine.token,
            &format!("organization_id={}", theirs.organization_id)
        )
        .await
        .is_empty()
    );
    // A DER cannot be put behind another organization's gateway either.
    let their_gateway = register(&api, &theirs.token).await;
    let response = api
        .post(
            "/v1/ders",
            &mine.token,
            &der(2, their_gateway["id"].as_str()),
        )
        .send()
        .await
        .expect("request");
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "/gateway_id");
    // The utility's staff see everyone's.
    assert_eq!(
        list(
            &api,
            &api.admin,
            &format!("organization_id={}", theirs.organization_id)
        )
        .await
        .len(),
        1
    );
}
