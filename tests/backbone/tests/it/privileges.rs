//! Each service role has only the privileges it needs; the audit trail is append-only.

use pmcore_testkit::TestDb;

async fn as_role(db: &TestDb, role: &str, sql: &str) -> Result<(), String> {
    let mut tx = db.pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query(&format!("set local role {role}"))
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    let result = sqlx::query(sql).execute(&mut *tx).await.map(|_| ());
    tx.rollback().await.map_err(|e| e.to_string())?;
    result.map_err(|e| e.to_string())
}

const AUDIT_INSERT: &str =
    "insert into audit.entry (event_id, event_type, source, subject, occurred_at, topic, payload)
     values (gen_random_uuid(), 't', 's', 'x', now(), 'pm.programs.v1', '{}')";

#[tokio::test]
async fn the_audit_role_may_append_but_never_rewrite_the_trail() {
    let db = TestDb::new().await.expect("test database");
    assert_eq!(as_role(&db, "pmcore_audit_log", AUDIT_INSERT).await, Ok(()));
    for sql in [
        "update audit.entry set subject = 'forged'",
        "delete from audit.entry",
    ] {
        let denied = as_role(&db, "pmcore_audit_log", sql).await.expect_err(sql);
        assert!(denied.contains("permission denied"), "{sql}: {denied}");
    }
}

#[tokio::test]
async fn services_cannot_touch_schemas_they_do_not_own() {
    let db = TestDb::new().await.expect("test database");
    let denied = as_role(&db, "pmcore_api", AUDIT_INSERT)
        .await
        .expect_err("api writes audit");
    assert!(denied.contains("permission denied"), "{denied}");
    let denied = as_role(&db, "pmcore_audit_log", "select * from pm.program")
        .await
        .expect_err("audit reads pm");
    assert!(denied.contains("permission denied"), "{denied}");
    let denied = as_role(&db, "pmcore_bucket_watcher", "delete from pm.program")
        .await
        .expect_err("bucket-watcher deletes programs");
    assert!(denied.contains("permission denied"), "{denied}");
    assert_eq!(
        as_role(&db, "pmcore_api", "select * from pm.program").await,
        Ok(())
    );
}
