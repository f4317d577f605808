//! An event's transitions: reminders, `scheduled → active` with the allocation,
//! `active → completed`, and `scheduled → missed`. Each is a conditional update in
//! its own fenced transaction together with its domain event.

use chrono::{DateTime, Utc};
use pmcore_events::domain::{
    DispatchEventCompleted, DispatchEventMissed, DispatchEventReminder, DispatchEventStarted,
};
use pmcore_kafka::outbox;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::{
    Ctx,
    allocation::{Participant, allocate},
    meta,
};

/// Events handled per pass and step; the next tick takes the rest.
const EVENTS_PER_PASS: i64 = 50;

#[derive(FromRow)]
struct Event {
    id: Uuid,
    program_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    target_kw: f64,
    signal: String,
    signal_value: f64,
    allocated_kw: Option<f64>,
    participant_count: Option<i32>,
}

const EVENT_COLUMNS: &str = "id, program_id, starts_at, ends_at, target_kw::float8 as target_kw,
    signal, signal_value::float8 as signal_value, allocated_kw::float8 as allocated_kw,
    participant_count";

/// Reminders for scheduled events whose start is within a configured lead, once per
/// event and lead, and only when the event was known before that lead began (an
/// event scheduled 30 minutes ahead gets no "1 hour before" reminder).
pub(super) async fn remind(ctx: &Ctx<'_>) -> anyhow::Result<usize> {
    let mut sent = 0;
    for &lead in &ctx.config.reminder_leads_minutes {
        let Some(mut tx) = ctx.leader_tx().await? else {
            return Ok(sent);
        };
        // The reminder row is the claim: inserted once per (event, lead).
        let claimed: Vec<Uuid> = sqlx::query_scalar(&format!(
            "insert into pm.dispatch_reminder (event_id, lead_minutes, sent_at)
             select e.id, $1, $2 from pm.dispatch_event e
              where e.status = 'scheduled' and e.starts_at > $2
                and e.starts_at - make_interval(mins => $1) <= $2
                and e.created_at <= e.starts_at - make_interval(mins => $1)
                and not exists (select 1 from pm.dispatch_reminder r
                                 where r.event_id = e.id and r.lead_minutes = $1)
              order by e.starts_at limit {EVENTS_PER_PASS}
             on conflict do nothing
             returning event_id"
        ))
        .bind(lead)
        .bind(ctx.now)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            continue;
        }
        for e in events(&mut tx, &claimed).await? {
            let reminder = DispatchEventReminder {
                event_id: e.id.to_string(),
                program_id: e.program_id.to_string(),
                starts_at: e.starts_at.timestamp_micros(),
                ends_at: e.ends_at.timestamp_micros(),
                lead_minutes: lead,
                target_kw: e.target_kw,
                signal: e.signal.clone(),
                signal_value: e.signal_value,
            };
            outbox::enqueue(&mut tx, &reminder, &meta()).await?;
        }
        tx.commit().await?;
        sent += claimed.len();
    }
    Ok(sent)
}

async fn events(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from pm.dispatch_event where id = any($1) order by starts_at, id"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Scheduled events whose whole window has passed: nothing is sent for them.
pub(super) async fn mark_missed(ctx: &Ctx<'_>) -> anyhow::Result<usize> {
    let Some(mut tx) = ctx.leader_tx().await? else {
        return Ok(0);
    };
    let missed: Vec<Event> = sqlx::query_as(&format!(
        "update pm.dispatch_event set status = 'missed', updated_at = $1
          where id in (select id from pm.dispatch_event
                        where status = 'scheduled' and ends_at <= $1
                        order by starts_at limit {EVENTS_PER_PASS} for update skip locked)
            and status = 'scheduled'
         returning {EVENT_COLUMNS}"
    ))
    .bind(ctx.now)
    .fetch_all(&mut *tx)
    .await?;
    for e in &missed {
        tracing::warn!(event_id = %e.id, starts_at = %e.starts_at, ends_at = %e.ends_at,
            "dispatch event missed: its window passed while no scheduler ran");
        let event = DispatchEventMissed {
            event_id: e.id.to_string(),
            program_id: e.program_id.to_string(),
            starts_at: e.starts_at.timestamp_micros(),
            ends_at: e.ends_at.timestamp_micros(),
            missed_at: ctx.now.timestamp_micros(),
        };
        outbox::enqueue(&mut tx, &event, &meta()).await?;
    }
    tx.commit().await?;
    metrics::counter!("pmcore_dispatch_events_total", "transition" => "missed")
        .increment(missed.len() as u64);
    Ok(missed.len())
}

#[derive(FromRow)]
struct Candidate {
    der_id: Uuid,
    gateway_id: Uuid,
    organization_id: Uuid,
    committed_kw: f64,
    nameplate_kw: f64,
}

/// Starts every scheduled event whose start has come and whose window is open.
pub(super) async fn start_due(ctx: &Ctx<'_>) -> anyhow::Result<usize> {
    let due: Vec<Uuid> = sqlx::query_scalar(&format!(
        "select id from pm.dispatch_event
          where status = 'scheduled' and starts_at <= $1 and ends_at > $1
          order by starts_at limit {EVENTS_PER_PASS}"
    ))
    .bind(ctx.now)
    .fetch_all(ctx.pool)
    .await?;
    let mut started = 0;
    for id in due {
        match start(ctx, id).await? {
            Some(true) => started += 1,
            Some(false) => {}
            None => break,
        }
    }
    Ok(started)
}

/// One event's start: the transition, the allocation rows, the started event.
/// Some(false) when another scheduler or a cancellation got there first; None when
/// this process is no longer the leader.
async fn start(ctx: &Ctx<'_>, id: Uuid) -> anyhow::Result<Option<bool>> {
    let Some(mut tx) = ctx.leader_tx().await? else {
        return Ok(None);
    };
    let event: Option<Event> = sqlx::query_as(&format!(
        "update pm.dispatch_event
            set status = 'active', started_at = $2, updated_at = $2,
                late_by_ms = greatest(0, (extract(epoch from ($2 - starts_at)) * 1000)::bigint)
          where id = $1 and status = 'scheduled' and ends_at > $2
         returning {EVENT_COLUMNS}"
    ))
    .bind(id)
    .bind(ctx.now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(event) = event else {
        return Ok(Some(false));
    };
    // Participants: active enrollment, not opted out, DER active behind a gateway.
    let candidates: Vec<Candidate> = sqlx::query_as(
        "select n.der_id, d.gateway_id, d.organization_id,
                n.committed_kw::float8 as committed_kw, d.nameplate_kw::float8 as nameplate_kw
           from pm.enrollment n join pm.der d on d.id = n.der_id
          where n.program_id = $1 and n.status = 'active'
            and d.status = 'active' and d.gateway_id is not null
            and not exists (select 1 from pm.dispatch_opt_out o
                             where o.event_id = $2 and o.der_id = n.der_id)
          order by n.der_id",
    )
    .bind(event.program_id)
    .bind(event.id)
    .fetch_all(&mut *tx)
    .await?;
    let participants: Vec<Participant> = candidates
        .iter()
        .map(|c| Participant {
            committed_kw: c.committed_kw,
            nameplate_kw: c.nameplate_kw,
        })
        .collect();
    let allocation = allocate(event.target_kw, &participants);
    let (kind, fixed_value) = command_for(&event.signal, event.signal_value);
    let values: Vec<f64> = allocation
        .kw
        .iter()
        .map(|kw| fixed_value.unwrap_or(*kw))
        .collect();
    let command_ids: Vec<Uuid> = candidates.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "insert into pm.dispatch_allocation
             (event_id, der_id, gateway_id, organization_id, committed_kw, allocated_kw,
              command_id, command_kind, command_value_kw)
         select $1, a.der_id, a.gateway_id, a.organization_id, a.committed_kw, a.allocated_kw,
                a.command_id, $8, a.value_kw
           from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::float8[], $6::float8[],
                       $7::uuid[], $9::float8[])
                as a (der_id, gateway_id, organization_id, committed_kw, allocated_kw,
                      command_id, value_kw)",
    )
    .bind(event.id)
    .bind(candidates.iter().map(|c| c.der_id).collect::<Vec<_>>())
    .bind(candidates.iter().map(|c| c.gateway_id).collect::<Vec<_>>())
    .bind(
        candidates
            .iter()
            .map(|c| c.organization_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        candidates
            .iter()
            .map(|c| c.committed_kw)
            .collect::<Vec<_>>(),
    )
    .bind(&allocation.kw)
    .bind(&command_ids)
    .bind(kind)
    .bind(&values)
    .execute(&mut *tx)
    .await?;
    let count = i32::try_from(candidates.len()).unwrap_or(i32::MAX);
    let (late_by_ms,): (i64,) = sqlx::query_as(
        "update pm.dispatch_event set allocated_kw = $2, participant_count = $3
          where id = $1 returning late_by_ms",
    )
    .bind(event.id)
    .bind(allocation.total_kw)
    .bind(count)
    .fetch_one(&mut *tx)
    .await?;
    let started = DispatchEventStarted {
        event_id: event.id.to_string(),
        program_id: event.program_id.to_string(),
        starts_at: event.starts_at.timestamp_micros(),
        started_at: ctx.now.timestamp_micros(),
        late_by_ms,
        target_kw: event.target_kw,
        allocated_kw: allocation.total_kw,
        participant_count: count,
    };
    outbox::enqueue(&mut tx, &started, &meta()).await?;
    tx.commit().await?;
    if allocation.total_kw + 1e-6 < event.target_kw {
        tracing::warn!(event_id = %event.id, target_kw = event.target_kw,
            allocated_kw = allocation.total_kw, "the fleet cannot cover the event's target");
    }
    tracing::info!(event_id = %event.id, participants = count, late_by_ms,
        allocated_kw = allocation.total_kw, "dispatch event started");
    metrics::counter!("pmcore_dispatch_events_total", "transition" => "started").increment(1);
    Ok(Some(true))
}

/// The command kind gateways obey for an event signal, and the value every DER gets
/// when it does not depend on the allocation. A price signal asks price-responsive
/// DERs to shed their allocation, as a curtailment does.
pub(super) fn command_for(signal: &str, signal_value: f64) -> (&'static str, Option<f64>) {
    match signal {
        "setpoint_kw" => ("setpoint_kw", Some(signal_value)),
        _ => ("curtail_kw", None),
    }
}

/// Ends every active event whose window has closed.
pub(super) async fn complete_due(ctx: &Ctx<'_>) -> anyhow::Result<usize> {
    let Some(mut tx) = ctx.leader_tx().await? else {
        return Ok(0);
    };
    let done: Vec<Event> = sqlx::query_as(&format!(
        "update pm.dispatch_event set status = 'completed', completed_at = $1, updated_at = $1
          where id in (select id from pm.dispatch_event
                        where status = 'active' and ends_at <= $1
                        order by ends_at limit {EVENTS_PER_PASS} for update skip locked)
            and status = 'active'
         returning {EVENT_COLUMNS}"
    ))
    .bind(ctx.now)
    .fetch_all(&mut *tx)
    .await?;
    for e in &done {
        let completed = DispatchEventCompleted {
            event_id: e.id.to_string(),
            program_id: e.program_id.to_string(),
            starts_at: e.starts_at.timestamp_micros(),
            ends_at: e.ends_at.timestamp_micros(),
            completed_at: ctx.now.timestamp_micros(),
            target_kw: e.target_kw,
            allocated_kw: e.allocated_kw.unwrap_or_default(),
            participant_count: e.participant_count.unwrap_or_default(),
        };
        outbox::enqueue(&mut tx, &completed, &meta()).await?;
        tracing::info!(event_id = %e.id, "dispatch event completed");
    }
    tx.commit().await?;
    metrics::counter!("pmcore_dispatch_events_total", "transition" => "completed")
        .increment(done.len() as u64);
    Ok(done.len())
}

#[cfg(test)]
mod tests {
    use super::command_for;

    #[test]
    fn signals_map_to_the_commands_gateways_obey() {
        assert_eq!(command_for("curtail_kw", 100.0), ("curtail_kw", None));
        assert_eq!(command_for("price", 45.0), ("curtail_kw", None));
        assert_eq!(
            command_for("setpoint_kw", -3.0),
            ("setpoint_kw", Some(-3.0))
        );
    }
}
