//! Messaging end to end: domain events become signed webhooks and emails for the
//! organizations they concern, retried on schedule, shared by instances, and never
//! sent to an internal address. The receivers at the edge (an HTTP server and an SMTP
//! sink) are started by each test; everything else is the real stack.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path as AxumPath, State},
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use chrono::Utc;
use pmcore_runtime::clock::ManualClock;
use pmcore_testkit::{Running, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

use crate::{
    dispatch::{event, scene, schedule},
    helpers::{JWT_SECRET, TestApi},
};

const SECRETS_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

// The edge of the world ------------------------------------------------------------

/// How a receiver path answers.
#[derive(Debug, Clone)]
enum Behaviour {
    Ok,
    /// Fails with 500 this many more times, then answers 200.
    FailTimes(u32),
    Gone,
    /// Holds the request this long, then answers 200.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

#[derive(Debug, Clone, Default)]
struct Receiver {
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
    received: Arc<Mutex<Vec<Received>>>,
    addr: Option<SocketAddr>,
}

impl Receiver {
    async fn start() -> Self {
        let mut receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        receiver.addr = Some(listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/{path}", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self, path: &str, behaviour: Behaviour) -> String {
        self.behaviours
            .lock()
            .expect("lock")
            .insert(path.to_owned(), behaviour);
        format!("http://{}/{path}", self.addr.expect("started"))
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    AxumPath(path): AxumPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let behaviour = {
        let mut behaviours = receiver.behaviours.lock().expect("lock");
        let b = behaviours.get_mut(&path).cloned().unwrap_or(Behaviour::Ok);
        if let Behaviour::FailTimes(n) = b {
            behaviours.insert(
                path.clone(),
                if n <= 1 {
                    Behaviour::Ok
                } else {
                    Behaviour::FailTimes(n - 1)
                },
            );
        }
        b
    };
    receiver.received.lock().expect("lock").push(Received {
        path,
        headers,
        body,
        at: Instant::now(),
    });
    match behaviour {
        Behaviour::Ok => AxumStatus::OK,
        Behaviour::FailTimes(_) => AxumStatus::INTERNAL_SERVER_ERROR,
        Behaviour::Gone => AxumStatus::GONE,
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            AxumStatus::OK
        }
    }
}

/// One email as the sink got it.
#[derive(Debug, Clone)]
struct Mail {
    to: Vec<String>,
    data: String,
}

/// An SMTP server that accepts everything and keeps it: just enough of RFC 5321 for
/// a client to hand over mail.
#[derive(Debug, Clone, Default)]
struct SmtpSink {
    mails: Arc<Mutex<Vec<Mail>>>,
    addr: Option<SocketAddr>,
}

impl SmtpSink {
    async fn start() -> Self {
        let mut sink = SmtpSink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        sink.addr = Some(listener.local_addr().expect("addr"));
        let mails = sink.mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, mails.clone()));
            }
        });
        sink
    }

    fn url(&self) -> String {
        format!("smtp://{}", self.addr.expect("started"))
    }

    fn to(&self, address: &str) -> Vec<Mail> {
        self.mails
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| m.to.iter().any(|t| t.contains(address)))
            .cloned()
            .collect()
    }
}

async fn session(stream: tokio::net::TcpStream, mails: Arc<Mutex<Vec<Mail>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
    let mut to = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
            "HELO" | "MAIL" | "RSET" | "NOOP" => b"250 OK\r\n",
            "RCPT" => {
                to.push(line.clone());
                b"250 OK\r\n"
            }
            "DATA" => {
                let _ = write.write_all(b"354 go on\r\n").await;
                let mut data = String::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                    data.push_str(&l);
                    data.push('\n');
                }
                mails.lock().expect("lock").push(Mail {
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 queued\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"502 not here\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

// The service ----------------------------------------------------------------------

pub(crate) async fn messaging(
    api: &TestApi,
    clock: &ManualClock,
    group: &str,
    tweak: impl FnOnce(&mut pmcore_messaging::Config),
) -> Running {
    pmcore_testkit::init_logs();
    let mut config = pmcore_messaging::Config {
        jwt_secret: Some(JWT_SECRET.to_owned().into()),
        secrets_key: Some(SECRETS_KEY.to_owned().into()),
        allow_private_targets: true,
        group: group.to_owned(),
        poll_ms: 50,
        webhook_timeout_ms: 3000,
        ..pmcore_messaging::Config::new(
            ([127, 0, 0, 1], 0).into(),
            api.db.config_for("messaging"),
            api.kafka.clone(),
        )
    };
    tweak(&mut config);
    let app = pmcore_messaging::App::build_with_clock(config, clock.shared())
        .await
        .expect("messaging builds");
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;
    running.ready(Duration::from_secs(60)).await;
    running
}

fn group() -> String {
    format!("messaging-{}", Uuid::now_v7().simple())
}

async fn call(
    method: reqwest::Method,
    service: &Running,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{}{path}", service.addr))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates an endpoint; returns its id and secret.
async fn endpoint(service: &Running, token: &str, body: Value) -> (String, String) {
    let (status, created) = call(
        reqwest::Method::POST,
        service,
        "/v1/messaging/endpoints",
        token,
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (
        created["id"].as_str().expect("id").to_owned(),
        created["secret"]
            .as_str()
            .expect("secret shown once")
            .to_owned(),
    )
}

async fn contact(service: &Running, token: &str, email: &str, kinds: Value) {
    let (status, body) = call(
        reqwest::Method::POST,
        service,
        "/v1/messaging/contacts",
        token,
        Some(json!({"email": email, "kinds": kinds})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Checks a received webhook's signature with the Standard Webhooks project's own
/// library. Tests that move the clock sign with timestamps the library's freshness
/// check would refuse, so this compares the library's signature with each one sent.
fn verify(secret: &str, received: &Received) {
    let webhook = standardwebhooks::Webhook::new(secret).expect("secret");
    let header = |name: &str| received.headers[name].to_str().expect("ascii").to_owned();
    let expected = webhook
        .sign(
            &header("webhook-id"),
            header("webhook-timestamp").parse().expect("timestamp"),
            &received.body,
        )
        .expect("signs");
    assert!(
        header("webhook-signature")
            .split(' ')
            .any(|s| s == expected),
        "no signature by this secret in {}",
        header("webhook-signature")
    );
}

/// The library's whole check, timestamp freshness included.
fn verify_fresh(secret: &str, received: &Received) {
    let webhook = standardwebhooks::Webhook::new(secret).expect("secret");
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, received.headers[name].clone());
    }
    webhook
        .verify(&received.body, &headers)
        .expect("the signature verifies");
}

async fn test_message(service: &Running, token: &str, endpoint: &str) -> String {
    let (status, body) = call(
        reqwest::Method::POST,
        service,
        &format!("/v1/messaging/endpoints/{endpoint}/test"),
        token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["message_id"].as_str().expect("id").to_owned()
}

async fn delivery_status(service: &Running, token: &str, message: &str) -> Value {
    let (status, body) = call(
        reqwest::Method::GET,
        service,
        &format!("/v1/messaging/messages/{message}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

// The tests --------------------------------------------------------------------------

#[tokio::test]
async fn scheduling_an_event_notifies_each_participant_once_and_nobody_else() {
    let s = scene(5).await;
    let clock = ManualClock::at(Utc::now());
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let service = messaging(&s.api, &clock, &group(), |c| {
        c.smtp_url = Some(sink.url().into());
    })
    .await;

    // The participant: an endpoint for everything, a contact, its own subject line.
    let agg = &s.aggregator.token;
    let (_, agg_secret) = endpoint(
        &service,
        agg,
        json!({"url": receiver.url("agg", Behaviour::Ok), "description": "ops"}),
    )
    .await;
    contact(&service, agg, "ops@aggregator.test", json!([])).await;
    let (status, refused) = call(
        reqwest::Method::PUT,
        &service,
        "/v1/messaging/templates/dispatch-event.scheduled",
        agg,
        Some(json!({"subject": "{% for %}", "body": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused.to_string().contains("subject"), "{refused}");
    let (status, saved) = call(
        reqwest::Method::PUT,
        &service,
        "/v1/messaging/templates/dispatch-event.scheduled",
        agg,
        Some(json!({"subject": "Heads up: {{ program_name }} at {{ starts_at }}", "body": "Target {{ target_kw }} kW"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");

    // An organization that takes no part, and the program owner subscribed to
    // something else.
    let outsider = s.api.caller("aggregator", &["aggregator"]).await;
    endpoint(
        &service,
        &outsider.token,
        json!({"url": receiver.url("outsider", Behaviour::Ok)}),
    )
    .await;
    contact(&service, &outsider.token, "ops@outsider.test", json!([])).await;
    endpoint(
        &service,
        &s.manager,
        json!({"url": receiver.url("owner", Behaviour::Ok), "kinds": ["settlement.calculated"]}),
    )
    .await;

    let response = schedule(&s, &event(&s, 24 * 60, 120)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let scheduled: Value = response.json().await.expect("json");
    let event_id = scheduled["id"].as_str().expect("id");

    let of_kind = |kind: &'static str| {
        let receiver = receiver.clone();
        move || -> Vec<Received> {
            receiver
                .at("agg")
                .into_iter()
                .filter(|r| {
                    serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["type"] == kind)
                })
                .collect()
        }
    };
    let scheduled_hooks = of_kind("dispatch-event.scheduled");
    let hook = eventually(Duration::from_secs(60), "the participant's webhook", || {
        let r = scheduled_hooks();
        async move { r.first().cloned() }
    })
    .await;
    verify_fresh(&agg_secret, &hook);
    let body: Value = serde_json::from_slice(&hook.body).expect("json body");
    assert_eq!(body["type"], "dispatch-event.scheduled");
    assert_eq!(body["data"]["event_id"], event_id);
    assert!(body["data"]["program_name"].is_string(), "{body}");
    assert!(
        hook.headers["webhook-id"]
            .to_str()
            .expect("ascii")
            .starts_with("msg_")
    );
    let scheduled_mails = || {
        sink.to("ops@aggregator.test")
            .into_iter()
            .filter(|m| m.data.contains("Subject: Heads up:"))
            .collect::<Vec<_>>()
    };
    let mail = eventually(Duration::from_secs(30), "the participant's email", || {
        let m = scheduled_mails();
        async move { m.first().cloned() }
    })
    .await;
    assert!(mail.data.contains("Subject: Heads up:"), "{}", mail.data);
    assert!(mail.data.contains("Target 2000"), "{}", mail.data);

    // The participant's message is fully delivered; by then nothing else went out.
    let (_, page) = call(
        reqwest::Method::GET,
        &service,
        "/v1/messaging/messages?kind=dispatch-event.scheduled",
        agg,
        None,
    )
    .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    let message_id = items[0]["id"].as_str().expect("id").to_owned();
    eventually(Duration::from_secs(30), "both deliveries done", || {
        let service = &service;
        let message_id = &message_id;
        async move {
            let detail = delivery_status(service, agg, message_id).await;
            let deliveries = detail["deliveries"].as_array().cloned().unwrap_or_default();
            (deliveries.len() == 2 && deliveries.iter().all(|d| d["status"] == "delivered"))
                .then_some(())
        }
    })
    .await;
    // The owner's message (no subscriber for this kind) exists, with no deliveries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(scheduled_hooks().len(), 1, "one webhook, not two");
    assert_eq!(scheduled_mails().len(), 1, "one email");
    // The enrollment's approval was decided before the endpoint existed: whether it
    // reaches the endpoint depends on when messaging read it (subscribers are those
    // of the moment a message is made), but it never comes twice.
    assert!(
        of_kind("enrollment.approved")().len() <= 1,
        "at most one approval webhook"
    );
    assert!(receiver.at("outsider").is_empty(), "not broadcast");
    assert!(sink.to("ops@outsider.test").is_empty(), "not broadcast");
    assert!(receiver.at("owner").is_empty(), "the owner's filter holds");

    // The delivery log is the organization's own.
    let (status, _) = call(
        reqwest::Method::GET,
        &service,
        &format!("/v1/messaging/messages/{message_id}"),
        &outsider.token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, theirs) = call(
        reqwest::Method::GET,
        &service,
        "/v1/messaging/messages",
        &outsider.token,
        None,
    )
    .await;
    assert_eq!(theirs["items"], json!([]));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_on_schedule_and_a_gone_one_is_disabled() {
    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let clock = ManualClock::at(Utc::now());
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let service = messaging(&api, &clock, &group(), |c| {
        c.smtp_url = Some(sink.url().into());
    })
    .await;
    contact(
        &service,
        &caller.token,
        "ops@flaky.test",
        json!(["endpoint.disabled"]),
    )
    .await;
    let (flaky, secret) = endpoint(
        &service,
        &caller.token,
        json!({"url": receiver.url("flaky", Behaviour::FailTimes(3))}),
    )
    .await;
    let message = test_message(&service, &caller.token, &flaky).await;

    let attempts_seen = |n: usize| {
        let receiver = receiver.clone();
        async move {
            eventually(Duration::from_secs(20), &format!("attempt {n}"), || {
                let got = receiver.at("flaky").len();
                async move { (got >= n).then_some(()) }
            })
            .await;
        }
    };
    attempts_seen(1).await;
    // Not before its time: nothing more while the clock stands still.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.at("flaky").len(), 1);
    for (n, wait) in [(2, 5), (3, 300), (4, 1800)] {
        clock.advance(chrono::Duration::seconds(wait));
        attempts_seen(n).await;
    }
    clock.advance(chrono::Duration::hours(30));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = receiver.at("flaky");
    assert_eq!(got.len(), 4, "three failures, one success, then silence");
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one id across retries"
    );
    for r in &got {
        verify(&secret, r);
    }
    let detail = delivery_status(&service, &caller.token, &message).await;
    let delivery = &detail["deliveries"][0];
    assert_eq!(delivery["status"], "delivered", "{detail}");
    let codes: Vec<i64> = delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].as_i64().expect("code"))
        .collect();
    assert_eq!(codes, [500, 500, 500, 200]);

    // 410 Gone: disabled at once, and the organization hears of it by email.
    let (gone, _) = endpoint(
        &service,
        &caller.token,
        json!({"url": receiver.url("gone", Behaviour::Gone)}),
    )
    .await;
    test_message(&service, &caller.token, &gone).await;
    eventually(Duration::from_secs(20), "the endpoint disabled", || {
        let service = &service;
        let gone = &gone;
        let token = &caller.token;
        async move {
            let (_, e) = call(
                reqwest::Method::GET,
                service,
                &format!("/v1/messaging/endpoints/{gone}"),
                token,
                None,
            )
            .await;
            (e["enabled"] == false).then_some(e)
        }
    })
    .await;
    let notice = eventually(Duration::from_secs(20), "the disabled notice", || {
        let m = sink.to("ops@flaky.test");
        async move { m.first().cloned() }
    })
    .await;
    assert!(notice.data.contains("410"), "{}", notice.data);
    let (status, _) = call(
        reqwest::Method::POST,
        &service,
        &format!("/v1/messaging/endpoints/{gone}/test"),
        &caller.token,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a disabled endpoint is not tested"
    );
    assert_eq!(receiver.at("gone").len(), 1);
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends() {
    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let clock = ManualClock::at(Utc::now());
    let receiver = Receiver::start().await;
    let service = messaging(&api, &clock, &group(), |_| {}).await;
    let (id, old) = endpoint(
        &service,
        &caller.token,
        json!({"url": receiver.url("rotating", Behaviour::Ok)}),
    )
    .await;
    let (status, rotated) = call(
        reqwest::Method::POST,
        &service,
        &format!("/v1/messaging/endpoints/{id}/rotate-secret"),
        &caller.token,
        Some(json!({"grace_minutes": 60})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    test_message(&service, &caller.token, &id).await;
    let first = eventually(Duration::from_secs(20), "a webhook", || {
        let r = receiver.at("rotating");
        async move { r.first().cloned() }
    })
    .await;
    let signatures = first.headers["webhook-signature"].to_str().expect("ascii");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    verify(&new, &first);
    verify(&old, &first);

    clock.advance(chrono::Duration::minutes(61));
    test_message(&service, &caller.token, &id).await;
    let second = eventually(Duration::from_secs(20), "a second webhook", || {
        let r = receiver.at("rotating");
        async move { r.get(1).cloned() }
    })
    .await;
    verify(&new, &second);
    let signatures = second.headers["webhook-signature"].to_str().expect("ascii");
    assert_eq!(signatures.split(' ').count(), 1, "the old secret expired");
}

#[tokio::test]
async fn a_hanging_receiver_does_not_delay_another_endpoint() {
    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let clock = ManualClock::at(Utc::now());
    let receiver = Receiver::start().await;
    let service = messaging(&api, &clock, &group(), |c| {
        c.webhook_timeout_ms = 5000;
        c.max_in_flight = 8;
    })
    .await;
    let (hung, _) = endpoint(
        &service,
        &caller.token,
        json!({"url": receiver.url("hung", Behaviour::Slow(Duration::from_secs(60)))}),
    )
    .await;
    let (quick, _) = endpoint(
        &service,
        &caller.token,
        json!({"url": receiver.url("quick", Behaviour::Ok)}),
    )
    .await;
    for _ in 0..12 {
        test_message(&service, &caller.token, &hung).await;
    }
    eventually(
        Duration::from_secs(20),
        "the hung endpoint's attempts",
        || {
            let n = receiver.at("hung").len();
            async move { (n >= 4).then_some(()) }
        },
    )
    .await;
    test_message(&service, &caller.token, &quick).await;
    let got = eventually(
        Duration::from_secs(20),
        "the quick endpoint's webhook",
        || {
            let r = receiver.at("quick");
            async move { r.first().cloned() }
        },
    )
    .await;
    let first_hung = receiver.at("hung")[0].at;
    assert!(
        got.at.duration_since(first_hung) < Duration::from_secs(5),
        "delivered while the hung endpoint's attempts were still waiting out their timeout"
    );
    assert!(
        receiver.at("hung").len() <= 4,
        "at most 4 attempts in flight to one endpoint, got {}",
        receiver.at("hung").len()
    );
}

#[tokio::test]
async fn two_instances_deliver_each_message_once_and_a_restart_finishes_the_rest() {
    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let clock = ManualClock::at(Utc::now());
    let receiver = Receiver::start().await;
    let group = group();
    let one = messaging(&api, &clock, &group, |_| {}).await;
    let two = messaging(&api, &clock, &group, |_| {}).await;
    let mut endpoints = Vec::new();
    for i in 0..4 {
        let path = format!("shared{i}");
        let (id, _) = endpoint(
            &one,
            &caller.token,
            json!({"url": receiver.url(&path, Behaviour::Slow(Duration::from_millis(20)))}),
        )
        .await;
        endpoints.push((path, id));
    }
    for round in 0..10 {
        for (_, id) in &endpoints {
            let via = if round % 2 == 0 { &one } else { &two };
            test_message(via, &caller.token, id).await;
        }
    }
    let total = || {
        endpoints
            .iter()
            .map(|(p, _)| receiver.at(p).len())
            .sum::<usize>()
    };
    eventually(Duration::from_secs(60), "40 webhooks", || {
        let n = total();
        async move { (n >= 40).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = endpoints
        .iter()
        .flat_map(|(p, _)| receiver.at(p))
        .map(|r| r.headers["webhook-id"].to_str().expect("ascii").to_owned())
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!((before, ids.len()), (40, 40), "each message once");

    // One instance dies in the middle of slow deliveries; a new one finishes them
    // once the dead one's leases run out.
    two.kill().await;
    one.kill().await;
    killed_mid_delivery_a_fresh_instance_finishes(&api, &caller.token, &receiver, &clock, &group)
        .await;
}

/// Starts an instance, queues slow deliveries, kills it mid-delivery, and checks a
/// fresh instance delivers every one, repeating at most what was in flight.
async fn killed_mid_delivery_a_fresh_instance_finishes(
    api: &TestApi,
    token: &str,
    receiver: &Receiver,
    clock: &ManualClock,
    group: &str,
) {
    let first = messaging(api, clock, group, |c| c.per_target = 2).await;
    let (id, _) = endpoint(
        &first,
        token,
        json!({"url": receiver.url("slow", Behaviour::Slow(Duration::from_secs(2)))}),
    )
    .await;
    let mut messages = Vec::new();
    for _ in 0..6 {
        messages.push(test_message(&first, token, &id).await);
    }
    eventually(Duration::from_secs(20), "the first slow attempts", || {
        let n = receiver.at("slow").len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    first.kill().await;
    let in_flight_at_kill = receiver.at("slow").len();
    // The dead instance's leases run out (30 s after the timeout, twice over).
    clock.advance(chrono::Duration::minutes(2));
    let second = messaging(api, clock, group, |_| {}).await;
    for message in &messages {
        eventually(Duration::from_secs(60), "every message delivered", || {
            let second = &second;
            async move {
                let detail = delivery_status(second, token, message).await;
                (detail["deliveries"][0]["status"] == "delivered").then_some(())
            }
        })
        .await;
    }
    let mut ids: Vec<String> = receiver
        .at("slow")
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().expect("ascii").to_owned())
        .collect();
    ids.sort();
    let received = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every message arrived");
    assert!(
        received - ids.len() <= in_flight_at_kill,
        "only what was in flight at the kill is sent again ({received} received)"
    );
}

#[tokio::test]
async fn internal_addresses_are_refused_outside_dev_mode() {
    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let clock = ManualClock::at(Utc::now());
    let service = messaging(&api, &clock, &group(), |c| c.allow_private_targets = false).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost:3001/v1/organizations",
        "file:///etc/passwd",
    ] {
        let (status, problem) = call(
            reqwest::Method::POST,
            &service,
            "/v1/messaging/endpoints",
            &caller.token,
            Some(json!({"url": url})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "/url", "{problem}");
    }
    let (status, body) = call(
        reqwest::Method::POST,
        &service,
        "/v1/messaging/endpoints",
        &caller.token,
        Some(json!({"url": "https://hooks.example.com/pmcore", "kinds": ["file.imported"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, problem) = call(
        reqwest::Method::POST,
        &service,
        "/v1/messaging/endpoints",
        &caller.token,
        Some(json!({"url": "https://hooks.example.com/x", "kinds": ["no.such.kind"]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _) = call(
        reqwest::Method::GET,
        &service,
        "/v1/messaging/endpoints",
        "not-a-token",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Puts a request on `messaging.requests.v1` the way a service does: through its
/// outbox, published by the api's relay.
async fn request(api: &TestApi, organization: &str, kind: &str, data: Value) {
    let mut conn = api.db.pool.acquire().await.expect("connection");
    let event = pmcore_events::domain::MessagingRequested {
        organization_id: organization.to_owned(),
        kind: kind.to_owned(),
        subject: "test".to_owned(),
        data_json: data.to_string(),
        requested_at: Utc::now().timestamp_micros(),
    };
    let meta = pmcore_kafka::outbox::EventMeta {
        source: "test".into(),
        principal: None,
        traceparent: None,
    };
    pmcore_kafka::outbox::enqueue(&mut conn, &event, &meta)
        .await
        .expect("enqueued");
}

#[tokio::test]
async fn requests_are_sent_and_a_poisoned_one_is_dead_lettered_without_blocking() {
    use rdkafka::{
        ClientConfig, Message,
        consumer::{Consumer, StreamConsumer},
    };

    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let clock = ManualClock::at(Utc::now());
    let receiver = Receiver::start().await;
    let group = group();
    let service = messaging(&api, &clock, &group, |_| {}).await;
    let (_, secret) = endpoint(
        &service,
        &caller.token,
        json!({"url": receiver.url("requested", Behaviour::Ok), "kinds": ["settlement.calculated"]}),
    )
    .await;
    let org = caller.organization_id.to_string();
    request(&api, &org, "no.such.kind", json!({})).await;
    request(
        &api,
        &org,
        "settlement.calculated",
        json!({"total_amount": "12.50", "currency": "USD"}),
    )
    .await;
    let hook = eventually(Duration::from_secs(60), "the requested webhook", || {
        let r = receiver.at("requested");
        async move { r.first().cloned() }
    })
    .await;
    verify(&secret, &hook);
    let body: Value = serde_json::from_slice(&hook.body).expect("json");
    assert_eq!(body["type"], "settlement.calculated");
    assert_eq!(body["data"]["total_amount"], "12.50");

    let dlq = pmcore_kafka::KafkaConfig::dead_letter_topic(
        &api.kafka
            .topic(pmcore_events::catalog::MESSAGING_REQUESTS.name),
        &group,
    );
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &api.kafka.brokers)
        .set("group.id", format!("reader-{}", Uuid::now_v7().simple()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[dlq.as_str()]).expect("subscribe");
    let error = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(m) = consumer.recv().await
                && let Some(error) = m.headers().and_then(|hs| {
                    rdkafka::message::Headers::iter(hs)
                        .find(|h| h.key == "dlq_error")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            {
                return error;
            }
        }
    })
    .await
    .expect("a dead letter");
    assert!(error.contains("unknown notification kind"), "{error}");
}

#[tokio::test]
async fn an_endpoint_failing_for_the_configured_period_is_disabled() {
    let api = crate::helpers::spawn_app().await;
    let caller = api.caller("aggregator", &["aggregator"]).await;
    let clock = ManualClock::at(Utc::now());
    let receiver = Receiver::start().await;
    let service = messaging(&api, &clock, &group(), |c| c.disable_after_hours = 1).await;
    let (down, _) = endpoint(
        &service,
        &caller.token,
        json!({"url": receiver.url("down", Behaviour::FailTimes(1000))}),
    )
    .await;
    let first = test_message(&service, &caller.token, &down).await;
    eventually(Duration::from_secs(20), "a first failure", || {
        let n = receiver.at("down").len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let endpoint_state = || {
        let service = &service;
        let down = &down;
        let token = &caller.token;
        async move {
            call(
                reqwest::Method::GET,
                service,
                &format!("/v1/messaging/endpoints/{down}"),
                token,
                None,
            )
            .await
            .1
        }
    };
    // The receiver sees the attempt before the service records its outcome.
    let state = eventually(Duration::from_secs(20), "the failure recorded", || async {
        let state = endpoint_state().await;
        state["failing_since"].is_string().then_some(state)
    })
    .await;
    assert_eq!(state["enabled"], true, "one failure disables nothing");

    // An hour of nothing but failures later, the next failure disables it.
    clock.advance(chrono::Duration::minutes(61));
    test_message(&service, &caller.token, &down).await;
    let state = eventually(Duration::from_secs(20), "the endpoint disabled", || async {
        let state = endpoint_state().await;
        (state["enabled"] == false).then_some(state)
    })
    .await;
    assert!(
        state["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("failed")),
        "{state}"
    );
    // What was still queued for it is dropped, not retried into the void.
    let detail = delivery_status(&service, &caller.token, &first).await;
    assert_eq!(detail["deliveries"][0]["status"], "dropped", "{detail}");
    let attempts_before = receiver.at("down").len();
    clock.advance(chrono::Duration::hours(40));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.at("down").len(), attempts_before);
}
