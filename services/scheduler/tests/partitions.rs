//! Partition upkeep against a real Postgres.

use pmcore_testkit::TestDb;

#[tokio::test]
async fn upcoming_days_exist_and_expired_days_are_dropped() {
    pmcore_testkit::init_logs();
    let db = TestDb::new().await.expect("test database");
    sqlx::query("select pm.ensure_telemetry_partition((now() at time zone 'UTC')::date - 500)")
        .execute(&db.pool)
        .await
        .expect("an old day");
    let scheduler = db
        .pool_for("scheduler")
        .await
        .expect("the scheduler's login");
    let dropped = pmcore_scheduler::partitions::once(&scheduler, 400)
        .await
        .expect("maintained");
    assert_eq!(dropped, 2, "the old day's raw and rollup partitions");
    let (ahead, oldest): (i64, String) = sqlx::query_as(
        "select count(*) filter (where right(c.relname, 8) >= to_char(now() + interval '7 days', 'YYYYMMDD')),
                min(right(c.relname, 8))
         from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
         where p.relname = 'telemetry'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("partitions");
    assert_eq!(ahead, 1, "a partition a week ahead");
    assert!(
        oldest.as_str() > "2025",
        "nothing older than the retention: {oldest}"
    );
    // Running again changes nothing.
    assert_eq!(
        pmcore_scheduler::partitions::once(&scheduler, 400)
            .await
            .expect("again"),
        0
    );
}

#[tokio::test]
async fn inbox_ids_commands_and_flags_past_their_retention_are_pruned_in_batches() {
    use pmcore_scheduler::retention::{Pruned, once};

    pmcore_testkit::init_logs();
    let db = TestDb::new().await.expect("test database");
    // 25 inbox ids handled 20 days ago and 3 recent; a command and a flag of 500 days
    // ago and of today.
    sqlx::raw_sql(
        "insert into pm.inbox (consumer, event_id, processed_at)
         select 'test', gen_random_uuid(), now() - interval '20 days' from generate_series(1, 25);
         insert into pm.inbox (consumer, event_id) select 'test', gen_random_uuid() from generate_series(1, 3);
         insert into pm.der_command (id, gateway_id, der_id, kind, value_kw, start_at, end_at, expires_at, status)
         select gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'curtail_kw', 1, t, t + interval '1 hour',
                t + interval '1 hour', 'applied'
           from (values (now() - interval '500 days'), (now())) as v(t);
         insert into pm.telemetry_anomaly (id, organization_id, der_id, kind, detail, observed_at)
         select gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'out_of_range', 'test', t
           from (values (now() - interval '500 days'), (now())) as v(t);",
    )
    .execute(&db.pool)
    .await
    .expect("rows");
    let scheduler = db
        .pool_for("scheduler")
        .await
        .expect("the scheduler's login");
    let pruned = once(&scheduler, 400, 14).await.expect("pruned");
    assert_eq!(
        pruned,
        Pruned {
            inbox: 25,
            commands: 1,
            anomalies: 1
        }
    );
    let left: (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from pm.inbox), (select count(*) from pm.der_command),
                (select count(*) from pm.telemetry_anomaly)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("counts");
    assert_eq!(left, (3, 1, 1), "what is recent stays");
    // Batches: a batch smaller than the backlog still deletes all of it.
    sqlx::query(
        "insert into pm.inbox (consumer, event_id, processed_at)
         select 'test', gen_random_uuid(), now() - interval '20 days' from generate_series(1, 25)",
    )
    .execute(&db.pool)
    .await
    .expect("more");
    let deleted = pmcore_db::inbox::Inbox::Pm
        .prune(&scheduler, 14, 10)
        .await
        .expect("batches");
    assert_eq!(deleted, 25);
    assert_eq!(
        once(&scheduler, 400, 14).await.expect("again"),
        Pruned::default()
    );
}
