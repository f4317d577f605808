use std::{net::SocketAddr, time::Duration};

use pmcore_events::{DomainEvent, Envelope, avro, catalog, domain::ProgramCreated};
use pmcore_kafka::{
    KafkaConfig,
    outbox::{self, EventMeta},
};
use pmcore_runtime::Service;
use pmcore_testkit::{Running, TestDb};
use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use uuid::Uuid;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

fn any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// The audit-log service with its own consumer group, running.
pub(crate) async fn audit_log(db: &TestDb, kafka: &KafkaConfig) -> Running {
    let config = pmcore_audit_log::Config {
        group: format!("audit-{}", Uuid::now_v7().simple()),
        ..pmcore_audit_log::Config::new(any_port(), db.config_for("audit_log"), kafka.clone())
    };
    let app = pmcore_audit_log::App::build(config)
        .await
        .expect("audit-log builds");
    let addr = app.local_addr().expect("bound");
    Running::start(app, addr).await
}

/// The api service (whose outbox relay publishes `pm.outbox`), running.
pub(crate) async fn api(db: &TestDb, kafka: &KafkaConfig) -> Running {
    let config = pmcore_api::Config::new(any_port(), db.config_for("api"), kafka.clone());
    let app = pmcore_api::App::build(config).await.expect("api builds");
    let addr = app.local_addr().expect("bound");
    Running::start(app, addr).await
}

pub(crate) fn program_created(organization_id: Uuid) -> ProgramCreated {
    ProgramCreated {
        program_id: Uuid::now_v7().to_string(),
        organization_id: organization_id.to_string(),
        name: format!("program {}", Uuid::now_v7().simple()),
        kind: "demand_response".into(),
        status: "draft".into(),
        created_at: chrono::Utc::now().timestamp_micros(),
    }
}

pub(crate) async fn insert_organization(db: &TestDb) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("insert into pm.organization (id, name, kind) values ($1, $2, 'utility')")
        .bind(id)
        .bind(format!("utility {id}"))
        .execute(&db.pool)
        .await
        .expect("organization inserted");
    id
}

/// The api's way to change state: the program row and its event in one transaction.
pub(crate) async fn create_program(
    db: &TestDb,
    organization_id: Uuid,
    commit: bool,
) -> (ProgramCreated, Envelope) {
    let event = program_created(organization_id);
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::query("insert into pm.program (id, organization_id, name, kind) values ($1, $2, $3, $4)")
        .bind(Uuid::parse_str(&event.program_id).expect("uuid"))
        .bind(organization_id)
        .bind(&event.name)
        .bind(&event.kind)
        .execute(&mut *tx)
        .await
        .expect("program inserted");
    let meta = EventMeta {
        source: "api".into(),
        principal: Some("client:test".into()),
        traceparent: None,
    };
    let envelope = outbox::enqueue(&mut tx, &event, &meta)
        .await
        .expect("enqueued");
    if commit {
        tx.commit().await.expect("commit");
    } else {
        tx.rollback().await.expect("rollback");
    }
    (event, envelope)
}

pub(crate) async fn audit_entries_for(db: &TestDb, event_id: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from audit.entry where event_id = $1")
        .bind(event_id)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

pub(crate) fn producer(kafka: &KafkaConfig) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .expect("producer")
}

/// Sends raw bytes with raw headers to a logical topic, bypassing the outbox, always to
/// partition 0: what a test sends arrives in the order sent, whatever the keys.
pub(crate) async fn send_raw(
    producer: &FutureProducer,
    kafka: &KafkaConfig,
    topic: &str,
    key: &str,
    headers: &[(&str, String)],
    payload: &[u8],
) {
    let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    });
    let topic = kafka.topic(topic);
    let record = FutureRecord::to(&topic)
        .partition(0)
        .key(key)
        .payload(payload)
        .headers(headers);
    producer
        .send(record, Timeout::After(Duration::from_secs(10)))
        .await
        .expect("broker took the record");
}

/// The header that tells readers of the topics (the contract reader of `just test`)
/// that a record is malformed on purpose.
pub(crate) const POISON: (&str, &str) = ("pmcore-test", "poison");

/// A well-formed program event as raw headers and bytes.
pub(crate) fn encoded_event(
    organization_id: Uuid,
) -> (Envelope, Vec<(&'static str, String)>, Vec<u8>) {
    let event = program_created(organization_id);
    let envelope = Envelope::for_event(&event, "test", None);
    let payload = avro::encode(&event).expect("encodes");
    let headers = envelope.to_headers();
    assert_eq!(ProgramCreated::TYPE.topic, catalog::PROGRAMS);
    (envelope, headers, payload)
}

/// Reads a physical topic from the beginning until `matches` accepts a record.
pub(crate) async fn read_until<T>(
    kafka: &KafkaConfig,
    physical_topic: &str,
    mut matches: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Option<T>,
) -> T {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("reader-{}", Uuid::now_v7().simple()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[physical_topic]).expect("subscribe");
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(message) = consumer.recv().await
                && let Some(found) = matches(&message)
            {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching record on {physical_topic} within {TIMEOUT:?}"))
}

pub(crate) fn header(message: &impl Message, name: &str) -> Option<String> {
    message.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}
