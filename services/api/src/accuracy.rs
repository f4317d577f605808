//! Baseline accuracy on placebo days, as AEMO and CAISO compare methods: each
//! method runs on recent weekdays without an event as if they had one, and its
//! baseline is scored against what the DERs actually drew. This is how a utility
//! defends its choice of method.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use pmcore_mv::{
    accuracy::{Accuracy, accuracy, placebo_pairs},
    baseline::{self, Input, METHODS, Window},
    calendar::{DayType, Holidays, local_days},
    series::Series,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Principal, Role},
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query},
    state::AppState,
};

/// More DERs than this are sampled (the first by id), to keep the request bounded.
const MAX_DERS: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccuracyParams {
    /// Placebo days: the most recent weekdays before today without an event of the
    /// program (1 to 20, default 10).
    days: Option<u32>,
    /// Local start of the placebo window, `HH:MM` (default `17:00`).
    start_time: Option<String>,
    /// Its length in minutes (default 120, at most 1440).
    duration_minutes: Option<i64>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Score {
    /// Intervals scored.
    pub intervals: usize,
    /// √(mean squared error) / mean actual load.
    pub relative_rmse: f64,
    /// Mean error / mean actual load; positive over-estimates (over-pays).
    pub bias: f64,
}

impl From<Accuracy> for Score {
    fn from(a: Accuracy) -> Self {
        Self {
            intervals: a.intervals,
            relative_rmse: a.relative_rmse,
            bias: a.bias,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MethodScore {
    pub method: String,
    /// The fleet's summed load against its summed baseline (DERs with a baseline).
    pub fleet: Option<Score>,
    pub ders_scored: usize,
    /// DERs for which the method found too few comparison days.
    pub ders_insufficient: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DerScore {
    pub der_id: Uuid,
    pub method: String,
    #[serde(flatten)]
    pub score: Score,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccuracyReport {
    pub program_id: Uuid,
    pub time_zone: String,
    pub placebo_days: Vec<NaiveDate>,
    pub start_time: String,
    pub duration_minutes: i64,
    /// DERs scored (the program's active enrollments, at most 500).
    pub der_count: usize,
    pub methods: Vec<MethodScore>,
    pub ders: Vec<DerScore>,
}

/// Each registered method's accuracy for the program's DERs on placebo days, per
/// DER and for the fleet; `format=csv` for a spreadsheet.
#[utoipa::path(
    get, path = "/v1/programs/{id}/baseline-accuracy", operation_id = "program.baseline_accuracy", tag = "settlements",
    params(("id" = Uuid, Path, description = "Program id"), AccuracyParams),
    responses(
        (status = 200, body = AccuracyReport),
        (status = 200, description = "With `format=csv`: one row per DER and method, and one per method for the fleet", content_type = "text/csv", body = String),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(params): Query<AccuracyParams>,
) -> ApiResult<Response> {
    principal.require(&[Role::Admin, Role::ProgramManager, Role::Auditor])?;
    if principal.scope().is_some() {
        return Err(ApiError::Forbidden(
            "baseline accuracy is the utility's view".into(),
        ));
    }
    let checked = check(&params)?;
    let mut conn = state.pool.acquire().await?;
    let (zone, holidays): (String, serde_json::Value) =
        sqlx::query_as("select time_zone, holidays from pm.program where id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(ApiError::NotFound("program"))?;
    let tz: Tz = zone
        .parse()
        .map_err(|_| anyhow::anyhow!("program {id} has an unknown time zone {zone:?}"))?;
    let holidays: Holidays = serde_json::from_value(holidays).map_err(anyhow::Error::from)?;
    let ders: Vec<Uuid> = sqlx::query_scalar(
        "select der_id from pm.enrollment where program_id = $1 and status = 'active' order by der_id limit $2",
    )
    .bind(id)
    .bind(MAX_DERS)
    .fetch_all(&mut *conn)
    .await?;

    // Placebo days: weekdays before today (program time) with no event of the program.
    let today = Utc::now().with_timezone(&tz).date_naive();
    let program_event_days: BTreeSet<NaiveDate> = sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>)>(
        "select starts_at, ends_at from pm.dispatch_event where program_id = $1 and starts_at > $2",
    )
    .bind(id)
    .bind(Utc::now() - TimeDelta::days(120))
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .flat_map(|(s, e)| local_days(s, e, tz))
    .collect();
    let mut days = Vec::new();
    let mut day = today;
    while days.len() < checked.days && (today - day).num_days() < 90 {
        day = day.pred_opt().unwrap_or(day);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
            && holidays.day_type(day) == DayType::Weekday
            && !program_event_days.contains(&day)
        {
            days.push(day);
        }
    }
    let windows: Vec<Window> = days
        .iter()
        .filter_map(|d| {
            let start = tz
                .from_local_datetime(&d.and_time(checked.start))
                .earliest()?
                .with_timezone(&Utc);
            Some(Window {
                start,
                end: start + TimeDelta::minutes(checked.minutes),
            })
        })
        .collect();

    let interval = TimeDelta::minutes(15);
    let methods: Vec<_> = METHODS
        .iter()
        .map(|m| baseline::method(m, &serde_json::json!({})).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let ranges: Vec<(DateTime<Utc>, DateTime<Utc>)> = baseline::on_grid(
        windows
            .iter()
            .flat_map(|w| methods.iter().flat_map(|m| m.reads(*w, tz)))
            .collect(),
        interval,
    )
    .into_iter()
    .map(|w| (w.start, w.end))
    .collect();
    let mut points: BTreeMap<Uuid, Vec<(DateTime<Utc>, f64)>> = BTreeMap::new();
    pmcore_db::telemetry::interval_means(&mut conn, &ders, interval, &ranges, |der, t, kw| {
        points.entry(der).or_default().push((t, kw));
    })
    .await?;
    let since = ranges.first().map_or_else(Utc::now, |r| r.0);
    let mut event_days: BTreeMap<Uuid, BTreeSet<NaiveDate>> = BTreeMap::new();
    for (der, s, e) in
        pmcore_db::telemetry::other_events(&mut conn, &ders, None, since, Utc::now()).await?
    {
        event_days
            .entry(der)
            .or_default()
            .extend(local_days(s, e, tz));
    }
    drop(conn);

    let no_days = BTreeSet::new();
    let mut method_scores = Vec::new();
    let mut der_scores = Vec::new();
    for method in &methods {
        // Fleet sums per interval start: (Σ baseline, Σ actual).
        let mut fleet: BTreeMap<DateTime<Utc>, (f64, f64)> = BTreeMap::new();
        let (mut scored, mut insufficient) = (0, 0);
        for der in &ders {
            let series = Series::from_intervals(interval, points.remove(der).unwrap_or_default());
            let mut pairs = Vec::new();
            let mut any = false;
            for w in &windows {
                let input = Input {
                    series: &series,
                    event: *w,
                    first_command_at: None,
                    time_zone: tz,
                    holidays: &holidays,
                    event_days: event_days.get(der).unwrap_or(&no_days),
                };
                if let Some(p) = placebo_pairs(method.as_ref(), &input) {
                    any = true;
                    for (t, b, a) in p {
                        let slot = fleet.entry(t).or_default();
                        slot.0 += b;
                        slot.1 += a;
                        pairs.push((b, a));
                    }
                }
            }
            // Put the series back for the next method.
            points.insert(*der, series.iter().collect());
            if !any {
                insufficient += 1;
                continue;
            }
            scored += 1;
            if let Some(a) = accuracy(pairs) {
                der_scores.push(DerScore {
                    der_id: *der,
                    method: method.name().to_owned(),
                    score: a.into(),
                });
            }
        }
        method_scores.push(MethodScore {
            method: method.name().to_owned(),
            fleet: accuracy(fleet.into_values()).map(Score::from),
            ders_scored: scored,
            ders_insufficient: insufficient,
        });
    }
    let report = AccuracyReport {
        program_id: id,
        time_zone: tz.name().to_owned(),
        placebo_days: days,
        start_time: checked.start.format("%H:%M").to_string(),
        duration_minutes: checked.minutes,
        der_count: ders.len(),
        methods: method_scores,
        ders: der_scores,
    };
    if checked.csv {
        Ok(([(header::CONTENT_TYPE, "text/csv")], csv(&report)?).into_response())
    } else {
        Ok(Json(report).into_response())
    }
}

struct Checked {
    days: usize,
    start: NaiveTime,
    minutes: i64,
    csv: bool,
}

fn check(p: &AccuracyParams) -> ApiResult<Checked> {
    let mut errors = Vec::new();
    let days = p.days.unwrap_or(10);
    if !(1..=20).contains(&days) {
        errors.push(FieldError::new("days", "must be 1 to 20"));
    }
    let start = match NaiveTime::parse_from_str(p.start_time.as_deref().unwrap_or("17:00"), "%H:%M")
    {
        Ok(t) => t,
        Err(_) => {
            errors.push(FieldError::new("start_time", "must be HH:MM"));
            NaiveTime::MIN
        }
    };
    let minutes = p.duration_minutes.unwrap_or(120);
    if !(15..=1440).contains(&minutes) {
        errors.push(FieldError::new("duration_minutes", "must be 15 to 1440"));
    }
    let csv = match p.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            errors.push(FieldError::new("format", "must be json or csv"));
            false
        }
    };
    if errors.is_empty() {
        Ok(Checked {
            days: days as usize,
            start,
            minutes,
            csv,
        })
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn csv(report: &AccuracyReport) -> anyhow::Result<String> {
    let mut out = String::from("scope,method,intervals,relative_rmse,bias\n");
    for m in &report.methods {
        if let Some(f) = &m.fleet {
            out.push_str(&format!(
                "fleet,{},{},{:.6},{:.6}\n",
                m.method, f.intervals, f.relative_rmse, f.bias
            ));
        }
    }
    for d in &report.ders {
        out.push_str(&format!(
            "{},{},{},{:.6},{:.6}\n",
            d.der_id, d.method, d.score.intervals, d.score.relative_rmse, d.score.bias
        ));
    }
    Ok(out)
}
