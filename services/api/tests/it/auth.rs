use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{ADMIN_SECRET, problem, spawn_app, spawn_with};

#[tokio::test]
async fn client_credentials_give_a_bearer_token() {
    let api = spawn_app().await;
    let response = api
        .raw()
        .post(api.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &api.admin_id.to_string()),
            ("client_secret", ADMIN_SECRET),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
}

#[tokio::test]
async fn http_basic_credentials_work_too() {
    let api = spawn_app().await;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{ADMIN_SECRET}", api.admin_id));
    let response = api
        .raw()
        .post(api.url("/oauth/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_secret_or_unknown_client_is_invalid_client() {
    let api = spawn_app().await;
    for (id, secret) in [
        (api.admin_id.to_string(), "wrong".to_owned()),
        (Uuid::now_v7().to_string(), ADMIN_SECRET.to_owned()),
        ("not-a-uuid".to_owned(), ADMIN_SECRET.to_owned()),
    ] {
        let response = api
            .raw()
            .post(api.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ])
            .send()
            .await
            .expect("request");
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["error"], "invalid_client");
    }
}

#[tokio::test]
async fn other_grants_and_missing_fields_are_bad_requests() {
    let api = spawn_app().await;
    let response = api
        .raw()
        .post(api.url("/oauth/token"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .expect("request");
    assert_eq!(
        problem(response, StatusCode::BAD_REQUEST).await["error"],
        "unsupported_grant_type"
    );
    let response = api
        .raw()
        .post(api.url("/oauth/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    assert_eq!(
        problem(response, StatusCode::BAD_REQUEST).await["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn every_endpoint_needs_a_valid_token() {
    let api = spawn_app().await;
    let response = api
        .raw()
        .get(api.url("/v1/programs"))
        .send()
        .await
        .expect("request");
    assert!(response.headers().contains_key("www-authenticate"));
    problem(response, StatusCode::UNAUTHORIZED).await;
    let response = api
        .get("/v1/programs", "not.a.token")
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::UNAUTHORIZED).await;
    let forged = format!("{}x", api.admin);
    let response = api
        .get("/v1/programs", &forged)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    let api = spawn_with(|c| {
        c.rate_per_second = 1;
        c.rate_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let response = api
            .get("/v1/programs", &api.admin)
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").cloned();
        }
        statuses.push(response.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(retry_after.is_some(), "429 says when to retry");
}

#[tokio::test]
async fn refused_callers_and_made_up_client_ids_are_limited_per_address() {
    let api = spawn_with(|c| {
        c.rate_per_second = 1;
        c.rate_burst = 3;
    })
    .await;
    // Bad tokens from one address: 401 while its budget lasts, then 429.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = api
            .get("/v1/programs", "not-a-token")
            .send()
            .await
            .expect("request");
        statuses.push(response.status());
    }
    assert_eq!(
        &statuses[..3],
        &[StatusCode::UNAUTHORIZED; 3],
        "{statuses:?}"
    );
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // Random client ids at the token endpoint count against the address, not a
    // fresh budget per id.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = api
            .raw()
            .post(api.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &Uuid::now_v7().to_string()),
                ("client_secret", "guess"),
            ])
            .send()
            .await
            .expect("request");
        statuses.push(response.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_generated_bootstrap_secret_goes_to_a_private_file_not_the_log() {
    use std::os::unix::fs::PermissionsExt;

    use pmcore_runtime::Service;

    let dir = std::env::temp_dir().join(format!("pmcore-bootstrap-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("admin.json");
    let db = pmcore_testkit::TestDb::new().await.expect("database");
    let kafka = pmcore_testkit::kafka(&pmcore_testkit::unique_prefix());
    let mut config = pmcore_api::Config::new(
        ([127, 0, 0, 1], 0).into(),
        db.config_for("api"),
        kafka.clone(),
    );
    config.jwt_secret = Some("test-signing-key-test-signing-key-0123".to_owned().into());
    config.bootstrap_secret_file = file.clone();
    let app = pmcore_api::App::build(config).await.expect("api builds");
    let addr = app.local_addr().expect("bound");
    let _running = pmcore_testkit::Running::start(app, addr).await;
    let written: Value = pmcore_testkit::eventually(
        std::time::Duration::from_secs(30),
        "the secret file",
        || {
            let file = file.clone();
            async move { serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok() }
        },
    )
    .await;
    let mode = std::fs::metadata(&file)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "only its owner may read it");
    let id = written["client_id"].as_str().expect("client id");
    let secret = written["client_secret"].as_str().expect("secret");
    let token = reqwest::Client::new()
        .post(format!("http://{addr}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(
        token.status(),
        StatusCode::OK,
        "the secret in the file works"
    );
    std::fs::remove_dir_all(dir).ok();

    // The install itself is the trail's first entries: its organization and admin client.
    let org: Uuid = sqlx::query_scalar("select organization_id from pm.api_client where id = $1")
        .bind(Uuid::parse_str(id).expect("client id"))
        .fetch_one(&db.pool)
        .await
        .expect("the bootstrap organization");
    let by_api = |t: &str| (t.to_owned(), "service:api".to_owned());
    assert_eq!(
        crate::helpers::published(&kafka, "pm.organizations.v1", &org.to_string(), 2).await,
        vec![
            by_api("pmcore.organization.created.v1"),
            by_api("pmcore.api-client.created.v1")
        ]
    );
}
