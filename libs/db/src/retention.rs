//! Rows kept for a while only (inbox ids, old commands, old flags), deleted in small
//! batches: each batch is its own short transaction, so pruning a backlog of millions
//! never holds locks or a snapshot for long.

use sqlx::PgPool;

/// Deletes the rows of `table` whose `column` (a timestamp) is more than `keep_days`
/// old, `batch` rows per statement; returns how many. `table` and `column` are the
/// caller's constants, never input.
pub async fn delete_older(
    pool: &PgPool,
    table: &'static str,
    column: &'static str,
    keep_days: i32,
    batch: i64,
) -> sqlx::Result<u64> {
    let batch = batch.max(1);
    let sql = format!(
        "delete from {table} where ctid = any(array(
             select ctid from {table}
              where {column} < now() - make_interval(days => $1) limit $2))"
    );
    let mut total = 0;
    loop {
        let deleted = sqlx::query(&sql)
            .bind(keep_days)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}
