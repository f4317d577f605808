//! X-of-Y comparison-day baselines with a day-of adjustment (CAISO 10-in-10, PJM
//! high 4 of 5, NYISO high 5 of 10, ERCOT middle 8 of 10, and their weekend
//! variants): one parameterised rule per day type.
//!
//! 1. Candidates: walking back from `first_day_back` days before the event day
//!    (local dates in the program's time zone), the `y` most recent days that are of
//!    the event day's type, not days the DER had an event, within `lookback_days`,
//!    and that have a value for every interval the rule reads (the event window's
//!    and the adjustment window's, at the same local clock times). Fewer than
//!    `min_days` → insufficient data.
//! 2. Pick: all of them, the `x` highest by event-window mean after dropping low
//!    days, or the middle ones after dropping the highest and lowest.
//! 3. Unadjusted baseline per interval = mean of the picked days' values at the same
//!    local clock time.
//! 4. Day-of adjustment from the event day's own load in a window before the event:
//!    multiplicative (Σ actual / Σ baseline, capped to 1 ± cap) or additive
//!    (mean of actual − baseline, optionally capped), or none.
//!
//! Daylight saving: comparison values are looked up by local clock time. A clock
//! time that does not exist on a comparison day (spring forward) is a gap, so that
//! day is not a candidate for an event covering it; a clock time that occurs twice
//! (fall back) reads the mean of both occurrences.

use chrono::{DateTime, Days, LocalResult, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{Applied, Baseline, BaselineMethod, Input, Insufficient, Point, Window, merge};
use crate::{calendar::DayType, series::Series};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XOfYParams {
    pub weekday: XOfYRule,
    pub weekend_holiday: XOfYRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XOfYRule {
    /// How many candidate days to collect.
    pub y: usize,
    pub pick: Pick,
    /// Candidates lie within this many days before the event day.
    pub lookback_days: u32,
    /// The most recent candidate: 1 = the day before the event, 2 = two days before.
    pub first_day_back: u32,
    /// Fewer candidates than this → insufficient data.
    pub min_days: usize,
    pub adjustment: Adjustment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pick {
    /// The mean of every candidate.
    All,
    /// Drop candidates whose event-window mean is below `low_fraction` × the
    /// candidates' mean (`reference: mean`) or highest (`reference: max`) event-window
    /// mean, then average the `x` highest.
    High {
        x: usize,
        low_fraction: f64,
        reference: LowReference,
    },
    /// Sort candidates by event-window mean, drop the `drop` highest and `drop`
    /// lowest, average the rest.
    Middle { drop: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowReference {
    Mean,
    Max,
}

/// The day-of adjustment; its window is `[start − from_minutes_before,
/// start − to_minutes_before)` on the event day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Adjustment {
    None,
    Multiplicative {
        from_minutes_before: i64,
        to_minutes_before: i64,
        /// The factor stays within [1 − cap, 1 + cap].
        cap: f64,
    },
    Additive {
        from_minutes_before: i64,
        to_minutes_before: i64,
        /// When set, |offset| ≤ cap × the window's mean baseline.
        cap: Option<f64>,
    },
}

impl Adjustment {
    fn window(&self, start: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match *self {
            Adjustment::None => None,
            Adjustment::Multiplicative {
                from_minutes_before,
                to_minutes_before,
                ..
            }
            | Adjustment::Additive {
                from_minutes_before,
                to_minutes_before,
                ..
            } => Some((
                start - TimeDelta::minutes(from_minutes_before),
                start - TimeDelta::minutes(to_minutes_before),
            )),
        }
    }
}

impl XOfYParams {
    /// CAISO 10-in-10 (weekdays; 4-in-4 on weekends and holidays), multiplicative
    /// adjustment over the 3 hours ending 1 hour before the event, capped ±20 %.
    pub fn caiso_10_in_10() -> Self {
        let adjustment = Adjustment::Multiplicative {
            from_minutes_before: 240,
            to_minutes_before: 60,
            cap: 0.2,
        };
        Self {
            weekday: XOfYRule {
                y: 10,
                pick: Pick::All,
                lookback_days: 45,
                first_day_back: 1,
                min_days: 5,
                adjustment: adjustment.clone(),
            },
            weekend_holiday: XOfYRule {
                y: 4,
                pick: Pick::All,
                lookback_days: 45,
                first_day_back: 1,
                min_days: 4,
                adjustment,
            },
        }
    }

    /// PJM high 4 of 5 (weekdays; high 2 of 3 on weekends and holidays): drop days
    /// below 25 % of the candidates' mean event-window load, average the highest;
    /// symmetric additive adjustment over the 3 hours starting 4 hours before.
    pub fn pjm_high_4_of_5() -> Self {
        let adjustment = Adjustment::Additive {
            from_minutes_before: 240,
            to_minutes_before: 60,
            cap: None,
        };
        let high = |x| Pick::High {
            x,
            low_fraction: 0.25,
            reference: LowReference::Mean,
        };
        Self {
            weekday: XOfYRule {
                y: 5,
                pick: high(4),
                lookback_days: 45,
                first_day_back: 1,
                min_days: 4,
                adjustment: adjustment.clone(),
            },
            weekend_holiday: XOfYRule {
                y: 3,
                pick: high(2),
                lookback_days: 45,
                first_day_back: 1,
                min_days: 2,
                adjustment,
            },
        }
    }

    /// NYISO high 5 of 10 (weekdays, starting two days before the event, 30-day
    /// lookback; high 2 of 3 on weekends and holidays): drop days below 25 % of the
    /// highest day's event-window load; multiplicative adjustment over the 2 hours
    /// starting 4 hours before, capped ±20 %.
    pub fn nyiso_high_5_of_10() -> Self {
        let adjustment = Adjustment::Multiplicative {
            from_minutes_before: 240,
            to_minutes_before: 120,
            cap: 0.2,
        };
        let high = |x| Pick::High {
            x,
            low_fraction: 0.25,
            reference: LowReference::Max,
        };
        Self {
            weekday: XOfYRule {
                y: 10,
                pick: high(5),
                lookback_days: 30,
                first_day_back: 2,
                min_days: 5,
                adjustment: adjustment.clone(),
            },
            weekend_holiday: XOfYRule {
                y: 3,
                pick: high(2),
                lookback_days: 30,
                first_day_back: 1,
                min_days: 2,
                adjustment,
            },
        }
    }

    /// ERCOT middle 8 of 10 (weekdays; middle 4 of 6 on weekends and holidays),
    /// unadjusted.
    pub fn ercot_middle_8_of_10() -> Self {
        Self {
            weekday: XOfYRule {
                y: 10,
                pick: Pick::Middle { drop: 1 },
                lookback_days: 45,
                first_day_back: 1,
                min_days: 10,
                adjustment: Adjustment::None,
            },
            weekend_holiday: XOfYRule {
                y: 6,
                pick: Pick::Middle { drop: 1 },
                lookback_days: 45,
                first_day_back: 1,
                min_days: 6,
                adjustment: Adjustment::None,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct XOfY {
    name: String,
    params: XOfYParams,
}

impl XOfY {
    pub fn new(
        name: &str,
        defaults: XOfYParams,
        overrides: &serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        let params: XOfYParams = merge(&defaults, overrides)?;
        for rule in [&params.weekday, &params.weekend_holiday] {
            if rule.y == 0 || rule.min_days == 0 || rule.min_days > rule.y {
                return Err(serde::de::Error::custom("need 0 < min_days <= y"));
            }
            if let Pick::High {
                x, low_fraction, ..
            } = rule.pick
                && (x == 0 || x > rule.y || !(0.0..1.0).contains(&low_fraction))
            {
                return Err(serde::de::Error::custom(
                    "high pick needs 0 < x <= y and 0 <= low_fraction < 1",
                ));
            }
            if let Adjustment::Multiplicative { cap, .. } = rule.adjustment
                && !(0.0..=1.0).contains(&cap)
            {
                return Err(serde::de::Error::custom("cap must lie in [0, 1]"));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            params,
        })
    }

    pub fn params(&self) -> &XOfYParams {
        &self.params
    }
}

/// A candidate day and its values at the intervals the rule reads.
struct Day {
    date: NaiveDate,
    values: Vec<f64>,
    event_mean: f64,
}

impl BaselineMethod for XOfY {
    fn name(&self) -> &str {
        &self.name
    }

    fn lookback(&self) -> TimeDelta {
        let days = self
            .params
            .weekday
            .lookback_days
            .max(self.params.weekend_holiday.lookback_days);
        TimeDelta::days(i64::from(days) + 1)
    }

    /// Per candidate day, the local clock span from the earliest adjustment window
    /// start to the event's end, widened by an hour each side so daylight-saving
    /// shifts stay inside; and the event day itself.
    fn reads(&self, event: Window, time_zone: Tz) -> Vec<Window> {
        let rules = [&self.params.weekday, &self.params.weekend_holiday];
        let from = rules
            .iter()
            .filter_map(|r| r.adjustment.window(event.start).map(|(from, _)| from))
            .fold(event.start, DateTime::min);
        let back = rules.iter().map(|r| r.lookback_days).max().unwrap_or(0);
        let (local_from, local_to) = (
            from.with_timezone(&time_zone).naive_local(),
            event.end.with_timezone(&time_zone).naive_local(),
        );
        let at = |naive: chrono::NaiveDateTime| {
            time_zone
                .from_local_datetime(&naive)
                .earliest()
                .or_else(|| {
                    time_zone
                        .from_local_datetime(&(naive + TimeDelta::hours(1)))
                        .earliest()
                })
                .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc))
        };
        let slack = TimeDelta::hours(1);
        let mut ranges = vec![Window {
            start: from,
            end: event.end,
        }];
        for k in 1..=i64::from(back) {
            let shift = TimeDelta::days(k);
            ranges.push(Window {
                start: at(local_from - shift) - slack,
                end: at(local_to - shift) + slack,
            });
        }
        super::merge_ranges(ranges)
    }

    fn baseline(&self, input: &Input<'_>) -> Result<Baseline, Insufficient> {
        let tz = input.time_zone;
        let series = input.series;
        let event_day = input.event.start.with_timezone(&tz).date_naive();
        let day_type = input.holidays.day_type(event_day);
        let rule = match day_type {
            DayType::Weekday => &self.params.weekday,
            DayType::WeekendHoliday => &self.params.weekend_holiday,
        };

        let event_grid = series.grid(input.event.start, input.event.end);
        let adjustment_grid = rule
            .adjustment
            .window(input.event.start)
            .map(|(from, to)| series.grid(from, to))
            .unwrap_or_default();
        // Values a candidate day must have: the event's intervals, then the
        // adjustment window's.
        let needed: Vec<DateTime<Utc>> =
            event_grid.iter().chain(&adjustment_grid).copied().collect();

        let mut days = Vec::with_capacity(rule.y);
        let mut back = rule.first_day_back;
        while days.len() < rule.y && back <= rule.lookback_days {
            let date = event_day - Days::new(u64::from(back));
            back += 1;
            if input.holidays.day_type(date) != day_type || input.event_days.contains(&date) {
                continue;
            }
            let values: Option<Vec<f64>> = needed
                .iter()
                .map(|t| value_on(series, tz, event_day, *t, date))
                .collect();
            if let Some(values) = values {
                let event_mean = mean(&values[..event_grid.len()]);
                days.push(Day {
                    date,
                    values,
                    event_mean,
                });
            }
        }
        if days.len() < rule.min_days {
            return Err(Insufficient {
                reason: format!(
                    "{} eligible {} comparison days with complete data in the {} days before {event_day}; {} needed",
                    days.len(),
                    match day_type {
                        DayType::Weekday => "weekday",
                        DayType::WeekendHoliday => "weekend/holiday",
                    },
                    rule.lookback_days,
                    rule.min_days
                ),
            });
        }

        let picked = pick(&rule.pick, days);
        let n = picked.len() as f64;
        let unadjusted: Vec<f64> = (0..needed.len())
            .map(|i| picked.iter().map(|d| d.values[i]).sum::<f64>() / n)
            .collect();

        let (event_part, adjustment_part) = unadjusted.split_at(event_grid.len());
        let applied = adjust(&rule.adjustment, series, &adjustment_grid, adjustment_part);
        let points = event_grid
            .iter()
            .zip(event_part)
            .map(|(start, &unadjusted_kw)| Point {
                start: *start,
                unadjusted_kw,
                kw: match applied {
                    Applied::Multiplicative { factor, .. } => unadjusted_kw * factor,
                    Applied::Additive { offset_kw, .. } => unadjusted_kw + offset_kw,
                    Applied::None | Applied::Unavailable => unadjusted_kw,
                },
            })
            .collect();
        let mut used: Vec<NaiveDate> = picked.iter().map(|d| d.date).collect();
        used.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Baseline {
            method: self.name.clone(),
            points,
            days: used,
            adjustment: applied,
        })
    }
}

fn pick(rule: &Pick, mut days: Vec<Day>) -> Vec<Day> {
    match *rule {
        Pick::All => days,
        Pick::High {
            x,
            low_fraction,
            reference,
        } => {
            let means: Vec<f64> = days.iter().map(|d| d.event_mean).collect();
            let reference = match reference {
                LowReference::Mean => mean(&means),
                LowReference::Max => means.iter().copied().fold(f64::MIN, f64::max),
            };
            days.retain(|d| d.event_mean >= low_fraction * reference);
            // Stable: among equal days the more recent one wins.
            days.sort_by(|a, b| b.event_mean.total_cmp(&a.event_mean));
            days.truncate(x);
            days
        }
        Pick::Middle { drop } => {
            if days.len() <= 2 * drop {
                return days;
            }
            days.sort_by(|a, b| a.event_mean.total_cmp(&b.event_mean));
            days.truncate(days.len() - drop);
            days.split_off(drop)
        }
    }
}

fn adjust(rule: &Adjustment, series: &Series, grid: &[DateTime<Utc>], baseline: &[f64]) -> Applied {
    if matches!(rule, Adjustment::None) {
        return Applied::None;
    }
    let Some(actual) = grid
        .iter()
        .map(|t| series.get(*t))
        .collect::<Option<Vec<f64>>>()
    else {
        return Applied::Unavailable;
    };
    if actual.is_empty() {
        return Applied::Unavailable;
    }
    match *rule {
        Adjustment::None => Applied::None,
        Adjustment::Multiplicative { cap, .. } => {
            let b: f64 = baseline.iter().sum();
            if b.abs() < 1e-9 {
                return Applied::Unavailable;
            }
            let raw = actual.iter().sum::<f64>() / b;
            let factor = raw.clamp(1.0 - cap, 1.0 + cap);
            Applied::Multiplicative {
                raw,
                factor,
                capped: factor != raw,
            }
        }
        Adjustment::Additive { cap, .. } => {
            let diffs: Vec<f64> = actual.iter().zip(baseline).map(|(a, b)| a - b).collect();
            let raw = mean(&diffs);
            let offset_kw = match cap {
                Some(cap) => {
                    let limit = cap * mean(baseline).abs();
                    raw.clamp(-limit, limit)
                }
                None => raw,
            };
            Applied::Additive {
                raw,
                offset_kw,
                capped: offset_kw != raw,
            }
        }
    }
}

/// The value on comparison day `date` at the local clock time (and day offset from
/// the event day) of the event day's interval `t`.
fn value_on(
    series: &Series,
    tz: Tz,
    event_day: NaiveDate,
    t: DateTime<Utc>,
    date: NaiveDate,
) -> Option<f64> {
    let local = t.with_timezone(&tz);
    let offset = (local.date_naive() - event_day).num_days();
    let day = date.checked_add_signed(TimeDelta::days(offset))?;
    let at = |instant: DateTime<Tz>| series.get(series.floor(instant.with_timezone(&Utc)));
    match tz.from_local_datetime(&day.and_time(local.time())) {
        LocalResult::Single(instant) => at(instant),
        LocalResult::Ambiguous(first, second) => match (at(first), at(second)) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            (a, b) => a.or(b),
        },
        LocalResult::None => None,
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}
