//! What completed events delivered and earned: an event's measured performance
//! (fleet and per DER), settlements per organization with links to their reports,
//! and recomputation. The worker computes; the api reads, and queues a new version
//! on request. Aggregators see their own DERs and settlements only.

use std::time::Duration;

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Principal, Role},
    dispatch::{fetch as fetch_event, optional_reason},
    error::{ApiError, ApiResult, Problem},
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
    state::AppState,
};

/// How long a report link stays valid.
const LINK_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementStatus {
    Measured,
    /// Too few comparison days or no readings before the command: not paid.
    InsufficientData,
}

/// Totals over the DERs the caller may see.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct PerformanceSummary {
    pub der_count: i64,
    pub measured_count: i64,
    #[schema(value_type = String, example = "250.000")]
    pub committed_kw: Decimal,
    #[schema(value_type = String, example = "1000.000")]
    pub baseline_kwh: Decimal,
    #[schema(value_type = String, example = "600.000")]
    pub actual_kwh: Decimal,
    #[schema(value_type = String, example = "400.000")]
    pub delivered_kwh: Decimal,
    #[schema(value_type = String, example = "1234.50")]
    pub total_amount: Decimal,
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct DerPerformanceOut {
    pub der_id: Uuid,
    pub organization_id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: MeasurementStatusText,
    pub reason: Option<String>,
    #[schema(value_type = String)]
    pub committed_kw: Decimal,
    #[schema(value_type = Option<String>)]
    pub baseline_kwh: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub actual_kwh: Option<Decimal>,
    /// Baseline − actual (import positive), over the intervals with readings.
    #[schema(value_type = Option<String>)]
    pub delivered_kwh: Option<Decimal>,
    /// Delivered / (committed kW × event hours), clipped to [0, 1].
    #[schema(value_type = Option<String>)]
    pub performance_factor: Option<Decimal>,
    /// Event intervals without a reading (they deliver nothing).
    pub missing_intervals: Option<i32>,
    /// Comparison days the baseline used, most recent first.
    pub comparison_days: Option<Vec<chrono::NaiveDate>>,
    /// The day-of adjustment: `{"kind": "multiplicative", "raw", "factor", "capped"}`, …
    #[schema(value_type = Option<Object>)]
    pub adjustment: Option<serde_json::Value>,
    /// Per event interval: `start`, `baseline_kw`, `actual_kw`, `delivered_kw`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub intervals: Option<serde_json::Value>,
    #[schema(value_type = String)]
    pub capacity_payment: Decimal,
    #[schema(value_type = String)]
    pub energy_payment: Decimal,
    #[schema(value_type = String)]
    pub penalty: Decimal,
    #[schema(value_type = String)]
    pub total: Decimal,
}

/// `status` as stored, checked on the way out.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(as = MeasurementStatus)]
pub struct MeasurementStatusText(MeasurementStatus);

impl TryFrom<String> for MeasurementStatusText {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "measured" => Ok(Self(MeasurementStatus::Measured)),
            "insufficient_data" => Ok(Self(MeasurementStatus::InsufficientData)),
            other => Err(format!("unexpected measurement status `{other}`")),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PerformanceOut {
    pub event_id: Uuid,
    pub version: i32,
    pub run_id: Uuid,
    pub computed_at: DateTime<Utc>,
    /// `event_completed`, or the reason given for a recomputation.
    pub reason: String,
    pub method: String,
    pub interval_minutes: i32,
    pub summary: PerformanceSummary,
    /// The fleet's load per interval over the event day, with its baseline during the
    /// event (`start`, `actual_kw`, `baseline_kw`); the utility's view only.
    #[schema(value_type = Option<Vec<Object>>)]
    pub fleet: Option<serde_json::Value>,
    pub items: Vec<DerPerformanceOut>,
    /// Pass as `cursor` for the next page of DERs; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PerformanceFilter {
    /// A settlement version (default: the latest).
    version: Option<i32>,
    organization_id: Option<Uuid>,
    status: Option<MeasurementStatus>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(FromRow)]
struct RunRow {
    id: Uuid,
    version: i32,
    computed_at: DateTime<Utc>,
    reason: String,
    method: String,
    interval_minutes: i32,
    fleet: serde_json::Value,
}

/// An event's measured performance: fleet totals, the fleet's day, and each DER's
/// baseline, delivery and payment (paginated by DER id).
#[utoipa::path(
    get, path = "/v1/dispatch-events/{id}/performance", operation_id = "dispatch_event.performance", tag = "settlements",
    params(("id" = Uuid, Path, description = "Dispatch event id"), PerformanceFilter),
    responses(
        (status = 200, body = PerformanceOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event, or not settled yet (or not that version)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn performance(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(filter): Query<PerformanceFilter>,
) -> ApiResult<Json<PerformanceOut>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .parse()?;
    let mut conn = state.pool.acquire().await?;
    fetch_event(&mut conn, &principal, id, false).await?;
    let run: RunRow = sqlx::query_as(
        "select id, version, computed_at, reason, method, interval_minutes, fleet
         from pm.settlement_run where event_id = $1 and ($2::int is null or version = $2)
         order by version desc limit 1",
    )
    .bind(id)
    .bind(filter.version)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound("settlement"))?;
    let scope = principal.scope();

    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "select count(*) as der_count, count(*) filter (where status = 'measured') as measured_count,
                coalesce(sum(committed_kw), 0) as committed_kw, coalesce(sum(baseline_kwh), 0) as baseline_kwh,
                coalesce(sum(actual_kwh), 0) as actual_kwh, coalesce(sum(delivered_kwh), 0) as delivered_kwh,
                coalesce(sum(total), 0) as total_amount
         from pm.der_performance where run_id = ",
    );
    q.push_bind(run.id);
    narrow(&mut q, scope, &filter);
    let summary: PerformanceSummary = q.build_query_as().fetch_one(&mut *conn).await?;

    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "select der_id, organization_id, status, reason, committed_kw, baseline_kwh, actual_kwh,
                delivered_kwh, performance_factor, missing_intervals, comparison_days, adjustment, intervals,
                capacity_payment, energy_payment, penalty, total
         from pm.der_performance where run_id = ",
    );
    q.push_bind(run.id);
    narrow(&mut q, scope, &filter);
    if let Some(after) = page.after {
        q.push(" and der_id > ").push_bind(after);
    }
    q.push(" order by der_id limit ").push_bind(page.fetch());
    let rows: Vec<DerPerformanceOut> = q.build_query_as().fetch_all(&mut *conn).await?;
    let Page { items, next_cursor } = Page::from_rows(rows, page, |r| r.der_id);
    Ok(Json(PerformanceOut {
        event_id: id,
        version: run.version,
        run_id: run.id,
        computed_at: run.computed_at,
        reason: run.reason,
        method: run.method,
        interval_minutes: run.interval_minutes,
        summary,
        fleet: scope.is_none().then_some(run.fleet),
        items,
        next_cursor,
    }))
}

fn narrow(q: &mut QueryBuilder<'_, Postgres>, scope: Option<Uuid>, filter: &PerformanceFilter) {
    if let Some(org) = scope {
        q.push(" and organization_id = ").push_bind(org);
    }
    if let Some(org) = filter.organization_id {
        q.push(" and organization_id = ").push_bind(org);
    }
    if let Some(status) = filter.status {
        q.push(" and status = ").push_bind(match status {
            MeasurementStatus::Measured => "measured",
            MeasurementStatus::InsufficientData => "insufficient_data",
        });
    }
}

/// One organization's settlement of one event version.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct SettlementOut {
    pub id: Uuid,
    pub event_id: Uuid,
    pub version: i32,
    /// Whether a later version of this event's settlement exists.
    pub superseded: bool,
    pub program_id: Uuid,
    pub organization_id: Uuid,
    pub der_count: i32,
    pub measured_count: i32,
    #[schema(value_type = String)]
    pub committed_kw: Decimal,
    #[schema(value_type = String)]
    pub delivered_kwh: Decimal,
    #[schema(value_type = String)]
    pub capacity_payment: Decimal,
    #[schema(value_type = String)]
    pub energy_payment: Decimal,
    #[schema(value_type = String)]
    pub penalty: Decimal,
    /// capacity + energy − penalty.
    #[schema(value_type = String, example = "1234.50")]
    pub total: Decimal,
    pub currency: String,
    pub event_starts_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

const SETTLEMENT_COLUMNS: &str = "s.id, s.event_id, s.version,
    exists (select 1 from pm.settlement_run r where r.event_id = s.event_id and r.version > s.version) as superseded,
    s.program_id, s.organization_id, s.der_count, s.measured_count, s.committed_kw, s.delivered_kwh,
    s.capacity_payment, s.energy_payment, s.penalty, s.total, s.currency, s.event_starts_at, s.created_at";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SettlementFilter {
    organization_id: Option<Uuid>,
    program_id: Option<Uuid>,
    event_id: Option<Uuid>,
    /// Events starting at or after this instant.
    from: Option<DateTime<Utc>>,
    /// Events starting before this instant.
    to: Option<DateTime<Utc>>,
    /// Include versions a recomputation replaced (default false).
    include_superseded: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Settlements per organization and event version, oldest first.
#[utoipa::path(
    get, path = "/v1/settlements", operation_id = "settlement.list", tag = "settlements",
    params(SettlementFilter),
    responses(
        (status = 200, body = Page<SettlementOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<SettlementFilter>,
) -> ApiResult<Json<Page<SettlementOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .parse()?;
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        return Err(ApiError::invalid("to", "must not be before `from`"));
    }
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "select {SETTLEMENT_COLUMNS} from pm.settlement s where true"
    ));
    if let Some(org) = principal.scope() {
        q.push(" and s.organization_id = ").push_bind(org);
    }
    if let Some(org) = filter.organization_id {
        q.push(" and s.organization_id = ").push_bind(org);
    }
    if let Some(program) = filter.program_id {
        q.push(" and s.program_id = ").push_bind(program);
    }
    if let Some(event) = filter.event_id {
        q.push(" and s.event_id = ").push_bind(event);
    }
    if let Some(from) = filter.from {
        q.push(" and s.event_starts_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" and s.event_starts_at < ").push_bind(to);
    }
    if !filter.include_superseded.unwrap_or(false) {
        q.push(" and not exists (select 1 from pm.settlement_run r where r.event_id = s.event_id and r.version > s.version)");
    }
    if let Some(after) = page.after {
        q.push(" and s.id > ").push_bind(after);
    }
    q.push(" order by s.id limit ").push_bind(page.fetch());
    let rows: Vec<SettlementOut> = q.build_query_as().fetch_all(&state.pool).await?;
    Ok(Json(Page::from_rows(rows, page, |s| s.id)))
}

/// Short-lived download links (presigned GETs on the reports bucket).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportLinks {
    /// This organization's lines for the event, with a total row.
    pub statement_csv: String,
    /// Every DER of the event (the utility's view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance_csv: Option<String>,
    /// The fleet's load, baseline and target over the event day (the utility's view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart_svg: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementDetail {
    #[serde(flatten)]
    pub settlement: SettlementOut,
    pub reports: ReportLinks,
}

/// One settlement with links to its reports.
#[utoipa::path(
    get, path = "/v1/settlements/{id}", operation_id = "settlement.get", tag = "settlements",
    params(("id" = Uuid, Path, description = "Settlement id")),
    responses(
        (status = 200, body = SettlementDetail),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<SettlementDetail>> {
    let settlement: SettlementOut = sqlx::query_as(&format!(
        "select {SETTLEMENT_COLUMNS} from pm.settlement s where s.id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .filter(|s: &SettlementOut| principal.can_see(s.organization_id))
    .ok_or(ApiError::NotFound("settlement"))?;
    let (report_key, chart_key): (String, String) = sqlx::query_as(
        "select report_key, chart_key from pm.settlement_run where event_id = $1 and version = $2",
    )
    .bind(settlement.event_id)
    .bind(settlement.version)
    .fetch_one(&state.pool)
    .await?;
    let prefix = report_key.trim_end_matches("/performance.csv");
    let statement_key = format!("{prefix}/organizations/{}.csv", settlement.organization_id);
    let link = |key: String| {
        let reports = state.reports.clone();
        async move {
            pmcore_storage::presigned_get(&reports.client, &reports.bucket, &key, LINK_TTL)
                .await
                .map_err(ApiError::Internal)
        }
    };
    let utility = principal.scope().is_none();
    let reports = ReportLinks {
        statement_csv: link(statement_key).await?,
        performance_csv: if utility {
            Some(link(report_key).await?)
        } else {
            None
        },
        chart_svg: if utility {
            Some(link(chart_key).await?)
        } else {
            None
        },
        expires_at: Utc::now() + LINK_TTL,
    };
    Ok(Json(SettlementDetail {
        settlement,
        reports,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecomputeIn {
    /// Why (e.g. "late meter data"); kept with the version. At most 1000 characters.
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecomputeOut {
    pub event_id: Uuid,
    /// The version that will be computed; earlier versions are kept.
    pub version: i32,
    pub due_at: DateTime<Utc>,
}

/// Queues a new settlement version of a completed event (e.g. after late meter
/// data); the worker computes it shortly and keeps every earlier version.
#[utoipa::path(
    post, path = "/v1/dispatch-events/{id}/settlement:recompute", operation_id = "dispatch_event.recompute_settlement", tag = "settlements",
    params(("id" = Uuid, Path, description = "Dispatch event id")),
    request_body = RecomputeIn,
    responses(
        (status = 202, body = RecomputeOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The event has not completed", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn recompute(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<RecomputeIn>,
) -> ApiResult<(StatusCode, Json<RecomputeOut>)> {
    principal.require(&[Role::Admin, Role::ProgramManager])?;
    let reason = optional_reason(Some(body.reason))?
        .ok_or_else(|| ApiError::invalid("/reason", "must not be empty"))?;
    let mut tx = state.pool.begin().await?;
    // Locking the event serialises concurrent requests for the next version.
    let event = fetch_event(&mut tx, &principal, id, true).await?;
    if event.status != crate::dispatch::DispatchStatus::Completed {
        return Err(ApiError::Conflict(format!(
            "only a completed event is settled; this one is {:?}",
            event.status
        )));
    }
    let (version, due_at): (i32, DateTime<Utc>) = sqlx::query_as(
        "insert into pm.settlement_request (event_id, version, due_at, reason, requested_by)
         select $1, coalesce(max(version), 0) + 1, now(), $2, $3 from pm.settlement_request where event_id = $1
         returning version, due_at",
    )
    .bind(id)
    .bind(&reason)
    .bind(principal.audit_name())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RecomputeOut {
            event_id: id,
            version,
            due_at,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatementParams {
    /// Events starting at or after this instant.
    from: DateTime<Utc>,
    /// Events starting before this instant (at most 366 days after `from`).
    to: DateTime<Utc>,
}

/// An organization's statement for a period, as CSV: the latest settlement version
/// of each event that started in the period, and a total row.
#[utoipa::path(
    get, path = "/v1/organizations/{id}/statement", operation_id = "organization.statement", tag = "settlements",
    params(("id" = Uuid, Path, description = "Organization id"), StatementParams),
    responses(
        (status = 200, description = "One row per event, then `TOTAL`", content_type = "text/csv", body = String),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn statement(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(params): Query<StatementParams>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    if params.to <= params.from || params.to - params.from > chrono::Duration::days(366) {
        return Err(ApiError::invalid(
            "to",
            "must be after `from`, by at most 366 days",
        ));
    }
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pm.organization where id = $1)")
            .bind(id)
            .fetch_one(&state.pool)
            .await?;
    if !exists || !principal.can_see(id) {
        return Err(ApiError::NotFound("organization"));
    }
    let rows: Vec<SettlementOut> = sqlx::query_as(&format!(
        "select {SETTLEMENT_COLUMNS} from pm.settlement s
          where s.organization_id = $1 and s.event_starts_at >= $2 and s.event_starts_at < $3
            and not exists (select 1 from pm.settlement_run r where r.event_id = s.event_id and r.version > s.version)
          order by s.event_starts_at, s.event_id"
    ))
    .bind(id)
    .bind(params.from)
    .bind(params.to)
    .fetch_all(&state.pool)
    .await?;
    let mut out = String::from(
        "event_id,version,event_starts_at,der_count,measured_count,committed_kw,delivered_kwh,capacity_payment,energy_payment,penalty,total,currency\n",
    );
    let (mut delivered, mut capacity, mut energy, mut penalty, mut total) = (
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
    );
    for s in &rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            s.event_id,
            s.version,
            s.event_starts_at.to_rfc3339(),
            s.der_count,
            s.measured_count,
            s.committed_kw,
            s.delivered_kwh,
            s.capacity_payment,
            s.energy_payment,
            s.penalty,
            s.total,
            s.currency
        ));
        delivered += s.delivered_kwh;
        capacity += s.capacity_payment;
        energy += s.energy_payment;
        penalty += s.penalty;
        total += s.total;
    }
    out.push_str(&format!(
        "TOTAL,,,{},,,{delivered},{capacity},{energy},{penalty},{total},USD\n",
        rows.len()
    ));
    Ok(([(axum::http::header::CONTENT_TYPE, "text/csv")], out).into_response())
}
