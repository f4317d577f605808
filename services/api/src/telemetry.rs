//! Telemetry reads: one DER over a time range at a chosen resolution, the
//! aggregate of a feeder's or a program's DERs, and the anomalies the worker flagged.
//!
//! Resolutions of a minute and coarser read the one-minute rollup the worker keeps
//! with the raw rows, so a week at 15 minutes reads 10,080 rollup rows rather than
//! 604,800 readings.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
    state::AppState,
};

/// Most points one response carries.
const MAX_POINTS: i64 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Resolution {
    /// Every reading as stored (a span of at most 6 hours).
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "1m")]
    OneMinute,
    #[serde(rename = "15m")]
    FifteenMinutes,
    #[serde(rename = "1h")]
    OneHour,
    #[serde(rename = "1d")]
    OneDay,
}

impl Resolution {
    fn step(self) -> Duration {
        match self {
            Resolution::Raw => Duration::seconds(1),
            Resolution::OneMinute => Duration::minutes(1),
            Resolution::FifteenMinutes => Duration::minutes(15),
            Resolution::OneHour => Duration::hours(1),
            Resolution::OneDay => Duration::days(1),
        }
    }

    fn interval(self) -> &'static str {
        match self {
            Resolution::Raw => "1 second",
            Resolution::OneMinute => "1 minute",
            Resolution::FifteenMinutes => "15 minutes",
            Resolution::OneHour => "1 hour",
            Resolution::OneDay => "1 day",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// Start of the range (inclusive), RFC 3339.
    from: DateTime<Utc>,
    /// End of the range (exclusive), RFC 3339.
    to: DateTime<Utc>,
    /// `raw`, `1m`, `15m` (default), `1h` or `1d`. Buckets are aligned to UTC.
    resolution: Option<Resolution>,
}

impl RangeParams {
    fn check(&self) -> Result<Resolution, ApiError> {
        let resolution = self.resolution.unwrap_or(Resolution::FifteenMinutes);
        let span = self.to - self.from;
        let mut errors = Vec::new();
        if span <= Duration::zero() {
            errors.push(FieldError::new("to", "must be after `from`"));
        } else if resolution == Resolution::Raw && span > Duration::hours(6) {
            errors.push(FieldError::new(
                "resolution",
                "raw readings are served for at most 6 hours; use 1m or coarser",
            ));
        } else if span.num_seconds() / resolution.step().num_seconds() > MAX_POINTS {
            errors.push(FieldError::new(
                "resolution",
                format!("the range has more than {MAX_POINTS} buckets at this resolution"),
            ));
        }
        if errors.is_empty() {
            Ok(resolution)
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// One bucket of one DER's readings. Power in kW, positive is consumption.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct Point {
    /// Start of the bucket.
    pub ts: DateTime<Utc>,
    pub avg_kw: f64,
    pub min_kw: f64,
    pub max_kw: f64,
    /// Readings in the bucket.
    pub samples: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DerSeries {
    pub der_id: Uuid,
    pub resolution: Resolution,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub points: Vec<Point>,
}

/// One DER's telemetry over a time range, downsampled.
#[utoipa::path(
    get, path = "/v1/ders/{id}/telemetry", operation_id = "telemetry.der", tag = "telemetry",
    params(("id" = Uuid, Path, description = "DER id"), RangeParams),
    responses(
        (status = 200, body = DerSeries),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn der_series(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(range): Query<RangeParams>,
) -> ApiResult<Json<DerSeries>> {
    let resolution = range.check()?;
    let owner: Option<Uuid> =
        sqlx::query_scalar("select organization_id from pm.der where id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    if !owner.is_some_and(|o| principal.can_see(o)) {
        return Err(ApiError::NotFound("DER"));
    }
    let points: Vec<Point> = if resolution == Resolution::Raw {
        sqlx::query_as(
            "select ts, power_kw as avg_kw, power_kw as min_kw, power_kw as max_kw, 1::int8 as samples
             from pm.telemetry where der_id = $1 and ts >= $2 and ts < $3 order by ts",
        )
        .bind(id)
        .bind(range.from)
        .bind(range.to)
        .fetch_all(&state.pool)
        .await?
    } else {
        sqlx::query_as(
            "select date_bin($4::interval, bucket, timestamptz '2000-01-01 00:00:00+00') as ts,
                    sum(sum_kw) / sum(samples) as avg_kw, min(min_kw) as min_kw,
                    max(max_kw) as max_kw, sum(samples)::int8 as samples
             from pm.telemetry_1m
             where der_id = $1 and bucket >= $2 and bucket < $3
             group by 1 order by 1",
        )
        .bind(id)
        .bind(range.from)
        .bind(range.to)
        .bind(resolution.interval())
        .fetch_all(&state.pool)
        .await?
    };
    Ok(Json(DerSeries {
        der_id: id,
        resolution,
        from: range.from,
        to: range.to,
        points,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AggregateParams {
    /// The DERs on this feeder.
    feeder: Option<String>,
    /// The DERs approved or active in this program.
    program_id: Option<Uuid>,
    /// Start of the range (inclusive), RFC 3339.
    from: DateTime<Utc>,
    /// End of the range (exclusive), RFC 3339.
    to: DateTime<Utc>,
    /// `1m`, `15m` (default), `1h` or `1d`.
    resolution: Option<Resolution>,
}

/// One bucket of a set of DERs.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct AggregatePoint {
    pub ts: DateTime<Utc>,
    /// Sum over the DERs of each DER's average power in the bucket.
    pub total_kw: f64,
    /// DERs with at least one reading in the bucket.
    pub ders_reporting: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AggregateSeries {
    pub feeder: Option<String>,
    pub program_id: Option<Uuid>,
    pub resolution: Resolution,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// DERs in the set (that the caller may see).
    pub ders: i64,
    pub points: Vec<AggregatePoint>,
}

/// Total power of a feeder's or a program's DERs over a time range.
#[utoipa::path(
    get, path = "/v1/telemetry/aggregate", operation_id = "telemetry.aggregate", tag = "telemetry",
    params(AggregateParams),
    responses(
        (status = 200, body = AggregateSeries),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn aggregate(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<AggregateParams>,
) -> ApiResult<Json<AggregateSeries>> {
    let range = RangeParams {
        from: params.from,
        to: params.to,
        resolution: params.resolution,
    };
    let resolution = range.check()?;
    let mut errors = Vec::new();
    if resolution == Resolution::Raw {
        errors.push(FieldError::new("resolution", "aggregates start at 1m"));
    }
    if params.feeder.is_some() == params.program_id.is_some() {
        errors.push(FieldError::new(
            "feeder",
            "give exactly one of `feeder` and `program_id`",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut q: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("select d.id from pm.der d where d.status = 'active'");
    if let Some(feeder) = &params.feeder {
        q.push(" and d.feeder = ").push_bind(feeder.clone());
    }
    if let Some(program) = params.program_id {
        q.push(" and exists (select 1 from pm.enrollment e where e.der_id = d.id and e.status in ('approved', 'active') and e.program_id = ")
            .push_bind(program)
            .push(")");
    }
    if let Some(org) = principal.scope() {
        q.push(" and d.organization_id = ").push_bind(org);
    }
    let ders: Vec<Uuid> = q.build_query_scalar().fetch_all(&state.pool).await?;
    let points: Vec<AggregatePoint> = sqlx::query_as(
        "with per_der as (
             select date_bin($4::interval, bucket, timestamptz '2000-01-01 00:00:00+00') as ts,
                    der_id, sum(sum_kw) / sum(samples) as avg_kw
             from pm.telemetry_1m
             where der_id = any($1) and bucket >= $2 and bucket < $3
             group by 1, 2
         )
         select ts, sum(avg_kw) as total_kw, count(*) as ders_reporting
         from per_der group by ts order by ts",
    )
    .bind(&ders)
    .bind(range.from)
    .bind(range.to)
    .bind(resolution.interval())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(AggregateSeries {
        feeder: params.feeder,
        program_id: params.program_id,
        resolution,
        from: range.from,
        to: range.to,
        ders: ders.len() as i64,
        points,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A reading beyond the DER's nameplate.
    OutOfRange,
    /// A non-zero value that did not change for too long.
    StuckValue,
    /// No frame from the gateway for longer than its silence threshold.
    GatewaySilent,
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct AnomalyOut {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub der_id: Option<Uuid>,
    pub gateway_id: Option<Uuid>,
    pub kind: AnomalyKind,
    pub detail: String,
    pub value_kw: Option<f64>,
    /// When the flagged reading was taken, or the gateway was last heard from.
    pub observed_at: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnomalyFilter {
    der_id: Option<Uuid>,
    gateway_id: Option<Uuid>,
    kind: Option<AnomalyKind>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Anomalies flagged on the telemetry stream, oldest first.
#[utoipa::path(
    get, path = "/v1/telemetry/anomalies", operation_id = "anomaly.list", tag = "telemetry",
    params(AnomalyFilter),
    responses(
        (status = 200, body = Page<AnomalyOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn anomalies(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<AnomalyFilter>,
) -> ApiResult<Json<Page<AnomalyOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .parse()?;
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "select id, organization_id, der_id, gateway_id, kind, detail, value_kw, observed_at, detected_at
         from pm.telemetry_anomaly where true",
    );
    if let Some(org) = principal.scope() {
        q.push(" and organization_id = ").push_bind(org);
    }
    if let Some(der) = filter.der_id {
        q.push(" and der_id = ").push_bind(der);
    }
    if let Some(gateway) = filter.gateway_id {
        q.push(" and gateway_id = ").push_bind(gateway);
    }
    if let Some(kind) = filter.kind {
        q.push(" and kind = ").push_bind(kind);
    }
    if let Some(after) = page.after {
        q.push(" and id > ").push_bind(after);
    }
    q.push(" order by id limit ").push_bind(page.fetch());
    let rows: Vec<AnomalyOut> = q.build_query_as().fetch_all(&state.pool).await?;
    Ok(Json(Page::from_rows(rows, page, |a| a.id)))
}
