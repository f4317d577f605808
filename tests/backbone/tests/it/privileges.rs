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
        "update audit.leaf set leaf_hash = leaf_hash",
        "delete from audit.leaf",
        "update audit.tree_hash set hash = hash",
        "delete from audit.tree_hash",
        "update audit.checkpoint set note = ''",
        "delete from audit.checkpoint",
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

/// Runs `sql` as a service's own login, as the stacks connect it.
async fn as_login(db: &TestDb, service: &str, sql: &str) -> Result<(), String> {
    let pool = db.pool_for(service).await.map_err(|e| e.to_string())?;
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let result = sqlx::query(sql).execute(&mut *tx).await.map(|_| ());
    tx.rollback().await.map_err(|e| e.to_string())?;
    result.map_err(|e| e.to_string())
}

#[tokio::test]
async fn each_service_login_is_refused_what_its_service_must_not_do() {
    let db = TestDb::new().await.expect("test database");
    let refused = [
        ("worker", "update pm.api_client set roles = array['admin']"),
        (
            "scheduler",
            "insert into pm.api_client (id, organization_id, name, secret_hash, roles) select gen_random_uuid(), id, 'x', 'x', array['admin'] from pm.organization",
        ),
        ("messaging", "select secret_hash from pm.api_client"),
        ("audit_log", "select secret_hash from pm.api_client"),
        ("api", "select pm.drop_telemetry_partitions(-1)"),
        (
            "relay",
            "select pm.ensure_telemetry_partition(current_date)",
        ),
        ("relay", "delete from pm.der"),
        ("bucket_watcher", "select * from pm.der"),
        ("audit_log", "delete from audit.entry"),
        ("api", "update audit.entry set subject = 'forged'"),
    ];
    for (service, sql) in refused {
        let error = as_login(&db, service, sql).await.expect_err(sql);
        assert!(
            error.contains("permission denied"),
            "{service}: {sql}: {error}"
        );
    }
    // What they need still works.
    for (service, sql) in [
        (
            "messaging",
            "select id, roles, disabled_at from pm.api_client",
        ),
        ("api", "select secret_hash from pm.api_client"),
        (
            "worker",
            "select pm.ensure_telemetry_partition(current_date)",
        ),
        ("audit_log", AUDIT_INSERT),
        // Pruning: each owner forgets its own old inbox ids, the scheduler old
        // commands and flags.
        (
            "audit_log",
            "delete from audit.inbox where processed_at < now()",
        ),
        (
            "messaging",
            "delete from messaging.inbox where processed_at < now()",
        ),
        (
            "scheduler",
            "delete from pm.inbox where processed_at < now()",
        ),
        (
            "scheduler",
            "delete from pm.der_command where end_at < now()",
        ),
        (
            "scheduler",
            "delete from pm.telemetry_anomaly where observed_at < now()",
        ),
    ] {
        assert_eq!(
            as_login(&db, service, sql).await,
            Ok(()),
            "{service}: {sql}"
        );
    }
    // Even the scheduler cannot make retention drop today's data.
    let error = as_login(&db, "scheduler", "select pm.drop_telemetry_partitions(-1)")
        .await
        .expect_err("refused");
    assert!(error.contains("at least 7 days"), "{error}");
}
