//! Interval series: a DER's mean demand (kW, import positive) per fixed interval.
//!
//! Rules, applied the same way whoever builds the series:
//! - intervals are aligned on the Unix epoch (`floor(ts / interval)`), so a 15-minute
//!   series starts at :00, :15, :30 and :45 in every time zone with a whole-hour or
//!   half-hour offset;
//! - an interval's value is the mean of its readings; readings that share a
//!   timestamp (a redelivered batch) count once, as their mean;
//! - an interval with no reading is *missing* (a gap), never zero;
//! - non-finite readings are dropped.
//!
//! Values are summed in timestamp order and, within a timestamp, in value order, so
//! the result does not depend on the order readings arrive in.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    interval: TimeDelta,
    points: BTreeMap<DateTime<Utc>, f64>,
}

impl Series {
    /// An empty series of `interval`-long intervals.
    ///
    /// # Panics
    /// If `interval` is not a whole number of seconds dividing a day (programs only
    /// allow 5, 15, 30 and 60 minutes).
    pub fn new(interval: TimeDelta) -> Self {
        let secs = interval.num_seconds();
        assert!(
            secs > 0 && 86_400 % secs == 0 && interval.subsec_nanos() == 0,
            "interval must divide a day"
        );
        Self {
            interval,
            points: BTreeMap::new(),
        }
    }

    /// Builds the series from raw readings `(timestamp, kW)`.
    pub fn from_readings(
        interval: TimeDelta,
        readings: impl IntoIterator<Item = (DateTime<Utc>, f64)>,
    ) -> Self {
        let mut by_ts: BTreeMap<DateTime<Utc>, Vec<f64>> = BTreeMap::new();
        for (ts, kw) in readings {
            if kw.is_finite() {
                by_ts.entry(ts).or_default().push(kw);
            }
        }
        let mut series = Self::new(interval);
        let mut sums: BTreeMap<DateTime<Utc>, (f64, u32)> = BTreeMap::new();
        for (ts, mut values) in by_ts {
            values.sort_by(f64::total_cmp);
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let slot = sums.entry(series.floor(ts)).or_insert((0.0, 0));
            slot.0 += mean;
            slot.1 += 1;
        }
        series.points = sums
            .into_iter()
            .map(|(start, (sum, n))| (start, sum / f64::from(n)))
            .collect();
        series
    }

    /// Builds the series from values already aggregated per interval (e.g. by the
    /// database); starts are floored onto the grid, a repeated start keeps the last.
    pub fn from_intervals(
        interval: TimeDelta,
        intervals: impl IntoIterator<Item = (DateTime<Utc>, f64)>,
    ) -> Self {
        let mut series = Self::new(interval);
        for (start, kw) in intervals {
            if kw.is_finite() {
                series.points.insert(series.floor(start), kw);
            }
        }
        series
    }

    pub fn interval(&self) -> TimeDelta {
        self.interval
    }

    /// The start of the interval holding `ts`.
    pub fn floor(&self, ts: DateTime<Utc>) -> DateTime<Utc> {
        let step = self.interval.num_seconds();
        let secs = ts.timestamp().div_euclid(step) * step;
        DateTime::from_timestamp(secs, 0).expect("floored timestamp is in range")
    }

    /// The value of the interval starting at `start`, if any reading fell in it.
    pub fn get(&self, start: DateTime<Utc>) -> Option<f64> {
        self.points.get(&start).copied()
    }

    /// Interval starts `s` with `s < to` and `s + interval > from`: every interval
    /// that overlaps `[from, to)`, in order.
    pub fn grid(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut s = self.floor(from);
        while s < to {
            out.push(s);
            s += self.interval;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (DateTime<Utc>, f64)> + '_ {
        self.points.iter().map(|(k, v)| (*k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    #[test]
    fn readings_average_per_interval_and_duplicates_count_once() {
        // 10:00 holds two values (mean 3); 10:05 holds 6 sent twice (a redelivered
        // batch), which counts once → interval 10:00–10:15 = (3 + 6) / 2 = 4.5.
        let s = Series::from_readings(
            TimeDelta::minutes(15),
            [
                (at("2026-07-01T10:00:00Z"), 2.0),
                (at("2026-07-01T10:05:00Z"), 6.0),
                (at("2026-07-01T10:00:00Z"), 4.0),
                (at("2026-07-01T10:05:00Z"), 6.0),
                (at("2026-07-01T10:20:00Z"), f64::NAN),
            ],
        );
        assert_eq!(s.get(at("2026-07-01T10:00:00Z")), Some(4.5));
        // 10:15 only had a NaN: a gap, not zero.
        assert_eq!(s.get(at("2026-07-01T10:15:00Z")), None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn grid_covers_partial_intervals() {
        let s = Series::new(TimeDelta::minutes(15));
        let g = s.grid(at("2026-07-01T10:10:00Z"), at("2026-07-01T10:31:00Z"));
        assert_eq!(
            g,
            vec![
                at("2026-07-01T10:00:00Z"),
                at("2026-07-01T10:15:00Z"),
                at("2026-07-01T10:30:00Z")
            ]
        );
    }
}
