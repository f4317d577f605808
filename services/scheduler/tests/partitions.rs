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
