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

#[tokio::test]
async fn a_disabled_client_is_refused_at_once_and_every_change_is_published() {
    use rdkafka::{Message, message::Headers};

    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let ok = api
        .get("/v1/ders", &caller.token)
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let client: uuid::Uuid =
        sqlx::query_scalar("select id from pm.api_client where organization_id = $1")
            .bind(caller.organization_id)
            .fetch_one(&api.db.pool)
            .await
            .expect("client");
    let path = format!(
        "/v1/organizations/{}/clients/{client}/disable",
        caller.organization_id
    );
    // Only the utility's admins disable clients.
    let r = api
        .post(&path, &caller.token, &serde_json::json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    for _ in 0..2 {
        let r = api
            .post(&path, &api.admin, &serde_json::json!({}))
            .send()
            .await
            .expect("request");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::OK,
            "disabling twice is fine"
        );
    }
    // Its unexpired token is refused now, not at expiry.
    let r = api
        .get("/v1/ders", &caller.token)
        .send()
        .await
        .expect("request");
    crate::helpers::problem(r, reqwest::StatusCode::UNAUTHORIZED).await;
    let other = format!(
        "/v1/organizations/{}/clients/{}/disable",
        caller.organization_id,
        uuid::Uuid::now_v7()
    );
    let r = api
        .post(&other, &api.admin, &serde_json::json!({}))
        .send()
        .await
        .expect("request");
    crate::helpers::problem(r, reqwest::StatusCode::NOT_FOUND).await;

    // Organization created, client created, client disabled (once), on the topic.
    let consumer = crate::helpers::topic_reader(&api.kafka, "pm.organizations.v1");
    let mut seen = Vec::new();
    while !seen.contains(&"pmcore.api-client.disabled.v1".to_owned()) {
        let m = tokio::time::timeout(std::time::Duration::from_secs(60), consumer.recv())
            .await
            .expect("events arrive")
            .expect("message");
        if m.key() != Some(caller.organization_id.to_string().as_bytes()) {
            continue;
        }
        let ce_type = m
            .headers()
            .and_then(|h| h.iter().find(|x| x.key == "ce_type").and_then(|x| x.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        seen.push(ce_type);
    }
    assert_eq!(
        seen,
        vec![
            "pmcore.organization.created.v1".to_owned(),
            "pmcore.api-client.created.v1".to_owned(),
            "pmcore.api-client.disabled.v1".to_owned()
        ]
    );
}

#[tokio::test]
async fn refused_token_requests_reach_the_trail_as_one_counted_summary() {
    use rdkafka::Message;

    let api = crate::helpers::spawn_with(|c| c.refused_logins_interval_s = 1).await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let client: uuid::Uuid =
        sqlx::query_scalar("select id from pm.api_client where organization_id = $1")
            .bind(caller.organization_id)
            .fetch_one(&api.db.pool)
            .await
            .expect("client");
    for _ in 0..3 {
        assert!(api.token(client, "not-its-secret").await.is_none());
    }
    let stranger = uuid::Uuid::now_v7();
    assert!(api.token(stranger, "whatever").await.is_none());

    let consumer = crate::helpers::topic_reader(&api.kafka, "pm.organizations.v1");
    let mut seen: Vec<pmcore_events::domain::RefusedClient> = Vec::new();
    let count =
        |seen: &[pmcore_events::domain::RefusedClient], id: &uuid::Uuid, reason: &str| -> i64 {
            seen.iter()
                .filter(|c| c.client_id == Some(id.to_string()) && c.reason == reason)
                .map(|c| c.count)
                .sum()
        };
    // Refusals come in summaries, one per window; others (the test's own start-up,
    // polling for the bootstrap admin) may share them.
    while count(&seen, &client, "wrong_secret") < 3 || count(&seen, &stranger, "unknown_client") < 1
    {
        let m = tokio::time::timeout(std::time::Duration::from_secs(60), consumer.recv())
            .await
            .expect("a summary arrives")
            .expect("message");
        if m.key() != Some(b"api-logins".as_slice()) {
            continue;
        }
        let decoded =
            pmcore_events::avro::decode(m.payload().expect("payload"), None).expect("decodes");
        let summary: pmcore_events::domain::LoginsRefused =
            decoded.into_typed().expect("a logins-refused summary");
        assert_eq!(
            summary.total,
            summary.clients.iter().map(|c| c.count).sum::<i64>()
        );
        assert!(summary.window_start <= summary.window_end);
        seen.extend(summary.clients);
    }
    assert_eq!(
        count(&seen, &client, "wrong_secret"),
        3,
        "one count per refusal"
    );
    assert_eq!(count(&seen, &stranger, "unknown_client"), 1);
}
