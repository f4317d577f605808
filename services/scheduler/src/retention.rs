//! What the platform keeps only for a while, pruned by the leader with the telemetry
//! partitions: consumer inbox ids past the topics' retention (a record can no longer
//! come twice), and commands and anomaly flags as old as the telemetry dropped with
//! them. Each in small batches, so a backlog never holds a long transaction.

use pmcore_db::{inbox::Inbox, retention::delete_older};
use sqlx::PgPool;

const BATCH: i64 = 10_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub inbox: u64,
    pub commands: u64,
    pub anomalies: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.inbox + self.commands + self.anomalies
    }
}

pub async fn once(
    pool: &PgPool,
    telemetry_retention_days: i32,
    inbox_retention_days: i32,
) -> sqlx::Result<Pruned> {
    Ok(Pruned {
        inbox: Inbox::Pm.prune(pool, inbox_retention_days, BATCH).await?,
        // A command's window ended that long ago: its readings are gone too.
        commands: delete_older(
            pool,
            "pm.der_command",
            "end_at",
            telemetry_retention_days,
            BATCH,
        )
        .await?,
        anomalies: delete_older(
            pool,
            "pm.telemetry_anomaly",
            "observed_at",
            telemetry_retention_days,
            BATCH,
        )
        .await?,
    })
}
