//! The event's reports: a CSV with one row per DER (and one per organization's
//! statement), and a chart of the fleet's day. Pure: bytes out, the caller stores
//! them. Keys are predictable: `settlements/<event>/v<version>/…`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use plotters::prelude::*;
use uuid::Uuid;

use super::compute::{DerResult, EventRules, Fleet, OrganizationTotal, kwh};

pub fn prefix(event_id: Uuid, version: i32) -> String {
    format!("settlements/{event_id}/v{version}")
}

pub fn report_key(event_id: Uuid, version: i32) -> String {
    format!("{}/performance.csv", prefix(event_id, version))
}

pub fn chart_key(event_id: Uuid, version: i32) -> String {
    format!("{}/fleet.svg", prefix(event_id, version))
}

pub fn statement_key(event_id: Uuid, version: i32, organization_id: Uuid) -> String {
    format!(
        "{}/organizations/{organization_id}.csv",
        prefix(event_id, version)
    )
}

const HEADER: [&str; 15] = [
    "der_id",
    "organization_id",
    "status",
    "reason",
    "committed_kw",
    "baseline_kwh",
    "actual_kwh",
    "delivered_kwh",
    "performance_factor",
    "missing_intervals",
    "comparison_days",
    "capacity_payment",
    "energy_payment",
    "penalty",
    "total",
];

/// One row per DER, in DER id order; a statement adds a `TOTAL` row.
pub fn performance_csv<'a>(
    results: impl IntoIterator<Item = &'a DerResult>,
    total: Option<&OrganizationTotal>,
) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)?;
    for r in results {
        let p = &r.payment;
        let (status, reason, cells) = match &r.outcome {
            Ok(m) => (
                "measured",
                String::new(),
                [
                    kwh(m.performance.baseline_kwh).to_string(),
                    kwh(m.performance.actual_kwh).to_string(),
                    m.measured.delivered_kwh.to_string(),
                    m.measured.performance_factor.to_string(),
                    m.performance.missing_intervals.to_string(),
                    m.baseline
                        .days
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                ],
            ),
            Err(reason) => ("insufficient_data", reason.clone(), Default::default()),
        };
        let mut row = vec![
            r.der_id.to_string(),
            r.organization_id.to_string(),
            status.to_owned(),
            reason,
            r.committed_kw.to_string(),
        ];
        row.extend(cells);
        row.extend([p.capacity, p.energy, p.penalty, p.total].map(|d| d.to_string()));
        w.write_record(&row)?;
    }
    if let Some(t) = total {
        let p = &t.payment;
        let mut row = vec![
            "TOTAL".to_owned(),
            String::new(),
            format!("{} of {} measured", t.measured_count, t.der_count),
            String::new(),
            t.committed_kw.to_string(),
        ];
        row.extend([
            String::new(),
            String::new(),
            t.delivered_kwh.to_string(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        row.extend([p.capacity, p.energy, p.penalty, p.total].map(|d| d.to_string()));
        w.write_record(&row)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

/// The fleet over the event day: actual load, the baseline during the event and the
/// target (baseline − target kW), the event window shaded.
pub fn fleet_svg(rules: &EventRules, fleet: &Fleet) -> anyhow::Result<Vec<u8>> {
    let (day_start, day_end) = rules.event_day();
    let points: Vec<(DateTime<Utc>, f64, Option<f64>)> = fleet
        .points()
        .map(|(t, p)| (t, p.actual_kw, p.baseline_kw))
        .collect();
    let max_kw = points
        .iter()
        .flat_map(|(_, a, b)| [Some(*a), *b])
        .flatten()
        .fold(1.0f64, f64::max)
        * 1.1;
    let min_kw = points
        .iter()
        .flat_map(|(_, a, b)| [Some(*a), b.map(|b| b - rules.target_kw)])
        .flatten()
        .fold(0.0f64, f64::min);
    let hours = |t: DateTime<Utc>| (t - day_start).num_seconds() as f64 / 3600.0;
    let span = hours(day_end);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let title = format!(
            "Event {} — fleet load on {} ({})",
            rules.event_id,
            rules
                .window
                .start
                .with_timezone(&rules.time_zone)
                .date_naive(),
            rules.time_zone
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..span, min_kw..max_kw)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(format!("hours since local midnight ({})", rules.time_zone))
            .y_desc("kW")
            .draw()
            .map_err(draw_err)?;
        let (ev_from, ev_to) = (hours(rules.window.start), hours(rules.window.end));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(ev_from, min_kw), (ev_to, max_kw)],
                RGBColor(255, 200, 0).mix(0.2).filled(),
            )))
            .map_err(draw_err)?
            .label("event window")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 16, y + 5)],
                    RGBColor(255, 200, 0).mix(0.4).filled(),
                )
            });
        // Interval means are drawn as steps over their interval.
        let width = rules.interval.num_seconds() as f64 / 3600.0;
        let steps = |p: &[(f64, f64)]| -> Vec<(f64, f64)> {
            p.iter()
                .flat_map(|(h, v)| [(*h, *v), (h + width, *v)])
                .collect()
        };
        let actual: Vec<(f64, f64)> = points.iter().map(|(t, a, _)| (hours(*t), *a)).collect();
        chart
            .draw_series(LineSeries::new(steps(&actual), &BLUE))
            .map_err(draw_err)?
            .label("actual")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        let during: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|(t, _, b)| b.map(|b| (hours(*t), b)))
            .collect();
        chart
            .draw_series(LineSeries::new(steps(&during), &BLACK))
            .map_err(draw_err)?
            .label("baseline")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series(LineSeries::new(
                steps(&during)
                    .into_iter()
                    .map(|(h, b)| (h, b - rules.target_kw)),
                &RED,
            ))
            .map_err(draw_err)?
            .label(format!("target (baseline − {} kW)", rules.target_kw))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    let mut out = svg;
    let _ = writeln!(out);
    Ok(out.into_bytes())
}

fn draw_err<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("chart: {e}")
}
