//! `/v1/programs`: utility programs, their rules and their lifecycle.

pub mod model;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use pmcore_events::domain::{
    EnrollmentStatusChanged, ProgramCreated, ProgramStatusChanged, ProgramUpdated,
};
use pmcore_kafka::outbox;
use serde::Deserialize;
use sqlx::{FromRow, PgConnection};
use utoipa::IntoParams;
use uuid::Uuid;

use self::model::{
    BaselineMethod, DataSource, DerType, Eligibility, EventLimits, ProgramIn, ProgramKind,
    ProgramOut, ProgramPatch, ProgramStatus, SettlementRules, Transition,
};
use crate::{
    auth::{Principal, Role},
    error::{ApiError, ApiResult, Problem},
    extract::{Json, Path, Query, created},
    pagination::{Page, PageParams},
    state::AppState,
};

const MANAGERS: [Role; 2] = [Role::Admin, Role::ProgramManager];

const COLUMNS: &str = "id, organization_id, name, kind, status, description, time_zone,
    target_capacity_kw::float8 as target_capacity_kw, capacity_rate_cents_kw_month,
    energy_rate_cents_kwh, baseline_method, eligible_der_types,
    min_nameplate_kw::float8 as min_nameplate_kw, eligible_feeders, max_events_per_season,
    max_event_duration_minutes, min_notice_minutes, baseline_params, interval_minutes, holidays,
    penalty_rate_cents_kwh, capacity_events_per_month, settlement_data_source, created_at, updated_at";

#[derive(FromRow)]
struct ProgramRow {
    id: Uuid,
    organization_id: Uuid,
    name: String,
    kind: String,
    status: String,
    description: String,
    time_zone: String,
    target_capacity_kw: f64,
    capacity_rate_cents_kw_month: i64,
    energy_rate_cents_kwh: i64,
    baseline_method: String,
    eligible_der_types: Vec<String>,
    min_nameplate_kw: f64,
    eligible_feeders: Vec<String>,
    max_events_per_season: i32,
    max_event_duration_minutes: i32,
    min_notice_minutes: i32,
    baseline_params: serde_json::Value,
    interval_minutes: i32,
    holidays: serde_json::Value,
    penalty_rate_cents_kwh: i64,
    capacity_events_per_month: i32,
    settlement_data_source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ProgramRow> for ProgramOut {
    type Error = anyhow::Error;

    fn try_from(r: ProgramRow) -> anyhow::Result<Self> {
        Ok(Self {
            id: r.id,
            organization_id: r.organization_id,
            name: r.name,
            kind: r.kind.parse::<ProgramKind>()?,
            status: r.status.parse::<ProgramStatus>()?,
            description: r.description,
            time_zone: r.time_zone,
            target_capacity_kw: r.target_capacity_kw,
            capacity_rate_cents_kw_month: r.capacity_rate_cents_kw_month,
            energy_rate_cents_kwh: r.energy_rate_cents_kwh,
            baseline_method: r.baseline_method.parse::<BaselineMethod>()?,
            settlement: SettlementRules {
                baseline_params: r.baseline_params,
                interval_minutes: r.interval_minutes,
                holidays: serde_json::from_value(r.holidays)?,
                penalty_rate_cents_kwh: r.penalty_rate_cents_kwh,
                capacity_events_per_month: r.capacity_events_per_month,
                data_source: DataSource::parse(&r.settlement_data_source)?,
            },
            eligibility: Eligibility {
                der_types: r
                    .eligible_der_types
                    .iter()
                    .map(|t| t.parse::<DerType>())
                    .collect::<anyhow::Result<_>>()?,
                min_nameplate_kw: r.min_nameplate_kw,
                feeders: r.eligible_feeders,
            },
            limits: EventLimits {
                max_events_per_season: r.max_events_per_season,
                max_event_duration_minutes: r.max_event_duration_minutes,
                min_notice_minutes: r.min_notice_minutes,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

async fn fetch(conn: &mut PgConnection, id: Uuid, lock: bool) -> ApiResult<Option<ProgramOut>> {
    let sql = format!(
        "select {COLUMNS} from pm.program where id = $1{}",
        if lock { " for update" } else { "" }
    );
    let row: Option<ProgramRow> = sqlx::query_as(&sql).bind(id).fetch_optional(conn).await?;
    Ok(row.map(ProgramOut::try_from).transpose()?)
}

/// Drafts are the utility's own business; participants see offered programs only.
fn visible(principal: &Principal, program: &ProgramOut) -> bool {
    principal.scope().is_none() || program.status != ProgramStatus::Draft
}

async fn write(conn: &mut PgConnection, p: &ProgramOut, insert: bool) -> ApiResult<()> {
    let der_types: Vec<&str> = p.eligibility.der_types.iter().map(|t| t.as_str()).collect();
    let sql = if insert {
        "insert into pm.program (id, organization_id, name, kind, status, description, time_zone,
            target_capacity_kw, capacity_rate_cents_kw_month, energy_rate_cents_kwh, baseline_method,
            eligible_der_types, min_nameplate_kw, eligible_feeders, max_events_per_season,
            max_event_duration_minutes, min_notice_minutes, created_at, updated_at, baseline_params,
            interval_minutes, holidays, penalty_rate_cents_kwh, capacity_events_per_month,
            settlement_data_source)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                 $20, $21, $22, $23, $24, $25)"
    } else {
        "update pm.program set organization_id = $2, name = $3, kind = $4, status = $5,
            description = $6, time_zone = $7, target_capacity_kw = $8,
            capacity_rate_cents_kw_month = $9, energy_rate_cents_kwh = $10, baseline_method = $11,
            eligible_der_types = $12, min_nameplate_kw = $13, eligible_feeders = $14,
            max_events_per_season = $15, max_event_duration_minutes = $16, min_notice_minutes = $17,
            created_at = $18, updated_at = $19, baseline_params = $20, interval_minutes = $21,
            holidays = $22, penalty_rate_cents_kwh = $23, capacity_events_per_month = $24,
            settlement_data_source = $25
         where id = $1"
    };
    sqlx::query(sql)
        .bind(p.id)
        .bind(p.organization_id)
        .bind(&p.name)
        .bind(p.kind.as_str())
        .bind(p.status.as_str())
        .bind(&p.description)
        .bind(&p.time_zone)
        .bind(p.target_capacity_kw)
        .bind(p.capacity_rate_cents_kw_month)
        .bind(p.energy_rate_cents_kwh)
        .bind(p.baseline_method.as_str())
        .bind(&der_types)
        .bind(p.eligibility.min_nameplate_kw)
        .bind(&p.eligibility.feeders)
        .bind(p.limits.max_events_per_season)
        .bind(p.limits.max_event_duration_minutes)
        .bind(p.limits.min_notice_minutes)
        .bind(p.created_at)
        .bind(p.updated_at)
        .bind(&p.settlement.baseline_params)
        .bind(p.settlement.interval_minutes)
        .bind(serde_json::to_value(&p.settlement.holidays).map_err(anyhow::Error::from)?)
        .bind(p.settlement.penalty_rate_cents_kwh)
        .bind(p.settlement.capacity_events_per_month)
        .bind(p.settlement.data_source.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Define a program. It starts as a draft.
#[utoipa::path(
    post, path = "/v1/programs", operation_id = "program.create", tag = "programs",
    request_body = ProgramIn,
    responses(
        (status = 201, body = ProgramOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<ProgramIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<ProgramOut>)> {
    principal.require(&MANAGERS)?;
    if principal.scope().is_some() {
        return Err(ApiError::Forbidden(
            "only the utility defines programs".into(),
        ));
    }
    let program = input.into_program(principal.organization_id);
    program.validate()?;
    let mut tx = state.pool.begin().await?;
    write(&mut tx, &program, true).await?;
    let event = ProgramCreated {
        program_id: program.id.to_string(),
        organization_id: program.organization_id.to_string(),
        name: program.name.clone(),
        kind: program.kind.as_str().to_owned(),
        status: program.status.as_str().to_owned(),
        created_at: program.created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(created(format!("/v1/programs/{}", program.id), program))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProgramFilter {
    /// Only programs in this status.
    status: Option<ProgramStatus>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List programs, oldest first. Participants see programs that are not drafts.
#[utoipa::path(
    get, path = "/v1/programs", operation_id = "program.list", tag = "programs",
    params(ProgramFilter),
    responses(
        (status = 200, body = Page<ProgramOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<ProgramFilter>,
) -> ApiResult<Json<Page<ProgramOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .parse()?;
    let participants_only = principal.scope().is_some();
    let sql = format!(
        "select {COLUMNS} from pm.program
          where ($1::text is null or status = $1)
            and (not $2 or status <> 'draft')
            and ($3::uuid is null or id > $3)
          order by id limit $4"
    );
    let rows: Vec<ProgramRow> = sqlx::query_as(&sql)
        .bind(filter.status.map(ProgramStatus::as_str))
        .bind(participants_only)
        .bind(page.after)
        .bind(page.fetch())
        .fetch_all(&state.pool)
        .await?;
    let items = rows
        .into_iter()
        .map(ProgramOut::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Json(Page::from_rows(items, page, |p| p.id)))
}

/// Read one program.
#[utoipa::path(
    get, path = "/v1/programs/{id}", operation_id = "program.get", tag = "programs",
    params(("id" = Uuid, Path, description = "Program id")),
    responses(
        (status = 200, body = ProgramOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProgramOut>> {
    let mut conn = state.pool.acquire().await?;
    match fetch(&mut conn, id, false).await? {
        Some(p) if visible(&principal, &p) => Ok(Json(p)),
        _ => Err(ApiError::NotFound("program")),
    }
}

/// Edit a draft program.
#[utoipa::path(
    patch, path = "/v1/programs/{id}", operation_id = "program.update", tag = "programs",
    params(("id" = Uuid, Path, description = "Program id")),
    request_body = ProgramPatch,
    responses(
        (status = 200, body = ProgramOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The program is no longer a draft", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(patch): Json<ProgramPatch>,
) -> ApiResult<Json<ProgramOut>> {
    principal.require(&MANAGERS)?;
    let mut tx = state.pool.begin().await?;
    let mut program = match fetch(&mut tx, id, true).await? {
        Some(p) if visible(&principal, &p) => p,
        _ => return Err(ApiError::NotFound("program")),
    };
    if program.status != ProgramStatus::Draft {
        return Err(ApiError::Conflict(format!(
            "only a draft can be edited; this program is {}",
            program.status.as_str()
        )));
    }
    let changed = program.apply(patch);
    program.validate()?;
    if changed.is_empty() {
        return Ok(Json(program));
    }
    program.updated_at = Utc::now();
    write(&mut tx, &program, false).await?;
    let event = ProgramUpdated {
        program_id: program.id.to_string(),
        organization_id: program.organization_id.to_string(),
        changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
        program_json: serde_json::to_string(&program).map_err(anyhow::Error::from)?,
        updated_at: program.updated_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(Json(program))
}

async fn transition(
    state: AppState,
    principal: Principal,
    id: Uuid,
    transition: Transition,
) -> ApiResult<Json<ProgramOut>> {
    principal.require(&MANAGERS)?;
    let mut tx = state.pool.begin().await?;
    let mut program = match fetch(&mut tx, id, true).await? {
        Some(p) if visible(&principal, &p) => p,
        _ => return Err(ApiError::NotFound("program")),
    };
    let from = program.status;
    program.status = transition.apply(from)?;
    program.updated_at = Utc::now();
    write(&mut tx, &program, false).await?;
    let event = ProgramStatusChanged {
        program_id: program.id.to_string(),
        organization_id: program.organization_id.to_string(),
        from_status: from.as_str().to_owned(),
        to_status: program.status.as_str().to_owned(),
        changed_at: program.updated_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    if program.status == ProgramStatus::Active {
        activate_enrollments(&mut tx, &program, &principal).await?;
    }
    tx.commit().await?;
    Ok(Json(program))
}

/// Approved enrollments take effect when their program starts its season.
async fn activate_enrollments(
    conn: &mut PgConnection,
    program: &ProgramOut,
    principal: &Principal,
) -> ApiResult<()> {
    let activated: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "update pm.enrollment set status = 'active', updated_at = $2
          where program_id = $1 and status = 'approved'
          returning id, der_id, organization_id",
    )
    .bind(program.id)
    .bind(program.updated_at)
    .fetch_all(&mut *conn)
    .await?;
    for (enrollment_id, der_id, organization_id) in activated {
        let event = EnrollmentStatusChanged {
            enrollment_id: enrollment_id.to_string(),
            program_id: program.id.to_string(),
            der_id: der_id.to_string(),
            organization_id: organization_id.to_string(),
            from_status: "approved".to_owned(),
            to_status: "active".to_owned(),
            reason: Some("the program started".to_owned()),
            decided_by: principal.audit_name(),
            changed_at: program.updated_at.timestamp_micros(),
        };
        outbox::enqueue(&mut *conn, &event, &principal.event_meta("api")).await?;
    }
    Ok(())
}

macro_rules! transition_handler {
    ($name:ident, $path:literal, $op:literal, $variant:ident, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(
            post, path = $path, operation_id = $op, tag = "programs",
            params(("id" = Uuid, Path, description = "Program id")),
            responses(
                (status = 200, body = ProgramOut),
                (status = 400, body = Problem, content_type = "application/problem+json"),
                (status = 401, body = Problem, content_type = "application/problem+json"),
                (status = 403, body = Problem, content_type = "application/problem+json"),
                (status = 404, body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "Not allowed from the current status", body = Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn $name(
            State(state): State<AppState>,
            principal: Principal,
            Path(id): Path<Uuid>,
        ) -> ApiResult<Json<ProgramOut>> {
            transition(state, principal, id, Transition::$variant).await
        }
    };
}

transition_handler!(
    open,
    "/v1/programs/{id}/open",
    "program.open",
    Open,
    "Offer a draft program to participants (draft → open)."
);
transition_handler!(
    activate,
    "/v1/programs/{id}/activate",
    "program.activate",
    Activate,
    "Start the program's season (open → active)."
);
transition_handler!(
    close,
    "/v1/programs/{id}/close",
    "program.close",
    Close,
    "End the program (open or active → closed)."
);
