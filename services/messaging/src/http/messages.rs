//! `/v1/messaging/messages`: the delivery log, and redelivery.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, Problem},
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{MANAGERS, MessagingState, endpoints::Queued};
use crate::store;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessageFilter {
    /// Only this notification kind.
    kind: Option<String>,
    /// 1 to 500 (default 50).
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MessageOut {
    id: Uuid,
    organization_id: Uuid,
    kind: String,
    /// The object it is about, e.g. a dispatch event's id.
    subject: String,
    /// The domain event or request it came from.
    source_event_id: Uuid,
    #[schema(value_type = Object)]
    data: serde_json::Value,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AttemptOut {
    started_at: DateTime<Utc>,
    /// HTTP status, or the SMTP reply code.
    status_code: Option<i32>,
    latency_ms: i32,
    /// The first KiB of the answer.
    response: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    id: Uuid,
    /// `webhook` or `email`.
    channel: String,
    endpoint_id: Option<Uuid>,
    contact_id: Option<Uuid>,
    /// `pending`, `delivered`, `failed` or `dropped`.
    status: String,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    attempts: Vec<AttemptOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    message: MessageOut,
    deliveries: Vec<DeliveryOut>,
}

const COLUMNS: &str = "id, organization_id, kind, subject, source_event_id, data, created_at";

#[utoipa::path(
    get, path = "/v1/messaging/messages", operation_id = "message.list", tag = "messages",
    params(MessageFilter),
    responses(
        (status = 200, body = Page<MessageOut>, description = "Oldest first"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<MessagingState>,
    principal: Principal,
    Query(filter): Query<MessageFilter>,
) -> ApiResult<Json<Page<MessageOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .parse()?;
    let rows: Vec<MessageOut> = sqlx::query_as(&format!(
        "select {COLUMNS} from messaging.message
          where organization_id = $1 and ($2::text is null or kind = $2)
            and ($3::uuid is null or id > $3)
          order by id limit $4"
    ))
    .bind(principal.organization_id)
    .bind(&filter.kind)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page::from_rows(rows, page, |m| m.id)))
}

#[derive(Debug, sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    endpoint_id: Option<Uuid>,
    contact_id: Option<Uuid>,
    status: String,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/messaging/messages/{id}", operation_id = "message.get", tag = "messages",
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, body = MessageDetail, description = "The message, each delivery and each attempt"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<MessageDetail>> {
    let message: MessageOut = sqlx::query_as(&format!(
        "select {COLUMNS} from messaging.message where id = $1 and organization_id = $2"
    ))
    .bind(id)
    .bind(principal.organization_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("message"))?;
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "select id, endpoint_id, contact_id, status, next_attempt_at, delivered_at, last_error
           from messaging.delivery where message_id = $1 order by id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        let attempts: Vec<AttemptOut> = sqlx::query_as(
            "select started_at, status_code, latency_ms, response, error
               from messaging.attempt where delivery_id = $1 order by id",
        )
        .bind(row.id)
        .fetch_all(&state.pool)
        .await?;
        deliveries.push(DeliveryOut {
            id: row.id,
            channel: if row.endpoint_id.is_some() {
                "webhook"
            } else {
                "email"
            }
            .into(),
            endpoint_id: row.endpoint_id,
            contact_id: row.contact_id,
            next_attempt_at: (row.status == "pending").then_some(row.next_attempt_at),
            status: row.status,
            delivered_at: row.delivered_at,
            last_error: row.last_error,
            attempts,
        });
    }
    Ok(Json(MessageDetail {
        message,
        deliveries,
    }))
}

#[utoipa::path(
    post, path = "/v1/messaging/messages/{id}/redeliver", operation_id = "message.redeliver",
    tag = "messages",
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 202, body = Queued, description = "Every delivery to a still enabled endpoint or existing contact goes out again, with a fresh retry schedule"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn redeliver(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    principal.require(&MANAGERS)?;
    let mut tx = state.pool.begin().await?;
    let found: Option<Uuid> = sqlx::query_scalar(
        "select id from messaging.message where id = $1 and organization_id = $2",
    )
    .bind(id)
    .bind(principal.organization_id)
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        return Err(ApiError::NotFound("message"));
    }
    // Not one in flight now (its lease is running): that one is going out already.
    sqlx::query(
        "update messaging.delivery d set status = 'pending', attempts = 0, next_attempt_at = $2,
                last_error = null
          where d.message_id = $1
            and not (d.status = 'pending' and d.leased_until is not null and d.leased_until >= $2)
            and (exists (select 1 from messaging.endpoint e where e.id = d.endpoint_id and e.enabled)
                 or exists (select 1 from messaging.contact c where c.id = d.contact_id))",
    )
    .bind(id)
    .bind(state.clock.now())
    .execute(&mut *tx)
    .await?;
    store::wake(&mut tx).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { message_id: id })))
}
