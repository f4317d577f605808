//! The consumer template: at-least-once, idempotent, never stuck.
//!
//! For each record: parse the CloudEvents headers and the Avro payload; claim the
//! inbox row and apply the handler in one Postgres transaction; commit; only then
//! store the offset. A record that cannot be parsed, or that the handler rejects as
//! permanently bad, is copied to `<topic>.dlq.<group>` with the error in headers and
//! the partition moves on. Transient failures retry with capped backoff.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use pmcore_db::inbox::Inbox;
use pmcore_events::{Decoded, Envelope, avro};
use rdkafka::{
    Message,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::FutureRecord,
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    KafkaConfig, KafkaContext, MAX_BACKOFF, Producer, idempotent_producer,
    outbox::sleep_or_cancel,
    retry_policy, topics, trace,
    watchdog::{Verdict, Watchdog},
};

/// One parsed record handed to a [`Handler`].
#[derive(Debug)]
pub struct Incoming {
    pub envelope: Envelope,
    pub payload: Decoded,
    /// The logical topic (without the deployment prefix).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// How a handler failed, which decides what happens to the record.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The record can never be processed: dead-letter it and move on.
    #[error("permanent: {0}")]
    Permanent(anyhow::Error),
    /// Something outside the record failed and may pass (deadlock, serialization,
    /// resources): try again, at most [`TRANSIENT_ATTEMPTS`] times, then dead-letter.
    #[error("transient: {0}")]
    Transient(anyhow::Error),
    /// A dependency cannot be reached (Postgres down, shutting down): try again for
    /// as long as it takes, since the record is not at fault.
    #[error("unavailable: {0}")]
    Unavailable(anyhow::Error),
}

/// How often a record that fails transiently is tried before it is dead-lettered;
/// with the capped backoff that is about a minute and a half.
pub const TRANSIENT_ATTEMPTS: u32 = 20;

/// What a database error says about the record that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database cannot be reached or is shutting down.
    Unavailable,
    /// Concurrency or resources; the same statement may pass later.
    Transient,
    /// Anything else (bad data, constraint, privilege, syntax): it fails every time.
    Permanent,
}

/// Sorts a database error by SQLSTATE class: retry only what can pass later, so one
/// bad record (a NUL byte, an out-of-range number) cannot wedge a partition.
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Unavailable,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.get(..2).unwrap_or_default() {
                // connection exception, operator intervention (shutdown, cancel),
                // system error (I/O); and the deployment's own faults, never the
                // record's: a login refused (28) or a database missing (3D) would
                // otherwise dead-letter every record until someone fixed a password
                "08" | "57" | "58" | "28" | "3D" => ErrorClass::Unavailable,
                // serialization failure / deadlock, insufficient resources
                "40" | "53" => ErrorClass::Transient,
                // lock not available
                "55" if code == "55P03" => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            }
        }
        _ => ErrorClass::Permanent,
    }
}

impl HandlerError {
    /// Classifies an error from a helper such as `outbox::enqueue`: database errors
    /// by their class, anything else (an event too large, one that cannot be
    /// encoded) as permanent.
    pub fn classify_any(error: anyhow::Error) -> Self {
        match error.downcast::<sqlx::Error>() {
            Ok(db) => db.into(),
            Err(other) => HandlerError::Permanent(other),
        }
    }
}

impl From<pmcore_db::NoAnswer> for HandlerError {
    fn from(error: pmcore_db::NoAnswer) -> Self {
        HandlerError::Unavailable(error.into())
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        match classify(&error) {
            ErrorClass::Unavailable => HandlerError::Unavailable(error.into()),
            ErrorClass::Transient => HandlerError::Transient(error.into()),
            ErrorClass::Permanent => HandlerError::Permanent(error.into()),
        }
    }
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies the record's effects in the caller's transaction. The inbox row is
    /// already claimed in it, so a redelivered record never reaches the handler.
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError>;

    /// Applies several records in one transaction (see [`run_batched`]); a handler
    /// overrides it to write them with one statement. Any error sends every record
    /// of the batch through [`Handler::handle`] one by one, which finds the culprit.
    async fn handle_many(
        &self,
        conn: &mut PgConnection,
        records: &[&Incoming],
    ) -> Result<(), HandlerError> {
        for record in records {
            self.handle(conn, record).await?;
        }
        Ok(())
    }
}

/// What a consumer reads and where it records what it handled.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Consumer group id, also the inbox `consumer` and part of the DLQ topic name.
    pub group: String,
    /// Logical topics.
    pub topics: Vec<&'static str>,
    pub inbox: Inbox,
    pub pace: Pace,
}

/// How soon a consumer must see a record: it sets how long each fetch may wait at
/// the broker (`KafkaConfig::fetch_wait_ms`), so the cost of an idle consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Within a fraction of a second: commands, acknowledgements, telemetry.
    Prompt,
    /// Within a few seconds: the audit trail, notifications, background work.
    Background,
}

enum Outcome {
    Applied,
    Duplicate,
    DeadLettered,
    /// Cancelled mid-retry: the offset is not stored, the record comes again.
    Abandoned,
}

/// A group member that reads from the earliest offset and stores offsets only when
/// told to (`store_offset*`), committing stored offsets every second.
pub fn subscribe(
    config: &KafkaConfig,
    group: &str,
    physical_topics: &[String],
    pace: Pace,
) -> anyhow::Result<StreamConsumer<KafkaContext>> {
    subscribe_as(config, &config.group(group), physical_topics, pace)
}

/// [`subscribe`] as the physical group id `group_id` (a generation of the logical
/// `group`, found with [`crate::home::current`]).
pub fn subscribe_as(
    config: &KafkaConfig,
    group_id: &str,
    physical_topics: &[String],
    pace: Pace,
) -> anyhow::Result<StreamConsumer<KafkaContext>> {
    let consumer: StreamConsumer<KafkaContext> = config
        .client_config()
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand, after the database commit.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // See `KafkaConfig::session_timeout_ms` for why this long.
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", "3000")
        .set("fetch.wait.max.ms", config.fetch_wait_ms(pace).to_string())
        // What librdkafka fetches ahead of the handler: 16 MB is seconds of the
        // busiest topic (telemetry at 25,000 readings/s is ~1.5 MB/s), where the
        // default of 64 MB per consumer is what a service's memory grows to while
        // it catches up on a backlog (issue 16).
        .set("queued.max.messages.kbytes", "16384")
        .create_with_context(KafkaContext)?;
    let names: Vec<&str> = physical_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(consumer)
}

/// Runs the consumer until cancelled, restarting it with capped backoff if it fails.
pub async fn run<H: Handler>(
    config: KafkaConfig,
    pool: PgPool,
    spec: ConsumerSpec,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    run_batched(config, pool, spec, handler, 1, cancel).await;
}

/// How long a batch waits for more records once it has one.
const BATCH_WAIT: Duration = Duration::from_millis(10);

/// [`run`], applying up to `max_batch` records that are already waiting in one
/// transaction (one inbox claim, [`Handler::handle_many`], one commit): for a burst
/// such as a dispatch fan-out, a commit per record is what costs. A batch that
/// fails is replayed record by record, so a poison record is still dead-lettered
/// alone and the others applied.
pub async fn run_batched<H: Handler>(
    config: KafkaConfig,
    pool: PgPool,
    spec: ConsumerSpec,
    handler: Arc<H>,
    max_batch: usize,
    cancel: CancellationToken,
) {
    let mut retry = retry_policy();
    while !cancel.is_cancelled() {
        match run_once(
            &config,
            &pool,
            &spec,
            handler.as_ref(),
            max_batch.max(1),
            &cancel,
        )
        .await
        {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(%error, group = %spec.group, "consumer failed; restarting");
                let wait = retry.next().unwrap_or(MAX_BACKOFF);
                if sleep_or_cancel(&cancel, wait).await {
                    return;
                }
            }
        }
    }
}

async fn run_once<H: Handler>(
    config: &KafkaConfig,
    pool: &PgPool,
    spec: &ConsumerSpec,
    handler: &H,
    max_batch: usize,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let physical: Vec<String> = spec.topics.iter().map(|t| config.topic(t)).collect();
    let dead_letter_topics: Vec<String> = physical
        .iter()
        .map(|t| KafkaConfig::dead_letter_topic(t, &spec.group))
        .collect();
    topics::ensure(config, &[physical.clone(), dead_letter_topics].concat()).await?;

    let group_id = crate::home::current(config, &spec.group, &physical).await?;
    let consumer = Arc::new(subscribe_as(config, &group_id, &physical, spec.pace)?);
    let names: Vec<&str> = physical.iter().map(String::as_str).collect();
    let mut dlq = DeadLetters::default();
    let mut watchdog = Watchdog::new(
        config,
        &group_id,
        &physical,
        config.stall_after(),
        config.health.clone(),
    );
    tracing::info!(group = %spec.group, %group_id, topics = ?names, "consumer started");

    loop {
        if watchdog.due()
            && let Err(stalled) = stop_if_stalled(&mut watchdog, &consumer, &spec.group).await
        {
            close_off_thread(consumer);
            return Err(stalled);
        }
        let message = tokio::select! {
            () = cancel.cancelled() => break,
            message = consumer.recv() => message,
            () = tokio::time::sleep(watchdog.until_due()) => continue,
        };
        let message = match message {
            Ok(m) => m,
            // Errors here report the client's state (broker away, rebalancing);
            // librdkafka reconnects by itself. Waiting here would only make the
            // consumer drain stale reports slowly after the broker is back.
            Err(error) => {
                tracing::warn!(%error, group = %spec.group, "consumer error");
                continue;
            }
        };
        let mut batch = vec![message];
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < max_batch {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m),
                Ok(Err(error)) => {
                    tracing::warn!(%error, group = %spec.group, "consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        let outcomes = if batch.len() == 1 {
            vec![process(config, pool, spec, handler, &mut dlq, &batch[0], cancel).await]
        } else {
            process_batch(config, pool, spec, handler, &mut dlq, &batch, cancel).await
        };
        let mut abandoned = false;
        // Offsets in order, and none past a record left for the next run.
        for (message, outcome) in batch.iter().zip(outcomes) {
            let label = match outcome {
                Outcome::Applied => "applied",
                Outcome::Duplicate => "duplicate",
                Outcome::DeadLettered => "dead_lettered",
                Outcome::Abandoned => {
                    abandoned = true;
                    break;
                }
            };
            metrics::counter!("pmcore_consumer_records_total", "group" => spec.group.clone(), "outcome" => label)
                .increment(1);
            consumer.store_offset_from_message(message)?;
        }
        if abandoned {
            break;
        }
        watchdog.progressed();
    }
    // Flush offsets stored since the last auto-commit before leaving the group.
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "final offset commit");
    }
    Ok(())
}

/// Drops a consumer on a thread of its own: closing it leaves the group and waits for
/// the broker, which after a stall may take long or, with the broker gone, for ever
/// (librdkafka's close waits without a timeout for the revocation it sends itself;
/// seen in the broker-pause test). Not `spawn_blocking`: a runtime waits for its
/// blocking tasks when it shuts down, so one endless close would keep the whole
/// service from exiting. A detached thread ends with the process.
pub fn close_off_thread(consumer: Arc<StreamConsumer<KafkaContext>>) {
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(consumer));
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread to close a consumer on; closing it here");
    }
}

/// Ends this consumer (the caller rebuilds it) when the watchdog finds its group
/// stuck; offsets stored so far are committed first, and the group moves to its next
/// generation, where the rebuilt consumer goes on from them ([`crate::home`]).
pub async fn stop_if_stalled(
    watchdog: &mut Watchdog,
    consumer: &Arc<StreamConsumer<KafkaContext>>,
    group: &str,
) -> anyhow::Result<()> {
    if let Verdict::Stalled { lag, since } = watchdog.check().await {
        tracing::warn!(%group, lag, stalled_s = since.as_secs(),
            "consumer group lags and has not moved; rebuilding the consumer");
        watchdog.rebuilt();
        // Async: a broker that is slow to answer must not block this thread.
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!(%error, "offset commit before rebuilding");
        }
        if let Err(error) = watchdog.move_group().await {
            tracing::warn!(%group, error = %format!("{error:#}"), "could not move the group; rejoining it");
        }
        anyhow::bail!("consumer group {group} stalled {lag} records behind for {since:?}");
    }
    Ok(())
}

async fn process<H: Handler>(
    config: &KafkaConfig,
    pool: &PgPool,
    spec: &ConsumerSpec,
    handler: &H,
    dlq: &mut DeadLetters,
    message: &BorrowedMessage<'_>,
    cancel: &CancellationToken,
) -> Outcome {
    let record = match parse(config, message) {
        Ok(record) => record,
        Err(reason) => {
            return dead_letter(config, &spec.group, dlq, message, &reason, cancel).await;
        }
    };
    let span = tracing::info_span!(
        "consume",
        group = %spec.group,
        topic = %record.topic,
        ce_type = %record.envelope.ce_type,
        ce_id = %record.envelope.id,
    );
    trace::continue_trace(&span, record.envelope.traceparent.as_deref());
    let mut retry = retry_policy();
    let mut attempts = 0;
    loop {
        let (error, again) = match apply(config, pool, spec, handler, &record)
            .instrument(span.clone())
            .await
        {
            Ok(true) => return Outcome::Applied,
            Ok(false) => return Outcome::Duplicate,
            Err(HandlerError::Permanent(error)) => (error, false),
            Err(HandlerError::Transient(error)) => {
                attempts += 1;
                if attempts < TRANSIENT_ATTEMPTS {
                    (error, true)
                } else {
                    (error.context(format!("failed {attempts} times")), false)
                }
            }
            Err(HandlerError::Unavailable(error)) => (error, true),
        };
        if !again {
            return dead_letter(
                config,
                &spec.group,
                dlq,
                message,
                &format!("{error:#}"),
                cancel,
            )
            .await;
        }
        tracing::warn!(error = %format!("{error:#}"), ce_id = %record.envelope.id, attempts, "retrying record");
        metrics::counter!("pmcore_consumer_retries_total", "group" => spec.group.clone())
            .increment(1);
        if sleep_or_cancel(cancel, retry.next().unwrap_or(MAX_BACKOFF)).await {
            return Outcome::Abandoned;
        }
    }
}

/// A batch in one transaction; on any failure, record by record through
/// [`process`]. One outcome per message, in order.
async fn process_batch<H: Handler>(
    config: &KafkaConfig,
    pool: &PgPool,
    spec: &ConsumerSpec,
    handler: &H,
    dlq: &mut DeadLetters,
    batch: &[BorrowedMessage<'_>],
    cancel: &CancellationToken,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
    let mut parsed = Vec::with_capacity(batch.len());
    for (i, message) in batch.iter().enumerate() {
        // Unparseable: parked alone by `process`, below.
        if let Ok(record) = parse(config, message) {
            parsed.push((i, record));
        }
    }
    match apply_many(config, pool, spec, handler, &parsed).await {
        Ok(fresh) => {
            for ((i, _), fresh) in parsed.iter().zip(fresh) {
                outcomes[*i] = Some(if fresh {
                    Outcome::Applied
                } else {
                    Outcome::Duplicate
                });
            }
        }
        Err(error) => {
            tracing::debug!(error = %format!("{error}"), group = %spec.group, records = parsed.len(),
                "batch failed; applying its records one by one");
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for (message, outcome) in batch.iter().zip(outcomes) {
        out.push(match outcome {
            Some(outcome) => outcome,
            None => process(config, pool, spec, handler, dlq, message, cancel).await,
        });
    }
    out
}

/// One transaction for many records: inbox claims, handler, commit. Per record,
/// whether it was new (false: a duplicate, nothing done).
async fn apply_many<H: Handler>(
    config: &KafkaConfig,
    pool: &PgPool,
    spec: &ConsumerSpec,
    handler: &H,
    records: &[(usize, Incoming)],
) -> Result<Vec<bool>, HandlerError> {
    pmcore_db::within(pool, config.database_timeout(), async |conn| {
        let mut tx = conn.begin().await?;
        let ids: Vec<uuid::Uuid> = records.iter().map(|(_, r)| r.envelope.id).collect();
        let mut claimed: std::collections::HashSet<uuid::Uuid> = spec
            .inbox
            .claim_many(&mut tx, &spec.group, &ids)
            .await?
            .into_iter()
            .collect();
        // A record delivered twice within the batch is new only the first time.
        let fresh: Vec<bool> = ids.iter().map(|id| claimed.remove(id)).collect();
        let todo: Vec<&Incoming> = records
            .iter()
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|((_, r), _)| r)
            .collect();
        handler.handle_many(&mut tx, &todo).await?;
        tx.commit().await?;
        Ok(fresh)
    })
    .await
}

/// One transaction: inbox claim, handler, commit. Ok(false) for a duplicate.
async fn apply<H: Handler>(
    config: &KafkaConfig,
    pool: &PgPool,
    spec: &ConsumerSpec,
    handler: &H,
    record: &Incoming,
) -> Result<bool, HandlerError> {
    pmcore_db::within(pool, config.database_timeout(), async |conn| {
        let mut tx = conn.begin().await?;
        if !spec
            .inbox
            .claim(&mut tx, &spec.group, record.envelope.id)
            .await?
        {
            return Ok(false);
        }
        handler.handle(&mut tx, record).await?;
        tx.commit().await?;
        Ok(true)
    })
    .await
}

fn parse(config: &KafkaConfig, message: &BorrowedMessage<'_>) -> Result<Incoming, String> {
    let headers = message.headers();
    let envelope = Envelope::from_headers(|name| {
        headers.and_then(|hs| hs.iter().find(|h| h.key == name).and_then(|h| h.value))
    })
    .map_err(|e| format!("bad CloudEvents headers: {e}"))?;
    let payload = avro::decode(
        message.payload().unwrap_or_default(),
        Some(&envelope.ce_type),
    )
    .map_err(|e| format!("bad payload: {e}"))?;
    let topic = message
        .topic()
        .strip_prefix(config.topic_prefix.as_str())
        .unwrap_or(message.topic())
        .to_owned();
    Ok(Incoming {
        envelope,
        payload,
        topic,
        partition: message.partition(),
        offset: message.offset(),
    })
}

/// A consumer's dead-letter producer, made when the first record is parked: most
/// consumers never park one, and every librdkafka client costs its threads and their
/// wake-ups even when idle (issue 16).
#[derive(Default)]
pub struct DeadLetters {
    producer: Option<Producer>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("connected", &self.producer.is_some())
            .finish()
    }
}

impl DeadLetters {
    fn producer(&mut self, config: &KafkaConfig) -> anyhow::Result<&Producer> {
        match &mut self.producer {
            Some(producer) => Ok(producer),
            empty => Ok(empty.insert(idempotent_producer(config)?)),
        }
    }

    fn reset(&mut self) {
        self.producer = None;
    }
}

/// Copies the record to the dead-letter topic, retrying until the broker takes it,
/// so the offset is never stored for a record that is neither applied nor parked.
/// Parks a record in `<topic>.dlq.<group>` for consumers that batch by hand;
/// false when cancelled before the broker took it (the offset must not be stored).
pub async fn dead_letter_record(
    config: &KafkaConfig,
    group: &str,
    producer: &mut DeadLetters,
    message: &BorrowedMessage<'_>,
    reason: &str,
    cancel: &CancellationToken,
) -> bool {
    matches!(
        dead_letter(config, group, producer, message, reason, cancel).await,
        Outcome::DeadLettered
    )
}

async fn dead_letter(
    config: &KafkaConfig,
    group: &str,
    dlq: &mut DeadLetters,
    message: &BorrowedMessage<'_>,
    reason: &str,
    cancel: &CancellationToken,
) -> Outcome {
    let topic = KafkaConfig::dead_letter_topic(message.topic(), group);
    tracing::warn!(
        group = %group, topic = message.topic(), partition = message.partition(),
        offset = message.offset(), %reason, "dead-lettering record"
    );
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut retry = retry_policy();
    loop {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(h);
            }
        }
        let added = [
            ("dlq_error", reason),
            ("dlq_topic", message.topic()),
            ("dlq_partition", partition.as_str()),
            ("dlq_offset", offset.as_str()),
            ("dlq_consumer_group", group),
            ("dlq_time", time.as_str()),
        ];
        for (key, value) in added {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        let sent = match dlq.producer(config) {
            Ok(producer) => producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(format!("{error:#}")),
        };
        match sent {
            Ok(_) => {
                metrics::counter!("pmcore_dead_letters_total", "group" => group.to_owned())
                    .increment(1);
                return Outcome::DeadLettered;
            }
            Err(error) => {
                tracing::warn!(%error, %topic, "dead-letter publish failed; retrying");
                // A fresh producer id next time, as in the outbox relay.
                dlq.reset();
                if sleep_or_cancel(cancel, retry.next().unwrap_or(MAX_BACKOFF)).await {
                    return Outcome::Abandoned;
                }
            }
        }
    }
}

#[cfg(test)]
mod classify_tests {
    use std::borrow::Cow;

    use super::*;

    #[derive(Debug)]
    struct Db(&'static str);

    impl std::fmt::Display for Db {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "sqlstate {}", self.0)
        }
    }

    impl std::error::Error for Db {}

    impl sqlx::error::DatabaseError for Db {
        fn message(&self) -> &str {
            self.0
        }

        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }

        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn class(code: &'static str) -> ErrorClass {
        classify(&sqlx::Error::Database(Box::new(Db(code))))
    }

    #[test]
    fn the_deployments_faults_wait_and_the_records_faults_dead_letter() {
        // login refused, database missing, connection lost, shutting down
        for code in ["28P01", "28000", "3D000", "08006", "57P01"] {
            assert_eq!(class(code), ErrorClass::Unavailable, "{code}");
        }
        for code in ["40001", "40P01", "53300", "55P03"] {
            assert_eq!(class(code), ErrorClass::Transient, "{code}");
        }
        // a NUL byte, out of range, a constraint, a privilege
        for code in ["22021", "22003", "23505", "42501"] {
            assert_eq!(class(code), ErrorClass::Permanent, "{code}");
        }
    }
}
