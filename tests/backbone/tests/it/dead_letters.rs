use pmcore_events::catalog;
use pmcore_kafka::KafkaConfig;
use pmcore_testkit::{TestDb, eventually, kafka, unique_prefix};
use rdkafka::Message;

use crate::helpers::{
    POISON, TIMEOUT, audit_entries_for, audit_log, encoded_event, header, insert_organization,
    producer, read_until, send_raw,
};

#[tokio::test]
async fn an_undecodable_record_goes_to_the_dead_letter_topic_and_the_consumer_goes_on() {
    let db = TestDb::new().await.expect("test database");
    let kafka = kafka(&unique_prefix());
    let audit = audit_log(&db, &kafka).await;
    audit.ready(TIMEOUT).await;
    let org = insert_organization(&db).await;
    let producer = producer(&kafka);

    // Valid headers, garbage payload; then no CloudEvents headers at all; then a good
    // event, in that order on one partition (`send_raw`).
    let (poison, mut headers, _) = encoded_event(org);
    headers.push((POISON.0, POISON.1.to_owned()));
    send_raw(
        &producer,
        &kafka,
        catalog::PROGRAMS.name,
        &poison.subject,
        &headers,
        b"\xC3\x01garbage",
    )
    .await;
    send_raw(
        &producer,
        &kafka,
        catalog::PROGRAMS.name,
        &poison.subject,
        &[(POISON.0, POISON.1.to_owned())],
        b"{\"not\": \"avro\"}",
    )
    .await;
    let (good, g_headers, g_payload) = encoded_event(org);
    send_raw(
        &producer,
        &kafka,
        catalog::PROGRAMS.name,
        &good.subject,
        &g_headers,
        &g_payload,
    )
    .await;

    eventually(TIMEOUT, "the good event behind the poison", || async {
        (audit_entries_for(&db, good.id).await == 1).then_some(())
    })
    .await;
    assert_eq!(audit_entries_for(&db, poison.id).await, 0);

    let group: String = sqlx::query_scalar("select consumer from audit.inbox limit 1")
        .fetch_one(&db.pool)
        .await
        .expect("the consumer recorded its group");
    let dlq = KafkaConfig::dead_letter_topic(&kafka.topic(catalog::PROGRAMS.name), &group);
    let mut errors = Vec::new();
    read_until(&kafka, &dlq, |m| {
        errors.push((
            header(m, "dlq_error").unwrap_or_default(),
            m.payload().map(<[u8]>::to_vec),
            header(m, "ce_id"),
        ));
        (errors.len() == 2).then_some(())
    })
    .await;
    assert!(
        errors[0].0.contains("bad payload"),
        "error says why: {}",
        errors[0].0
    );
    assert_eq!(
        errors[0].1.as_deref(),
        Some(&b"\xC3\x01garbage"[..]),
        "payload kept byte for byte"
    );
    assert_eq!(
        errors[0].2,
        Some(poison.id.to_string()),
        "original headers kept"
    );
    assert!(
        errors[1].0.contains("missing header"),
        "error says why: {}",
        errors[1].0
    );

    audit.stop().await.expect("audit-log stops");
}
