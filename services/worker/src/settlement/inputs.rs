//! Reading an event's inputs: its program's rules, its participants, their other
//! event days, and their telemetry as interval means (aggregated by Postgres, one
//! chunk of DERs at a time so memory stays flat whatever the fleet's size).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use pmcore_mv::{
    baseline::Window,
    calendar::{Holidays, local_days},
    series::Series,
    settlement::Rates,
};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::compute::{EventRules, Participant, Readings};

/// Why an event cannot be settled at all (the request is closed with the reason).
#[derive(Debug, thiserror::Error)]
pub enum Unsettleable {
    #[error("dispatch event {0} does not exist")]
    NoEvent(Uuid),
    #[error("dispatch event is {0}, only completed events are settled")]
    NotCompleted(String),
    #[error("program rules: {0}")]
    Rules(String),
}

#[derive(sqlx::FromRow)]
struct RulesRow {
    program_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    target_kw: f64,
    status: String,
    baseline_method: String,
    baseline_params: serde_json::Value,
    interval_minutes: i32,
    time_zone: String,
    holidays: serde_json::Value,
    capacity_rate_cents_kw_month: i64,
    energy_rate_cents_kwh: i64,
    penalty_rate_cents_kwh: i64,
    capacity_events_per_month: i32,
    settlement_data_source: String,
}

pub async fn rules(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> anyhow::Result<Result<EventRules, Unsettleable>> {
    let row: Option<RulesRow> = sqlx::query_as(
        "select e.program_id, e.starts_at, e.ends_at, e.target_kw::float8 as target_kw, e.status,
                p.baseline_method, p.baseline_params, p.interval_minutes, p.time_zone, p.holidays,
                p.capacity_rate_cents_kw_month, p.energy_rate_cents_kwh, p.penalty_rate_cents_kwh,
                p.capacity_events_per_month, p.settlement_data_source
         from pm.dispatch_event e join pm.program p on p.id = e.program_id
         where e.id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else {
        return Ok(Err(Unsettleable::NoEvent(event_id)));
    };
    if r.status != "completed" {
        return Ok(Err(Unsettleable::NotCompleted(r.status)));
    }
    let bad = |m: String| Ok(Err(Unsettleable::Rules(m)));
    let time_zone: Tz = match r.time_zone.parse() {
        Ok(tz) => tz,
        Err(e) => return bad(format!("time zone {:?}: {e}", r.time_zone)),
    };
    let holidays: Holidays = match serde_json::from_value(r.holidays) {
        Ok(h) => h,
        Err(e) => return bad(format!("holidays: {e}")),
    };
    let readings = match r.settlement_data_source.as_str() {
        "telemetry" => Readings::Telemetry,
        "meter" => Readings::Meter,
        other => return bad(format!("settlement data source {other:?}")),
    };
    let dollars = |cents: i64| Decimal::new(cents, 2);
    Ok(Ok(EventRules {
        readings,
        event_id,
        program_id: r.program_id,
        window: Window {
            start: r.starts_at,
            end: r.ends_at,
        },
        target_kw: r.target_kw,
        method_name: r.baseline_method,
        params: r.baseline_params,
        interval: TimeDelta::minutes(i64::from(r.interval_minutes)),
        time_zone,
        holidays,
        rates: Rates {
            capacity_per_kw_month: dollars(r.capacity_rate_cents_kw_month),
            energy_per_kwh: dollars(r.energy_rate_cents_kwh),
            penalty_per_kwh: dollars(r.penalty_rate_cents_kwh),
            events_per_month: u32::try_from(r.capacity_events_per_month)
                .unwrap_or(1)
                .max(1),
        },
    }))
}

/// Every DER that got an allocation when the event started, in id order, with the
/// local dates of its other started events since `since`.
pub async fn participants(
    conn: &mut PgConnection,
    rules: &EventRules,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<Participant>> {
    let rows: Vec<(Uuid, Uuid, Decimal, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select der_id, organization_id, committed_kw, command_sent_at
         from pm.dispatch_allocation where event_id = $1 order by der_id",
    )
    .bind(rules.event_id)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let others = pmcore_db::telemetry::other_events(
        &mut *conn,
        &ids,
        Some(rules.event_id),
        since,
        rules.window.end,
    )
    .await?;
    let mut days: BTreeMap<Uuid, BTreeSet<NaiveDate>> = BTreeMap::new();
    for (der, start, end) in others {
        days.entry(der)
            .or_default()
            .extend(local_days(start, end, rules.time_zone));
    }
    Ok(rows
        .into_iter()
        .map(
            |(der_id, organization_id, committed_kw, first_command_at)| Participant {
                event_days: days.remove(&der_id).unwrap_or_default(),
                der_id,
                organization_id,
                committed_kw,
                first_command_at,
            },
        )
        .collect())
}

/// Interval means of `ders` within `ranges` from the program's readings, one series
/// per DER (an empty one for a DER without readings).
pub async fn series(
    conn: &mut PgConnection,
    ders: &[Uuid],
    interval: TimeDelta,
    ranges: &[(DateTime<Utc>, DateTime<Utc>)],
    readings: Readings,
) -> anyhow::Result<BTreeMap<Uuid, Series>> {
    let mut out: BTreeMap<Uuid, Vec<(DateTime<Utc>, f64)>> =
        ders.iter().map(|d| (*d, Vec::new())).collect();
    let on_row = |der, bucket, kw| {
        if let Some(points) = out.get_mut(&der) {
            points.push((bucket, kw));
        }
    };
    match readings {
        Readings::Telemetry => {
            pmcore_db::telemetry::interval_means(conn, ders, interval, ranges, on_row).await?;
        }
        Readings::Meter => {
            pmcore_db::telemetry::meter_interval_means(conn, ders, interval, ranges, on_row)
                .await?;
        }
    }
    Ok(out
        .into_iter()
        .map(|(der, points)| (der, Series::from_intervals(interval, points)))
        .collect())
}
