use pmcore_events::catalog;
use pmcore_testkit::{TestDb, eventually, kafka, unique_prefix};

use crate::helpers::{
    TIMEOUT, api, audit_entries_for, audit_log, create_program, encoded_event, insert_organization,
    producer, send_raw,
};

#[tokio::test]
async fn a_state_change_and_its_event_commit_together_and_reach_the_audit_log() {
    let db = TestDb::new().await.expect("test database");
    let kafka = kafka(&unique_prefix());
    let api = api(&db, &kafka).await;
    let audit = audit_log(&db, &kafka).await;
    let org = insert_organization(&db).await;

    let (rolled_back, rolled_back_env) = create_program(&db, org, false).await;
    let (committed, committed_env) = create_program(&db, org, true).await;

    // The committed change's event travels outbox -> relay -> broker -> audit log.
    eventually(TIMEOUT, "the committed event in the audit log", || async {
        (audit_entries_for(&db, committed_env.id).await == 1).then_some(())
    })
    .await;
    let (subject, principal): (String, Option<String>) =
        sqlx::query_as("select subject, principal from audit.entry where event_id = $1")
            .bind(committed_env.id)
            .fetch_one(&db.pool)
            .await
            .expect("entry");
    assert_eq!(subject, committed.program_id);
    assert_eq!(principal.as_deref(), Some("client:test"));

    // The rolled-back change left neither a row nor an event behind. It was written
    // before the committed one, so had it reached the outbox it would have been
    // published first; give the audit log a moment to show it anyway.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let programs: i64 = sqlx::query_scalar("select count(*) from pm.program where id::text = $1")
        .bind(&rolled_back.program_id)
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(programs, 0);
    assert_eq!(audit_entries_for(&db, rolled_back_env.id).await, 0);
    let pending: i64 = sqlx::query_scalar("select count(*) from pm.outbox")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(pending, 0, "the relay deletes what the broker acknowledged");

    api.stop().await.expect("api stops");
    audit.stop().await.expect("audit-log stops");
}

#[tokio::test]
async fn an_event_delivered_twice_is_recorded_once() {
    let db = TestDb::new().await.expect("test database");
    let kafka = kafka(&unique_prefix());
    let audit = audit_log(&db, &kafka).await;
    audit.ready(TIMEOUT).await;
    let org = insert_organization(&db).await;
    let producer = producer(&kafka);

    // The same record twice (same ce_id), as a relay crash after publishing would
    // cause, then a sentinel behind them on the same partition (`send_raw`).
    let (dup, headers, payload) = encoded_event(org);
    for _ in 0..2 {
        send_raw(
            &producer,
            &kafka,
            catalog::PROGRAMS.name,
            &dup.subject,
            &headers,
            &payload,
        )
        .await;
    }
    let (sentinel, s_headers, s_payload) = encoded_event(org);
    send_raw(
        &producer,
        &kafka,
        catalog::PROGRAMS.name,
        &sentinel.subject,
        &s_headers,
        &s_payload,
    )
    .await;

    eventually(TIMEOUT, "the sentinel in the audit log", || async {
        (audit_entries_for(&db, sentinel.id).await == 1).then_some(())
    })
    .await;
    assert_eq!(audit_entries_for(&db, dup.id).await, 1);

    audit.stop().await.expect("audit-log stops");
}
