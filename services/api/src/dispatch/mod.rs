//! `/v1/dispatch-events`: program managers schedule events within the program's
//! limits and may cancel them; participants may opt single DERs out. The scheduler
//! runs them; [`execution`] shows their commands and the fleet's response live.

pub mod execution;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Duration, Utc};
use pmcore_events::domain::{
    DispatchEventCancelled, DispatchEventOptedOut, DispatchEventScheduled,
};
use pmcore_kafka::outbox;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Principal, Role},
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query, created},
    gateways::FIELD_ROLES,
    pagination::{Page, PageParams},
    state::AppState,
};

/// Longest reason (cancel, opt-out, enrollment decision) a caller may give.
pub const MAX_REASON_CHARS: usize = 1000;

/// An optional free-text reason: trimmed, empty as none, at most [`MAX_REASON_CHARS`].
pub fn optional_reason(reason: Option<String>) -> ApiResult<Option<String>> {
    let reason = reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::invalid(
            "/reason",
            format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(reason)
}

const SCHEDULERS: [Role; 3] = [Role::Admin, Role::ProgramManager, Role::Operator];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Reduce load by `signal_value` kW (as a share of each commitment).
    CurtailKw,
    /// Hold net power at `signal_value` kW.
    SetpointKw,
    /// A price signal, `signal_value` in cents per kWh.
    Price,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::CurtailKw => "curtail_kw",
            Signal::SetpointKw => "setpoint_kw",
            Signal::Price => "price",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DispatchStatus {
    Scheduled,
    Active,
    Completed,
    Cancelled,
    /// Its whole window passed while no scheduler ran; nothing was sent.
    Missed,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchEventIn {
    pub program_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub target_kw: f64,
    pub signal: Signal,
    pub signal_value: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelIn {
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptOutIn {
    pub der_id: Uuid,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, FromRow)]
pub struct OptOutOut {
    pub der_id: Uuid,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DispatchEventOut {
    pub id: Uuid,
    pub program_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub target_kw: f64,
    pub signal: Signal,
    pub signal_value: f64,
    pub status: DispatchStatus,
    pub cancelled_reason: Option<String>,
    pub created_by: String,
    /// When the scheduler started it.
    pub started_at: Option<DateTime<Utc>>,
    /// How much later than `starts_at` it started (the scheduler was down at the
    /// start, or the next tick of its clock); absent until it starts.
    pub late_by_ms: Option<i64>,
    /// When its window ended and releases went out.
    pub completed_at: Option<DateTime<Utc>>,
    /// What the participating DERs were asked for in total; below `target_kw` when
    /// the fleet cannot cover the target.
    pub allocated_kw: Option<f64>,
    /// DERs that got a command.
    pub participant_count: Option<i32>,
    /// Opt-outs the caller may see (participants: their own DERs').
    pub opt_outs: Vec<OptOutOut>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, program_id, starts_at, ends_at, target_kw::float8 as target_kw, signal,
    signal_value::float8 as signal_value, status, cancelled_reason, created_by, started_at,
    late_by_ms, completed_at, allocated_kw::float8 as allocated_kw, participant_count,
    created_at, updated_at";

#[derive(FromRow)]
struct Row {
    id: Uuid,
    program_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    target_kw: f64,
    signal: String,
    signal_value: f64,
    status: String,
    cancelled_reason: Option<String>,
    created_by: String,
    started_at: Option<DateTime<Utc>>,
    late_by_ms: Option<i64>,
    completed_at: Option<DateTime<Utc>>,
    allocated_kw: Option<f64>,
    participant_count: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for DispatchEventOut {
    type Error = anyhow::Error;

    fn try_from(r: Row) -> anyhow::Result<Self> {
        Ok(Self {
            id: r.id,
            program_id: r.program_id,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            target_kw: r.target_kw,
            signal: match r.signal.as_str() {
                "curtail_kw" => Signal::CurtailKw,
                "setpoint_kw" => Signal::SetpointKw,
                "price" => Signal::Price,
                other => anyhow::bail!("unexpected signal `{other}`"),
            },
            signal_value: r.signal_value,
            status: match r.status.as_str() {
                "scheduled" => DispatchStatus::Scheduled,
                "active" => DispatchStatus::Active,
                "completed" => DispatchStatus::Completed,
                "cancelled" => DispatchStatus::Cancelled,
                "missed" => DispatchStatus::Missed,
                other => anyhow::bail!("unexpected dispatch status `{other}`"),
            },
            cancelled_reason: r.cancelled_reason,
            created_by: r.created_by,
            started_at: r.started_at,
            late_by_ms: r.late_by_ms,
            completed_at: r.completed_at,
            allocated_kw: r.allocated_kw,
            participant_count: r.participant_count,
            opt_outs: Vec::new(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct Limits {
    status: String,
    max_events_per_season: i32,
    max_event_duration_minutes: i32,
    min_notice_minutes: i32,
}

/// Schedule an event within the program's limits (notice, duration, events per season)
/// for its active enrollments.
#[utoipa::path(
    post, path = "/v1/dispatch-events", operation_id = "dispatch_event.schedule", tag = "dispatch-events",
    request_body = DispatchEventIn,
    responses(
        (status = 201, body = DispatchEventOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The program is not active, has no active enrollments or used its events", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Outside the program's limits", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn schedule(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<DispatchEventIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<DispatchEventOut>)> {
    principal.require(&SCHEDULERS)?;
    let mut tx = state.pool.begin().await?;
    // Serialises scheduling per program so the season limit cannot be raced past.
    let limits: Limits = sqlx::query_as(
        "select status, max_events_per_season, max_event_duration_minutes, min_notice_minutes
           from pm.program where id = $1 for update",
    )
    .bind(input.program_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("program"))?;
    if limits.status != "active" {
        return Err(ApiError::Conflict(format!(
            "the program is {}; events need an active program",
            limits.status
        )));
    }
    let mut errors = Vec::new();
    let now = Utc::now();
    let notice = Duration::minutes(i64::from(limits.min_notice_minutes));
    if input.starts_at < now + notice {
        errors.push(FieldError::new(
            "/starts_at",
            format!(
                "the program needs {} minutes' notice",
                limits.min_notice_minutes
            ),
        ));
    }
    if input.ends_at <= input.starts_at {
        errors.push(FieldError::new("/ends_at", "must be after starts_at"));
    } else if input.ends_at - input.starts_at
        > Duration::minutes(i64::from(limits.max_event_duration_minutes))
    {
        errors.push(FieldError::new(
            "/ends_at",
            format!(
                "events last at most {} minutes",
                limits.max_event_duration_minutes
            ),
        ));
    }
    if !input.target_kw.is_finite() || input.target_kw <= 0.0 || input.target_kw > 1e9 {
        errors.push(FieldError::new(
            "/target_kw",
            "must be more than 0 and at most 1e9",
        ));
    }
    if !input.signal_value.is_finite() || input.signal_value.abs() > 1e9 {
        errors.push(FieldError::new(
            "/signal_value",
            "must be a number within ±1e9",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let used: i64 = sqlx::query_scalar(
        "select count(*) from pm.dispatch_event where program_id = $1 and status <> 'cancelled'",
    )
    .bind(input.program_id)
    .fetch_one(&mut *tx)
    .await?;
    if used >= i64::from(limits.max_events_per_season) {
        return Err(ApiError::Conflict(format!(
            "the program allows {} events per season and has used them",
            limits.max_events_per_season
        )));
    }
    let enrolled: i64 = sqlx::query_scalar(
        "select count(*) from pm.enrollment where program_id = $1 and status = 'active'",
    )
    .bind(input.program_id)
    .fetch_one(&mut *tx)
    .await?;
    if enrolled == 0 {
        return Err(ApiError::Conflict(
            "the program has no active enrollments to dispatch".into(),
        ));
    }
    let row: Row = sqlx::query_as(&format!(
        "insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal,
             signal_value, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(input.program_id)
    .bind(input.starts_at)
    .bind(input.ends_at)
    .bind(input.target_kw)
    .bind(input.signal.as_str())
    .bind(input.signal_value)
    .bind(principal.audit_name())
    .fetch_one(&mut *tx)
    .await?;
    let event = DispatchEventOut::try_from(row)?;
    let scheduled = DispatchEventScheduled {
        event_id: event.id.to_string(),
        program_id: event.program_id.to_string(),
        starts_at: event.starts_at.timestamp_micros(),
        ends_at: event.ends_at.timestamp_micros(),
        target_kw: event.target_kw,
        signal: event.signal.as_str().to_owned(),
        signal_value: event.signal_value,
        enrolled_der_count: i32::try_from(enrolled).unwrap_or(i32::MAX),
        scheduled_at: event.created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &scheduled, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(created(format!("/v1/dispatch-events/{}", event.id), event))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DispatchFilter {
    program_id: Option<Uuid>,
    /// Events that end after this instant.
    from: Option<DateTime<Utc>>,
    /// Events that start before this instant.
    to: Option<DateTime<Utc>>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List events by program and time window.
#[utoipa::path(
    get, path = "/v1/dispatch-events", operation_id = "dispatch_event.list", tag = "dispatch-events",
    params(DispatchFilter),
    responses(
        (status = 200, body = Page<DispatchEventOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<DispatchFilter>,
) -> ApiResult<Json<Page<DispatchEventOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .parse()?;
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "select {COLUMNS} from pm.dispatch_event e where true"
    ));
    if principal.scope().is_some() {
        // Participants see the events of programs they take part in.
        q.push(" and exists (select 1 from pm.enrollment n where n.program_id = e.program_id and n.organization_id = ")
            .push_bind(principal.organization_id)
            .push(")");
    }
    if let Some(p) = filter.program_id {
        q.push(" and program_id = ").push_bind(p);
    }
    if let Some(from) = filter.from {
        q.push(" and ends_at > ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" and starts_at < ").push_bind(to);
    }
    if let Some(after) = page.after {
        q.push(" and id > ").push_bind(after);
    }
    q.push(" order by id limit ").push_bind(page.fetch());
    let rows: Vec<Row> = q.build_query_as().fetch_all(&state.pool).await?;
    let items = rows
        .into_iter()
        .map(DispatchEventOut::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Json(Page::from_rows(items, page, |e| e.id)))
}

pub(crate) async fn fetch(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> ApiResult<DispatchEventOut> {
    let sql = format!(
        "select {COLUMNS} from pm.dispatch_event where id = $1{}",
        if lock { " for update" } else { "" }
    );
    let row: Row = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ApiError::NotFound("dispatch event"))?;
    let mut event = DispatchEventOut::try_from(row)?;
    if let Some(org) = principal.scope() {
        let takes_part: bool = sqlx::query_scalar(
            "select exists (select 1 from pm.enrollment where program_id = $1 and organization_id = $2)",
        )
        .bind(event.program_id)
        .bind(org)
        .fetch_one(&mut *conn)
        .await?;
        if !takes_part {
            return Err(ApiError::NotFound("dispatch event"));
        }
    }
    event.opt_outs = sqlx::query_as(
        "select o.der_id, o.reason, o.created_at from pm.dispatch_opt_out o join pm.der d on d.id = o.der_id
          where o.event_id = $1 and ($2::uuid is null or d.organization_id = $2) order by o.created_at",
    )
    .bind(id)
    .bind(principal.scope())
    .fetch_all(&mut *conn)
    .await?;
    Ok(event)
}

/// Read one event with its opt-outs.
#[utoipa::path(
    get, path = "/v1/dispatch-events/{id}", operation_id = "dispatch_event.get", tag = "dispatch-events",
    params(("id" = Uuid, Path, description = "Dispatch event id")),
    responses(
        (status = 200, body = DispatchEventOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DispatchEventOut>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(fetch(&mut conn, &principal, id, false).await?))
}

/// Call off a scheduled event, or stop a running one: every DER that got a command
/// then gets a release.
#[utoipa::path(
    post, path = "/v1/dispatch-events/{id}/cancel", operation_id = "dispatch_event.cancel", tag = "dispatch-events",
    params(("id" = Uuid, Path, description = "Dispatch event id")),
    request_body = CancelIn,
    responses(
        (status = 200, body = DispatchEventOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The event is over (completed, cancelled or missed)", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<CancelIn>,
) -> ApiResult<Json<DispatchEventOut>> {
    principal.require(&SCHEDULERS)?;
    let reason = input.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid(
            "/reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let mut event = fetch(&mut tx, &principal, id, true).await?;
    if !matches!(
        event.status,
        DispatchStatus::Scheduled | DispatchStatus::Active
    ) {
        return Err(ApiError::Conflict(
            "only a scheduled or running event can be cancelled".into(),
        ));
    }
    event.status = DispatchStatus::Cancelled;
    event.cancelled_reason = Some(reason.clone());
    event.updated_at = Utc::now();
    sqlx::query("update pm.dispatch_event set status = 'cancelled', cancelled_reason = $2, updated_at = $3 where id = $1")
        .bind(id)
        .bind(&reason)
        .bind(event.updated_at)
        .execute(&mut *tx)
        .await?;
    let cancelled = DispatchEventCancelled {
        event_id: id.to_string(),
        program_id: event.program_id.to_string(),
        reason,
        cancelled_at: event.updated_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &cancelled, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(Json(event))
}

/// Opt one of your DERs out of an event that has not ended.
#[utoipa::path(
    post, path = "/v1/dispatch-events/{id}/opt-outs", operation_id = "dispatch_event.opt_out", tag = "dispatch-events",
    params(("id" = Uuid, Path, description = "Dispatch event id")),
    request_body = OptOutIn,
    responses(
        (status = 201, body = OptOutOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The event is over or cancelled, or the DER already opted out", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The DER is not actively enrolled in the event's program", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn opt_out(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<OptOutIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<OptOutOut>)> {
    principal.require(&FIELD_ROLES)?;
    let mut tx = state.pool.begin().await?;
    let event = fetch(&mut tx, &principal, id, true).await?;
    if matches!(
        event.status,
        DispatchStatus::Cancelled | DispatchStatus::Completed | DispatchStatus::Missed
    ) || event.ends_at <= Utc::now()
    {
        return Err(ApiError::Conflict("the event is over or cancelled".into()));
    }
    let owner: Option<Uuid> =
        sqlx::query_scalar("select organization_id from pm.der where id = $1")
            .bind(input.der_id)
            .fetch_optional(&mut *tx)
            .await?;
    let owner = owner
        .filter(|o| principal.can_see(*o))
        .ok_or(ApiError::NotFound("DER"))?;
    let enrolled: bool = sqlx::query_scalar(
        "select exists (select 1 from pm.enrollment where program_id = $1 and der_id = $2 and status = 'active')",
    )
    .bind(event.program_id)
    .bind(input.der_id)
    .fetch_one(&mut *tx)
    .await?;
    if !enrolled {
        return Err(ApiError::invalid(
            "/der_id",
            "the DER is not actively enrolled in this event's program",
        ));
    }
    let reason = optional_reason(input.reason)?;
    let inserted: Option<OptOutOut> = sqlx::query_as(
        "insert into pm.dispatch_opt_out (event_id, der_id, reason) values ($1, $2, $3)
         on conflict do nothing returning der_id, reason, created_at",
    )
    .bind(id)
    .bind(input.der_id)
    .bind(&reason)
    .fetch_optional(&mut *tx)
    .await?;
    let opt_out = inserted
        .ok_or_else(|| ApiError::Conflict("the DER already opted out of this event".into()))?;
    let opted = DispatchEventOptedOut {
        event_id: id.to_string(),
        program_id: event.program_id.to_string(),
        der_id: input.der_id.to_string(),
        organization_id: owner.to_string(),
        reason,
        opted_out_at: opt_out.created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &opted, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(created(format!("/v1/dispatch-events/{id}"), opt_out))
}
