//! Anomaly flags are idempotent: the detector's memory goes with a restart or a
//! rebalance, and the batches read again must not flag the same excursion twice.

use chrono::{TimeDelta, TimeZone, Utc};
use pmcore_testkit::TestDb;
use pmcore_worker::anomalies::{Anomaly, SAME_ANOMALY_WITHIN, record};
use uuid::Uuid;

fn flag(der_id: Uuid, kind: &'static str, minute: i64) -> Anomaly {
    Anomaly {
        organization_id: Uuid::nil(),
        der_id,
        kind,
        detail: "test".to_owned(),
        value_kw: 12.0,
        observed_at: Utc
            .with_ymd_and_hms(2026, 7, 1, 14, 0, 0)
            .single()
            .expect("a time")
            + TimeDelta::minutes(minute),
    }
}

#[tokio::test]
async fn a_flag_seen_again_is_stored_and_published_once() {
    let db = TestDb::new().await.expect("database");
    let der = Uuid::now_v7();
    let mut tx = db.pool.begin().await.expect("tx");
    let window = i64::try_from(SAME_ANOMALY_WITHIN.as_secs() / 60).expect("minutes");
    let stored = [
        record(&mut tx, &flag(der, "out_of_range", 0))
            .await
            .expect("first"),
        // The same batch read again after a restart, and a later reading of the same
        // excursion that a fresh detector would flag.
        record(&mut tx, &flag(der, "out_of_range", 0))
            .await
            .expect("again"),
        record(&mut tx, &flag(der, "out_of_range", 5))
            .await
            .expect("later"),
        // Another kind, another DER, and the same DER once the window has passed.
        record(&mut tx, &flag(der, "stuck_value", 5))
            .await
            .expect("kind"),
        record(&mut tx, &flag(Uuid::now_v7(), "out_of_range", 0))
            .await
            .expect("der"),
        record(&mut tx, &flag(der, "out_of_range", window + 1))
            .await
            .expect("window"),
    ];
    tx.commit().await.expect("commit");
    assert_eq!(stored, [true, false, false, true, true, true]);
    let rows: i64 = sqlx::query_scalar("select count(*) from pm.telemetry_anomaly")
        .fetch_one(&db.pool)
        .await
        .expect("rows");
    let events: i64 = sqlx::query_scalar(
        r#"select count(*) from pm.outbox where headers @> '[["ce_type", "pmcore.telemetry.anomaly-detected.v1"]]'"#,
    )
    .fetch_one(&db.pool)
    .await
    .expect("events");
    assert_eq!(
        (rows, events),
        (4, 4),
        "one row and one event per flag stored"
    );
}
