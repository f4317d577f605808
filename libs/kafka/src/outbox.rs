//! Transactional outbox.
//!
//! A service writes its state change and [`enqueue`]s the event in one Postgres
//! transaction; [`OutboxRelay`] publishes pending rows in order with an idempotent
//! producer and deletes them once the broker acknowledged. With the broker down the
//! table grows and nothing is lost; a crash between publish and delete republishes,
//! which consumers absorb by deduplicating on `ce_id`.

use std::time::{Duration, Instant};

use futures::future::join_all;
use pmcore_events::{DomainEvent, Envelope, avro};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::{KafkaConfig, KafkaContext, idempotent_producer, trace};

/// Who publishes and on whose behalf; becomes the CloudEvents `source`, `ce_principal`
/// and `traceparent` headers (the current span's when not given).
#[derive(Debug, Clone, Default)]
pub struct EventMeta {
    pub source: String,
    pub principal: Option<String>,
    pub traceparent: Option<String>,
}

/// Adds an event to the outbox inside the caller's transaction.
pub async fn enqueue<E: DomainEvent>(
    conn: &mut PgConnection,
    event: &E,
    meta: &EventMeta,
) -> anyhow::Result<Envelope> {
    let mut envelope = Envelope::for_event(event, &meta.source, meta.principal.clone());
    envelope.traceparent = meta.traceparent.clone().or_else(trace::current_traceparent);
    let payload = avro::encode(event)?;
    let headers: Vec<(&str, String)> = envelope.to_headers();
    sqlx::query("insert into pm.outbox (topic, key, headers, payload) values ($1, $2, $3, $4)")
        .bind(E::TYPE.topic.name)
        .bind(&envelope.subject)
        .bind(serde_json::to_value(&headers)?)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(envelope)
}

/// Any number of processes may run a relay; an advisory lock lets one publish at a
/// time so records of one key cannot overtake each other.
const RELAY_LOCK: i64 = 0x706d_6f75_7462; // "pmoutb"

#[derive(Debug)]
pub struct OutboxRelay {
    pool: PgPool,
    config: KafkaConfig,
    batch_size: i64,
    idle_wait: Duration,
}

struct Pending {
    id: i64,
    topic: String,
    key: String,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, config: KafkaConfig) -> Self {
        Self {
            pool,
            config,
            batch_size: 500,
            idle_wait: Duration::from_millis(100),
        }
    }

    /// Publishes until cancelled. Errors (Postgres or broker away) are logged and
    /// retried with capped backoff; they never end the loop.
    pub async fn run(self, cancel: CancellationToken) {
        let mut producer = None;
        let mut retry = crate::retry_policy();
        let mut last_depth = Instant::now() - Duration::from_secs(60);
        loop {
            let producer_ref = match &producer {
                Some(p) => p,
                None => match idempotent_producer(&self.config) {
                    Ok(p) => producer.insert(p),
                    Err(error) => {
                        tracing::error!(%error, "cannot create outbox producer");
                        if sleep_or_cancel(&cancel, Duration::from_secs(5)).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let wait = match self.publish_batch(producer_ref).await {
                Ok(n) => {
                    retry = crate::retry_policy();
                    if n as i64 == self.batch_size {
                        continue;
                    }
                    self.idle_wait
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox publish failed; will retry");
                    metrics::counter!("pmcore_outbox_publish_failures_total").increment(1);
                    // After timed-out deliveries an idempotent producer's sequence numbers
                    // may no longer match the broker's, which then rejects every later
                    // batch (seen with tansu). A fresh producer gets a fresh producer id;
                    // the rows are still in the outbox and consumers absorb duplicates.
                    producer = None;
                    retry.next().unwrap_or(crate::MAX_BACKOFF)
                }
            };
            if last_depth.elapsed() > Duration::from_secs(5) {
                last_depth = Instant::now();
                if let Ok(depth) = depth(&self.pool).await {
                    metrics::gauge!("pmcore_outbox_depth").set(depth as f64);
                }
            }
            if sleep_or_cancel(&cancel, wait).await {
                return;
            }
        }
    }

    /// Publishes one batch in id order and deletes what the broker acknowledged.
    /// Returns how many rows were published.
    async fn publish_batch(
        &self,
        producer: &FutureProducer<KafkaContext>,
    ) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(0);
        }
        let rows = sqlx::query(
            "select id, topic, key, headers, payload from pm.outbox order by id limit $1",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let pending = rows
            .into_iter()
            .map(|row| {
                let headers: serde_json::Value = row.try_get("headers")?;
                Ok(Pending {
                    id: row.try_get("id")?,
                    topic: self.config.topic(row.try_get::<&str, _>("topic")?),
                    key: row.try_get("key")?,
                    headers: serde_json::from_value(headers)?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        // Enqueue every record before awaiting any, so the batch is pipelined; the
        // idempotent producer keeps them in order per partition.
        let mut receivers = Vec::with_capacity(pending.len());
        for p in &pending {
            let headers = crate::record_headers(p.headers.iter().map(|(k, v)| (k, v)));
            let record = FutureRecord::to(&p.topic)
                .key(&p.key)
                .payload(&p.payload)
                .headers(headers);
            match producer.send_result(record) {
                Ok(receiver) => receivers.push(receiver),
                Err((error, _)) => anyhow::bail!("enqueueing for the broker: {error}"),
            }
        }
        for result in join_all(receivers).await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => anyhow::bail!("broker did not acknowledge: {error}"),
                Err(_) => anyhow::bail!("producer dropped a delivery"),
            }
        }
        let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
        sqlx::query("delete from pm.outbox where id = any($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("pmcore_outbox_published_total").increment(ids.len() as u64);
        tracing::debug!(count = ids.len(), "outbox batch published");
        Ok(ids.len())
    }
}

/// Rows waiting to be published.
pub async fn depth(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from pm.outbox")
        .fetch_one(pool)
        .await
}

/// Sleeps unless cancelled first; returns true when cancelled.
pub(crate) async fn sleep_or_cancel(cancel: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}
