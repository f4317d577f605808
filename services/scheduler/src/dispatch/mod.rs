//! Dispatch execution, the event clock (leader only): reminders before an event,
//! its start with the allocation and one command per participating DER, releases
//! (at the end, on cancellation, on an opt-out during the event), its completion,
//! and `missed` for an event whose window passed while no scheduler ran.
//!
//! Exactly once, whatever crashes: every transition is a conditional update
//! (`where status = 'scheduled'`) in the transaction that enqueues its event, and
//! every command is enqueued in the transaction that stamps its allocation row
//! `command_sent_at` (likewise `release_sent_at`), in chunks of bounded size that a
//! restarted or second scheduler simply continues. Each of those transactions also
//! checks the leader fence first.

pub mod allocation;
mod fanout;
mod lifecycle;

use std::time::Duration;

use chrono::{DateTime, Utc};
use pmcore_kafka::outbox::EventMeta;
use pmcore_runtime::clock::SharedClock;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use crate::Leadership;

/// How the event clock runs.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// How often the leader looks for due work.
    pub tick: Duration,
    /// Commands (or releases) enqueued per transaction.
    pub chunk: i64,
    /// Minutes before an event's start at which a reminder goes out.
    pub reminder_leads_minutes: Vec<i32>,
    /// How long a release stays deliverable to a gateway that is offline.
    pub release_ttl: chrono::Duration,
    /// Longest one pass may wait on Postgres before it is abandoned (the next tick
    /// retries): a connection gone silent would otherwise stop the clock for good.
    pub database_timeout: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            chunk: 500,
            reminder_leads_minutes: vec![1440, 60],
            release_ttl: chrono::Duration::hours(1),
            database_timeout: Duration::from_secs(90),
        }
    }
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub reminded: usize,
    pub missed: usize,
    pub started: usize,
    pub commands: usize,
    pub releases: usize,
    pub completed: usize,
}

impl Pass {
    fn is_idle(&self) -> bool {
        *self == Pass::default()
    }
}

/// Runs the event clock until cancelled; only the leader acts.
pub async fn run(
    pool: PgPool,
    leadership: Leadership,
    clock: SharedClock,
    config: DispatchConfig,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !leadership.is_leader() {
            continue;
        }
        let passed = pmcore_db::bounded(
            config.database_timeout,
            pass(&pool, &leadership, &clock, &config),
        );
        match passed.await {
            Ok(done) if done.is_idle() => {}
            Ok(done) => tracing::info!(?done, "dispatch pass"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "dispatch pass failed; next tick retries")
            }
        }
    }
}

/// Everything due at the clock's now, in order: reminders, missed windows, starts,
/// commands, completions, releases. Stops early (Ok) when leadership is lost.
pub async fn pass(
    pool: &PgPool,
    leadership: &Leadership,
    clock: &SharedClock,
    config: &DispatchConfig,
) -> anyhow::Result<Pass> {
    let now = clock.now();
    let mut done = Pass::default();
    if !anything_due(pool, now, &config.reminder_leads_minutes).await? {
        return Ok(done);
    }
    let ctx = Ctx {
        pool,
        leadership,
        now,
        config,
    };
    done.reminded = lifecycle::remind(&ctx).await?;
    done.missed = lifecycle::mark_missed(&ctx).await?;
    done.started = lifecycle::start_due(&ctx).await?;
    done.commands = fanout::commands(&ctx).await?;
    done.completed = lifecycle::complete_due(&ctx).await?;
    done.releases = fanout::releases(&ctx).await?;
    Ok(done)
}

/// Whether any step of a pass may find work at `now`. The steps take a transaction
/// each (seven with two reminder leads), twice a second; this is one statement over
/// the partial indexes of due events and unreleased commands, so an idle clock costs
/// Postgres next to nothing (issue 16). Each arm is a step's condition or looser: a
/// wrong `true` costs one ordinary pass, a wrong `false` would hold an event back, so
/// nothing here may be stricter than the step it stands for.
async fn anything_due(pool: &PgPool, now: DateTime<Utc>, leads: &[i32]) -> anyhow::Result<bool> {
    let due = sqlx::query_scalar(
        "select exists (
                  -- starts, missed windows (ends_at > starts_at), reminders
                  select 1 from pm.dispatch_event e
                   where e.status = 'scheduled'
                     and (e.starts_at <= $1
                          or exists (select 1 from unnest($2::int[]) lead
                                      where e.starts_at - make_interval(mins => lead) <= $1
                                        and e.created_at
                                            <= e.starts_at - make_interval(mins => lead)
                                        and not exists (
                                            select 1 from pm.dispatch_reminder r
                                             where r.event_id = e.id
                                               and r.lead_minutes = lead))))
             -- commands and completions
             or exists (select 1 from pm.dispatch_event where status = 'active')
             -- releases
             or exists (select 1 from pm.dispatch_allocation
                         where command_sent_at is not null and release_sent_at is null)",
    )
    .bind(now)
    .bind(leads)
    .fetch_one(pool)
    .await?;
    Ok(due)
}

/// What every step needs.
struct Ctx<'a> {
    pool: &'a PgPool,
    leadership: &'a Leadership,
    now: DateTime<Utc>,
    config: &'a DispatchConfig,
}

impl Ctx<'_> {
    /// A transaction that acts as leader, or None when this process no longer is.
    async fn leader_tx(&self) -> anyhow::Result<Option<Transaction<'static, Postgres>>> {
        let mut tx = self.pool.begin().await?;
        if self.leadership.fence(&mut tx).await? {
            Ok(Some(tx))
        } else {
            tracing::warn!("not the leader any more; dispatch work left to the leader");
            Ok(None)
        }
    }
}

fn meta() -> EventMeta {
    EventMeta {
        source: "scheduler".to_owned(),
        principal: Some("service:scheduler".to_owned()),
        traceparent: None,
    }
}
