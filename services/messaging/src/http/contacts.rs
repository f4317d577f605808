//! `/v1/messaging/contacts`: who in an organization gets emails.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query, created},
    pagination::{Page, PageParams},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{MANAGERS, MessagingState, check_kinds, check_len, validated};
use crate::store::{self, Target};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    #[schema(example = "operations@example.com")]
    email: String,
    #[serde(default)]
    name: String,
    /// Notification kinds to email; empty or absent for every kind.
    #[serde(default)]
    #[schema(example = json!(["settlement.calculated"]))]
    kinds: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ContactOut {
    id: Uuid,
    organization_id: Uuid,
    email: String,
    name: String,
    kinds: Vec<String>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, organization_id, email, name, kinds, created_at";

#[utoipa::path(
    post, path = "/v1/messaging/contacts", operation_id = "contact.create", tag = "contacts",
    request_body = ContactIn,
    responses(
        (status = 201, body = ContactOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<MessagingState>,
    principal: Principal,
    Json(input): Json<ContactIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<ContactOut>)> {
    principal.require(&MANAGERS)?;
    let mut errors = Vec::new();
    let email = input.email.trim();
    if email.len() > 254 || email.parse::<lettre::Address>().is_err() {
        errors.push(FieldError::new("/email", "is not an email address"));
    }
    check_len("/name", &input.name, 200, &mut errors);
    check_kinds("/kinds", &input.kinds, &mut errors);
    validated(errors)?;
    let contact: Option<ContactOut> = sqlx::query_as(&format!(
        "insert into messaging.contact (id, organization_id, email, name, kinds, created_at)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (organization_id, email) do nothing
         returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(principal.organization_id)
    .bind(email)
    .bind(&input.name)
    .bind(&input.kinds)
    .bind(state.clock.now())
    .fetch_optional(&state.pool)
    .await?;
    let contact = contact.ok_or_else(|| {
        ApiError::Conflict(format!("{email} is already a contact of this organization"))
    })?;
    Ok(created(
        format!("/v1/messaging/contacts/{}", contact.id),
        contact,
    ))
}

#[utoipa::path(
    get, path = "/v1/messaging/contacts", operation_id = "contact.list", tag = "contacts",
    params(PageParams),
    responses(
        (status = 200, body = Page<ContactOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<MessagingState>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<ContactOut>>> {
    let page = page.parse()?;
    let rows: Vec<ContactOut> = sqlx::query_as(&format!(
        "select {COLUMNS} from messaging.contact
          where organization_id = $1 and ($2::uuid is null or id > $2)
          order by id limit $3"
    ))
    .bind(principal.organization_id)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page::from_rows(rows, page, |c| c.id)))
}

#[utoipa::path(
    delete, path = "/v1/messaging/contacts/{id}", operation_id = "contact.delete", tag = "contacts",
    params(("id" = Uuid, Path, description = "Contact id")),
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
        sqlx::query("delete from messaging.contact where id = $1 and organization_id = $2")
            .bind(id)
            .bind(principal.organization_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound("contact"));
    }
    store::drop_pending(&mut tx, Target::Contact(id), "the contact was deleted").await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
