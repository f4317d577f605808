//! Delivered load, performance factor and payments, checked by hand.

mod common;

use chrono::TimeDelta;
use common::*;
use pmcore_mv::{
    baseline::{Applied, Baseline, Point, Window},
    performance::measure,
    series::Series,
    settlement::{Measured, Payment, Rates, cents, settle},
};
use rust_decimal::Decimal;

fn dec(s: &str) -> Decimal {
    s.parse().expect("valid test input")
}

fn flat(kw: f64, starts: &[&str]) -> Baseline {
    Baseline {
        method: "test".into(),
        points: starts
            .iter()
            .map(|s| Point {
                start: at(s),
                unadjusted_kw: kw,
                kw,
            })
            .collect(),
        days: vec![],
        adjustment: Applied::None,
    }
}

#[test]
fn delivered_is_baseline_minus_actual_and_the_factor_is_clipped() {
    // Baseline 10 kW, actual 6 kW over two hours, committed 5 kW: delivered 8 kWh
    // of 10 expected → performance 0.8.
    let series = Series::from_intervals(
        TimeDelta::hours(1),
        [
            (at("2026-07-15T14:00:00Z"), 6.0),
            (at("2026-07-15T15:00:00Z"), 6.0),
        ],
    );
    let window = Window {
        start: at("2026-07-15T14:00:00Z"),
        end: at("2026-07-15T16:00:00Z"),
    };
    let b = flat(10.0, &["2026-07-15T14:00:00Z", "2026-07-15T15:00:00Z"]);
    let p = measure(&b, &series, window, 5.0);
    assert_eq!(
        (p.baseline_kwh, p.actual_kwh, p.delivered_kwh),
        (20.0, 12.0, 8.0)
    );
    assert_eq!(p.expected_kwh, 10.0);
    assert_eq!(p.performance_factor, 0.8);
    assert_eq!(p.mean_delivered_kw, 4.0);
    // Committing 2 kW: 8 / 4 = 2 → clipped to 1. Load going up: clipped to 0.
    assert_eq!(measure(&b, &series, window, 2.0).performance_factor, 1.0);
    assert_eq!(
        measure(
            &flat(1.0, &["2026-07-15T14:00:00Z", "2026-07-15T15:00:00Z"]),
            &series,
            window,
            2.0
        )
        .performance_factor,
        0.0
    );
}

#[test]
fn a_telemetry_gap_delivers_nothing_and_a_partial_interval_counts_its_share() {
    // Event 14:30–16:00 on hourly data: 14:00 counts half an hour, 15:00 is missing.
    let series = Series::from_intervals(TimeDelta::hours(1), [(at("2026-07-15T14:00:00Z"), 6.0)]);
    let window = Window {
        start: at("2026-07-15T14:30:00Z"),
        end: at("2026-07-15T16:00:00Z"),
    };
    let b = flat(10.0, &["2026-07-15T14:00:00Z", "2026-07-15T15:00:00Z"]);
    let p = measure(&b, &series, window, 4.0);
    assert_eq!(p.missing_intervals, 1);
    assert_eq!(p.intervals[0].hours, 0.5);
    // (10 − 6) × 0.5 = 2 kWh of 4 kW × 1.5 h = 6 expected → 1/3.
    assert_eq!(p.delivered_kwh, 2.0);
    assert!((p.performance_factor - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(p.intervals[1].delivered_kw, None);
}

#[test]
fn payments_by_hand() {
    // $6/kW-month, 4 events a month, 5 kW committed at performance 0.8:
    // 6 × 5 × 0.8 / 4 = $6.00. Energy: $0.50 × 8 kWh = $4.00. Penalty: $0.25 ×
    // (5 kW × 2 h − 8 kWh) = $0.50. Total 6 + 4 − 0.5 = $9.50.
    let rates = Rates {
        capacity_per_kw_month: dec("6"),
        energy_per_kwh: dec("0.50"),
        penalty_per_kwh: dec("0.25"),
        events_per_month: 4,
    };
    let m = Measured::from_floats(dec("5"), 2.0, 8.0, 0.8);
    let p = settle(&rates, &m);
    assert_eq!(
        p,
        Payment {
            capacity: dec("6.00"),
            energy: dec("4.00"),
            penalty: dec("0.50"),
            total: dec("9.50")
        }
    );
    // Negative delivery earns no energy payment and the whole expectation is short.
    let m = Measured::from_floats(dec("5"), 2.0, -1.0, 0.0);
    let p = settle(&rates, &m);
    assert_eq!(
        (p.capacity, p.energy, p.penalty, p.total),
        (dec("0"), dec("0"), dec("2.75"), dec("-2.75"))
    );
}

#[test]
fn rounding_is_half_to_even_on_cents_and_watt_hours() {
    assert_eq!(cents(dec("0.125")), dec("0.12"));
    assert_eq!(cents(dec("0.135")), dec("0.14"));
    assert_eq!(cents(dec("-0.125")), dec("-0.12"));
    // 1.0005 kWh → 1.000 (half to even on the third decimal); 0.33333 → 0.3333.
    let m = Measured::from_floats(dec("1"), 1.0, 1.0005, 1.0 / 3.0);
    assert_eq!(m.delivered_kwh, dec("1.000"));
    assert_eq!(m.performance_factor, dec("0.3333"));
}

#[test]
fn organization_totals_are_sums_of_rounded_lines() {
    // Three DERs each earning $0.005 of energy round to $0.00 each (half to even);
    // the organization gets $0.00, not a rounded $0.015 → $0.02.
    let rates = Rates {
        capacity_per_kw_month: Decimal::ZERO,
        energy_per_kwh: dec("0.005"),
        penalty_per_kwh: Decimal::ZERO,
        events_per_month: 1,
    };
    let m = Measured::from_floats(dec("1"), 1.0, 1.0, 1.0);
    let total = (0..3)
        .map(|_| settle(&rates, &m))
        .fold(Payment::default(), |a, b| a + b);
    assert_eq!(total.energy, dec("0.00"));
}
