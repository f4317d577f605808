use std::time::Duration;

use pmcore_kafka::KafkaConfig;
use pmcore_testkit::{PrivateBroker, TestDb, eventually};

use crate::helpers::{api, audit_log, create_program, insert_organization};

const BEFORE: usize = 20;
const DURING: usize = 100;

async fn audited(db: &TestDb) -> (i64, i64) {
    sqlx::query_as("select count(*), count(distinct event_id) from audit.entry")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn writes_succeed_while_the_broker_is_down_and_every_event_arrives_after_it_returns() {
    let db = TestDb::new().await.expect("test database");
    let mut broker = PrivateBroker::new();
    broker.start().await.expect("private broker starts");
    // A short delivery timeout, so the outage outlasts what the producer would buffer
    // by itself and only the outbox keeps the events.
    let mut kafka = KafkaConfig::new(&broker.brokers(), "");
    kafka.message_timeout_ms = 2_000;
    let api = api(&db, &kafka).await;
    let audit = audit_log(&db, &kafka).await;
    let org = insert_organization(&db).await;

    for _ in 0..BEFORE {
        create_program(&db, org, true).await;
    }
    eventually(
        Duration::from_secs(90),
        "events before the outage",
        || async { (audited(&db).await.1 == BEFORE as i64).then_some(()) },
    )
    .await;

    broker.kill();
    for _ in 0..DURING {
        create_program(&db, org, true).await; // panics if a write failed
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let waiting: i64 = sqlx::query_scalar("select count(*) from pm.outbox")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        waiting, DURING as i64,
        "events wait in the outbox while the broker is down"
    );

    broker.start().await.expect("broker restarts");
    let total = (BEFORE + DURING) as i64;
    eventually(
        Duration::from_secs(120),
        "every event after the restart",
        || async { (audited(&db).await.1 == total).then_some(()) },
    )
    .await;
    let (entries, distinct) = audited(&db).await;
    assert_eq!(
        (entries, distinct),
        (total, total),
        "none lost, none recorded twice"
    );

    api.stop().await.expect("api stops");
    audit.stop().await.expect("audit-log stops");
}
