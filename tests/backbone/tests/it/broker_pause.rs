//! A broker that stalls longer than the consumers' session timeout (SIGSTOP, as a
//! long disk stall or an overloaded host would) and then goes on: every consumer must
//! resume by itself, and a broker restarted on its data must serve a new group.

use std::time::Duration;

use pmcore_events::catalog;
use pmcore_kafka::KafkaConfig;
use pmcore_testkit::{PrivateBroker, TestDb, eventually, http_status};

use crate::helpers::{api, audit_log, create_program, insert_organization, read_until};

async fn audited(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(distinct event_id) from audit.entry")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn consumers_resume_by_themselves_after_the_broker_stalls_past_their_session() {
    let db = TestDb::new().await.expect("test database");
    let mut broker = PrivateBroker::new();
    broker.start().await.expect("private broker starts");
    // Short timeouts so the stall outlasts the session within a test's patience.
    let mut kafka = KafkaConfig::new(&broker.brokers(), "");
    kafka.session_timeout_ms = 6_000;
    kafka.stall_after_s = 10;
    let api = api(&db, &kafka).await;
    let audit = audit_log(&db, &kafka).await;
    let org = insert_organization(&db).await;

    for _ in 0..20 {
        create_program(&db, org, true).await;
    }
    eventually(
        Duration::from_secs(90),
        "events before the stall",
        || async { (audited(&db).await == 20).then_some(()) },
    )
    .await;

    broker.pause();
    for _ in 0..30 {
        create_program(&db, org, true).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    broker.resume();
    for _ in 0..30 {
        create_program(&db, org, true).await;
    }
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(120),
        "every event after the stall",
        || async { (audited(&db).await == 80).then_some(()) },
    )
    .await;
    eprintln!(
        "audit caught up {:?} after the broker resumed",
        started.elapsed()
    );
    assert_eq!(
        http_status(audit.addr, "/readyz").await,
        Some(200),
        "ready again once it moves"
    );

    // The broker restarted on its data after all that: a new group reads every record.
    audit.stop().await.expect("audit-log stops");
    api.stop().await.expect("api stops");
    broker.kill();
    broker.start().await.expect("broker restarts on its data");
    let topic = kafka.topic(catalog::PROGRAMS.name);
    let mut seen = std::collections::HashSet::new();
    read_until(&kafka, &topic, |m| {
        seen.insert((rdkafka::Message::partition(m), rdkafka::Message::offset(m)));
        (seen.len() >= 80).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_watchdog_calls_a_group_stuck_when_it_lags_and_does_not_move_and_healthy_when_it_moves()
{
    use std::sync::Arc;

    use pmcore_kafka::watchdog::{Verdict, Watchdog};
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{CommitMode, Consumer},
    };

    let kafka = pmcore_testkit::kafka(&pmcore_testkit::unique_prefix());
    let topic = kafka.topic(catalog::PROGRAMS.name);
    pmcore_kafka::topics::ensure(&kafka, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let producer = crate::helpers::producer(&kafka);
    let org = uuid::Uuid::now_v7();
    for _ in 0..5 {
        let (event, headers, payload) = crate::helpers::encoded_event(org);
        crate::helpers::send_raw(
            &producer,
            &kafka,
            catalog::PROGRAMS.name,
            &event.subject,
            &headers,
            &payload,
        )
        .await;
    }
    // A member of a group that reads nothing: it lags by five and never moves.
    let group = "watched";
    let consumer = Arc::new(
        pmcore_kafka::consumer::subscribe(
            &kafka,
            group,
            std::slice::from_ref(&topic),
            pmcore_kafka::consumer::Pace::Prompt,
        )
        .expect("subscribe"),
    );
    let mut watchdog = Watchdog::new(
        &kafka,
        &kafka.group(group),
        std::slice::from_ref(&topic),
        Duration::from_secs(2),
        kafka.health.clone(),
    );
    assert_eq!(watchdog.check().await, Verdict::Healthy, "not yet");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    match watchdog.check().await {
        Verdict::Stalled { lag, .. } => assert_eq!(lag, 5),
        other => panic!("expected a stall, got {other:?}"),
    }
    assert_eq!(kafka.health.stalled().len(), 1, "readiness hears of it");

    // Committing the log's end is progress: healthy again, and caught up.
    let mut offsets = TopicPartitionList::new();
    for partition in 0..kafka.partitions {
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(5))
            .expect("watermarks");
        offsets
            .add_partition_offset(&topic, partition, Offset::Offset(high))
            .expect("offset");
    }
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    assert_eq!(watchdog.check().await, Verdict::Healthy);
    assert!(kafka.health.stalled().is_empty());
}

#[tokio::test]
async fn a_stuck_group_moves_to_its_next_generation_with_its_offsets_once() {
    use pmcore_kafka::home;
    use rdkafka::{
        ClientConfig, Offset, TopicPartitionList,
        consumer::{BaseConsumer, CommitMode, Consumer},
        util::Timeout,
    };

    let kafka = pmcore_testkit::kafka(&pmcore_testkit::unique_prefix());
    let topic = kafka.topic(catalog::PROGRAMS.name);
    pmcore_kafka::topics::ensure(&kafka, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let topics = [topic.clone()];
    let client = |group: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("client")
    };
    let commit = |group: &str, offset: i64| {
        let mut list = TopicPartitionList::new();
        for p in 0..3 {
            list.add_partition_offset(&topic, p, Offset::Offset(offset))
                .expect("partition");
        }
        client(group)
            .commit(&list, CommitMode::Sync)
            .expect("commit");
    };
    let offsets = |group: &str| -> Vec<Offset> {
        let mut list = TopicPartitionList::new();
        for p in 0..3 {
            list.add_partition(&topic, p);
        }
        client(group)
            .committed_offsets(list, Timeout::After(Duration::from_secs(5)))
            .expect("committed")
            .elements()
            .iter()
            .map(|e| e.offset())
            .collect()
    };

    let base = kafka.group("pmcore-test");
    assert_eq!(
        home::current(&kafka, "pmcore-test", &topics)
            .await
            .expect("current"),
        base
    );
    commit(&base, 7);
    let moved = home::move_on(&kafka, &base, &topics).await.expect("moved");
    assert_eq!(moved, format!("{base}.g1"));
    assert_eq!(
        offsets(&moved),
        vec![Offset::Offset(7); 3],
        "seeded with the stuck group's offsets"
    );
    assert_eq!(
        home::current(&kafka, "pmcore-test", &topics)
            .await
            .expect("current"),
        moved
    );

    // The new generation moved on; another instance that saw the same stall late must
    // join it, not rewind it to the old group's offsets.
    commit(&moved, 12);
    let again = home::move_on(&kafka, &base, &topics).await.expect("moved");
    assert_eq!(again, moved);
    assert_eq!(offsets(&moved), vec![Offset::Offset(12); 3], "not rewound");

    // And from there, on to the next.
    let next = home::move_on(&kafka, &moved, &topics).await.expect("moved");
    assert_eq!(next, format!("{base}.g2"));
    assert_eq!(offsets(&next), vec![Offset::Offset(12); 3]);
    assert_eq!(
        home::current(&kafka, "pmcore-test", &topics)
            .await
            .expect("current"),
        next
    );
}
