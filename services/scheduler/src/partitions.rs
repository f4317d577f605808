//! Telemetry partitions: the coming week's days exist before readings arrive, and
//! days past the retention are dropped whole, with the rows kept as long (see
//! `retention`). Only the leader does it.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::Leadership;

/// Days ahead that always have a partition.
const AHEAD_DAYS: i32 = 7;

pub async fn maintain(
    pool: PgPool,
    leadership: Leadership,
    retention_days: i32,
    inbox_retention_days: i32,
    every: Duration,
    database_timeout: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !leadership.is_leader() {
            continue;
        }
        match pmcore_db::bounded(database_timeout, once(&pool, retention_days)).await {
            Ok(0) => tracing::debug!("telemetry partitions in place"),
            Ok(dropped) => {
                tracing::info!(dropped, retention_days, "old telemetry partitions dropped")
            }
            Err(error) => tracing::warn!(%error, "telemetry partition maintenance failed"),
        }
        let pruning = crate::retention::once(&pool, retention_days, inbox_retention_days);
        match pmcore_db::bounded(database_timeout, pruning).await {
            Ok(pruned) if pruned.total() == 0 => {}
            Ok(pruned) => tracing::info!(?pruned, "old inbox ids, commands and flags pruned"),
            Err(error) => tracing::warn!(%error, "pruning failed"),
        }
    }
}

/// Creates the next days' partitions and drops expired ones; returns how many were dropped.
pub async fn once(pool: &PgPool, retention_days: i32) -> sqlx::Result<i32> {
    sqlx::query(
        "select pm.ensure_telemetry_partition((now() at time zone 'UTC')::date + d)
         from generate_series(0, $1) as d",
    )
    .bind(AHEAD_DAYS)
    .execute(pool)
    .await?;
    sqlx::query_scalar("select pm.drop_telemetry_partitions($1)")
        .bind(retention_days)
        .fetch_one(pool)
        .await
}
