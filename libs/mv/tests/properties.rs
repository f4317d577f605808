//! Properties that hold for any load: an event day that follows its baseline
//! delivers nothing; scaling every load by k scales delivery by k; the order
//! readings arrive in does not matter.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use common::*;
use pmcore_mv::{baseline::Window, performance::measure, series::Series};
use proptest::prelude::*;

const DAYS: usize = 21;

/// `loads[day][hour]` for 21 days ending on Wednesday 15 July 2026 (the event day).
fn readings(loads: &[Vec<f64>]) -> Vec<(DateTime<Utc>, f64)> {
    let first = at("2026-06-25T00:00:00Z");
    let mut out = Vec::new();
    for (day, hours) in loads.iter().enumerate() {
        for (hour, kw) in hours.iter().enumerate() {
            out.push((
                first + TimeDelta::days(day as i64) + TimeDelta::hours(hour as i64),
                *kw,
            ));
        }
    }
    out
}

fn event() -> Window {
    Window {
        start: at("2026-07-15T14:00:00Z"),
        end: at("2026-07-15T16:00:00Z"),
    }
}

fn delivered(series: Series, method: &str) -> Option<f64> {
    let case = Case::new(series.clone(), Tz::UTC, event().start, event().end);
    let b = case.run(method, serde_json::json!({})).ok()?;
    Some(measure(&b, &series, event(), 1.0).delivered_kwh)
}

fn loads() -> impl Strategy<Value = Vec<Vec<f64>>> {
    prop::collection::vec(prop::collection::vec(0.5f64..20.0, 24), DAYS)
}

const METHODS: &[&str] = &[
    "x_of_y_10_10",
    "x_of_y_high_4_5",
    "x_of_y_high_5_10",
    "meter_before_after",
];

proptest! {
    #[test]
    fn following_the_baseline_delivers_nothing(loads in loads(), m in 0..METHODS.len()) {
        let series = Series::from_readings(TimeDelta::hours(1), readings(&loads));
        let case = Case::new(series.clone(), Tz::UTC, event().start, event().end);
        let b = case.run(METHODS[m], serde_json::json!({})).expect("valid test input");
        // The event day reads exactly the baseline in the event's intervals (the
        // adjustment window, earlier that day, is untouched).
        let follow: Vec<_> = series
            .iter()
            .map(|(t, kw)| (t, b.points.iter().find(|p| p.start == t).map_or(kw, |p| p.kw)))
            .collect();
        let series = Series::from_intervals(TimeDelta::hours(1), follow);
        let p = measure(&b, &series, event(), 1.0);
        prop_assert!(p.delivered_kwh.abs() < 1e-9, "{}", p.delivered_kwh);
    }

    #[test]
    fn scaling_loads_scales_delivery(loads in loads(), k in 0.1f64..10.0, m in 0..METHODS.len()) {
        let base = delivered(Series::from_readings(TimeDelta::hours(1), readings(&loads)), METHODS[m]).expect("valid test input");
        let scaled: Vec<Vec<f64>> = loads.iter().map(|d| d.iter().map(|v| v * k).collect()).collect();
        let got = delivered(Series::from_readings(TimeDelta::hours(1), readings(&scaled)), METHODS[m]).expect("valid test input");
        prop_assert!((got - k * base).abs() <= 1e-9 * (1.0 + (k * base).abs()), "{got} vs {}", k * base);
    }

    #[test]
    fn reading_order_does_not_matter(loads in loads(), seed in any::<u64>(), m in 0..METHODS.len()) {
        let mut shuffled = readings(&loads);
        // A duplicate of every tenth reading, as a redelivered batch would bring.
        let dups: Vec<_> = shuffled.iter().step_by(10).copied().collect();
        shuffled.extend(dups);
        let ordered = Series::from_readings(TimeDelta::hours(1), shuffled.clone());
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let series = Series::from_readings(TimeDelta::hours(1), shuffled);
        prop_assert_eq!(&series, &ordered);
        prop_assert_eq!(delivered(series, METHODS[m]), delivered(ordered, METHODS[m]));
    }
}

proptest! {
    /// Whatever a method declares it reads is all it reads: the baseline from a
    /// series cut down to `reads()` equals the one from the whole series, here
    /// across a daylight-saving change in Los Angeles.
    #[test]
    fn a_method_reads_only_what_it_declares(
        loads in prop::collection::vec(prop::collection::vec(0.5f64..20.0, 24), 60),
        m in 0..5usize,
        hour in 0..22u32,
        minutes in 15..240i64,
    ) {
        let methods = ["x_of_y_10_10", "x_of_y_high_4_5", "x_of_y_high_5_10", "x_of_y_middle_8_10", "meter_before_after"];
        let la: Tz = "America/Los_Angeles".parse().expect("zone");
        // 60 days of hourly data ending Wednesday 18 March 2026 (DST began 8 March).
        let first = at("2026-01-18T08:00:00Z");
        let readings: Vec<_> = loads
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, kw)| (first + TimeDelta::hours(i as i64), *kw))
            .collect();
        let full = Series::from_readings(TimeDelta::hours(1), readings.clone());
        let start = local(la, "2026-03-18", hour);
        let end = start + TimeDelta::minutes(minutes);
        let method = pmcore_mv::baseline::method(methods[m], &serde_json::json!({})).expect("method");
        let reads = method.reads(Window { start, end }, la);
        let cut = Series::from_readings(
            TimeDelta::hours(1),
            readings.into_iter().filter(|(t, _)| reads.iter().any(|r| *t >= r.start && *t < r.end)),
        );
        let run = |series: Series| Case::new(series, la, start, end).run(methods[m], serde_json::json!({}));
        prop_assert_eq!(run(full), run(cut));
    }
}
