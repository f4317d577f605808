//! Telemetry persistence: `der.telemetry.v1` in large batches into the
//! day-partitioned `pm.telemetry` and its one-minute rollup.
//!
//! Each poll gathers records until enough readings or a short wait has passed,
//! then writes them in one transaction (raw rows, rollups from the rows actually
//! inserted, anomaly flags and their events), commits, and only then stores the
//! offsets. Redelivered records hit the `(der_id, ts)` key and add nothing.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, Utc};
use pmcore_events::{catalog, domain::TelemetryBatch};
use pmcore_kafka::{KafkaConfig, consumer, topics, watchdog::Watchdog};
use rdkafka::{Message, consumer::Consumer, message::BorrowedMessage};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::anomalies::{self, AnomalyConfig, Detector};

pub const CONSUMER_GROUP: &str = "pmcore-worker-telemetry";

#[derive(Debug, Clone, clap::Args)]
pub struct StoreConfig {
    /// Readings gathered into one database transaction at most.
    #[arg(
        long = "telemetry-batch-readings",
        env = "PMCORE_WORKER_TELEMETRY_BATCH_READINGS",
        default_value_t = 20_000
    )]
    pub batch_readings: usize,

    /// Longest wait for more records before writing what was gathered, in ms.
    #[arg(
        long = "telemetry-batch-wait-ms",
        env = "PMCORE_WORKER_TELEMETRY_BATCH_WAIT_MS",
        default_value_t = 200
    )]
    pub batch_wait_ms: u64,

    #[command(flatten)]
    pub anomalies: AnomalyConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            batch_readings: 20_000,
            batch_wait_ms: 200,
            anomalies: AnomalyConfig::default(),
        }
    }
}

/// Readings as columns, ready for `unnest`.
#[derive(Debug, Default)]
struct Columns {
    der_id: Vec<Uuid>,
    ts: Vec<DateTime<Utc>>,
    power_kw: Vec<f64>,
    soc_pct: Vec<Option<f32>>,
}

impl Columns {
    fn len(&self) -> usize {
        self.der_id.len()
    }

    /// Appends a batch, or says why it can never be stored.
    fn push(&mut self, batch: &TelemetryBatch) -> Result<(), String> {
        let start = self.len();
        for (i, r) in batch.readings.iter().enumerate() {
            let parsed = r
                .der_id
                .parse::<Uuid>()
                .ok()
                .zip(DateTime::from_timestamp_micros(r.ts));
            let Some((der_id, ts)) = parsed.filter(|_| r.power_kw.is_finite()) else {
                self.truncate(start);
                return Err(format!("readings[{i}] has a bad der_id, ts or power_kw"));
            };
            self.der_id.push(der_id);
            self.ts.push(ts);
            self.power_kw.push(r.power_kw);
            self.soc_pct.push(r.soc_pct);
        }
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.der_id.truncate(len);
        self.ts.truncate(len);
        self.power_kw.truncate(len);
        self.soc_pct.truncate(len);
    }

    fn clear(&mut self) {
        self.truncate(0);
    }
}

pub async fn run(kafka: KafkaConfig, pool: PgPool, config: StoreConfig, cancel: CancellationToken) {
    let mut detector = Detector::new(config.anomalies.clone());
    while !cancel.is_cancelled() {
        match run_once(&kafka, &pool, &config, &mut detector, &cancel).await {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "telemetry consumer failed; restarting");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}

async fn run_once(
    kafka: &KafkaConfig,
    pool: &PgPool,
    config: &StoreConfig,
    detector: &mut Detector,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let topic = kafka.topic(catalog::TELEMETRY.name);
    let dead_letters = KafkaConfig::dead_letter_topic(&topic, CONSUMER_GROUP);
    topics::ensure(kafka, &[topic.clone(), dead_letters]).await?;
    let group_id =
        pmcore_kafka::home::current(kafka, CONSUMER_GROUP, std::slice::from_ref(&topic)).await?;
    let consumer = Arc::new(consumer::subscribe_as(
        kafka,
        &group_id,
        std::slice::from_ref(&topic),
        consumer::Pace::Prompt,
    )?);
    let mut watchdog = Watchdog::new(
        kafka,
        &group_id,
        std::slice::from_ref(&topic),
        kafka.stall_after(),
        kafka.health.clone(),
    );
    let mut dlq = consumer::DeadLetters::default();
    let mut partitions: HashSet<NaiveDate> = HashSet::new();
    let mut columns = Columns::default();
    let wait = Duration::from_millis(config.batch_wait_ms);
    tracing::info!(%topic, "telemetry consumer started");

    'poll: loop {
        if watchdog.due()
            && let Err(stalled) =
                consumer::stop_if_stalled(&mut watchdog, &consumer, CONSUMER_GROUP).await
        {
            consumer::close_off_thread(consumer);
            return Err(stalled);
        }
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            m = consumer.recv() => m,
            () = tokio::time::sleep(watchdog.until_due()) => continue,
        };
        let first = match first {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "telemetry consumer error");
                continue;
            }
        };
        let deadline = Instant::now() + wait;
        let mut messages: Vec<BorrowedMessage<'_>> = vec![first];
        columns.clear();
        let mut index = 0;
        loop {
            // Decode what arrived so far, parking what can never be stored.
            while index < messages.len() {
                let message = &messages[index];
                if let Err(reason) = decode_into(message, &mut columns)
                    && !consumer::dead_letter_record(
                        kafka,
                        CONSUMER_GROUP,
                        &mut dlq,
                        message,
                        &reason,
                        cancel,
                    )
                    .await
                {
                    break 'poll;
                }
                index += 1;
            }
            if columns.len() >= config.batch_readings {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(m)) => messages.push(m),
                Ok(Err(error)) => tracing::warn!(%error, "telemetry consumer error"),
                Err(_) => break,
            }
        }
        if columns.len() > 0 {
            let started = Instant::now();
            // Judged once: a retried write must not lose or repeat a flag.
            let limit = kafka.database_timeout();
            // Known DERs need no connection: this runs for every batch.
            let learnt = if detector.knows_all(&columns.der_id) {
                Ok(())
            } else {
                pmcore_db::within(pool, limit, async |conn| {
                    detector
                        .learn(conn, &columns.der_id)
                        .await
                        .map_err(anyhow::Error::from)
                })
                .await
            };
            let found = match learnt {
                Ok(()) => (0..columns.len())
                    .filter_map(|i| {
                        detector.observe(columns.der_id[i], columns.ts[i], columns.power_kw[i])
                    })
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "cannot load DER nameplates; anomalies skipped for this batch");
                    Vec::new()
                }
            };
            let mut attempt = 0u32;
            loop {
                let written = pmcore_db::within(pool, limit, async |conn| {
                    write(conn, &columns, &mut partitions, &found).await
                })
                .await;
                match written {
                    Ok(inserted) => {
                        let seconds = started.elapsed().as_secs_f64();
                        metrics::histogram!("pmcore_telemetry_write_seconds").record(seconds);
                        metrics::counter!("pmcore_telemetry_readings_total", "outcome" => "stored")
                            .increment(inserted);
                        metrics::counter!("pmcore_telemetry_readings_total", "outcome" => "duplicate")
                            .increment(columns.len() as u64 - inserted);
                        break;
                    }
                    Err(error) => {
                        attempt += 1;
                        tracing::warn!(error = %format!("{error:#}"), attempt, "telemetry write failed; retrying");
                        let backoff = Duration::from_millis(200 * u64::from(attempt.min(25)));
                        tokio::select! {
                            () = cancel.cancelled() => break 'poll,
                            () = tokio::time::sleep(backoff) => {}
                        }
                    }
                }
            }
        }
        for message in &messages {
            // Fails only for a partition revoked meanwhile; its new owner rereads
            // the records, which the primary key makes harmless.
            if let Err(error) = consumer.store_offset_from_message(message) {
                tracing::debug!(%error, "offset not stored");
            }
        }
        watchdog.progressed();
    }
    if let Err(error) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        tracing::debug!(%error, "final offset commit");
    }
    Ok(())
}

fn decode_into(message: &BorrowedMessage<'_>, columns: &mut Columns) -> Result<(), String> {
    let batch: TelemetryBatch = pmcore_events::avro::decode(
        message.payload().unwrap_or_default(),
        Some(catalog::TELEMETRY_BATCH.ce_type),
    )
    .and_then(|d| d.into_typed())
    .map_err(|e| format!("bad payload: {e}"))?;
    columns.push(&batch)
}

/// One transaction: partitions, raw rows, rollups, anomalies. Returns the number
/// of readings that were new.
async fn write(
    conn: &mut PgConnection,
    columns: &Columns,
    partitions: &mut HashSet<NaiveDate>,
    found: &[anomalies::Anomaly],
) -> anyhow::Result<u64> {
    let days: HashSet<NaiveDate> = columns.ts.iter().map(|t| t.date_naive()).collect();
    for day in days {
        if !partitions.contains(&day) {
            sqlx::query("select pm.ensure_telemetry_partition($1)")
                .bind(day)
                .execute(&mut *conn)
                .await?;
            partitions.insert(day);
        }
    }
    let mut tx = conn.begin().await?;
    let inserted: i64 = sqlx::query_scalar(
        "with ins as (
             insert into pm.telemetry (der_id, ts, power_kw, soc_pct)
             select * from unnest($1::uuid[], $2::timestamptz[], $3::float8[], $4::float4[])
             on conflict (der_id, ts) do nothing
             returning der_id, ts, power_kw
         ), rollup as (
             insert into pm.telemetry_1m as t (der_id, bucket, sum_kw, min_kw, max_kw, samples)
             select der_id, date_trunc('minute', ts), sum(power_kw), min(power_kw), max(power_kw), count(*)
             from ins group by 1, 2
             on conflict (der_id, bucket) do update set
                 sum_kw = t.sum_kw + excluded.sum_kw,
                 min_kw = least(t.min_kw, excluded.min_kw),
                 max_kw = greatest(t.max_kw, excluded.max_kw),
                 samples = t.samples + excluded.samples
         )
         select count(*) from ins",
    )
    .bind(&columns.der_id)
    .bind(&columns.ts)
    .bind(&columns.power_kw)
    .bind(&columns.soc_pct)
    .fetch_one(&mut *tx)
    .await?;
    for anomaly in found {
        anomalies::record(&mut tx, anomaly).await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(inserted).unwrap_or_default())
}
