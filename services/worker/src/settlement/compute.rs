//! From one event's inputs and its participants' series to per-DER results, fleet
//! series and per-organization totals. Pure (the database and S3 are the caller's),
//! and deterministic: DERs in id order, sums in that order, so the same inputs give
//! byte-identical rows and reports.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use pmcore_mv::{
    baseline::{Baseline, BaselineMethod, Input, Window},
    calendar::Holidays,
    performance::{Performance, measure},
    series::Series,
    settlement::{Measured, Payment, Rates, dec, settle},
};
use rust_decimal::Decimal;
use uuid::Uuid;

/// The event and its program's measurement and settlement rules.
#[derive(Debug, Clone)]
pub struct EventRules {
    /// Where the DERs' readings come from.
    pub readings: Readings,
    pub event_id: Uuid,
    pub program_id: Uuid,
    pub window: Window,
    pub target_kw: f64,
    pub method_name: String,
    pub params: serde_json::Value,
    pub interval: TimeDelta,
    pub time_zone: Tz,
    pub holidays: Holidays,
    pub rates: Rates,
}

/// The readings a program settles on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readings {
    /// The gateways' telemetry.
    Telemetry,
    /// The utility's imported interval meter data.
    Meter,
}

impl EventRules {
    /// The local calendar day of the event's start, as UTC bounds (what the chart
    /// shows).
    pub fn event_day(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let day = self
            .window
            .start
            .with_timezone(&self.time_zone)
            .date_naive();
        (
            local_midnight(self.time_zone, day),
            local_midnight(self.time_zone, day + TimeDelta::days(1)),
        )
    }
}

fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    use chrono::TimeZone;
    tz.from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
        .earliest()
        // A zone that skips midnight (none in use today) starts its day at 01:00.
        .or_else(|| {
            tz.from_local_datetime(&day.and_hms_opt(1, 0, 0)?)
                .earliest()
        })
        .map_or_else(
            || day.and_time(chrono::NaiveTime::MIN).and_utc(),
            |t| t.with_timezone(&Utc),
        )
}

#[derive(Debug, Clone)]
pub struct Participant {
    pub der_id: Uuid,
    pub organization_id: Uuid,
    pub committed_kw: Decimal,
    pub first_command_at: Option<DateTime<Utc>>,
    /// Local dates of this DER's other events (never comparison days).
    pub event_days: BTreeSet<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct DerResult {
    pub der_id: Uuid,
    pub organization_id: Uuid,
    pub committed_kw: Decimal,
    pub outcome: Result<Measurement, String>,
    pub payment: Payment,
}

#[derive(Debug, Clone)]
pub struct Measurement {
    pub baseline: Baseline,
    pub performance: Performance,
    pub measured: Measured,
}

/// One DER: baseline, performance and payment. Insufficient data → no payment.
pub fn measure_der(
    rules: &EventRules,
    method: &dyn BaselineMethod,
    p: &Participant,
    series: &Series,
) -> DerResult {
    let input = Input {
        series,
        event: rules.window,
        first_command_at: p.first_command_at,
        time_zone: rules.time_zone,
        holidays: &rules.holidays,
        event_days: &p.event_days,
    };
    let committed = p.committed_kw.try_into().unwrap_or(0.0);
    let outcome = method
        .baseline(&input)
        .map_err(|e| e.reason)
        .map(|baseline| {
            let performance = measure(&baseline, series, rules.window, committed);
            let hours = rules.window.duration().num_seconds() as f64 / 3600.0;
            let measured = Measured::from_floats(
                p.committed_kw,
                hours,
                performance.delivered_kwh,
                performance.performance_factor,
            );
            Measurement {
                baseline,
                performance,
                measured,
            }
        });
    let payment = match &outcome {
        Ok(m) => settle(&rules.rates, &m.measured),
        Err(_) => Payment::default(),
    };
    DerResult {
        der_id: p.der_id,
        organization_id: p.organization_id,
        committed_kw: p.committed_kw,
        outcome,
        payment,
    }
}

/// The fleet's load per interval of the event day, and its baseline during the
/// event (measured DERs only).
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    points: BTreeMap<DateTime<Utc>, FleetPoint>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FleetPoint {
    pub actual_kw: f64,
    pub baseline_kw: Option<f64>,
}

impl Fleet {
    /// Adds one DER: its actual load over `[from, to)` and, if measured, its baseline.
    pub fn add(
        &mut self,
        series: &Series,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        result: &DerResult,
    ) {
        for t in series.grid(from, to) {
            if let Some(kw) = series.get(t) {
                self.points.entry(t).or_default().actual_kw += kw;
            }
        }
        if let Ok(m) = &result.outcome {
            for p in &m.baseline.points {
                let point = self.points.entry(p.start).or_default();
                *point.baseline_kw.get_or_insert(0.0) += p.kw;
            }
        }
    }

    pub fn points(&self) -> impl Iterator<Item = (DateTime<Utc>, FleetPoint)> + '_ {
        self.points.iter().map(|(t, p)| (*t, *p))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.points()
                .map(|(start, p)| {
                    serde_json::json!({"start": start, "actual_kw": p.actual_kw, "baseline_kw": p.baseline_kw})
                })
                .collect(),
        )
    }
}

/// An organization's settlement for the event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrganizationTotal {
    pub der_count: i32,
    pub measured_count: i32,
    pub committed_kw: Decimal,
    pub delivered_kwh: Decimal,
    pub payment: Payment,
}

/// Sums per organization of the DERs' rounded lines (so statements add up).
pub fn organization_totals(results: &[DerResult]) -> BTreeMap<Uuid, OrganizationTotal> {
    let mut out: BTreeMap<Uuid, OrganizationTotal> = BTreeMap::new();
    for r in results {
        let total = out.entry(r.organization_id).or_default();
        total.der_count += 1;
        total.committed_kw += r.committed_kw;
        total.payment = total.payment + r.payment;
        if let Ok(m) = &r.outcome {
            total.measured_count += 1;
            total.delivered_kwh += m.measured.delivered_kwh;
        }
    }
    out
}

/// A float energy as stored (kWh, 3 decimals).
pub fn kwh(value: f64) -> Decimal {
    dec(value, 3)
}
