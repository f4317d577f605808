//! Commands and releases onto `der.commands.v1` through the outbox, a bounded chunk
//! per transaction. A row's `command_sent_at` (or `release_sent_at`) is stamped in
//! the transaction that enqueues it, and rows are claimed with `skip locked`, so a
//! second scheduler or a restart after a crash continues where the last commit left
//! off and never produces a command twice.

use chrono::{DateTime, Utc};
use pmcore_events::domain::DerCommand;
use pmcore_kafka::outbox;
use sqlx::FromRow;
use uuid::Uuid;

use super::{Ctx, meta};

/// An event started within this of its scheduled start is on time: its commands
/// carry the scheduled start. Later, they carry the actual start.
const ON_TIME: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

#[derive(FromRow)]
struct Unsent {
    event_id: Uuid,
    der_id: Uuid,
    gateway_id: Uuid,
    command_id: Uuid,
    command_kind: String,
    command_value_kw: f64,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
}

/// The commands of active events not sent yet (and not opted out meanwhile).
pub(super) async fn commands(ctx: &Ctx<'_>) -> anyhow::Result<usize> {
    let mut sent = 0;
    loop {
        let Some(mut tx) = ctx.leader_tx().await? else {
            return Ok(sent);
        };
        // `for share of e` keeps a cancellation from committing in the middle of a
        // chunk; a chunk that finds the event cancelled sends nothing.
        let rows: Vec<Unsent> = sqlx::query_as(
            "select a.event_id, a.der_id, a.gateway_id, a.command_id, a.command_kind,
                    a.command_value_kw, e.starts_at, e.ends_at, e.started_at
               from pm.dispatch_allocation a join pm.dispatch_event e on e.id = a.event_id
              where e.status = 'active' and a.command_sent_at is null and e.ends_at > $2
                and not exists (select 1 from pm.dispatch_opt_out o
                                 where o.event_id = a.event_id and o.der_id = a.der_id)
              order by a.event_id, a.der_id
              limit $1
              for update of a skip locked
              for share of e skip locked",
        )
        .bind(ctx.config.chunk)
        .bind(ctx.now)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(sent);
        }
        for r in &rows {
            // A late start gives the command the actual start, not a past one; the
            // next tick of the clock is not late.
            let start = match r.started_at {
                Some(s) if s - r.starts_at > ON_TIME => s,
                _ => r.starts_at,
            };
            let command = DerCommand {
                command_id: r.command_id.to_string(),
                gateway_id: r.gateway_id.to_string(),
                der_id: r.der_id.to_string(),
                event_id: Some(r.event_id.to_string()),
                kind: r.command_kind.clone(),
                value_kw: r.command_value_kw,
                start: start.timestamp_micros(),
                end: r.ends_at.timestamp_micros(),
                expires_at: r.ends_at.timestamp_micros(),
            };
            outbox::enqueue(&mut tx, &command, &meta()).await?;
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.command_id).collect();
        sqlx::query(
            "update pm.dispatch_allocation set command_sent_at = $2 where command_id = any($1)",
        )
        .bind(&ids)
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        sent += rows.len();
        metrics::counter!("pmcore_dispatch_commands_total", "kind" => "command")
            .increment(rows.len() as u64);
        if (rows.len() as i64) < ctx.config.chunk {
            return Ok(sent);
        }
    }
}

#[derive(FromRow)]
struct Unreleased {
    event_id: Uuid,
    der_id: Uuid,
    gateway_id: Uuid,
    reason: String,
}

/// Releases for every DER that got a command and whose part is over: the event
/// completed or was cancelled, or the DER opted out during it.
pub(super) async fn releases(ctx: &Ctx<'_>) -> anyhow::Result<usize> {
    let mut sent = 0;
    loop {
        let Some(mut tx) = ctx.leader_tx().await? else {
            return Ok(sent);
        };
        let rows: Vec<Unreleased> = sqlx::query_as(
            "select a.event_id, a.der_id, a.gateway_id,
                    case when e.status in ('completed', 'cancelled') then e.status
                         else 'opted_out' end as reason
               from pm.dispatch_allocation a join pm.dispatch_event e on e.id = a.event_id
              where a.command_sent_at is not null and a.release_sent_at is null
                and (e.status in ('completed', 'cancelled')
                     or exists (select 1 from pm.dispatch_opt_out o
                                 where o.event_id = a.event_id and o.der_id = a.der_id))
              order by a.event_id, a.der_id
              limit $1
              for update of a skip locked",
        )
        .bind(ctx.config.chunk)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(sent);
        }
        let release_ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
        for (r, release_id) in rows.iter().zip(&release_ids) {
            let command = DerCommand {
                command_id: release_id.to_string(),
                gateway_id: r.gateway_id.to_string(),
                der_id: r.der_id.to_string(),
                event_id: Some(r.event_id.to_string()),
                kind: "release".to_owned(),
                value_kw: 0.0,
                start: ctx.now.timestamp_micros(),
                end: ctx.now.timestamp_micros(),
                expires_at: (ctx.now + ctx.config.release_ttl).timestamp_micros(),
            };
            outbox::enqueue(&mut tx, &command, &meta()).await?;
        }
        sqlx::query(
            "update pm.dispatch_allocation a
                set release_id = r.release_id, release_sent_at = $5, release_reason = r.reason
               from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[])
                    as r (event_id, der_id, release_id, reason)
              where a.event_id = r.event_id and a.der_id = r.der_id",
        )
        .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.der_id).collect::<Vec<_>>())
        .bind(&release_ids)
        .bind(rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
        .bind(ctx.now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        sent += rows.len();
        metrics::counter!("pmcore_dispatch_commands_total", "kind" => "release")
            .increment(rows.len() as u64);
        if (rows.len() as i64) < ctx.config.chunk {
            return Ok(sent);
        }
    }
}
