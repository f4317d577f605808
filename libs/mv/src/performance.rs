//! Delivered load per interval and the event's performance factor.
//!
//! Sign convention: load is positive when the DER imports from the grid (a battery
//! discharging or a solar inverter exporting reads negative). Delivered kW =
//! adjusted baseline − actual, so a reduction in import (or an increase in export)
//! is positive delivery.
//!
//! An interval's energy counts for the part of it inside the event window. An event
//! interval without a reading (a telemetry gap) delivers nothing and is counted in
//! `missing_intervals`; the kWh totals cover the intervals that have readings, so
//! `delivered_kwh = baseline_kwh − actual_kwh` holds. The performance factor is
//! delivered kWh / (committed kW × event hours), clipped to [0, 1]: gaps lower it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    baseline::{Baseline, Window},
    series::Series,
};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IntervalResult {
    pub start: DateTime<Utc>,
    /// Hours of this interval inside the event window.
    pub hours: f64,
    pub baseline_kw: f64,
    pub actual_kw: Option<f64>,
    pub delivered_kw: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Performance {
    pub intervals: Vec<IntervalResult>,
    pub baseline_kwh: f64,
    pub actual_kwh: f64,
    pub delivered_kwh: f64,
    /// Delivered kWh / event hours.
    pub mean_delivered_kw: f64,
    pub missing_intervals: usize,
    pub committed_kw: f64,
    pub expected_kwh: f64,
    pub performance_factor: f64,
}

pub fn measure(
    baseline: &Baseline,
    series: &Series,
    event: Window,
    committed_kw: f64,
) -> Performance {
    let step = series.interval();
    let event_hours = hours(event.duration());
    let mut out = Performance {
        intervals: Vec::with_capacity(baseline.points.len()),
        baseline_kwh: 0.0,
        actual_kwh: 0.0,
        delivered_kwh: 0.0,
        mean_delivered_kw: 0.0,
        missing_intervals: 0,
        committed_kw,
        expected_kwh: committed_kw * event_hours,
        performance_factor: 0.0,
    };
    for point in &baseline.points {
        let overlap = (point.start + step).min(event.end) - point.start.max(event.start);
        let h = hours(overlap);
        let actual = series.get(point.start);
        let delivered = actual.map(|a| point.kw - a);
        match actual {
            Some(a) => {
                out.baseline_kwh += point.kw * h;
                out.actual_kwh += a * h;
            }
            None => out.missing_intervals += 1,
        }
        out.intervals.push(IntervalResult {
            start: point.start,
            hours: h,
            baseline_kw: point.kw,
            actual_kw: actual,
            delivered_kw: delivered,
        });
    }
    out.delivered_kwh = out.baseline_kwh - out.actual_kwh;
    if event_hours > 0.0 {
        out.mean_delivered_kw = out.delivered_kwh / event_hours;
    }
    if out.expected_kwh > 0.0 {
        out.performance_factor = (out.delivered_kwh / out.expected_kwh).clamp(0.0, 1.0);
    }
    out
}

fn hours(d: chrono::TimeDelta) -> f64 {
    d.num_seconds() as f64 / 3600.0
}
