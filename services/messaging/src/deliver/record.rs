//! Attempts are written in batches: one transaction (a handful of statements over
//! arrays) for every attempt that finished while the last batch was being written,
//! instead of a transaction of four round trips per delivery, which made Postgres the
//! bottleneck (`just bench-messaging`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Outcome, disable};
use crate::retry;

/// One finished attempt, to be written.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) delivery: Uuid,
    pub(super) endpoint: Option<Uuid>,
    /// Attempts before this one.
    pub(super) attempts: i32,
    pub(super) outcome: Outcome,
    pub(super) at: DateTime<Utc>,
}

/// Most attempts written in one transaction.
const BATCH: usize = 256;

/// Writes what arrives until every sender is gone.
pub(super) async fn run(
    pool: PgPool,
    disable_after: chrono::Duration,
    mut rx: mpsc::Receiver<Finished>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let started = std::time::Instant::now();
        let written = write(&pool, &batch, disable_after).await;
        metrics::histogram!("pmcore_messaging_record_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            attempts = batch.len(),
            ms = started.elapsed().as_millis(),
            "recorded"
        );
        if let Err(error) = written {
            // Their leases run out and they are tried again: at least once.
            tracing::warn!(error = %error, attempts = batch.len(), "recording attempts");
        }
        batch.clear();
    }
}

/// Columns of the rows to write, one entry per attempt.
#[derive(Debug, Default)]
struct Columns {
    ids: Vec<Uuid>,
    started: Vec<DateTime<Utc>>,
    codes: Vec<Option<i32>>,
    latencies: Vec<i32>,
    responses: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    statuses: Vec<&'static str>,
    attempts: Vec<i32>,
    next: Vec<Option<DateTime<Utc>>>,
    delivered: Vec<Option<DateTime<Utc>>>,
}

async fn write(
    pool: &PgPool,
    batch: &[Finished],
    disable_after: chrono::Duration,
) -> sqlx::Result<()> {
    let mut c = Columns::default();
    let mut recovered = Vec::new();
    let mut failing = Vec::new();
    let mut gone = Vec::new();
    for f in batch {
        let attempts = f.attempts + 1;
        let (code, response, error, latency) = match &f.outcome {
            Outcome::Delivered {
                code,
                response,
                latency,
            } => (*code, response.clone(), None, *latency),
            Outcome::Gone {
                code,
                response,
                latency,
            } => (
                *code,
                response.clone(),
                Some("answered 410 Gone".to_owned()),
                *latency,
            ),
            Outcome::Failed {
                code,
                response,
                error,
                latency,
                ..
            } => (*code, response.clone(), Some(error.clone()), *latency),
        };
        let (status, next, delivered) = match &f.outcome {
            Outcome::Delivered { .. } => ("delivered", None, Some(f.at)),
            Outcome::Gone { .. } => ("failed", None, None),
            Outcome::Failed { retry_after, .. } => {
                match retry::after_failure(
                    u32::try_from(attempts).unwrap_or(u32::MAX),
                    f.at,
                    *retry_after,
                ) {
                    retry::Next::RetryAt(at) => ("pending", Some(at), None),
                    retry::Next::GiveUp => ("failed", None, None),
                }
            }
        };
        if let Some(endpoint) = f.endpoint {
            match &f.outcome {
                Outcome::Delivered { .. } => recovered.push(endpoint),
                Outcome::Gone { .. } => gone.push(endpoint),
                Outcome::Failed { .. } => failing.push(endpoint),
            }
        }
        c.ids.push(f.delivery);
        c.started.push(f.at);
        c.codes.push(code);
        c.latencies
            .push(i32::try_from(latency.as_millis()).unwrap_or(i32::MAX));
        c.responses.push(response);
        c.errors.push(error);
        c.statuses.push(status);
        c.attempts.push(attempts);
        c.next.push(next);
        c.delivered.push(delivered);
    }
    let now = batch.iter().map(|f| f.at).max().unwrap_or_else(Utc::now);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into messaging.attempt (delivery_id, started_at, status_code, latency_ms, response, error)
         select * from unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::int[], $5::text[], $6::text[])",
    )
    .bind(&c.ids)
    .bind(&c.started)
    .bind(&c.codes)
    .bind(&c.latencies)
    .bind(&c.responses)
    .bind(&c.errors)
    .execute(&mut *tx)
    .await?;
    // Only rows still pending: one dropped meanwhile (its endpoint disabled by
    // another attempt, or deleted) stays dropped; its attempt is logged all the same.
    sqlx::query(
        "update messaging.delivery d
            set status = u.status, attempts = u.attempts,
                next_attempt_at = coalesce(u.next_at, d.next_attempt_at),
                delivered_at = u.delivered_at, leased_until = null, last_error = u.error
           from unnest($1::uuid[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::text[])
                as u(id, status, attempts, next_at, delivered_at, error)
          where d.id = u.id and d.status = 'pending'",
    )
    .bind(&c.ids)
    .bind(&c.statuses)
    .bind(&c.attempts)
    .bind(&c.next)
    .bind(&c.delivered)
    .bind(&c.errors)
    .execute(&mut *tx)
    .await?;
    if !recovered.is_empty() {
        sqlx::query(
            "update messaging.endpoint set failing_since = null
              where id = any($1) and failing_since is not null",
        )
        .bind(&recovered)
        .execute(&mut *tx)
        .await?;
    }
    // An endpoint that also succeeded in this batch is not failing.
    failing.retain(|e| !recovered.contains(e));
    failing.sort();
    failing.dedup();
    if !failing.is_empty() {
        let since: Vec<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
            "update messaging.endpoint set failing_since = coalesce(failing_since, $2)
              where id = any($1) and enabled
              returning id, failing_since",
        )
        .bind(&failing)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (endpoint, since) in since {
            if retry::should_disable(since, now, disable_after) {
                let hours = disable_after.num_hours();
                let reason = if hours % 24 == 0 {
                    format!("every attempt failed for {} days", hours / 24)
                } else {
                    format!("every attempt failed for {hours} hours")
                };
                disable(&mut tx, endpoint, &reason, now).await?;
            }
        }
    }
    gone.sort();
    gone.dedup();
    for endpoint in gone {
        disable(&mut tx, endpoint, "the receiver answered 410 Gone", now).await?;
    }
    tx.commit().await
}
