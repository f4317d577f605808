//! Hostile input against the backbone: an event the broker refuses must not stop an
//! outbox, and a record that always fails to apply must not wedge a consumer.

use std::time::Duration;

use pmcore_events::{
    Envelope, avro, catalog,
    domain::{DerCommandAck, ProgramCreated},
};
use pmcore_kafka::{
    KafkaConfig,
    outbox::{self, EventMeta, OutboxRelay, TooLarge},
};
use pmcore_runtime::Service;
use pmcore_testkit::{Running, TestDb, eventually, kafka, unique_prefix};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    TIMEOUT, header, insert_organization, producer, program_created, read_until, send_raw,
};

fn meta() -> EventMeta {
    EventMeta {
        source: "test".to_owned(),
        ..EventMeta::default()
    }
}

#[tokio::test]
async fn enqueue_refuses_an_event_no_broker_would_take_and_the_change_rolls_back() {
    let db = TestDb::new().await.expect("test database");
    let org = insert_organization(&db).await;
    let event = ProgramCreated {
        name: "x".repeat(outbox::MAX_RECORD_BYTES + 1),
        ..program_created(org)
    };
    let mut tx = db.pool.begin().await.expect("tx");
    let error = outbox::enqueue(&mut tx, &event, &meta())
        .await
        .expect_err("refused");
    let too_large = error.downcast_ref::<TooLarge>().expect("a TooLarge error");
    assert_eq!(too_large.ce_type, "pmcore.program.created.v1");
    assert!(too_large.size > outbox::MAX_RECORD_BYTES);
    drop(tx);
    let rows: i64 = sqlx::query_scalar("select count(*) from pm.outbox")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn an_event_the_broker_refuses_is_parked_and_the_events_behind_it_flow() {
    let db = TestDb::new().await.expect("test database");
    let kafka = kafka(&unique_prefix());
    let org = insert_organization(&db).await;
    // One event the broker takes, one it never will (2 MB, past any default
    // message.max.bytes, written straight into the table as an older build or a
    // hand-made row could), then another it takes.
    let mut conn = db.pool.acquire().await.expect("conn");
    outbox::enqueue(&mut conn, &program_created(org), &meta())
        .await
        .expect("first");
    let huge = program_created(org);
    let envelope = Envelope::for_event(&huge, "test", None);
    sqlx::query("insert into pm.outbox (topic, key, headers, payload) values ($1, $2, $3, $4)")
        .bind(catalog::PROGRAMS.name)
        .bind(&envelope.subject)
        .bind(serde_json::to_value(envelope.to_headers()).expect("json"))
        .bind(vec![7u8; 2 << 20])
        .execute(&mut *conn)
        .await
        .expect("the oversized row");
    let last = outbox::enqueue(&mut conn, &program_created(org), &meta())
        .await
        .expect("last");
    drop(conn);

    pmcore_kafka::topics::ensure(&kafka, &[kafka.topic(catalog::PROGRAMS.name)])
        .await
        .expect("topic");
    let cancel = CancellationToken::new();
    let relay = tokio::spawn(OutboxRelay::new(db.pool.clone(), kafka.clone()).run(cancel.clone()));
    read_until(&kafka, &kafka.topic(catalog::PROGRAMS.name), |m| {
        (header(m, "ce_id") == Some(last.id.to_string())).then_some(())
    })
    .await;
    let (parked, error): (i64, String) = eventually(TIMEOUT, "the parked row", || async {
        sqlx::query_as("select count(*), coalesce(max(error), '') from pm.outbox_dead")
            .fetch_one(&db.pool)
            .await
            .ok()
            .filter(|(n, _): &(i64, String)| *n > 0)
    })
    .await;
    assert_eq!(parked, 1);
    assert!(
        error.to_lowercase().contains("too large"),
        "says why: {error}"
    );
    let left: i64 = sqlx::query_scalar("select count(*) from pm.outbox")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "nothing waits behind it");
    cancel.cancel();
    relay.await.expect("relay stops");
}

async fn worker(db: &TestDb, kafka: &KafkaConfig) -> Running {
    let config = pmcore_worker::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        database: db.config_for("worker"),
        kafka: kafka.clone(),
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

#[tokio::test]
async fn a_record_that_can_never_be_stored_is_dead_lettered_and_the_next_is_applied() {
    let db = TestDb::new().await.expect("test database");
    let kafka = kafka(&unique_prefix());
    let gateway = Uuid::now_v7();
    let (bad, good) = (Uuid::now_v7(), Uuid::now_v7());
    for id in [bad, good] {
        sqlx::query(
            "insert into pm.der_command (id, gateway_id, der_id, kind, value_kw, start_at, end_at, expires_at)
             values ($1, $2, gen_random_uuid(), 'curtail_kw', 1, now(), now() + interval '1 hour', now() + interval '1 hour')",
        )
        .bind(id)
        .bind(gateway)
        .execute(&db.pool)
        .await
        .expect("command");
    }
    let running = worker(&db, &kafka).await;
    running.ready(TIMEOUT).await;
    // A NUL byte Postgres cannot store (SQLSTATE 22021), as a gateway behind an old
    // relay could send it; then a good ack on the same key (one partition).
    let producer = producer(&kafka);
    for (command, reason) in [(bad, Some("broken\u{0}reason")), (good, None)] {
        let ack = DerCommandAck {
            command_id: command.to_string(),
            gateway_id: gateway.to_string(),
            der_id: None,
            status: "applied".into(),
            reason: reason.map(str::to_owned),
            acked_at: chrono::Utc::now().timestamp_micros(),
        };
        let envelope = Envelope::for_event(&ack, "test", None);
        send_raw(
            &producer,
            &kafka,
            catalog::COMMAND_ACKS.name,
            &envelope.subject,
            &envelope.to_headers(),
            &avro::encode(&ack).expect("encodes"),
        )
        .await;
    }
    eventually(Duration::from_secs(60), "the good ack applied", || async {
        let status: String = sqlx::query_scalar("select status from pm.der_command where id = $1")
            .bind(good)
            .fetch_one(&db.pool)
            .await
            .ok()?;
        (status == "applied").then_some(())
    })
    .await;
    let dlq = KafkaConfig::dead_letter_topic(
        &kafka.topic(catalog::COMMAND_ACKS.name),
        pmcore_worker::command_acks::CONSUMER_GROUP,
    );
    let error = read_until(&kafka, &dlq, |m| m.payload().and(header(m, "dlq_error"))).await;
    assert!(
        error.contains("22021") || error.contains("0x00"),
        "says why: {error}"
    );
    let status: String = sqlx::query_scalar("select status from pm.der_command where id = $1")
        .bind(bad)
        .fetch_one(&db.pool)
        .await
        .expect("status");
    assert_eq!(status, "pending", "the poisoned ack changed nothing");
    running.stop().await.expect("worker stops");
}
