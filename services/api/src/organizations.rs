//! Organizations and their API clients (admin only).

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use pmcore_events::domain::{ApiClientCreated, ApiClientDisabled, OrganizationCreated};
use pmcore_kafka::outbox;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::{OrganizationKind, Principal, Role, UTILITY_ROLES, secrets},
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query, created},
    pagination::{Page, PageParams},
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationIn {
    pub name: String,
    pub kind: OrganizationKind,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationOut {
    pub id: Uuid,
    pub name: String,
    pub kind: OrganizationKind,
    pub created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct OrganizationRow {
    id: Uuid,
    name: String,
    kind: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<OrganizationRow> for OrganizationOut {
    type Error = ApiError;

    fn try_from(r: OrganizationRow) -> Result<Self, ApiError> {
        Ok(Self {
            id: r.id,
            name: r.name,
            kind: r.kind.parse().map_err(anyhow::Error::msg)?,
            created_at: r.created_at,
        })
    }
}

fn validate_name(name: &str, errors: &mut Vec<FieldError>) {
    let len = name.trim().chars().count();
    if len == 0 || len > 200 {
        errors.push(FieldError::new("/name", "must be 1 to 200 characters"));
    }
}

/// Create an organization (a utility, aggregator or customer).
#[utoipa::path(
    post, path = "/v1/organizations", operation_id = "organization.create", tag = "organizations",
    request_body = OrganizationIn,
    responses(
        (status = 201, body = OrganizationOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<OrganizationIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<OrganizationOut>)> {
    principal.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    validate_name(&input.name, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.pool.begin().await?;
    let row: OrganizationRow = sqlx::query_as(
        "insert into pm.organization (id, name, kind) values ($1, $2, $3)
         returning id, name, kind, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(input.name.trim())
    .bind(input.kind.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let out = OrganizationOut::try_from(row)?;
    let event = OrganizationCreated {
        organization_id: out.id.to_string(),
        name: out.name.clone(),
        kind: out.kind.as_str().to_owned(),
        created_at: out.created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(created(format!("/v1/organizations/{}", out.id), out))
}

/// List organizations.
#[utoipa::path(
    get, path = "/v1/organizations", operation_id = "organization.list", tag = "organizations",
    params(PageParams),
    responses(
        (status = 200, body = Page<OrganizationOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<OrganizationOut>>> {
    principal.require(&[Role::Admin, Role::Auditor])?;
    let page = params.parse()?;
    // A participant's auditor sees its own organization only.
    let rows: Vec<OrganizationRow> = sqlx::query_as(
        "select id, name, kind, created_at from pm.organization
          where ($1::uuid is null or id > $1) and ($3::uuid is null or id = $3)
          order by id limit $2",
    )
    .bind(page.after)
    .bind(page.fetch())
    .bind(principal.scope())
    .fetch_all(&state.pool)
    .await?;
    let items = rows
        .into_iter()
        .map(OrganizationOut::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Page::from_rows(items, page, |o| o.id)))
}

/// Read one organization. Non-utility callers may read only their own.
#[utoipa::path(
    get, path = "/v1/organizations/{id}", operation_id = "organization.get", tag = "organizations",
    params(("id" = Uuid, Path, description = "Organization id")),
    responses(
        (status = 200, body = OrganizationOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OrganizationOut>> {
    if !principal.can_see(id) {
        return Err(ApiError::NotFound("organization"));
    }
    let row: OrganizationRow =
        sqlx::query_as("select id, name, kind, created_at from pm.organization where id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
    Ok(Json(row.try_into()?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIn {
    pub name: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientOut {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    /// Shown once, in the response that creates the client; only a hash is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// Create an API client for an organization. The response carries its secret, once.
#[utoipa::path(
    post, path = "/v1/organizations/{id}/clients", operation_id = "client.create", tag = "organizations",
    params(("id" = Uuid, Path, description = "Organization id")),
    request_body = ClientIn,
    responses(
        (status = 201, body = ClientOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_client(
    State(state): State<AppState>,
    principal: Principal,
    Path(organization_id): Path<Uuid>,
    Json(input): Json<ClientIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<ClientOut>)> {
    principal.require(&[Role::Admin])?;
    let kind: String = sqlx::query_scalar("select kind from pm.organization where id = $1")
        .bind(organization_id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    let mut errors = Vec::new();
    validate_name(&input.name, &mut errors);
    if input.roles.is_empty() {
        errors.push(FieldError::new("/roles", "at least one role"));
    }
    if kind != "utility" && input.roles.iter().any(|r| UTILITY_ROLES.contains(r)) {
        errors.push(FieldError::new(
            "/roles",
            "admin, program_manager, operator and auditor are for the utility's own clients",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut roles = input.roles.clone();
    roles.sort_by_key(|r| r.as_str());
    roles.dedup();
    let secret = secrets::generate();
    let hash = {
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || secrets::hash(&secret))
            .await
            .map_err(anyhow::Error::from)??
    };
    let id = Uuid::now_v7();
    let role_names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let mut tx = state.pool.begin().await?;
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "insert into pm.api_client (id, organization_id, name, secret_hash, roles)
         values ($1, $2, $3, $4, $5) returning created_at",
    )
    .bind(id)
    .bind(organization_id)
    .bind(input.name.trim())
    .bind(&hash)
    .bind(&role_names)
    .fetch_one(&mut *tx)
    .await?;
    let event = ApiClientCreated {
        client_id: id.to_string(),
        organization_id: organization_id.to_string(),
        name: input.name.trim().to_owned(),
        roles: role_names.iter().map(|r| (*r).to_owned()).collect(),
        created_at: created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    let out = ClientOut {
        id,
        organization_id,
        name: input.name.trim().to_owned(),
        roles,
        created_at,
        client_secret: Some(secret),
    };
    Ok(created(
        format!("/v1/organizations/{organization_id}/clients/{id}"),
        out,
    ))
}

/// Disable an API client: it gets no new tokens, and the tokens it holds are refused
/// (within five seconds on every api instance). Disabling twice changes nothing.
#[utoipa::path(
    post, path = "/v1/organizations/{id}/clients/{client_id}/disable", operation_id = "client.disable", tag = "organizations",
    params(("id" = Uuid, Path, description = "Organization id"), ("client_id" = Uuid, Path, description = "API client id")),
    responses(
        (status = 200, body = ClientOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disable_client(
    State(state): State<AppState>,
    principal: Principal,
    Path((organization_id, client_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<ClientOut>> {
    principal.require(&[Role::Admin])?;
    if principal.scope().is_some() {
        return Err(ApiError::Forbidden(
            "only the utility's admins manage API clients".into(),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let row: (String, Vec<String>, DateTime<Utc>, Option<DateTime<Utc>>) = sqlx::query_as(
        "select name, roles, created_at, disabled_at from pm.api_client
          where id = $1 and organization_id = $2 for update",
    )
    .bind(client_id)
    .bind(organization_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("API client"))?;
    let (name, roles, created_at, disabled_at) = row;
    if disabled_at.is_none() {
        let at: DateTime<Utc> = sqlx::query_scalar(
            "update pm.api_client set disabled_at = now(), updated_at = now() where id = $1 returning disabled_at",
        )
        .bind(client_id)
        .fetch_one(&mut *tx)
        .await?;
        let event = ApiClientDisabled {
            client_id: client_id.to_string(),
            organization_id: organization_id.to_string(),
            disabled_at: at.timestamp_micros(),
        };
        outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    }
    tx.commit().await?;
    state.disabled.insert(client_id);
    Ok(Json(ClientOut {
        id: client_id,
        organization_id,
        name,
        roles: roles
            .iter()
            .map(|r| r.parse::<Role>().map_err(|e| anyhow::anyhow!(e)))
            .collect::<anyhow::Result<_>>()?,
        created_at,
        client_secret: None,
    }))
}
