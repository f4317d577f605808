use std::{net::SocketAddr, time::Duration};

use pmcore_api::{App, Config};
use pmcore_kafka::KafkaConfig;
use pmcore_runtime::Service;
use pmcore_testkit::{Running, TestDb, eventually, kafka, unique_prefix};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

pub(crate) const ADMIN_SECRET: &str = "bootstrap-admin-secret-for-tests";
pub(crate) const JWT_SECRET: &str = "test-signing-key-test-signing-key-0123";

/// The worker against the same database and topics, for flows that need it.
pub(crate) async fn spawn_worker(api: &TestApi) -> Running {
    let config = pmcore_worker::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        database: api.db.config_for("worker"),
        kafka: api.kafka.clone(),
        s3: pmcore_testkit::s3(),
        telemetry: Default::default(),
        settlement: Default::default(),
        imports: Default::default(),
    };
    let app = pmcore_worker::App::build(config)
        .await
        .expect("worker builds");
    let addr = app.local_addr().expect("bound");
    Running::start(app, addr).await
}

pub(crate) struct TestApi {
    pub(crate) addr: SocketAddr,
    pub(crate) db: TestDb,
    pub(crate) kafka: KafkaConfig,
    pub(crate) admin: String,
    pub(crate) admin_id: Uuid,
    http: reqwest::Client,
    _running: Running,
}

pub(crate) async fn spawn_app() -> TestApi {
    spawn_with(|_| {}).await
}

pub(crate) async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApi {
    let db = TestDb::new().await.expect("test database");
    let kafka = kafka(&unique_prefix());
    let mut config = Config::new(
        ([127, 0, 0, 1], 0).into(),
        db.config_for("api"),
        kafka.clone(),
    );
    let admin_id = Uuid::now_v7();
    config.jwt_secret = Some(JWT_SECRET.to_owned().into());
    config.bootstrap_client_id = Some(admin_id);
    config.bootstrap_client_secret = Some(ADMIN_SECRET.to_owned().into());
    tweak(&mut config);
    let app = App::build(config).await.expect("api builds");
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/oauth/token");
    // The bootstrap client appears once the app has reached Postgres.
    let admin = eventually(Duration::from_secs(30), "the bootstrap admin", || {
        let (http, url) = (http.clone(), url.clone());
        async move { token_from(&http, &url, admin_id, ADMIN_SECRET).await }
    })
    .await;
    TestApi {
        addr,
        db,
        kafka,
        admin,
        admin_id,
        http,
        _running: running,
    }
}

async fn token_from(http: &reqwest::Client, url: &str, id: Uuid, secret: &str) -> Option<String> {
    let response = http
        .post(url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id.to_string()),
            ("client_secret", secret),
        ])
        .send()
        .await
        .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["access_token"].as_str().map(str::to_owned)
}

/// A caller of an organization of its own, with the given roles.
pub(crate) struct Caller {
    pub(crate) organization_id: Uuid,
    pub(crate) token: String,
}

impl TestApi {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(token)
    }

    /// `GET path` as `token`, the body as JSON.
    pub(crate) async fn get_json(&self, path: &str, token: &str) -> Value {
        self.get(path, token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    pub(crate) fn post(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(token).json(body)
    }

    pub(crate) fn patch(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.http
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body)
    }

    pub(crate) fn raw(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) async fn token(&self, id: Uuid, secret: &str) -> Option<String> {
        token_from(&self.http, &self.url("/oauth/token"), id, secret).await
    }

    /// Creates an organization of `kind` and a client with `roles`; returns its token.
    pub(crate) async fn caller(&self, kind: &str, roles: &[&str]) -> Caller {
        let org = self
            .post(
                "/v1/organizations",
                &self.admin,
                &json!({"name": format!("{kind} {}", Uuid::now_v7()), "kind": kind}),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(org.status(), StatusCode::CREATED);
        let org: Value = org.json().await.expect("json");
        let organization_id: Uuid = org["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
        let client = self
            .post(
                &format!("/v1/organizations/{organization_id}/clients"),
                &self.admin,
                &json!({"name": "test client", "roles": roles}),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(client.status(), StatusCode::CREATED);
        let client: Value = client.json().await.expect("json");
        let id: Uuid = client["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        let secret = client["client_secret"].as_str().expect("secret shown once");
        let token = self.token(id, secret).await.expect("token");
        Caller {
            organization_id,
            token,
        }
    }

    /// A program manager of the utility (the bootstrap admin's organization).
    pub(crate) async fn program_manager(&self) -> String {
        let utility: Uuid =
            sqlx::query_scalar("select organization_id from pm.api_client where id = $1")
                .bind(self.admin_id)
                .fetch_one(&self.db.pool)
                .await
                .expect("bootstrap organization");
        let client = self
            .post(
                &format!("/v1/organizations/{utility}/clients"),
                &self.admin,
                &json!({"name": "pm", "roles": ["program_manager"]}),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(client.status(), StatusCode::CREATED);
        let client: Value = client.json().await.expect("json");
        let id: Uuid = client["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("id");
        self.token(id, client["client_secret"].as_str().expect("secret"))
            .await
            .expect("token")
    }
}

/// Asserts an RFC 9457 problem response with `status` and returns its body.
pub(crate) async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:pmcore:problem:"))
    );
    assert!(body["title"].is_string());
    body
}

pub(crate) fn program_in() -> Value {
    json!({
        "name": format!("Summer peak {}", Uuid::now_v7()),
        "kind": "demand_response",
        "description": "Evening peak reduction",
        "time_zone": "America/Los_Angeles",
        "target_capacity_kw": 2000.0,
        "capacity_rate_cents_kw_month": 850,
        "energy_rate_cents_kwh": 25,
        "baseline_method": "x_of_y_10_10",
        "eligibility": {"der_types": ["battery", "thermostat"], "min_nameplate_kw": 1.5, "feeders": []},
        "limits": {"max_events_per_season": 20, "max_event_duration_minutes": 240, "min_notice_minutes": 60}
    })
}

/// A consumer of its own group reading the logical `topic` from its beginning.
pub(crate) fn topic_reader(kafka: &KafkaConfig, topic: &str) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::Consumer;

    let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("reader-{}", Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&kafka.topic(topic)])
        .expect("subscribe");
    consumer
}

/// Records on `topic` whose key is `subject`, as (`ce_type`, `ce_principal`), once
/// `want` of them arrived.
pub(crate) async fn published(
    kafka: &KafkaConfig,
    topic: &str,
    subject: &str,
    want: usize,
) -> Vec<(String, String)> {
    use rdkafka::Message;

    let consumer = topic_reader(kafka, topic);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < want {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("{want} records for {subject} on {topic} within 60 s; saw {seen:?}")
            })
            .expect("message");
        if message.key() != Some(subject.as_bytes()) {
            continue;
        }
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| {
                    use rdkafka::message::Headers;
                    h.iter().find(|x| x.key == name).and_then(|x| x.value)
                })
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        seen.push((header("ce_type"), header("ce_principal")));
    }
    seen
}
