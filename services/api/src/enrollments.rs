//! `/v1/enrollments`: participants ask to enroll DERs; the worker checks eligibility
//! and decides; program managers may override; participants may withdraw.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use pmcore_events::domain::{EnrollmentRequested, EnrollmentStatusChanged};
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

const MANAGERS: [Role; 2] = [Role::Admin, Role::ProgramManager];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentStatus {
    Requested,
    Approved,
    Rejected,
    Active,
    Withdrawn,
}

impl EnrollmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Active => "active",
            Self::Withdrawn => "withdrawn",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "requested" => Self::Requested,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "active" => Self::Active,
            "withdrawn" => Self::Withdrawn,
            other => anyhow::bail!("unexpected enrollment status `{other}`"),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentIn {
    pub program_id: Uuid,
    pub der_id: Uuid,
    /// The reduction the participant commits to, at most the DER's nameplate.
    pub committed_kw: f64,
}

/// A decision's reason; required to reject.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionIn {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollmentOut {
    pub id: Uuid,
    pub program_id: Uuid,
    pub der_id: Uuid,
    pub organization_id: Uuid,
    pub committed_kw: f64,
    pub status: EnrollmentStatus,
    /// Why it was rejected or overridden.
    pub reason: Option<String>,
    /// The eligibility checks the worker ran, when it has.
    #[schema(value_type = Option<Object>)]
    pub eligibility: Option<serde_json::Value>,
    pub decided_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, program_id, der_id, organization_id, committed_kw::float8 as committed_kw,
    status, reason, eligibility, decided_by, created_at, updated_at";

#[derive(FromRow)]
struct Row {
    id: Uuid,
    program_id: Uuid,
    der_id: Uuid,
    organization_id: Uuid,
    committed_kw: f64,
    status: String,
    reason: Option<String>,
    eligibility: Option<serde_json::Value>,
    decided_by: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for EnrollmentOut {
    type Error = anyhow::Error;

    fn try_from(r: Row) -> anyhow::Result<Self> {
        Ok(Self {
            id: r.id,
            program_id: r.program_id,
            der_id: r.der_id,
            organization_id: r.organization_id,
            committed_kw: r.committed_kw,
            status: EnrollmentStatus::parse(&r.status)?,
            reason: r.reason,
            eligibility: r.eligibility,
            decided_by: r.decided_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Ask to enroll a DER in an open or active program. The worker checks eligibility.
#[utoipa::path(
    post, path = "/v1/enrollments", operation_id = "enrollment.request", tag = "enrollments",
    request_body = EnrollmentIn,
    responses(
        (status = 201, body = EnrollmentOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program or DER (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The program does not take enrollments, or the DER is already enrolled", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<EnrollmentIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<EnrollmentOut>)> {
    principal.require(&FIELD_ROLES)?;
    let mut tx = state.pool.begin().await?;
    let program: Option<(String,)> = sqlx::query_as("select status from pm.program where id = $1")
        .bind(input.program_id)
        .fetch_optional(&mut *tx)
        .await?;
    let program_status = match program {
        Some((s,)) if s != "draft" || principal.scope().is_none() => s,
        _ => return Err(ApiError::NotFound("program")),
    };
    if program_status != "open" && program_status != "active" {
        return Err(ApiError::Conflict(format!(
            "the program is {program_status} and takes no enrollments"
        )));
    }
    let der: Option<(Uuid, f64, String)> = sqlx::query_as(
        "select organization_id, nameplate_kw::float8, status from pm.der where id = $1",
    )
    .bind(input.der_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (organization_id, nameplate_kw, der_status) = der
        .filter(|(org, _, _)| principal.can_see(*org))
        .ok_or(ApiError::NotFound("DER"))?;
    if der_status != "active" {
        return Err(ApiError::Conflict("the DER is decommissioned".into()));
    }
    if !input.committed_kw.is_finite()
        || input.committed_kw <= 0.0
        || input.committed_kw > nameplate_kw
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/committed_kw",
            format!("must be more than 0 and at most the DER's nameplate ({nameplate_kw} kW)"),
        )]));
    }
    let row: Row = sqlx::query_as(&format!(
        "insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(input.program_id)
    .bind(input.der_id)
    .bind(organization_id)
    .bind(input.committed_kw)
    .fetch_one(&mut *tx)
    .await?;
    let enrollment = EnrollmentOut::try_from(row)?;
    let event = EnrollmentRequested {
        enrollment_id: enrollment.id.to_string(),
        program_id: enrollment.program_id.to_string(),
        der_id: enrollment.der_id.to_string(),
        organization_id: enrollment.organization_id.to_string(),
        committed_kw: enrollment.committed_kw,
        requested_at: enrollment.created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(created(
        format!("/v1/enrollments/{}", enrollment.id),
        enrollment,
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentFilter {
    program_id: Option<Uuid>,
    der_id: Option<Uuid>,
    status: Option<EnrollmentStatus>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List enrollments per program or per DER.
#[utoipa::path(
    get, path = "/v1/enrollments", operation_id = "enrollment.list", tag = "enrollments",
    params(EnrollmentFilter),
    responses(
        (status = 200, body = Page<EnrollmentOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<EnrollmentFilter>,
) -> ApiResult<Json<Page<EnrollmentOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .parse()?;
    let mut q: QueryBuilder<'_, Postgres> =
        QueryBuilder::new(format!("select {COLUMNS} from pm.enrollment where true"));
    if let Some(org) = principal.scope() {
        q.push(" and organization_id = ").push_bind(org);
    }
    if let Some(p) = filter.program_id {
        q.push(" and program_id = ").push_bind(p);
    }
    if let Some(d) = filter.der_id {
        q.push(" and der_id = ").push_bind(d);
    }
    if let Some(s) = filter.status {
        q.push(" and status = ").push_bind(s.as_str());
    }
    if let Some(after) = page.after {
        q.push(" and id > ").push_bind(after);
    }
    q.push(" order by id limit ").push_bind(page.fetch());
    let rows: Vec<Row> = q.build_query_as().fetch_all(&state.pool).await?;
    let items = rows
        .into_iter()
        .map(EnrollmentOut::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Json(Page::from_rows(items, page, |e| e.id)))
}

async fn fetch(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> ApiResult<EnrollmentOut> {
    let sql = format!(
        "select {COLUMNS} from pm.enrollment where id = $1{}",
        if lock { " for update" } else { "" }
    );
    let row: Option<Row> = sqlx::query_as(&sql).bind(id).fetch_optional(conn).await?;
    row.map(EnrollmentOut::try_from)
        .transpose()?
        .filter(|e| principal.can_see(e.organization_id))
        .ok_or(ApiError::NotFound("enrollment"))
}

/// Read one enrollment, with the worker's eligibility checks.
#[utoipa::path(
    get, path = "/v1/enrollments/{id}", operation_id = "enrollment.get", tag = "enrollments",
    params(("id" = Uuid, Path, description = "Enrollment id")),
    responses(
        (status = 200, body = EnrollmentOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EnrollmentOut>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(fetch(&mut conn, &principal, id, false).await?))
}

/// Moves an enrollment to `to` if it is in one of `from`, with its event.
async fn change(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    from: &[EnrollmentStatus],
    to: EnrollmentStatus,
    reason: Option<String>,
) -> ApiResult<EnrollmentOut> {
    let mut tx = state.pool.begin().await?;
    let mut enrollment = fetch(&mut tx, principal, id, true).await?;
    if !from.contains(&enrollment.status) {
        return Err(ApiError::Conflict(format!(
            "cannot make a {} enrollment {}",
            enrollment.status.as_str(),
            to.as_str()
        )));
    }
    // An approval in a program that already runs takes effect at once.
    let to = if to == EnrollmentStatus::Approved {
        let running: bool =
            sqlx::query_scalar("select status = 'active' from pm.program where id = $1")
                .bind(enrollment.program_id)
                .fetch_one(&mut *tx)
                .await?;
        if running {
            EnrollmentStatus::Active
        } else {
            to
        }
    } else {
        to
    };
    let previous = enrollment.status;
    enrollment.status = to;
    enrollment.reason = reason.clone().or(enrollment.reason);
    enrollment.decided_by = Some(principal.audit_name());
    enrollment.updated_at = Utc::now();
    sqlx::query(
        "update pm.enrollment set status = $2, reason = $3, decided_by = $4, updated_at = $5 where id = $1",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(&enrollment.reason)
    .bind(&enrollment.decided_by)
    .bind(enrollment.updated_at)
    .execute(&mut *tx)
    .await?;
    let event = EnrollmentStatusChanged {
        enrollment_id: id.to_string(),
        program_id: enrollment.program_id.to_string(),
        der_id: enrollment.der_id.to_string(),
        organization_id: enrollment.organization_id.to_string(),
        from_status: previous.as_str().to_owned(),
        to_status: to.as_str().to_owned(),
        reason,
        decided_by: principal.audit_name(),
        changed_at: enrollment.updated_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(enrollment)
}

/// The optional decision body: empty, or JSON `{"reason": "…"}`.
fn reason_of(body: &[u8]) -> ApiResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let decision: DecisionIn = serde_json::from_slice(body)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("", e.to_string())]))?;
    crate::dispatch::optional_reason(decision.reason)
}

/// Approve a request, or override a rejection (program managers).
#[utoipa::path(
    post, path = "/v1/enrollments/{id}/approve", operation_id = "enrollment.approve", tag = "enrollments",
    params(("id" = Uuid, Path, description = "Enrollment id")),
    request_body(content = Option<DecisionIn>, description = "Optional; `{\"reason\": \"…\"}`"),
    responses(
        (status = 200, body = EnrollmentOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The reason is too long", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<EnrollmentOut>> {
    principal.require(&MANAGERS)?;
    let reason = reason_of(&body)?;
    use EnrollmentStatus::*;
    let e = change(
        &state,
        &principal,
        id,
        &[Requested, Rejected],
        Approved,
        reason,
    )
    .await?;
    Ok(Json(e))
}

/// Reject a request or revoke an approval, with a reason (program managers).
#[utoipa::path(
    post, path = "/v1/enrollments/{id}/reject", operation_id = "enrollment.reject", tag = "enrollments",
    params(("id" = Uuid, Path, description = "Enrollment id")),
    request_body = DecisionIn,
    responses(
        (status = 200, body = EnrollmentOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason given", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> ApiResult<Json<EnrollmentOut>> {
    principal.require(&MANAGERS)?;
    let reason = reason_of(&body)?
        .ok_or_else(|| ApiError::invalid("/reason", "a rejection needs a reason"))?;
    use EnrollmentStatus::*;
    let e = change(
        &state,
        &principal,
        id,
        &[Requested, Approved],
        Rejected,
        Some(reason),
    )
    .await?;
    Ok(Json(e))
}

/// Withdraw a DER from a program.
#[utoipa::path(
    post, path = "/v1/enrollments/{id}/withdraw", operation_id = "enrollment.withdraw", tag = "enrollments",
    params(("id" = Uuid, Path, description = "Enrollment id")),
    responses(
        (status = 200, body = EnrollmentOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn withdraw(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EnrollmentOut>> {
    principal.require(&[
        Role::Admin,
        Role::ProgramManager,
        Role::Operator,
        Role::Aggregator,
    ])?;
    use EnrollmentStatus::*;
    let e = change(
        &state,
        &principal,
        id,
        &[Requested, Approved, Active],
        Withdrawn,
        None,
    )
    .await?;
    Ok(Json(e))
}
