use std::collections::BTreeSet;

use pmcore_kafka::KafkaConfig;
use rdkafka::{Message, message::Headers};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApi, problem, program_in, spawn_app};

async fn create(api: &TestApi, token: &str) -> Value {
    let response = api
        .post("/v1/programs", token, &program_in())
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn transition(api: &TestApi, token: &str, id: &str, action: &str) -> reqwest::Response {
    api.post(&format!("/v1/programs/{id}/{action}"), token, &json!({}))
        .send()
        .await
        .expect("request")
}

/// The `ce_type`s published for `subject`, read from the programs topic.
async fn published_types(kafka: &KafkaConfig, subject: &str, want: usize) -> Vec<(String, String)> {
    let consumer = crate::helpers::topic_reader(kafka, "pm.programs.v1");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < want {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("events arrive within 60 s")
            .expect("message");
        if message.key() != Some(subject.as_bytes()) {
            continue;
        }
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        seen.push((header("ce_type"), header("ce_principal")));
    }
    seen
}

#[tokio::test]
async fn a_program_manager_defines_edits_and_runs_a_program_through_its_lifecycle() {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let program = create(&api, &manager).await;
    let id = program["id"].as_str().expect("id").to_owned();
    assert_eq!(program["status"], "draft");
    assert_eq!(
        program["eligibility"]["der_types"],
        json!(["battery", "thermostat"])
    );

    let edited = api
        .patch(
            &format!("/v1/programs/{id}"),
            &manager,
            &json!({"target_capacity_kw": 2500.0}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(edited.status(), StatusCode::OK);
    let edited: Value = edited.json().await.expect("json");
    assert_eq!(edited["target_capacity_kw"], 2500.0);

    for (action, status) in [
        ("open", "open"),
        ("activate", "active"),
        ("close", "closed"),
    ] {
        let response = transition(&api, &manager, &id, action).await;
        assert_eq!(response.status(), StatusCode::OK, "{action}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], status);
    }

    // Every change published its event, in order, naming who acted.
    let events = published_types(&api.kafka, &id, 5).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "pmcore.program.created.v1",
            "pmcore.program.updated.v1",
            "pmcore.program.status-changed.v1",
            "pmcore.program.status-changed.v1",
            "pmcore.program.status-changed.v1",
        ]
    );
    assert!(events.iter().all(|(_, p)| p.starts_with("client:")));
}

#[tokio::test]
async fn only_a_draft_can_be_edited_and_illegal_transitions_conflict() {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let id = create(&api, &manager).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    problem(
        transition(&api, &manager, &id, "activate").await,
        StatusCode::CONFLICT,
    )
    .await;
    problem(
        transition(&api, &manager, &id, "close").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        transition(&api, &manager, &id, "open").await.status(),
        StatusCode::OK
    );
    let response = api
        .patch(
            &format!("/v1/programs/{id}"),
            &manager,
            &json!({"name": "late change"}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::CONFLICT).await;
    problem(
        transition(&api, &manager, &id, "open").await,
        StatusCode::CONFLICT,
    )
    .await;
}

#[tokio::test]
async fn invalid_programs_are_refused_field_by_field() {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let mut body = program_in();
    body["time_zone"] = json!("Mars/Olympus_Mons");
    body["target_capacity_kw"] = json!(-5);
    body["limits"]["max_event_duration_minutes"] = json!(0);
    let response = api
        .post("/v1/programs", &manager, &body)
        .send()
        .await
        .expect("request");
    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: BTreeSet<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "/time_zone",
            "/target_capacity_kw",
            "/limits/max_event_duration_minutes"
        ])
    );
}

#[tokio::test]
async fn aggregators_cannot_define_programs_and_never_see_drafts() {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let aggregator = api.caller("aggregator", &["aggregator"]).await;
    let response = api
        .post("/v1/programs", &aggregator.token, &program_in())
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;

    let draft = create(&api, &manager).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let offered = create(&api, &manager).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        transition(&api, &manager, &offered, "open").await.status(),
        StatusCode::OK
    );

    let response = api
        .get(&format!("/v1/programs/{draft}"), &aggregator.token)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
    let response = api
        .get(&format!("/v1/programs/{offered}"), &aggregator.token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let list: Value = api
        .get("/v1/programs", &aggregator.token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, [offered.as_str()]);
    let response = transition(&api, &aggregator.token, &offered, "close").await;
    problem(response, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn lists_filter_by_status_and_page_with_a_cursor() {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(
            create(&api, &manager).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    assert_eq!(
        transition(&api, &manager, &created[0], "open")
            .await
            .status(),
        StatusCode::OK
    );

    let open: Value = api
        .get("/v1/programs?status=open", &manager)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(open["items"].as_array().map(Vec::len), Some(1));

    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/programs?limit=2&cursor={c}"),
            None => "/v1/programs?limit=2".to_owned(),
        };
        let page: Value = api
            .get(&path, &manager)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        walked.extend(
            items
                .iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, created, "every program once, oldest first");
}

#[tokio::test]
async fn an_unknown_program_is_404() {
    let api = spawn_app().await;
    let response = api
        .get(&format!("/v1/programs/{}", Uuid::now_v7()), &api.admin)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn settlement_rules_default_round_trip_and_are_checked_against_the_method() {
    let api = spawn_app().await;
    let manager = api.program_manager().await;
    let created = create(&api, &manager).await;
    assert_eq!(created["settlement"]["interval_minutes"], 15);
    assert_eq!(created["settlement"]["holidays"]["nerc"], true);
    assert_eq!(created["settlement"]["capacity_events_per_month"], 4);

    let mut body = program_in();
    body["baseline_method"] = json!("x_of_y_high_5_10");
    body["settlement"] = json!({
        "baseline_params": {"weekday": {"min_days": 3}},
        "interval_minutes": 60,
        "holidays": {"nerc": false, "extra": ["2026-12-24"]},
        "penalty_rate_cents_kwh": 25
    });
    let response = api
        .post("/v1/programs", &manager, &body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let program: Value = response.json().await.expect("json");
    let id = program["id"].as_str().expect("id");
    let fetched: Value = api
        .get(&format!("/v1/programs/{id}"), &manager)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        fetched["settlement"]["baseline_params"],
        json!({"weekday": {"min_days": 3}})
    );
    assert_eq!(
        fetched["settlement"]["holidays"]["extra"],
        json!(["2026-12-24"])
    );
    assert_eq!(
        fetched["settlement"]["capacity_events_per_month"], 4,
        "unset fields keep their default"
    );

    // Parameters the method does not know, or that break its rules, are refused
    // with the method's own words; so is an interval the grid does not allow.
    body["settlement"] =
        json!({"baseline_params": {"weekday": {"min_days": 30}}, "interval_minutes": 7});
    let response = api
        .post("/v1/programs", &manager, &body)
        .send()
        .await
        .expect("request");
    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: BTreeSet<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "/settlement/baseline_params",
            "/settlement/interval_minutes"
        ])
    );
}
