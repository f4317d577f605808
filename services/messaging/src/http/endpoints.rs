//! `/v1/messaging/endpoints`: where an organization's webhooks go.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Duration, Utc};
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query, created},
    pagination::{Page, PageParams},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{MANAGERS, MessagingState, check_kinds, check_len, validated};
use crate::{
    egress, signature,
    store::{self, NewMessage, Recipients, Target},
};

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;
/// Longest grace period a rotated secret may keep signing.
const MAX_GRACE_MINUTES: i64 = 7 * 24 * 60;
const DEFAULT_GRACE_MINUTES: i64 = 24 * 60;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    /// Where to POST; https (or http), a public address unless the operator allows
    /// private ones.
    #[schema(example = "https://hooks.example.com/pmcore")]
    url: String,
    #[serde(default)]
    description: String,
    /// Notification kinds to send; empty or absent for every kind.
    #[serde(default)]
    #[schema(example = json!(["dispatch-event.scheduled", "settlement.calculated"]))]
    kinds: Vec<String>,
    /// Most deliveries per second to this endpoint (absent: no limit).
    rate_limit_per_s: Option<u32>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    url: Option<String>,
    description: Option<String>,
    kinds: Option<Vec<String>>,
    rate_limit_per_s: Option<u32>,
    /// `true` enables again an endpoint that was disabled (after failures or a 410).
    enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct EndpointOut {
    id: Uuid,
    organization_id: Uuid,
    url: String,
    description: String,
    kinds: Vec<String>,
    enabled: bool,
    /// Why it was disabled by the platform, if it was.
    disabled_reason: Option<String>,
    rate_limit_per_s: Option<i32>,
    /// Start of the current run of failed attempts.
    failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs.
    previous_secret_valid_until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// An endpoint just made, with its signing secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointCreated {
    #[serde(flatten)]
    endpoint: EndpointOut,
    /// `whsec_…`: verify `webhook-signature` with it. Not shown again.
    secret: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// Minutes the old secret keeps signing beside the new one (0 to 10080, default 1440).
    grace_minutes: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    secret: String,
    previous_secret_valid_until: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub message_id: Uuid,
}

const COLUMNS: &str = "id, organization_id, url, description, kinds, enabled, disabled_reason, \
    rate_limit_per_s, failing_since, previous_expires_at as previous_secret_valid_until, \
    created_at, updated_at";

fn check_url(state: &MessagingState, url: &str, errors: &mut Vec<FieldError>) {
    if url.len() > MAX_URL {
        errors.push(FieldError::new(
            "/url",
            format!("longer than {MAX_URL} bytes"),
        ));
    } else if let Some(reason) = egress::refuse_url(url, state.allow_private) {
        errors.push(FieldError::new("/url", reason));
    }
}

fn check_rate(rate: Option<u32>, errors: &mut Vec<FieldError>) {
    if rate.is_some_and(|r| r == 0 || r > 10_000) {
        errors.push(FieldError::new(
            "/rate_limit_per_s",
            "must be between 1 and 10000",
        ));
    }
}

fn rate_i32(rate: Option<u32>) -> Option<i32> {
    rate.and_then(|r| i32::try_from(r).ok())
}

#[utoipa::path(
    post, path = "/v1/messaging/endpoints", operation_id = "endpoint.create", tag = "endpoints",
    request_body = EndpointIn,
    responses(
        (status = 201, body = EndpointCreated),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<MessagingState>,
    principal: Principal,
    Json(input): Json<EndpointIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<EndpointCreated>)> {
    principal.require(&MANAGERS)?;
    let mut errors = Vec::new();
    check_url(&state, &input.url, &mut errors);
    check_len(
        "/description",
        &input.description,
        MAX_DESCRIPTION,
        &mut errors,
    );
    check_kinds("/kinds", &input.kinds, &mut errors);
    check_rate(input.rate_limit_per_s, &mut errors);
    validated(errors)?;
    let secret = signature::generate();
    let now = state.clock.now();
    let endpoint: EndpointOut = sqlx::query_as(&format!(
        "insert into messaging.endpoint (id, organization_id, url, description, kinds, enabled,
                rate_limit_per_s, secret_sealed, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(principal.organization_id)
    .bind(&input.url)
    .bind(&input.description)
    .bind(&input.kinds)
    .bind(input.enabled)
    .bind(rate_i32(input.rate_limit_per_s))
    .bind(state.secrets.seal(secret.as_bytes()))
    .bind(now)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(
        format!("/v1/messaging/endpoints/{}", endpoint.id),
        EndpointCreated { endpoint, secret },
    ))
}

#[utoipa::path(
    get, path = "/v1/messaging/endpoints", operation_id = "endpoint.list", tag = "endpoints",
    params(PageParams),
    responses(
        (status = 200, body = Page<EndpointOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<MessagingState>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<EndpointOut>>> {
    let page = page.parse()?;
    let rows: Vec<EndpointOut> = sqlx::query_as(&format!(
        "select {COLUMNS} from messaging.endpoint
          where organization_id = $1 and ($2::uuid is null or id > $2)
          order by id limit $3"
    ))
    .bind(principal.organization_id)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page::from_rows(rows, page, |e| e.id)))
}

async fn fetch(state: &MessagingState, principal: &Principal, id: Uuid) -> ApiResult<EndpointOut> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from messaging.endpoint where id = $1 and organization_id = $2"
    ))
    .bind(id)
    .bind(principal.organization_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("endpoint"))
}

#[utoipa::path(
    get, path = "/v1/messaging/endpoints/{id}", operation_id = "endpoint.get", tag = "endpoints",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, body = EndpointOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EndpointOut>> {
    Ok(Json(fetch(&state, &principal, id).await?))
}

#[utoipa::path(
    patch, path = "/v1/messaging/endpoints/{id}", operation_id = "endpoint.update", tag = "endpoints",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    request_body = EndpointPatch,
    responses(
        (status = 200, body = EndpointOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<EndpointPatch>,
) -> ApiResult<Json<EndpointOut>> {
    principal.require(&MANAGERS)?;
    let mut errors = Vec::new();
    if let Some(url) = &input.url {
        check_url(&state, url, &mut errors);
    }
    if let Some(description) = &input.description {
        check_len("/description", description, MAX_DESCRIPTION, &mut errors);
    }
    if let Some(kinds) = &input.kinds {
        check_kinds("/kinds", kinds, &mut errors);
    }
    check_rate(input.rate_limit_per_s, &mut errors);
    validated(errors)?;
    let updated: Option<EndpointOut> = sqlx::query_as(&format!(
        "update messaging.endpoint set
                url = coalesce($3, url),
                description = coalesce($4, description),
                kinds = coalesce($5, kinds),
                rate_limit_per_s = coalesce($6, rate_limit_per_s),
                enabled = coalesce($7, enabled),
                disabled_reason = case when $7 then null else disabled_reason end,
                failing_since = case when $7 then null else failing_since end,
                updated_at = $8
          where id = $1 and organization_id = $2
          returning {COLUMNS}"
    ))
    .bind(id)
    .bind(principal.organization_id)
    .bind(&input.url)
    .bind(&input.description)
    .bind(&input.kinds)
    .bind(rate_i32(input.rate_limit_per_s))
    .bind(input.enabled)
    .bind(state.clock.now())
    .fetch_optional(&state.pool)
    .await?;
    updated.map(Json).ok_or(ApiError::NotFound("endpoint"))
}

#[utoipa::path(
    delete, path = "/v1/messaging/endpoints/{id}", operation_id = "endpoint.delete", tag = "endpoints",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted; what was queued for it is dropped"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    principal.require(&MANAGERS)?;
    let mut tx = state.pool.begin().await?;
    let deleted =
        sqlx::query("delete from messaging.endpoint where id = $1 and organization_id = $2")
            .bind(id)
            .bind(principal.organization_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound("endpoint"));
    }
    store::drop_pending(&mut tx, Target::Endpoint(id), "the endpoint was deleted").await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/messaging/endpoints/{id}/rotate-secret", operation_id = "endpoint.rotate_secret",
    tag = "endpoints",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    request_body = RotateIn,
    responses(
        (status = 200, body = Rotated, description = "The new secret, shown once; the old one signs beside it until the grace period ends"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_secret(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<RotateIn>,
) -> ApiResult<Json<Rotated>> {
    principal.require(&MANAGERS)?;
    let grace = input.grace_minutes.unwrap_or(DEFAULT_GRACE_MINUTES);
    if !(0..=MAX_GRACE_MINUTES).contains(&grace) {
        return Err(ApiError::invalid(
            "/grace_minutes",
            format!("must be between 0 and {MAX_GRACE_MINUTES}"),
        ));
    }
    let secret = signature::generate();
    let now = state.clock.now();
    let until = now + Duration::minutes(grace);
    let rotated = sqlx::query(
        "update messaging.endpoint set previous_sealed = secret_sealed, previous_expires_at = $3,
                secret_sealed = $4, updated_at = $5
          where id = $1 and organization_id = $2",
    )
    .bind(id)
    .bind(principal.organization_id)
    .bind(until)
    .bind(state.secrets.seal(secret.as_bytes()))
    .bind(now)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if rotated == 0 {
        return Err(ApiError::NotFound("endpoint"));
    }
    Ok(Json(Rotated {
        secret,
        previous_secret_valid_until: until,
    }))
}

#[utoipa::path(
    post, path = "/v1/messaging/endpoints/{id}/test", operation_id = "endpoint.test", tag = "endpoints",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 202, body = Queued, description = "A test message is queued for this endpoint; its attempts show in the message"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn test(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    principal.require(&MANAGERS)?;
    let endpoint = fetch(&state, &principal, id).await?;
    if !endpoint.enabled {
        return Err(ApiError::Conflict(
            "the endpoint is disabled; enable it first".into(),
        ));
    }
    let data = json!({"endpoint_id": id, "requested_by": principal.subject});
    let mut tx = state.pool.begin().await?;
    let message = NewMessage {
        organization_id: principal.organization_id,
        kind: "endpoint.test",
        source_event_id: Uuid::now_v7(),
        subject: &id.to_string(),
        data: &data,
    };
    let message_id = store::create_message(
        &mut tx,
        &message,
        Recipients::Endpoint(id),
        state.clock.now(),
    )
    .await?
    .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a fresh test message collided")))?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { message_id })))
}
