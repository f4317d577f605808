//! Meter-before / meter-after, for fast resources (batteries, EV chargers): the
//! baseline is the DER's mean load over the `minutes_before` (whole intervals)
//! that end at its first command, held flat through the event. Without a command
//! the event's start is used; a gap in that window is insufficient data.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::{Applied, Baseline, BaselineMethod, Input, Insufficient, Point, merge};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterBeforeParams {
    pub minutes_before: i64,
}

impl Default for MeterBeforeParams {
    fn default() -> Self {
        Self { minutes_before: 15 }
    }
}

#[derive(Debug, Clone)]
pub struct MeterBefore {
    params: MeterBeforeParams,
}

impl MeterBefore {
    pub fn new(overrides: &serde_json::Value) -> Result<Self, serde_json::Error> {
        let params: MeterBeforeParams = merge(&MeterBeforeParams::default(), overrides)?;
        if !(1..=24 * 60).contains(&params.minutes_before) {
            return Err(serde::de::Error::custom(
                "minutes_before must lie in 1..=1440",
            ));
        }
        Ok(Self { params })
    }
}

impl BaselineMethod for MeterBefore {
    fn name(&self) -> &str {
        "meter_before_after"
    }

    /// Covers a first command up to an hour before the start (and any later one).
    fn lookback(&self) -> TimeDelta {
        TimeDelta::minutes(self.params.minutes_before) + TimeDelta::hours(2)
    }

    fn baseline(&self, input: &Input<'_>) -> Result<Baseline, Insufficient> {
        let series = input.series;
        let anchor = input.first_command_at.unwrap_or(input.event.start);
        // Whole intervals only: the one holding the command is already affected.
        let end = series.floor(anchor);
        let window = TimeDelta::minutes(self.params.minutes_before).max(series.interval());
        let grid = series.grid(end - window, end);
        let values: Option<Vec<f64>> = grid.iter().map(|t| series.get(*t)).collect();
        let values = values
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Insufficient {
                reason: format!(
                    "no complete readings in the {} minutes before {anchor}",
                    window.num_minutes()
                ),
            })?;
        let kw = values.iter().sum::<f64>() / values.len() as f64;
        Ok(Baseline {
            method: self.name().to_owned(),
            points: series
                .grid(input.event.start, input.event.end)
                .into_iter()
                .map(|start| Point {
                    start,
                    unadjusted_kw: kw,
                    kw,
                })
                .collect(),
            days: Vec::new(),
            adjustment: Applied::None,
        })
    }
}
