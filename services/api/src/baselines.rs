//! Baseline preview: what a DER's baseline would be for a hypothetical event, by
//! any registered method, before anyone schedules one. The same rules the worker
//! settles with ([`pmcore_mv`]), over the DER's stored telemetry.

use std::collections::BTreeSet;

use axum::extract::State;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use pmcore_mv::{
    baseline::{self, Input, Window},
    calendar::{Holidays, local_days},
    series::Series,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query},
    state::AppState,
};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewParams {
    /// Start of the hypothetical event.
    starts_at: DateTime<Utc>,
    /// Its end (at most 24 hours after the start).
    ends_at: DateTime<Utc>,
    /// A registered method (`x_of_y_10_10`, `x_of_y_high_4_5`, `x_of_y_high_5_10`,
    /// `x_of_y_middle_8_10`, `meter_before_after`); default: the program's, or
    /// `x_of_y_10_10`.
    method: Option<String>,
    /// Take the time zone, holidays, interval and method parameters from this
    /// program (default: UTC, NERC holidays, 15 minutes, the method's defaults).
    program_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BaselinePoint {
    pub start: DateTime<Utc>,
    pub unadjusted_kw: f64,
    /// After the day-of adjustment.
    pub kw: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BaselinePreview {
    pub der_id: Uuid,
    pub method: String,
    pub time_zone: String,
    pub interval_minutes: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Comparison days used, most recent first (none for meter-before).
    pub comparison_days: Vec<NaiveDate>,
    /// The day-of adjustment (`kind`: `none`, `multiplicative`, `additive`, `unavailable`).
    #[schema(value_type = Object)]
    pub adjustment: serde_json::Value,
    pub points: Vec<BaselinePoint>,
}

struct Rules {
    method: String,
    params: serde_json::Value,
    time_zone: Tz,
    holidays: Holidays,
    interval: TimeDelta,
}

/// A DER's baseline for a hypothetical event. Insufficient data is a 422 that says
/// what was missing.
#[utoipa::path(
    get, path = "/v1/ders/{id}/baseline", operation_id = "der.baseline_preview", tag = "settlements",
    params(("id" = Uuid, Path, description = "DER id"), PreviewParams),
    responses(
        (status = 200, body = BaselinePreview),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad parameters, or not enough data for a baseline", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn preview(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(params): Query<PreviewParams>,
) -> ApiResult<Json<BaselinePreview>> {
    let mut errors = Vec::new();
    if params.ends_at <= params.starts_at {
        errors.push(FieldError::new("ends_at", "must be after `starts_at`"));
    } else if params.ends_at - params.starts_at > TimeDelta::hours(24) {
        errors.push(FieldError::new(
            "ends_at",
            "at most 24 hours after `starts_at`",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut conn = state.pool.acquire().await?;
    let owner: Option<Uuid> =
        sqlx::query_scalar("select organization_id from pm.der where id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    if !owner.is_some_and(|o| principal.can_see(o)) {
        return Err(ApiError::NotFound("DER"));
    }
    let rules = rules(&mut conn, &params).await?;
    let method = baseline::method(&rules.method, &rules.params)
        .map_err(|e| ApiError::invalid("method", e.to_string()))?;
    let window = Window {
        start: params.starts_at,
        end: params.ends_at,
    };
    let from = params.starts_at - method.lookback();
    let ranges: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        baseline::on_grid(method.reads(window, rules.time_zone), rules.interval)
            .into_iter()
            .map(|w| (w.start, w.end))
            .collect();

    let mut points = Vec::new();
    pmcore_db::telemetry::interval_means(&mut conn, &[id], rules.interval, &ranges, |_, t, kw| {
        points.push((t, kw));
    })
    .await?;
    let series = Series::from_intervals(rules.interval, points);
    let event_days: BTreeSet<NaiveDate> =
        pmcore_db::telemetry::other_events(&mut conn, &[id], None, from, params.ends_at)
            .await?
            .into_iter()
            .flat_map(|(_, start, end)| local_days(start, end, rules.time_zone))
            .collect();
    let first_command_at: Option<DateTime<Utc>> = None;
    let baseline = method
        .baseline(&Input {
            series: &series,
            event: window,
            first_command_at,
            time_zone: rules.time_zone,
            holidays: &rules.holidays,
            event_days: &event_days,
        })
        .map_err(|e| ApiError::invalid("starts_at", e.to_string()))?;
    Ok(Json(BaselinePreview {
        der_id: id,
        method: rules.method,
        time_zone: rules.time_zone.name().to_owned(),
        interval_minutes: rules.interval.num_minutes(),
        starts_at: params.starts_at,
        ends_at: params.ends_at,
        comparison_days: baseline.days,
        adjustment: serde_json::to_value(&baseline.adjustment).map_err(anyhow::Error::from)?,
        points: baseline
            .points
            .into_iter()
            .map(|p| BaselinePoint {
                start: p.start,
                unadjusted_kw: p.unadjusted_kw,
                kw: p.kw,
            })
            .collect(),
    }))
}

async fn rules(conn: &mut sqlx::PgConnection, params: &PreviewParams) -> ApiResult<Rules> {
    let Some(program) = params.program_id else {
        return Ok(Rules {
            method: params
                .method
                .clone()
                .unwrap_or_else(|| "x_of_y_10_10".to_owned()),
            params: serde_json::json!({}),
            time_zone: Tz::UTC,
            holidays: Holidays::default(),
            interval: TimeDelta::minutes(15),
        });
    };
    let row: Option<(String, serde_json::Value, String, serde_json::Value, i32)> = sqlx::query_as(
        "select baseline_method, baseline_params, time_zone, holidays, interval_minutes from pm.program where id = $1",
    )
    .bind(program)
    .fetch_optional(conn)
    .await?;
    let (method, program_params, zone, holidays, interval) =
        row.ok_or_else(|| ApiError::invalid("program_id", "no such program"))?;
    // Another method than the program's starts from its own defaults.
    let (method, method_params) = match &params.method {
        Some(m) if *m != method => (m.clone(), serde_json::json!({})),
        _ => (method, program_params),
    };
    Ok(Rules {
        method,
        params: method_params,
        time_zone: zone.parse().map_err(|_| {
            ApiError::invalid(
                "program_id",
                format!("the program's time zone {zone:?} is unknown"),
            )
        })?,
        holidays: serde_json::from_value(holidays)
            .map_err(|e| ApiError::invalid("program_id", format!("the program's holidays: {e}")))?,
        interval: TimeDelta::minutes(i64::from(interval)),
    })
}
