//! Baseline rules on series small enough to check by hand. Hourly data; unless a
//! test says otherwise, the program's time zone is UTC and the event runs on
//! Wednesday 2026-07-15 from 14:00 to 16:00 (two intervals).

mod common;

use chrono::{Datelike, NaiveDate, Weekday};
use chrono_tz::Tz;
use common::*;
use pmcore_mv::baseline::Applied;

const UTC: Tz = Tz::UTC;

fn july_event(series: pmcore_mv::series::Series) -> Case {
    Case::new(
        series,
        UTC,
        at("2026-07-15T14:00:00Z"),
        at("2026-07-15T16:00:00Z"),
    )
}

fn is_weekend(day: NaiveDate) -> bool {
    matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
}

#[test]
fn ten_in_ten_skips_weekends_holidays_and_prior_event_days() {
    // Weekdays draw 10 kW, weekends 100 kW and the prior event day (Wed 8 July)
    // 1000 kW: only the ten most recent other weekdays may count.
    let series = hourly(UTC, "2026-05-01", "2026-07-15", |day, _| {
        Some(if day == d("2026-07-08") {
            1000.0
        } else if is_weekend(day) {
            100.0
        } else {
            10.0
        })
    });
    let mut case = july_event(series);
    case.event_days.insert(d("2026-07-08"));
    let b = case
        .run("x_of_y_10_10", no_adjustment())
        .expect("valid test input");
    assert_eq!(kws(&b), vec![10.0, 10.0]);
    // Back from Tue 14 July: 14, 13, (12–11 weekend), 10, 9, (8 event), 7, 6,
    // (5–4 weekend; Sat 4 July is not moved to Friday by NERC), 3, 2, 1, 30 June.
    let expected: Vec<NaiveDate> = [
        "2026-07-14",
        "2026-07-13",
        "2026-07-10",
        "2026-07-09",
        "2026-07-07",
        "2026-07-06",
        "2026-07-03",
        "2026-07-02",
        "2026-07-01",
        "2026-06-30",
    ]
    .iter()
    .map(|s| d(s))
    .collect();
    assert_eq!(b.days, expected);
}

#[test]
fn a_holiday_is_no_weekday_and_a_holiday_event_uses_the_weekend_rule() {
    // Labor Day 2026 is Monday 7 September.
    let series = hourly(UTC, "2026-07-20", "2026-09-08", |day, _| {
        Some(if day == d("2026-09-07") { 50.0 } else { 10.0 })
    });
    let after = Case::new(
        series.clone(),
        UTC,
        at("2026-09-08T14:00:00Z"),
        at("2026-09-08T15:00:00Z"),
    );
    let b = after
        .run("x_of_y_10_10", no_adjustment())
        .expect("valid test input");
    assert!(!b.days.contains(&d("2026-09-07")));
    assert_eq!(kws(&b), vec![10.0]);

    // An event on Labor Day itself: 4-in-4 over weekend and holiday days.
    let on = Case::new(
        series,
        UTC,
        at("2026-09-07T14:00:00Z"),
        at("2026-09-07T15:00:00Z"),
    );
    let b = on
        .run("x_of_y_10_10", no_adjustment())
        .expect("valid test input");
    assert_eq!(
        b.days,
        vec![
            d("2026-09-06"),
            d("2026-09-05"),
            d("2026-08-30"),
            d("2026-08-29")
        ]
    );
}

#[test]
fn multiplicative_adjustment_binds_at_the_cap_and_not_below_it() {
    // Comparison days 10 kW. The event day reads `pre` kW in its adjustment window
    // (11:00–13:00 ... the 3 hours ending 1 hour before 14:00 = 10:00, 11:00, 12:00).
    let run = |pre: f64| {
        let series = hourly(UTC, "2026-05-01", "2026-07-15", |day, hour| {
            Some(if day == d("2026-07-15") && (10..13).contains(&hour) {
                pre
            } else {
                10.0
            })
        });
        july_event(series)
            .run("x_of_y_10_10", serde_json::json!({}))
            .expect("valid test input")
    };
    // 11 / 10 = 1.1 is inside ±20 %: baseline 10 × 1.1 = 11.
    let b = run(11.0);
    assert_eq!(
        b.adjustment,
        Applied::Multiplicative {
            raw: 1.1,
            factor: 1.1,
            capped: false
        }
    );
    assert!((kws(&b)[0] - 11.0).abs() < 1e-12);
    // 15 / 10 = 1.5 is capped to 1.2 → 12; 5 / 10 = 0.5 to 0.8 → 8.
    let b = run(15.0);
    assert_eq!(
        b.adjustment,
        Applied::Multiplicative {
            raw: 1.5,
            factor: 1.2,
            capped: true
        }
    );
    assert!((kws(&b)[1] - 12.0).abs() < 1e-12);
    let b = run(5.0);
    assert!((kws(&b)[0] - 8.0).abs() < 1e-12);
    // A wider cap, set per program.
    let series = hourly(UTC, "2026-05-01", "2026-07-15", |day, hour| {
        Some(if day == d("2026-07-15") && (10..13).contains(&hour) {
            15.0
        } else {
            10.0
        })
    });
    let b = july_event(series)
        .run("x_of_y_10_10", serde_json::json!({"weekday": {"adjustment": {
            "kind": "multiplicative", "from_minutes_before": 240, "to_minutes_before": 60, "cap": 0.5}}}))
        .expect("valid test input");
    assert!((kws(&b)[0] - 15.0).abs() < 1e-12);
}

#[test]
fn a_gap_in_the_adjustment_window_leaves_the_baseline_unadjusted() {
    let series = hourly(UTC, "2026-05-01", "2026-07-15", |day, hour| {
        (!(day == d("2026-07-15") && hour == 11)).then_some(if day == d("2026-07-15") {
            15.0
        } else {
            10.0
        })
    });
    let b = july_event(series)
        .run("x_of_y_10_10", serde_json::json!({}))
        .expect("valid test input");
    assert_eq!(b.adjustment, Applied::Unavailable);
    assert_eq!(kws(&b), vec![10.0, 10.0]);
}

#[test]
fn high_4_of_5_drops_low_days_and_adjusts_additively() {
    // The five most recent weekdays (14, 13, 10, 9, 8 July) draw 20, 20, 2, 2, 2
    // kW. Their mean is 9.2, a quarter of it 2.3: the three 2 kW days are dropped,
    // the baseline is the mean of the two 20 kW days = 20 (without the drop it
    // would be (20 + 20 + 2 + 2) / 4 = 11).
    let load = |day: NaiveDate| match day.day() {
        14 | 13 if day.month() == 7 => 20.0,
        _ => 2.0,
    };
    let series = hourly(UTC, "2026-06-01", "2026-07-15", |day, hour| {
        Some(if day == d("2026-07-15") {
            if (10..13).contains(&hour) { 23.0 } else { 0.0 }
        } else {
            load(day)
        })
    });
    let b = july_event(series.clone())
        .run(
            "x_of_y_high_4_5",
            serde_json::json!({"weekday": {"adjustment": {"kind": "none"}}}),
        )
        .expect("valid test input");
    assert_eq!(kws(&b), vec![20.0, 20.0]);
    assert_eq!(b.days, vec![d("2026-07-14"), d("2026-07-13")]);
    // Symmetric additive: the event day reads 23 kW over 10:00–13:00 against a
    // baseline of 20 there → +3 kW on every event interval.
    let b = july_event(series)
        .run("x_of_y_high_4_5", serde_json::json!({}))
        .expect("valid test input");
    assert_eq!(
        b.adjustment,
        Applied::Additive {
            raw: 3.0,
            offset_kw: 3.0,
            capped: false
        }
    );
    assert_eq!(kws(&b), vec![23.0, 23.0]);
}

#[test]
fn high_5_of_10_skips_the_day_before_and_drops_days_below_a_quarter_of_the_highest() {
    // Tue 14 July (the day before) draws 1000 kW and must not count. From Mon 13
    // back, ten weekdays: 13 → 40 kW, then 12, 12, 12, 12, 9, 9, 9, 9, 9. A quarter
    // of the highest (40) is 10: the 9 kW days go; the five highest of what is
    // left are 40, 12, 12, 12, 12 → 88 / 5 = 17.6.
    let loads = [40.0, 12.0, 12.0, 12.0, 12.0, 9.0, 9.0, 9.0, 9.0, 9.0];
    let weekdays_back: Vec<NaiveDate> = {
        let mut v = Vec::new();
        let mut day = d("2026-07-13");
        while v.len() < 10 {
            if !is_weekend(day) {
                v.push(day);
            }
            day = day.pred_opt().expect("valid test input");
        }
        v
    };
    let series = hourly(UTC, "2026-06-01", "2026-07-15", |day, _| {
        if day == d("2026-07-14") {
            return Some(1000.0);
        }
        Some(
            weekdays_back
                .iter()
                .position(|w| *w == day)
                .map_or(0.0, |i| loads[i]),
        )
    });
    let b = july_event(series)
        .run(
            "x_of_y_high_5_10",
            serde_json::json!({"weekday": {"adjustment": {"kind": "none"}}}),
        )
        .expect("valid test input");
    assert!((kws(&b)[0] - 17.6).abs() < 1e-12, "{:?}", kws(&b));
    assert!(!b.days.contains(&d("2026-07-14")));
    assert_eq!(b.days.len(), 5);
}

#[test]
fn middle_8_of_10_drops_the_highest_and_lowest() {
    // The ten most recent weekdays draw 1, 2, …, 10 kW: drop 1 and 10, the mean of
    // 2..=9 is 5.5. Unadjusted by default.
    let mut day = d("2026-07-14");
    let mut order = Vec::new();
    while order.len() < 10 {
        if !is_weekend(day) {
            order.push(day);
        }
        day = day.pred_opt().expect("valid test input");
    }
    let series = hourly(UTC, "2026-06-01", "2026-07-15", |day, _| {
        Some(
            order
                .iter()
                .position(|w| *w == day)
                .map_or(500.0, |i| (i + 1) as f64),
        )
    });
    let b = july_event(series)
        .run("x_of_y_middle_8_10", serde_json::json!({}))
        .expect("valid test input");
    assert_eq!(kws(&b), vec![5.5, 5.5]);
    assert_eq!(b.adjustment, Applied::None);
    assert_eq!(b.days.len(), 8);
}

#[test]
fn too_few_days_is_insufficient_data() {
    // History starts Thursday 9 July: 9, 10, 13, 14 → four weekdays, five needed.
    let series = hourly(UTC, "2026-07-09", "2026-07-15", |_, _| Some(10.0));
    let err = july_event(series)
        .run("x_of_y_10_10", serde_json::json!({}))
        .expect_err("must be refused");
    assert!(
        err.reason.starts_with("4 eligible weekday comparison days"),
        "{}",
        err.reason
    );
}

#[test]
fn a_day_with_a_gap_in_the_event_window_is_replaced_by_an_older_one() {
    // Mon 13 July misses 15:00: it is no candidate. Ten weekdays back from Tue 14
    // without it: 14, 10, 9, 8, 7, 6, 3, 2, 1 July and 30 June.
    let series = hourly(UTC, "2026-05-01", "2026-07-15", |day, hour| {
        (!(day == d("2026-07-13") && hour == 15)).then_some(10.0)
    });
    let b = july_event(series)
        .run("x_of_y_10_10", no_adjustment())
        .expect("valid test input");
    assert!(!b.days.contains(&d("2026-07-13")));
    assert_eq!(b.days.last(), Some(&d("2026-06-30")));
    assert_eq!(b.days.len(), 10);
}

#[test]
fn comparison_days_are_read_at_the_same_local_clock_time_across_a_dst_change() {
    // Los Angeles moved to PDT on Sunday 8 March 2026. Load = the local hour, so a
    // baseline for 14:00–15:00 PDT on Monday 9 March must be 14 even though the
    // comparison days (in PST) are at a different UTC hour.
    let la: Tz = "America/Los_Angeles".parse().expect("valid test input");
    let series = hourly(la, "2026-01-20", "2026-03-09", |_, hour| {
        Some(f64::from(hour))
    });
    let case = Case::new(
        series,
        la,
        local(la, "2026-03-09", 14),
        local(la, "2026-03-09", 15),
    );
    let b = case
        .run("x_of_y_10_10", no_adjustment())
        .expect("valid test input");
    assert_eq!(kws(&b), vec![14.0]);
}

#[test]
fn spring_forward_day_has_no_2am_and_fall_back_day_averages_its_two_1ams() {
    let la: Tz = "America/Los_Angeles".parse().expect("valid test input");
    // A Sunday event at 02:00–03:00 on 15 March: Sunday 8 March had no 02:00, so
    // it is no candidate; 4-in-4 takes Sat 14, Sat 7, Sun 1 and Sat 28 February.
    let series = hourly(la, "2026-01-20", "2026-03-15", |_, _| Some(5.0));
    let case = Case::new(
        series,
        la,
        local(la, "2026-03-15", 2),
        local(la, "2026-03-15", 3),
    );
    let b = case
        .run("x_of_y_10_10", no_adjustment())
        .expect("valid test input");
    assert_eq!(
        b.days,
        vec![
            d("2026-03-14"),
            d("2026-03-07"),
            d("2026-03-01"),
            d("2026-02-28")
        ]
    );

    // A Sunday event at 01:00–02:00 on 8 November: Sunday 1 November had 01:00
    // twice (08:00 and 09:00 UTC), read 2 and 4 kW → 3; every other day reads 3
    // kW at 01:00 → baseline exactly 3 (2.5 or 3.5 if one occurrence were taken).
    let series = hourly(la, "2026-09-20", "2026-11-08", |_, hour| {
        Some(if hour == 1 { 3.0 } else { 0.0 })
    });
    let mut points: Vec<_> = series.iter().collect();
    for p in &mut points {
        if p.0 == at("2026-11-01T08:00:00Z") {
            p.1 = 2.0;
        }
        if p.0 == at("2026-11-01T09:00:00Z") {
            p.1 = 4.0;
        }
    }
    let series = pmcore_mv::series::Series::from_intervals(chrono::TimeDelta::hours(1), points);
    let case = Case::new(
        series,
        la,
        local(la, "2026-11-08", 1),
        local(la, "2026-11-08", 2),
    );
    let b = case
        .run("x_of_y_10_10", no_adjustment())
        .expect("valid test input");
    assert!(b.days.contains(&d("2026-11-01")));
    assert_eq!(kws(&b), vec![3.0]);
}

#[test]
fn meter_before_holds_the_load_before_the_first_command() {
    // Five-minute data: 13:50 → 4, 13:55 → 6, 14:00 → 8, then 1 kW. The first
    // command left at 14:05, so the 15 minutes before it (13:50, 13:55, 14:00)
    // average (4 + 6 + 8) / 3 = 6, held flat over the event.
    let step = chrono::TimeDelta::minutes(5);
    let series = pmcore_mv::series::Series::from_intervals(
        step,
        [
            (at("2026-07-15T13:50:00Z"), 4.0),
            (at("2026-07-15T13:55:00Z"), 6.0),
            (at("2026-07-15T14:00:00Z"), 8.0),
            (at("2026-07-15T14:05:00Z"), 1.0),
            (at("2026-07-15T14:10:00Z"), 1.0),
        ],
    );
    let mut case = Case::new(
        series,
        UTC,
        at("2026-07-15T14:00:00Z"),
        at("2026-07-15T14:15:00Z"),
    );
    case.first_command_at = Some(at("2026-07-15T14:05:00Z"));
    let b = case
        .run("meter_before_after", serde_json::json!({}))
        .expect("valid test input");
    assert_eq!(kws(&b), vec![6.0, 6.0, 6.0]);
    // Without a command, the 15 minutes before the start: only 13:50 and 13:55
    // exist (13:45 is missing) → insufficient data.
    case.first_command_at = None;
    assert!(
        case.run("meter_before_after", serde_json::json!({}))
            .is_err()
    );
}

#[test]
fn a_placebo_day_scores_the_method_against_what_happened() {
    // Every day reads 10 kW except the placebo day, which reads 12 kW at 14:00 and
    // 8 kW at 15:00 (and 10 kW before, so no adjustment moves the baseline): errors
    // −2 and +2 over a mean actual of 10 → relative RMSE 0.2, bias 0.
    let series = hourly(UTC, "2026-05-01", "2026-07-15", |day, hour| {
        Some(match (day == d("2026-07-15"), hour) {
            (true, 14) => 12.0,
            (true, 15) => 8.0,
            _ => 10.0,
        })
    });
    let case = july_event(series);
    let method =
        pmcore_mv::baseline::method("x_of_y_10_10", &serde_json::json!({})).expect("method");
    let input = pmcore_mv::baseline::Input {
        series: &case.series,
        event: case.event,
        first_command_at: None,
        time_zone: case.tz,
        holidays: &case.holidays,
        event_days: &case.event_days,
    };
    let pairs = pmcore_mv::accuracy::placebo_pairs(method.as_ref(), &input).expect("a baseline");
    assert_eq!(
        pairs,
        vec![
            (at("2026-07-15T14:00:00Z"), 10.0, 12.0),
            (at("2026-07-15T15:00:00Z"), 10.0, 8.0)
        ]
    );
    let a =
        pmcore_mv::accuracy::accuracy(pairs.into_iter().map(|(_, b, a)| (b, a))).expect("scores");
    assert!(
        (a.relative_rmse - 0.2).abs() < 1e-12 && a.bias.abs() < 1e-12,
        "{a:?}"
    );
}
