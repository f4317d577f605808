//! Taking a due settlement request, computing it and storing the version: reports
//! to the bucket first (so a stored version always points at files that exist; a
//! retry overwrites them with the same bytes), then the rows and the event in one
//! transaction with the request marked done.

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use pmcore_events::domain::{OrganizationSettlement, SettlementCalculated};
use pmcore_kafka::outbox::{self, EventMeta};
use pmcore_mv::baseline::{Window, on_grid};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    compute::{self, DerResult, EventRules, Fleet, OrganizationTotal, kwh},
    inputs, report,
};

/// What [`settle_next`] did with the request it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Stored {
        event_id: Uuid,
        version: i32,
        run_id: Uuid,
    },
    /// The request can never be computed; it is closed with this error.
    Refused {
        event_id: Uuid,
        version: i32,
        error: String,
    },
}

/// Computes the oldest due request, if any.
pub async fn settle_next(
    pool: &PgPool,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    now: DateTime<Utc>,
    chunk: usize,
) -> anyhow::Result<Option<Settled>> {
    let mut tx = pool.begin().await?;
    let request: Option<(Uuid, i32, String, String)> = sqlx::query_as(
        "select event_id, version, reason, requested_by from pm.settlement_request
         where done_at is null and due_at <= $1
         order by due_at, event_id, version limit 1
         for update skip locked",
    )
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((event_id, version, reason, requested_by)) = request else {
        return Ok(None);
    };
    let started = Instant::now();
    let refuse = |error: String| Settled::Refused {
        event_id,
        version,
        error,
    };
    let rules = match inputs::rules(&mut tx, event_id).await? {
        Ok(rules) => rules,
        Err(why) => {
            let outcome = refuse(why.to_string());
            close(&mut tx, &outcome, now).await?;
            tx.commit().await?;
            return Ok(Some(outcome));
        }
    };
    let method = match pmcore_mv::baseline::method(&rules.method_name, &rules.params) {
        Ok(m) => m,
        Err(e) => {
            let outcome = refuse(e.to_string());
            close(&mut tx, &outcome, now).await?;
            tx.commit().await?;
            return Ok(Some(outcome));
        }
    };

    let (day_start, day_end) = rules.event_day();
    // What the method reads, and the event day for the chart, on the interval grid.
    let mut wanted = method.reads(rules.window, rules.time_zone);
    wanted.push(Window {
        start: day_start,
        end: day_end,
    });
    let ranges: Vec<(DateTime<Utc>, DateTime<Utc>)> = on_grid(wanted, rules.interval)
        .into_iter()
        .map(|w| (w.start, w.end))
        .collect();
    let from = ranges.first().map_or(day_start, |r| r.0);
    // The aggregation's hash table for a chunk of DERs stays in memory, and the
    // planner's JIT (130 ms of compiling per query here) does not pay off.
    sqlx::query("set local work_mem = '64MB'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("set local jit = off").execute(&mut *tx).await?;
    let participants = inputs::participants(&mut tx, &rules, from).await?;
    let mut results: Vec<DerResult> = Vec::with_capacity(participants.len());
    let mut fleet = Fleet::default();
    let (mut read_s, mut compute_s) = (0.0, 0.0);
    for part in participants.chunks(chunk.max(1)) {
        let ids: Vec<Uuid> = part.iter().map(|p| p.der_id).collect();
        let phase = Instant::now();
        let series = inputs::series(&mut tx, &ids, rules.interval, &ranges, rules.readings).await?;
        read_s += phase.elapsed().as_secs_f64();
        let phase = Instant::now();
        for p in part {
            let empty = pmcore_mv::series::Series::new(rules.interval);
            let s = series.get(&p.der_id).unwrap_or(&empty);
            let result = compute::measure_der(&rules, method.as_ref(), p, s);
            fleet.add(s, day_start, day_end, &result);
            results.push(result);
        }
        compute_s += phase.elapsed().as_secs_f64();
    }
    let organizations = compute::organization_totals(&results);

    let phase = Instant::now();
    let report_key = report::report_key(event_id, version);
    let chart_key = report::chart_key(event_id, version);
    put(
        s3,
        bucket,
        &report_key,
        report::performance_csv(&results, None)?,
        "text/csv",
    )
    .await?;
    put(
        s3,
        bucket,
        &chart_key,
        report::fleet_svg(&rules, &fleet)?,
        "image/svg+xml",
    )
    .await?;
    for (org, total) in &organizations {
        let lines = results.iter().filter(|r| r.organization_id == *org);
        let csv = report::performance_csv(lines, Some(total))?;
        put(
            s3,
            bucket,
            &report::statement_key(event_id, version, *org),
            csv,
            "text/csv",
        )
        .await?;
    }

    let reports_s = phase.elapsed().as_secs_f64();
    let phase = Instant::now();
    let run = Run {
        id: Uuid::now_v7(),
        version,
        reason,
        requested_by,
        computed_at: now,
        report_key,
        chart_key,
    };
    let event = store_run(
        &mut tx,
        &rules,
        method.name(),
        &run,
        &results,
        &organizations,
        &fleet,
    )
    .await?;
    outbox::enqueue(&mut tx, &event, &meta()).await?;
    let outcome = Settled::Stored {
        event_id,
        version,
        run_id: run.id,
    };
    close(&mut tx, &outcome, now).await?;
    tx.commit().await?;
    let store_s = phase.elapsed().as_secs_f64();
    metrics::counter!("pmcore_settlements_total").increment(1);
    metrics::histogram!("pmcore_settlement_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(
        %event_id, version, ders = results.len(),
        measured = results.iter().filter(|r| r.outcome.is_ok()).count(),
        total = %event.total_amount, seconds = started.elapsed().as_secs_f64(),
        read_s, compute_s, reports_s, store_s,
        "settled dispatch event"
    );
    Ok(Some(outcome))
}

struct Run {
    id: Uuid,
    version: i32,
    reason: String,
    requested_by: String,
    computed_at: DateTime<Utc>,
    report_key: String,
    chart_key: String,
}

async fn close(
    conn: &mut PgConnection,
    outcome: &Settled,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (event_id, version, error) = match outcome {
        Settled::Stored {
            event_id, version, ..
        } => (*event_id, *version, None),
        Settled::Refused {
            event_id,
            version,
            error,
        } => {
            tracing::warn!(%event_id, version, %error, "settlement refused");
            metrics::counter!("pmcore_settlements_refused_total").increment(1);
            (*event_id, *version, Some(error.as_str()))
        }
    };
    sqlx::query("update pm.settlement_request set done_at = $3, error = $4 where event_id = $1 and version = $2")
        .bind(event_id)
        .bind(version)
        .bind(now)
        .bind(error)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> anyhow::Result<()> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "writing s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}

async fn store_run(
    conn: &mut PgConnection,
    rules: &EventRules,
    method: &str,
    run: &Run,
    results: &[DerResult],
    organizations: &std::collections::BTreeMap<Uuid, OrganizationTotal>,
    fleet: &Fleet,
) -> anyhow::Result<SettlementCalculated> {
    let measured: Vec<&compute::Measurement> = results
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok())
        .collect();
    let sum = |f: &dyn Fn(&compute::Measurement) -> Decimal| {
        measured.iter().map(|m| f(m)).sum::<Decimal>()
    };
    let baseline_kwh = sum(&|m| kwh(m.performance.baseline_kwh));
    let actual_kwh = sum(&|m| kwh(m.performance.actual_kwh));
    let delivered_kwh = sum(&|m| m.measured.delivered_kwh);
    let committed_kw: Decimal = results.iter().map(|r| r.committed_kw).sum();
    let total_amount: Decimal = organizations.values().map(|o| o.payment.total).sum();
    sqlx::query(
        "insert into pm.settlement_run (id, event_id, version, program_id, method, params, interval_minutes,
            reason, requested_by, computed_at, der_count, measured_count, committed_kw, baseline_kwh,
            actual_kwh, delivered_kwh, total_amount, fleet, report_key, chart_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(run.id)
    .bind(rules.event_id)
    .bind(run.version)
    .bind(rules.program_id)
    .bind(method)
    .bind(&rules.params)
    .bind(i32::try_from(rules.interval.num_minutes())?)
    .bind(&run.reason)
    .bind(&run.requested_by)
    .bind(run.computed_at)
    .bind(i32::try_from(results.len())?)
    .bind(i32::try_from(measured.len())?)
    .bind(committed_kw)
    .bind(baseline_kwh)
    .bind(actual_kwh)
    .bind(delivered_kwh)
    .bind(total_amount)
    .bind(fleet.to_json())
    .bind(&run.report_key)
    .bind(&run.chart_key)
    .execute(&mut *conn)
    .await?;

    for part in results.chunks(1000) {
        insert_lines(conn, run.id, part).await?;
    }

    let mut orgs = Vec::with_capacity(organizations.len());
    for (org, t) in organizations {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into pm.settlement (id, run_id, event_id, version, program_id, organization_id, der_count,
                measured_count, committed_kw, delivered_kwh, capacity_payment, energy_payment, penalty, total,
                event_starts_at, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(id)
        .bind(run.id)
        .bind(rules.event_id)
        .bind(run.version)
        .bind(rules.program_id)
        .bind(org)
        .bind(t.der_count)
        .bind(t.measured_count)
        .bind(t.committed_kw)
        .bind(t.delivered_kwh)
        .bind(t.payment.capacity)
        .bind(t.payment.energy)
        .bind(t.payment.penalty)
        .bind(t.payment.total)
        .bind(rules.window.start)
        .bind(run.computed_at)
        .execute(&mut *conn)
        .await?;
        orgs.push(OrganizationSettlement {
            settlement_id: id.to_string(),
            organization_id: org.to_string(),
            der_count: t.der_count,
            measured_count: t.measured_count,
            delivered_kwh: t.delivered_kwh.to_string(),
            total: t.payment.total.to_string(),
        });
    }

    Ok(SettlementCalculated {
        event_id: rules.event_id.to_string(),
        program_id: rules.program_id.to_string(),
        run_id: run.id.to_string(),
        version: run.version,
        computed_at: run.computed_at.timestamp_micros(),
        reason: run.reason.clone(),
        method: method.to_owned(),
        der_count: i32::try_from(results.len())?,
        measured_count: i32::try_from(measured.len())?,
        delivered_kwh: delivered_kwh.to_string(),
        total_amount: total_amount.to_string(),
        currency: "USD".to_owned(),
        report_key: run.report_key.clone(),
        chart_key: run.chart_key.clone(),
        organizations: orgs,
    })
}

/// Per-DER lines as columns, one `unnest` insert per chunk.
async fn insert_lines(
    conn: &mut PgConnection,
    run_id: Uuid,
    results: &[DerResult],
) -> anyhow::Result<()> {
    #[derive(Default)]
    struct Cols {
        der: Vec<Uuid>,
        org: Vec<Uuid>,
        status: Vec<&'static str>,
        reason: Vec<Option<String>>,
        committed: Vec<Decimal>,
        baseline: Vec<Option<Decimal>>,
        actual: Vec<Option<Decimal>>,
        delivered: Vec<Option<Decimal>>,
        factor: Vec<Option<Decimal>>,
        missing: Vec<Option<i32>>,
        days: Vec<Option<String>>,
        adjustment: Vec<Option<serde_json::Value>>,
        intervals: Vec<Option<serde_json::Value>>,
        capacity: Vec<Decimal>,
        energy: Vec<Decimal>,
        penalty: Vec<Decimal>,
        total: Vec<Decimal>,
    }
    let mut c = Cols::default();
    for r in results {
        c.der.push(r.der_id);
        c.org.push(r.organization_id);
        c.committed.push(r.committed_kw);
        c.capacity.push(r.payment.capacity);
        c.energy.push(r.payment.energy);
        c.penalty.push(r.payment.penalty);
        c.total.push(r.payment.total);
        match &r.outcome {
            Ok(m) => {
                c.status.push("measured");
                c.reason.push(None);
                c.baseline.push(Some(kwh(m.performance.baseline_kwh)));
                c.actual.push(Some(kwh(m.performance.actual_kwh)));
                c.delivered.push(Some(m.measured.delivered_kwh));
                c.factor.push(Some(m.measured.performance_factor));
                c.missing
                    .push(Some(i32::try_from(m.performance.missing_intervals)?));
                c.days.push(Some(
                    m.baseline
                        .days
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ));
                c.adjustment
                    .push(Some(serde_json::to_value(&m.baseline.adjustment)?));
                c.intervals.push(Some(serde_json::Value::Array(
                    m.performance
                        .intervals
                        .iter()
                        .map(|i| {
                            serde_json::json!({
                                "start": i.start, "baseline_kw": i.baseline_kw,
                                "actual_kw": i.actual_kw, "delivered_kw": i.delivered_kw
                            })
                        })
                        .collect(),
                )));
            }
            Err(reason) => {
                c.status.push("insufficient_data");
                c.reason.push(Some(reason.clone()));
                c.baseline.push(None);
                c.actual.push(None);
                c.delivered.push(None);
                c.factor.push(None);
                c.missing.push(None);
                c.days.push(None);
                c.adjustment.push(None);
                c.intervals.push(None);
            }
        }
    }
    sqlx::query(
        "insert into pm.der_performance (run_id, der_id, organization_id, status, reason, committed_kw,
            baseline_kwh, actual_kwh, delivered_kwh, performance_factor, missing_intervals, comparison_days,
            adjustment, intervals, capacity_payment, energy_payment, penalty, total)
         select $1, der, org, status, reason, committed, baseline, actual, delivered, factor, missing,
                case when days is null then null
                     when days = '' then '{}'::date[]
                     else string_to_array(days, ',')::date[] end,
                adjustment, intervals, capacity, energy, penalty, total
         from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::numeric[],
                     $9::numeric[], $10::numeric[], $11::int4[], $12::text[], $13::jsonb[], $14::jsonb[],
                     $15::numeric[], $16::numeric[], $17::numeric[], $18::numeric[])
              as t(der, org, status, reason, committed, baseline, actual, delivered, factor, missing, days,
                   adjustment, intervals, capacity, energy, penalty, total)",
    )
    .bind(run_id)
    .bind(&c.der)
    .bind(&c.org)
    .bind(&c.status)
    .bind(&c.reason)
    .bind(&c.committed)
    .bind(&c.baseline)
    .bind(&c.actual)
    .bind(&c.delivered)
    .bind(&c.factor)
    .bind(&c.missing)
    .bind(&c.days)
    .bind(&c.adjustment)
    .bind(&c.intervals)
    .bind(&c.capacity)
    .bind(&c.energy)
    .bind(&c.penalty)
    .bind(&c.total)
    .execute(conn)
    .await?;
    Ok(())
}

fn meta() -> EventMeta {
    EventMeta {
        source: "worker".to_owned(),
        principal: Some("service:worker".to_owned()),
        traceparent: None,
    }
}
