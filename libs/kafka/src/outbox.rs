//! Transactional outbox.
//!
//! A service writes its state change and [`enqueue`]s the event in one Postgres
//! transaction; [`OutboxRelay`] publishes pending rows in order with an idempotent
//! producer and deletes them once the broker acknowledged. With the broker down the
//! table grows and nothing is lost; a crash between publish and delete republishes,
//! which consumers absorb by deduplicating on `ce_id`. A row the broker will never
//! take (too large, refused as invalid) is parked in `pm.outbox_dead` so the rows
//! behind it flow.

use std::time::{Duration, Instant};

use futures::future::join_all;
use pmcore_db::lock::SessionLock;
use pmcore_events::{DomainEvent, Envelope, avro};
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::FutureRecord,
};
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::{KafkaConfig, Producer, idempotent_producer, trace};

/// Largest record (payload plus headers) [`enqueue`] accepts. Brokers refuse records
/// over their `message.max.bytes` (about 1 MB by default, librdkafka's producer
/// likewise), so an event is refused while its transaction can still roll back.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// An event too large for the broker; the caller's change should not commit.
#[derive(Debug, thiserror::Error)]
#[error("the {ce_type} event is {size} bytes; at most {limit} can be published")]
pub struct TooLarge {
    pub ce_type: &'static str,
    pub size: usize,
    pub limit: usize,
}

/// Who publishes and on whose behalf; becomes the CloudEvents `source`, `ce_principal`
/// and `traceparent` headers (the current span's when not given).
#[derive(Debug, Clone, Default)]
pub struct EventMeta {
    pub source: String,
    pub principal: Option<String>,
    pub traceparent: Option<String>,
}

/// Adds an event to the outbox inside the caller's transaction. Fails with
/// [`TooLarge`] (downcast the error to see it) for a record no broker would take.
pub async fn enqueue<E: DomainEvent>(
    conn: &mut PgConnection,
    event: &E,
    meta: &EventMeta,
) -> anyhow::Result<Envelope> {
    // CloudEvents requires a source, and subscribers filter on it (found by the
    // contract reader on a record a test published with a defaulted `EventMeta`).
    anyhow::ensure!(
        !meta.source.trim().is_empty(),
        "{} has no source: EventMeta.source names the publishing service",
        E::TYPE.ce_type
    );
    let mut envelope = Envelope::for_event(event, &meta.source, meta.principal.clone());
    envelope.traceparent = meta.traceparent.clone().or_else(trace::current_traceparent);
    let payload = avro::encode(event)?;
    let headers: Vec<(&str, String)> = envelope.to_headers();
    let size = payload.len()
        + envelope.subject.len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > MAX_RECORD_BYTES {
        return Err(TooLarge {
            ce_type: E::TYPE.ce_type,
            size,
            limit: MAX_RECORD_BYTES,
        }
        .into());
    }
    sqlx::query("insert into pm.outbox (topic, key, headers, payload) values ($1, $2, $3, $4)")
        .bind(E::TYPE.topic.name)
        .bind(&envelope.subject)
        .bind(serde_json::to_value(&headers)?)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(envelope)
}

/// Any number of processes may run a relay; a session-level advisory lock lets one
/// publish at a time so records of one key cannot overtake each other. It is held on
/// a connection that is otherwise idle: no transaction stays open across broker I/O,
/// so a slow or absent broker never pins vacuum.
/// Payload bytes one outbox batch holds at most (one row more when a row is larger).
const BATCH_BYTES: i64 = 8 * 1024 * 1024;

const RELAY_LOCK: i64 = 0x706d_6f75_7462; // "pmoutb"

/// The longest the publisher waits between looks at an empty outbox. It looks again
/// at once while rows go out, 100 ms after the first empty look, and twice as long
/// after each further one up to this bound: an idle platform asks Postgres about once
/// a second instead of ten times (issue 16), and the first event after a quiet spell
/// leaves within a second.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(1);

/// How often a process that does not publish tries to take over: the longest rows
/// wait when the publisher is gone.
const STANDBY_WAIT: Duration = Duration::from_secs(3);

/// The wait after `empty` empty looks in a row (the first is 1).
fn idle_wait(first: Duration, empty: u32) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(empty.saturating_sub(1)))
        .min(IDLE_WAIT_MAX.max(first))
}

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

/// What became of one batch.
#[derive(Debug, Default)]
struct Published {
    sent: usize,
    parked: usize,
    /// A failure that may pass (broker away, timeout): the unsent rows stay.
    transient: Option<String>,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, config: KafkaConfig) -> Self {
        Self {
            pool,
            config,
            batch_size: 5000,
            idle_wait: Duration::from_millis(100),
        }
    }

    /// Publishes until cancelled. Errors (Postgres or broker away) are logged and
    /// retried with capped backoff; they never end the loop.
    pub async fn run(self, cancel: CancellationToken) {
        let mut producer = None;
        let mut lock: Option<SessionLock> = None;
        let mut retry = crate::retry_policy();
        let mut last_depth = Instant::now() - Duration::from_secs(60);
        let mut empty: u32 = 0;
        let limit = self.config.database_timeout();
        loop {
            if lock.is_none() {
                lock = match SessionLock::try_take(&self.pool, RELAY_LOCK, limit).await {
                    Ok(held) => held,
                    Err(error) => {
                        tracing::debug!(%error, "outbox relay needs Postgres");
                        None
                    }
                };
            }
            let wait = match (&mut lock, &producer) {
                // Another process publishes; stand by.
                (None, _) => STANDBY_WAIT,
                (Some(_), None) => match idempotent_producer(&self.config) {
                    Ok(p) => {
                        producer = Some(p);
                        continue;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot create outbox producer");
                        Duration::from_secs(5)
                    }
                },
                (Some(conn), Some(p)) => match tokio::time::timeout(
                    limit + Duration::from_millis(self.config.message_timeout_ms),
                    self.publish_batch(conn, p),
                )
                .await
                .unwrap_or_else(|_| Err(pmcore_db::NoAnswer(limit).into()))
                {
                    Ok(done) if done.transient.is_none() => {
                        retry = crate::retry_policy();
                        // Something went out: look again at once, more may wait.
                        if done.sent + done.parked > 0 {
                            empty = 0;
                            continue;
                        }
                        empty = empty.saturating_add(1);
                        idle_wait(self.idle_wait, empty)
                    }
                    Ok(done) => {
                        let error = done.transient.unwrap_or_default();
                        tracing::warn!(%error, "outbox publish failed; will retry");
                        metrics::counter!("pmcore_outbox_publish_failures_total").increment(1);
                        // After timed-out deliveries an idempotent producer's sequence
                        // numbers may no longer match the broker's, which then rejects
                        // every later batch (seen with tansu). A fresh producer gets a
                        // fresh producer id; the rows are still in the outbox and
                        // consumers absorb duplicates.
                        producer = None;
                        retry.next().unwrap_or(crate::MAX_BACKOFF)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay lost Postgres; will retry");
                        // The connection may be broken or mid-statement: dropping
                        // the lock closes it, which frees the lock for another relay.
                        lock = None;
                        retry.next().unwrap_or(crate::MAX_BACKOFF)
                    }
                },
            };
            if last_depth.elapsed() > Duration::from_secs(5) {
                last_depth = Instant::now();
                let counted = pmcore_db::within(&self.pool, limit, async |conn| {
                    depth(conn).await.map_err(anyhow::Error::from)
                })
                .await;
                if let Ok(depth) = counted {
                    metrics::gauge!("pmcore_outbox_depth").set(depth as f64);
                }
            }
            if sleep_or_cancel(&cancel, wait).await {
                break;
            }
        }
        if let Some(lock) = lock {
            lock.release().await;
        }
    }

    /// Publishes one batch in id order, deletes what the broker acknowledged and
    /// parks what it refused for good. Errs only when Postgres fails.
    async fn publish_batch(
        &self,
        conn: &mut PgConnection,
        producer: &Producer,
    ) -> anyhow::Result<Published> {
        // Up to `batch_size` rows and about `BATCH_BYTES`: the batch is awaited as a
        // whole, so its size sets how many broker round trips a burst (an event's
        // 10,000 commands) costs; the byte bound keeps memory small for large events.
        let rows = sqlx::query(
            "select id, topic, key, headers, payload
               from (select id, topic, key, headers, payload,
                            sum(octet_length(payload)) over (order by id) as upto
                       from pm.outbox order by id limit $1) b
              where upto - octet_length(payload) < $2
              order by id",
        )
        .bind(self.batch_size)
        .bind(BATCH_BYTES)
        .fetch_all(&mut *conn)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        let mut refused: Vec<(i64, String)> = Vec::new();
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let parsed = serde_json::from_value(row.try_get("headers")?);
            match parsed {
                Ok(headers) => pending.push(Pending {
                    id,
                    topic: self.config.topic(row.try_get::<&str, _>("topic")?),
                    key: row.try_get("key")?,
                    headers,
                    payload: row.try_get("payload")?,
                }),
                Err(error) => refused.push((id, format!("unreadable headers: {error}"))),
            }
        }

        // Enqueue every record before awaiting any, so the batch is pipelined; the
        // idempotent producer keeps them in order per partition.
        let mut done = Published::default();
        let mut receivers = Vec::with_capacity(pending.len());
        for p in &pending {
            let headers = crate::record_headers(p.headers.iter().map(|(k, v)| (k, v)));
            let record = FutureRecord::to(&p.topic)
                .key(&p.key)
                .payload(&p.payload)
                .headers(headers);
            match producer.send_result(record) {
                Ok(receiver) => receivers.push((p.id, receiver)),
                Err(error) if never_accepted(&error) => {
                    refused.push((p.id, error.to_string()));
                }
                Err(error) => {
                    done.transient = Some(format!("enqueueing for the broker: {error}"));
                    break;
                }
            }
        }
        let (ids, receivers): (Vec<i64>, Vec<_>) = receivers.into_iter().unzip();
        let mut acked = Vec::with_capacity(ids.len());
        for (id, result) in ids.into_iter().zip(join_all(receivers).await) {
            match result {
                Ok(_) => acked.push(id),
                Err(error) if never_accepted(&error) => {
                    refused.push((id, error.to_string()));
                }
                Err(error) => {
                    done.transient
                        .get_or_insert_with(|| format!("broker did not acknowledge: {error}"));
                }
            }
        }
        if !acked.is_empty() {
            sqlx::query("delete from pm.outbox where id = any($1)")
                .bind(&acked)
                .execute(&mut *conn)
                .await?;
            metrics::counter!("pmcore_outbox_published_total").increment(acked.len() as u64);
            tracing::debug!(count = acked.len(), "outbox batch published");
        }
        if !refused.is_empty() {
            park(conn, &refused).await?;
        }
        done.sent = acked.len();
        done.parked = refused.len();
        Ok(done)
    }
}

/// Broker answers that no retry can change.
fn never_accepted(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | MessageBatchTooLarge
                | InvalidRecord
                | InvalidTopic
                | PolicyViolation
        )
    )
}

/// Moves refused rows to `pm.outbox_dead` with the reason, in one transaction.
async fn park(conn: &mut PgConnection, refused: &[(i64, String)]) -> sqlx::Result<()> {
    let (ids, errors): (Vec<i64>, Vec<String>) = refused.iter().cloned().unzip();
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query(
        "insert into pm.outbox_dead (id, topic, key, headers, payload, created_at, error)
         select o.id, o.topic, o.key, o.headers, o.payload, o.created_at, r.error
           from pm.outbox o join unnest($1::bigint[], $2::text[]) as r (id, error) on r.id = o.id
         on conflict (id) do nothing",
    )
    .bind(&ids)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    sqlx::query("delete from pm.outbox where id = any($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    for (id, error) in refused {
        tracing::error!(outbox_id = id, %error, "the broker refuses this event for good; parked in pm.outbox_dead");
    }
    metrics::counter!("pmcore_outbox_parked_total").increment(refused.len() as u64);
    Ok(())
}

/// Rows waiting to be published.
pub async fn depth(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from pm.outbox")
        .fetch_one(conn)
        .await
}

/// Sleeps unless cancelled first; returns true when cancelled.
pub(crate) async fn sleep_or_cancel(cancel: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::idle_wait;

    #[test]
    fn an_idle_publisher_doubles_its_wait_up_to_a_second() {
        let ms = |empty| idle_wait(Duration::from_millis(100), empty).as_millis();
        let waits: Vec<u128> = (1..=7).map(ms).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(ms(u32::MAX), 1000, "no overflow after a long quiet spell");
    }

    #[test]
    fn a_first_wait_longer_than_the_bound_is_kept() {
        assert_eq!(
            idle_wait(Duration::from_secs(2), 3),
            Duration::from_secs(2),
            "the bound only shortens the backoff, never the configured wait"
        );
    }
}
