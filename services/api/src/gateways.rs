//! `/v1/gateways`: edge gateways, their secrets (shown once, stored hashed) and presence.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use pmcore_events::domain::{GatewayRegistered, GatewaySecretRotated};
use pmcore_kafka::outbox;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Principal, Role, secrets},
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query, created},
    pagination::{Page, PageParams},
    state::AppState,
};

/// Who may register and manage gateways.
pub(crate) const FIELD_ROLES: [Role; 3] = [Role::Admin, Role::Operator, Role::Aggregator];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayIn {
    pub name: String,
    pub firmware: Option<String>,
    /// Owner; the utility's staff may register for any organization, others for their own.
    pub organization_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, ToSchema, FromRow)]
pub struct GatewayOut {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub firmware: Option<String>,
    /// Whether a session is open now.
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub secret_rotated_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A gateway with its secret, returned only when the secret is made.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayWithSecret {
    #[serde(flatten)]
    pub gateway: GatewayOut,
    /// The gateway's secret. Shown once; only a hash is kept.
    pub secret: String,
}

const COLUMNS: &str =
    "id, organization_id, name, firmware, online, last_seen_at, secret_rotated_at, created_at";

/// The organization a principal acts for when it names one (or not).
pub(crate) fn owner(principal: &Principal, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
    match (principal.scope(), requested) {
        (None, Some(org)) => Ok(org),
        (None, None) => Ok(principal.organization_id),
        (Some(own), None) => Ok(own),
        (Some(own), Some(org)) if org == own => Ok(own),
        (Some(_), Some(_)) => Err(ApiError::Forbidden(
            "you may only act for your own organization".into(),
        )),
    }
}

async fn hash_secret(secret: String) -> ApiResult<String> {
    Ok(tokio::task::spawn_blocking(move || secrets::hash(&secret))
        .await
        .map_err(anyhow::Error::from)??)
}

/// Register a gateway. The response carries its secret, once.
#[utoipa::path(
    post, path = "/v1/gateways", operation_id = "gateway.register", tag = "gateways",
    request_body = GatewayIn,
    responses(
        (status = 201, body = GatewayWithSecret),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<GatewayIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<GatewayWithSecret>)> {
    principal.require(&FIELD_ROLES)?;
    let organization_id = owner(&principal, input.organization_id)?;
    let mut errors = Vec::new();
    let name_len = input.name.trim().chars().count();
    if name_len == 0 || name_len > 200 {
        errors.push(FieldError::new("/name", "must be 1 to 200 characters"));
    }
    if input
        .firmware
        .as_ref()
        .is_some_and(|f| f.chars().count() > 100)
    {
        errors.push(FieldError::new("/firmware", "at most 100 characters"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let secret = secrets::generate();
    let hash = hash_secret(secret.clone()).await?;
    let mut tx = state.pool.begin().await?;
    let gateway: GatewayOut = sqlx::query_as(&format!(
        "insert into pm.gateway (id, organization_id, name, secret_hash, firmware)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(input.name.trim())
    .bind(&hash)
    .bind(&input.firmware)
    .fetch_one(&mut *tx)
    .await?;
    let event = GatewayRegistered {
        gateway_id: gateway.id.to_string(),
        organization_id: gateway.organization_id.to_string(),
        name: gateway.name.clone(),
        firmware: gateway.firmware.clone(),
        registered_at: gateway.created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    let location = format!("/v1/gateways/{}", gateway.id);
    Ok(created(location, GatewayWithSecret { gateway, secret }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GatewayFilter {
    organization_id: Option<Uuid>,
    online: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List gateways with their presence.
#[utoipa::path(
    get, path = "/v1/gateways", operation_id = "gateway.list", tag = "gateways",
    params(GatewayFilter),
    responses(
        (status = 200, body = Page<GatewayOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<GatewayFilter>,
) -> ApiResult<Json<Page<GatewayOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .parse()?;
    // A participant's own organization overrides whatever it asks for.
    let organization = principal.scope().or(filter.organization_id);
    let rows: Vec<GatewayOut> = sqlx::query_as(&format!(
        "select {COLUMNS} from pm.gateway
          where ($1::uuid is null or organization_id = $1)
            and ($2::boolean is null or online = $2)
            and ($3::uuid is null or id > $3)
          order by id limit $4"
    ))
    .bind(organization)
    .bind(filter.online)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page::from_rows(rows, page, |g| g.id)))
}

async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<GatewayOut> {
    let gateway: Option<GatewayOut> =
        sqlx::query_as(&format!("select {COLUMNS} from pm.gateway where id = $1"))
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    gateway
        .filter(|g| principal.can_see(g.organization_id))
        .ok_or(ApiError::NotFound("gateway"))
}

/// Read one gateway and its presence.
#[utoipa::path(
    get, path = "/v1/gateways/{id}", operation_id = "gateway.get", tag = "gateways",
    params(("id" = Uuid, Path, description = "Gateway id")),
    responses(
        (status = 200, body = GatewayOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<GatewayOut>> {
    Ok(Json(visible(&state, &principal, id).await?))
}

/// Replace a gateway's secret. The response carries the new one, once.
#[utoipa::path(
    post, path = "/v1/gateways/{id}/rotate-secret", operation_id = "gateway.rotate_secret", tag = "gateways",
    params(("id" = Uuid, Path, description = "Gateway id")),
    responses(
        (status = 200, body = GatewayWithSecret),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<GatewayWithSecret>> {
    principal.require(&FIELD_ROLES)?;
    visible(&state, &principal, id).await?;
    let secret = secrets::generate();
    let hash = hash_secret(secret.clone()).await?;
    let mut tx = state.pool.begin().await?;
    let gateway: GatewayOut = sqlx::query_as(&format!(
        "update pm.gateway set secret_hash = $2, secret_rotated_at = now(), updated_at = now()
          where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(&hash)
    .fetch_one(&mut *tx)
    .await?;
    let event = GatewaySecretRotated {
        gateway_id: gateway.id.to_string(),
        organization_id: gateway.organization_id.to_string(),
        rotated_at: gateway.secret_rotated_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(Json(GatewayWithSecret { gateway, secret }))
}
