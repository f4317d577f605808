//! `/v1/messaging/templates`: the wording of each kind's email, built in or the
//! organization's own.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, Problem},
    extract::{Json, Path},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{MANAGERS, MessagingState};
use crate::{kinds, render};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateIn {
    /// A minijinja template; the notification's data are its variables.
    #[schema(example = "Event at {{ starts_at }}: {{ program_name }}")]
    subject: String,
    #[schema(example = "Please reduce load by {{ target_kw }} kW.")]
    body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateOut {
    kind: String,
    description: String,
    subject: String,
    body: String,
    /// Whether this is the organization's own wording rather than the built-in one.
    custom: bool,
    updated_at: Option<DateTime<Utc>>,
}

fn kind(name: &str) -> ApiResult<&'static kinds::Kind> {
    kinds::find(name).ok_or(ApiError::NotFound("notification kind"))
}

#[utoipa::path(
    get, path = "/v1/messaging/templates", operation_id = "template.list", tag = "templates",
    responses(
        (status = 200, body = Vec<TemplateOut>, description = "Every kind, with the wording the organization's emails use"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<MessagingState>,
    principal: Principal,
) -> ApiResult<Json<Vec<TemplateOut>>> {
    let custom: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "select kind, subject, body, updated_at from messaging.template where organization_id = $1",
    )
    .bind(principal.organization_id)
    .fetch_all(&state.pool)
    .await?;
    let out = kinds::KINDS
        .iter()
        .map(|k| match custom.iter().find(|c| c.0 == k.name) {
            Some((_, subject, body, at)) => TemplateOut {
                kind: k.name.into(),
                description: k.description.into(),
                subject: subject.clone(),
                body: body.clone(),
                custom: true,
                updated_at: Some(*at),
            },
            None => TemplateOut {
                kind: k.name.into(),
                description: k.description.into(),
                subject: k.subject.into(),
                body: k.body.into(),
                custom: false,
                updated_at: None,
            },
        })
        .collect();
    Ok(Json(out))
}

#[utoipa::path(
    put, path = "/v1/messaging/templates/{kind}", operation_id = "template.put", tag = "templates",
    params(("kind" = String, Path, description = "Notification kind, e.g. `dispatch-event.scheduled`", example = "dispatch-event.scheduled")),
    request_body = TemplateIn,
    responses(
        (status = 200, body = TemplateOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "The template does not render; the engine's error says where"),
    )
)]
pub async fn put(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(input): Json<TemplateIn>,
) -> ApiResult<Json<TemplateOut>> {
    principal.require(&MANAGERS)?;
    let kind = kind(&name)?;
    render::validate(&input.subject, &input.body).map_err(|e| {
        let field = if e.starts_with("body") {
            "/body"
        } else {
            "/subject"
        };
        ApiError::invalid(field, e)
    })?;
    let now = state.clock.now();
    sqlx::query(
        "insert into messaging.template (organization_id, kind, subject, body, updated_at)
         values ($1, $2, $3, $4, $5)
         on conflict (organization_id, kind)
         do update set subject = excluded.subject, body = excluded.body, updated_at = excluded.updated_at",
    )
    .bind(principal.organization_id)
    .bind(kind.name)
    .bind(&input.subject)
    .bind(&input.body)
    .bind(now)
    .execute(&state.pool)
    .await?;
    Ok(Json(TemplateOut {
        kind: kind.name.into(),
        description: kind.description.into(),
        subject: input.subject,
        body: input.body,
        custom: true,
        updated_at: Some(now),
    }))
}

#[utoipa::path(
    delete, path = "/v1/messaging/templates/{kind}", operation_id = "template.reset", tag = "templates",
    params(("kind" = String, Path, description = "Notification kind", example = "dispatch-event.scheduled")),
    responses(
        (status = 204, description = "The built-in wording applies again"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reset(
    State(state): State<MessagingState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require(&MANAGERS)?;
    let kind = kind(&name)?;
    sqlx::query("delete from messaging.template where organization_id = $1 and kind = $2")
        .bind(principal.organization_id)
        .bind(kind.name)
        .execute(&state.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
