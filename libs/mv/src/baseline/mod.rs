//! Baselines: what a DER would have drawn during an event had there been none.
//!
//! A method is one type implementing [`BaselineMethod`], registered by name in
//! [`method`]; its parameters come from the program (`baseline_params`, JSON) over
//! the method's defaults.

mod meter_before;
mod x_of_y;

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Serialize;

pub use meter_before::{MeterBefore, MeterBeforeParams};
pub use x_of_y::{Adjustment, Pick, XOfY, XOfYParams, XOfYRule};

use crate::{calendar::Holidays, series::Series};

/// An event's window. Intervals of the series that overlap it are the event's
/// intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn duration(&self) -> TimeDelta {
        self.end - self.start
    }
}

/// Everything a method may look at, for one DER and one event.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The DER's history and event day: lookback days, the adjustment window and the
    /// event itself.
    pub series: &'a Series,
    pub event: Window,
    /// When the DER's first command of the event was sent, if it was.
    pub first_command_at: Option<DateTime<Utc>>,
    pub time_zone: Tz,
    pub holidays: &'a Holidays,
    /// Local dates on which this DER took part in an event of any program; never
    /// comparison days.
    pub event_days: &'a BTreeSet<NaiveDate>,
}

/// One event interval's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub start: DateTime<Utc>,
    /// Before the day-of adjustment.
    pub unadjusted_kw: f64,
    pub kw: f64,
}

/// How the day-of adjustment came out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Applied {
    None,
    Multiplicative {
        /// actual / baseline over the window, before the cap.
        raw: f64,
        factor: f64,
        capped: bool,
    },
    Additive {
        /// mean(actual − baseline) over the window, before the cap.
        raw: f64,
        offset_kw: f64,
        capped: bool,
    },
    /// The method adjusts, but the event day's adjustment window had a gap.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub method: String,
    pub points: Vec<Point>,
    /// The comparison days used, most recent first (empty for meter-before).
    pub days: Vec<NaiveDate>,
    pub adjustment: Applied,
}

/// Why no baseline could be computed; the DER is then excluded from payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("insufficient data: {reason}")]
pub struct Insufficient {
    pub reason: String,
}

pub trait BaselineMethod: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    /// How far back before the event the method reads.
    fn lookback(&self) -> TimeDelta;
    /// The time ranges whose readings the baseline may depend on, sorted and
    /// disjoint: a caller that loads only these gets the same baseline as one that
    /// loads everything (a property test holds every method to it).
    fn reads(&self, event: Window, time_zone: Tz) -> Vec<Window> {
        let _ = time_zone;
        vec![Window {
            start: event.start - self.lookback(),
            end: event.end,
        }]
    }
    fn baseline(&self, input: &Input<'_>) -> Result<Baseline, Insufficient>;
}

/// `ranges` widened to whole intervals of `interval` and merged, so no interval is
/// read twice or in part.
pub fn on_grid(ranges: Vec<Window>, interval: TimeDelta) -> Vec<Window> {
    let grid = Series::new(interval);
    merge_ranges(
        ranges
            .into_iter()
            .filter(|w| w.end > w.start)
            .map(|w| Window {
                start: grid.floor(w.start),
                end: grid.floor(w.end - TimeDelta::nanoseconds(1)) + interval,
            })
            .collect(),
    )
}

/// Sorts `ranges` and merges those that overlap or touch.
pub fn merge_ranges(mut ranges: Vec<Window>) -> Vec<Window> {
    ranges.retain(|r| r.end > r.start);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Window> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error("unknown baseline method {0:?}; known: {known}", known = METHODS.join(", "))]
    Unknown(String),
    #[error("baseline parameters for {method}: {message}")]
    Params { method: String, message: String },
}

/// The registered methods' names.
pub const METHODS: &[&str] = &[
    "x_of_y_10_10",
    "x_of_y_high_4_5",
    "x_of_y_high_5_10",
    "x_of_y_middle_8_10",
    "meter_before_after",
];

/// The method registered as `name`, with `params` (a JSON object, possibly empty)
/// over its defaults.
pub fn method(
    name: &str,
    params: &serde_json::Value,
) -> Result<Box<dyn BaselineMethod>, MethodError> {
    let params_err = |e: serde_json::Error| MethodError::Params {
        method: name.to_owned(),
        message: e.to_string(),
    };
    Ok(match name {
        "x_of_y_10_10" => {
            Box::new(XOfY::new(name, XOfYParams::caiso_10_in_10(), params).map_err(params_err)?)
        }
        "x_of_y_high_4_5" => {
            Box::new(XOfY::new(name, XOfYParams::pjm_high_4_of_5(), params).map_err(params_err)?)
        }
        "x_of_y_high_5_10" => {
            Box::new(XOfY::new(name, XOfYParams::nyiso_high_5_of_10(), params).map_err(params_err)?)
        }
        "x_of_y_middle_8_10" => Box::new(
            XOfY::new(name, XOfYParams::ercot_middle_8_of_10(), params).map_err(params_err)?,
        ),
        "meter_before_after" => Box::new(MeterBefore::new(params).map_err(params_err)?),
        other => return Err(MethodError::Unknown(other.to_owned())),
    })
}

/// Overlays the keys of `overrides` (a JSON object or null) on `defaults`.
fn merge<T: Serialize + serde::de::DeserializeOwned>(
    defaults: &T,
    overrides: &serde_json::Value,
) -> Result<T, serde_json::Error> {
    let mut value = serde_json::to_value(defaults)?;
    if let (Some(base), Some(over)) = (value.as_object_mut(), overrides.as_object()) {
        for (k, v) in over {
            match (base.get_mut(k), v) {
                // Nested rules (e.g. `weekday`) merge key by key too.
                (Some(serde_json::Value::Object(inner)), serde_json::Value::Object(o)) => {
                    for (ik, iv) in o {
                        inner.insert(ik.clone(), iv.clone());
                    }
                }
                _ => {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
    } else if !overrides.is_null() {
        return Err(serde::de::Error::custom("parameters must be a JSON object"));
    }
    serde_json::from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_snap_to_the_grid_and_merge() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("ts");
        let w = |a: &str, b: &str| Window {
            start: at(a),
            end: at(b),
        };
        let got = on_grid(
            vec![
                w("2026-07-15T10:20:00Z", "2026-07-15T11:00:00Z"),
                w("2026-07-15T09:00:00Z", "2026-07-15T10:05:00Z"),
                w("2026-07-15T13:00:00Z", "2026-07-15T13:01:00Z"),
            ],
            TimeDelta::minutes(15),
        );
        // 09:00–10:15 and 10:15–11:00 touch once snapped; 13:00–13:15 stays apart.
        assert_eq!(
            got,
            vec![
                w("2026-07-15T09:00:00Z", "2026-07-15T11:00:00Z"),
                w("2026-07-15T13:00:00Z", "2026-07-15T13:15:00Z")
            ]
        );
    }

    #[test]
    fn every_registered_name_builds_with_defaults() {
        for name in METHODS {
            let m = method(name, &serde_json::json!({})).expect("valid test input");
            assert_eq!(m.name(), *name);
        }
    }

    #[test]
    fn unknown_method_and_bad_params_are_errors() {
        assert!(matches!(
            method("guess", &serde_json::Value::Null),
            Err(MethodError::Unknown(_))
        ));
        let err = method("x_of_y_10_10", &serde_json::json!({"lookback": 3}))
            .expect_err("must be refused");
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(method("x_of_y_10_10", &serde_json::json!([1])).is_err());
    }

    #[test]
    fn params_override_defaults_key_by_key() {
        let m = method(
            "x_of_y_10_10",
            &serde_json::json!({"weekday": {"adjustment": {"kind": "none"}}}),
        )
        .expect("valid test input");
        let text = format!("{m:?}");
        assert!(text.contains("adjustment: None"), "{text}");
        assert!(text.contains("lookback_days: 45"), "{text}");
    }
}
