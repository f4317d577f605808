//! Small hand-made series for the tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use pmcore_mv::{
    baseline::{self, Baseline, Input, Insufficient, Window},
    calendar::Holidays,
    series::Series,
};

pub fn d(s: &str) -> NaiveDate {
    s.parse().expect("valid test input")
}

pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid test input")
}

/// The UTC instant of a local wall-clock time (unambiguous ones only).
pub fn local(tz: Tz, date: &str, hour: u32) -> DateTime<Utc> {
    tz.from_local_datetime(&d(date).and_hms_opt(hour, 0, 0).expect("valid test input"))
        .single()
        .expect("valid test input")
        .with_timezone(&Utc)
}

/// An hourly series: for each local day from `first` to `last`, 24 local hours whose
/// load is `load(day, local_hour)`; `None` leaves a gap.
pub fn hourly(
    tz: Tz,
    first: &str,
    last: &str,
    load: impl Fn(NaiveDate, u32) -> Option<f64>,
) -> Series {
    let mut points = Vec::new();
    let mut day = d(first);
    while day <= d(last) {
        let start = tz
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("valid test input"))
            .earliest()
            .expect("valid test input")
            .with_timezone(&Utc);
        let next = tz
            .from_local_datetime(
                &day.succ_opt()
                    .expect("valid test input")
                    .and_hms_opt(0, 0, 0)
                    .expect("valid test input"),
            )
            .earliest()
            .expect("valid test input")
            .with_timezone(&Utc);
        let mut t = start;
        while t < next {
            let hour = chrono::Timelike::hour(&t.with_timezone(&tz));
            if let Some(kw) = load(day, hour) {
                points.push((t, kw));
            }
            t += TimeDelta::hours(1);
        }
        day = day.succ_opt().expect("valid test input");
    }
    Series::from_intervals(TimeDelta::hours(1), points)
}

pub struct Case {
    pub series: Series,
    pub event: Window,
    pub tz: Tz,
    pub holidays: Holidays,
    pub event_days: BTreeSet<NaiveDate>,
    pub first_command_at: Option<DateTime<Utc>>,
}

impl Case {
    pub fn new(series: Series, tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            series,
            event: Window { start, end },
            tz,
            holidays: Holidays::default(),
            event_days: BTreeSet::new(),
            first_command_at: None,
        }
    }

    pub fn run(&self, method: &str, params: serde_json::Value) -> Result<Baseline, Insufficient> {
        let m = baseline::method(method, &params).expect("valid test input");
        m.baseline(&Input {
            series: &self.series,
            event: self.event,
            first_command_at: self.first_command_at,
            time_zone: self.tz,
            holidays: &self.holidays,
            event_days: &self.event_days,
        })
    }
}

pub fn kws(b: &Baseline) -> Vec<f64> {
    b.points.iter().map(|p| p.kw).collect()
}

pub fn no_adjustment() -> serde_json::Value {
    serde_json::json!({
        "weekday": {"adjustment": {"kind": "none"}},
        "weekend_holiday": {"adjustment": {"kind": "none"}}
    })
}
