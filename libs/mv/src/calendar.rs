//! Day types and holidays, in the program's time zone.
//!
//! A comparison day must be of the event day's type: a *weekday* is Monday to Friday
//! and not a holiday; every other day (Saturday, Sunday, holiday) is a
//! *weekend/holiday* day, as CAISO, PJM and NYISO group them.
//!
//! The default calendar is NERC's six holidays (New Year's Day, Memorial Day,
//! Independence Day, Labor Day, Thanksgiving, Christmas); a fixed-date holiday that
//! falls on a Sunday is observed on the Monday, one on a Saturday is not moved
//! (NERC's rule). A program can switch NERC's off and list its own dates.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayType {
    Weekday,
    WeekendHoliday,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Holidays {
    /// Include NERC's holidays.
    pub nerc: bool,
    /// Further holidays (local dates).
    pub extra: BTreeSet<NaiveDate>,
}

impl Default for Holidays {
    fn default() -> Self {
        Self {
            nerc: true,
            extra: BTreeSet::new(),
        }
    }
}

impl Holidays {
    pub fn none() -> Self {
        Self {
            nerc: false,
            extra: BTreeSet::new(),
        }
    }

    pub fn is_holiday(&self, day: NaiveDate) -> bool {
        self.extra.contains(&day) || (self.nerc && nerc_holidays(day.year()).contains(&day))
    }

    pub fn day_type(&self, day: NaiveDate) -> DayType {
        match day.weekday() {
            Weekday::Sat | Weekday::Sun => DayType::WeekendHoliday,
            _ if self.is_holiday(day) => DayType::WeekendHoliday,
            _ => DayType::Weekday,
        }
    }
}

/// The local dates an instant range `[start, end]` touches in `tz` (an event's days,
/// which are never comparison days for its DERs).
pub fn local_days(
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    tz: chrono_tz::Tz,
) -> impl Iterator<Item = NaiveDate> {
    let first = start.with_timezone(&tz).date_naive();
    let last = end.with_timezone(&tz).date_naive();
    first.iter_days().take_while(move |d| *d <= last)
}

/// NERC's holidays of `year`, as observed.
pub fn nerc_holidays(year: i32) -> [NaiveDate; 6] {
    let fixed = |month, day| {
        let date = NaiveDate::from_ymd_opt(year, month, day).expect("valid fixed holiday");
        if date.weekday() == Weekday::Sun {
            date.succ_opt().expect("Monday after a holiday exists")
        } else {
            date
        }
    };
    let nth = |month, weekday, n: u8| {
        NaiveDate::from_weekday_of_month_opt(year, month, weekday, n).expect("valid nth weekday")
    };
    let last_monday_of_may = (25..=31)
        .rev()
        .map(|d| NaiveDate::from_ymd_opt(year, 5, d).expect("valid May day"))
        .find(|d| d.weekday() == Weekday::Mon)
        .expect("May ends with a Monday in its last week");
    [
        fixed(1, 1),
        last_monday_of_may,
        fixed(7, 4),
        nth(9, Weekday::Mon, 1),
        nth(11, Weekday::Thu, 4),
        fixed(12, 25),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("valid test input")
    }

    #[test]
    fn nerc_2026() {
        // 2026: Jan 1 is a Thursday, May 25 the last Monday, Jul 4 a Saturday (not
        // moved), Sep 7 the first Monday, Nov 26 the fourth Thursday, Dec 25 a Friday.
        assert_eq!(
            nerc_holidays(2026),
            [
                d("2026-01-01"),
                d("2026-05-25"),
                d("2026-07-04"),
                d("2026-09-07"),
                d("2026-11-26"),
                d("2026-12-25")
            ]
        );
    }

    #[test]
    fn sunday_holiday_is_observed_on_monday() {
        // 2022-12-25 was a Sunday → observed Monday 26th; 2023-01-01 too → Jan 2.
        assert!(Holidays::default().is_holiday(d("2022-12-26")));
        assert!(Holidays::default().is_holiday(d("2023-01-02")));
        assert!(!Holidays::default().is_holiday(d("2022-12-27")));
    }

    #[test]
    fn an_event_across_local_midnight_touches_two_days() {
        // 06:00–08:00 UTC is 23:00–01:00 in Los Angeles (PDT, UTC−7) on 14–15 July.
        let tz: chrono_tz::Tz = "America/Los_Angeles".parse().expect("zone");
        let start = "2026-07-15T06:00:00Z".parse().expect("ts");
        let end = "2026-07-15T08:00:00Z".parse().expect("ts");
        let days: Vec<NaiveDate> = local_days(start, end, tz).collect();
        assert_eq!(days, vec![d("2026-07-14"), d("2026-07-15")]);
    }

    #[test]
    fn day_types() {
        let h = Holidays::default();
        assert_eq!(h.day_type(d("2026-07-01")), DayType::Weekday); // Wednesday
        assert_eq!(h.day_type(d("2026-07-04")), DayType::WeekendHoliday); // Saturday
        assert_eq!(h.day_type(d("2026-09-07")), DayType::WeekendHoliday); // Labor Day
        assert_eq!(Holidays::none().day_type(d("2026-09-07")), DayType::Weekday);
        let mut own = Holidays::none();
        own.extra.insert(d("2026-07-01"));
        assert_eq!(own.day_type(d("2026-07-01")), DayType::WeekendHoliday);
    }
}
