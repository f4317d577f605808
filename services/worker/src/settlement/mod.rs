//! Measurement and settlement of completed dispatch events.
//!
//! The `completed` event queues version 1 of the event's settlement, due after the
//! settle delay (late telemetry still counts); `POST …/settlement:recompute` on the
//! api queues later versions. A loop takes due requests one at a time, each held
//! locked (`for update skip locked`, so several workers share the work) while it
//! reads the participants' telemetry, runs the program's baseline method
//! ([`pmcore_mv`]), writes the reports to the reports bucket, and stores the
//! version with its event in one transaction.

pub mod compute;
pub mod inputs;
pub mod report;
pub mod store;

pub use store::settle_next;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta};
use pmcore_events::{catalog, domain::DispatchEventCompleted};
use pmcore_kafka::consumer::{Handler, HandlerError, Incoming};
use pmcore_runtime::clock::SharedClock;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const CONSUMER_GROUP: &str = "pmcore-worker-settlement";

#[derive(Debug, Clone, clap::Args)]
pub struct SettleConfig {
    /// Seconds after an event's end before it is settled, so late telemetry counts.
    #[arg(
        long = "settle-delay-s",
        env = "PMCORE_WORKER_SETTLE_DELAY_S",
        default_value_t = 120
    )]
    pub delay_s: u64,

    /// How often the worker looks for due settlements, in ms.
    #[arg(
        long = "settle-tick-ms",
        env = "PMCORE_WORKER_SETTLE_TICK_MS",
        default_value_t = 1000
    )]
    pub tick_ms: u64,

    /// DERs whose telemetry is read per query while settling.
    #[arg(
        long = "settle-chunk-ders",
        env = "PMCORE_WORKER_SETTLE_CHUNK_DERS",
        default_value_t = 250
    )]
    pub chunk_ders: usize,
}

impl Default for SettleConfig {
    fn default() -> Self {
        Self {
            delay_s: 120,
            tick_ms: 1000,
            chunk_ders: 250,
        }
    }
}

/// Queues version 1 when an event completes; other dispatch events are ignored.
#[derive(Debug, Clone)]
pub struct QueueSettlement {
    pub delay: TimeDelta,
}

#[async_trait]
impl Handler for QueueSettlement {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        if record.envelope.ce_type != catalog::DISPATCH_EVENT_COMPLETED.ce_type {
            return Ok(());
        }
        let completed: DispatchEventCompleted = record
            .payload
            .clone_typed()
            .map_err(|e| HandlerError::Permanent(e.into()))?;
        let permanent = |m: String| HandlerError::Permanent(anyhow::anyhow!(m));
        let event_id: Uuid = completed
            .event_id
            .parse()
            .map_err(|e| permanent(format!("event_id: {e}")))?;
        let ended = DateTime::from_timestamp_micros(completed.ends_at.max(completed.completed_at))
            .ok_or_else(|| permanent("completed_at out of range".to_owned()))?;
        // An event this database does not hold (another deployment's) queues nothing.
        sqlx::query(
            "insert into pm.settlement_request (event_id, version, due_at, reason, requested_by)
             select $1, 1, $2, 'event_completed', $3
             where exists (select 1 from pm.dispatch_event where id = $1)
             on conflict do nothing",
        )
        .bind(event_id)
        .bind(ended + self.delay)
        .bind(
            record
                .envelope
                .principal
                .as_deref()
                .unwrap_or("service:scheduler"),
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

pub fn handler(config: &SettleConfig) -> Arc<QueueSettlement> {
    Arc::new(QueueSettlement {
        delay: TimeDelta::seconds(i64::try_from(config.delay_s).unwrap_or(i64::MAX / 1_000_000)),
    })
}

/// Settles due requests until cancelled.
pub async fn run(
    pool: PgPool,
    s3: aws_sdk_s3::Client,
    bucket: String,
    clock: SharedClock,
    config: SettleConfig,
    cancel: CancellationToken,
) {
    let tick = Duration::from_millis(config.tick_ms.max(10));
    loop {
        let idle = match settle_next(&pool, &s3, &bucket, clock.now(), config.chunk_ders).await {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "settlement failed; retrying");
                metrics::counter!("pmcore_settlement_errors_total").increment(1);
                true
            }
        };
        if idle {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        } else if cancel.is_cancelled() {
            return;
        }
    }
}
