//! `GET /v1/audit/entries`: the trail, filtered and paged in log order.

use axum::extract::State;
use base64::Engine;
use chrono::{DateTime, Utc};
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AuditState;
use crate::store::{ENTRY_COLUMNS, EntryRow};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first (log order).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntryFilter {
    /// The object an entry is about (its CloudEvents `subject`), e.g. one enrollment's id.
    subject: Option<String>,
    /// Who caused it (`ce_principal`), e.g. `client:<id>`.
    principal: Option<String>,
    /// CloudEvents type, e.g. `pmcore.enrollment.status-changed.v1`.
    event_type: Option<String>,
    /// The organization it concerns (the utility's staff only; others see their own).
    organization_id: Option<Uuid>,
    /// Occurred at or after.
    since: Option<DateTime<Utc>>,
    /// Occurred before.
    until: Option<DateTime<Utc>>,
    #[param(inline)]
    order: Option<Order>,
    /// 1 to 500 (default 50).
    limit: Option<u32>,
    cursor: Option<String>,
}

/// One audit entry and its position in the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryOut {
    /// Position in the log (the Merkle tree's leaf index), from 0.
    pub index: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub principal: Option<String>,
    pub organization_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub topic: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<EntryRow> for EntryOut {
    fn from(r: EntryRow) -> Self {
        Self {
            index: r.leaf_index.unwrap_or(-1),
            event_id: r.event_id,
            event_type: r.event_type,
            source: r.source,
            subject: r.subject,
            principal: r.principal,
            organization_id: r.organization_id,
            occurred_at: r.occurred_at,
            recorded_at: r.recorded_at,
            topic: r.topic,
            payload: r.payload,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryPage {
    pub items: Vec<EntryOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn encode_cursor(index: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(index.to_be_bytes())
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

/// Audit entries, filtered, in log order (or newest first).
#[utoipa::path(
    get, path = "/v1/audit/entries", operation_id = "audit.entries", tag = "entries",
    params(EntryFilter),
    responses(
        (status = 200, body = EntryPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AuditState>,
    principal: Principal,
    Query(filter): Query<EntryFilter>,
) -> ApiResult<Json<EntryPage>> {
    let limit = filter.limit.unwrap_or(50);
    let mut errors = Vec::new();
    if !(1..=500).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 500"));
    }
    let after = match filter.cursor.as_deref() {
        None => None,
        Some(c) => match decode_cursor(c) {
            Some(i) => Some(i),
            None => {
                errors.push(FieldError::new("cursor", "is not a cursor this API issued"));
                None
            }
        },
    };
    for (name, value) in [
        ("subject", &filter.subject),
        ("principal", &filter.principal),
        ("event_type", &filter.event_type),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > 200) {
            errors.push(FieldError::new(name, "at most 200 characters"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization = match (principal.scope(), filter.organization_id) {
        // Asking for another organization's entries finds none: answering with the
        // caller's own instead would look like the other organization's trail.
        (Some(own), Some(asked)) if asked != own => {
            return Ok(Json(EntryPage {
                items: Vec::new(),
                next_cursor: None,
            }));
        }
        (Some(own), _) => Some(own),
        (None, asked) => asked,
    };
    let desc = filter.order.unwrap_or_default() == Order::Desc;
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "select {ENTRY_COLUMNS}, l.leaf_index
           from audit.leaf l join audit.entry e on e.seq = l.entry_seq
          where ($1::text is null or e.subject = $1)
            and ($2::text is null or e.principal = $2)
            and ($3::text is null or e.event_type = $3)
            and ($4::uuid is null or e.organization_id = $4)
            and ($5::timestamptz is null or e.occurred_at >= $5)
            and ($6::timestamptz is null or e.occurred_at < $6)
            and ($7::int8 is null or (case when $8 then l.leaf_index < $7 else l.leaf_index > $7 end))
          order by case when $8 then -l.leaf_index else l.leaf_index end
          limit $9"
    ))
    .bind(&filter.subject)
    .bind(&filter.principal)
    .bind(&filter.event_type)
    .bind(organization)
    .bind(filter.since)
    .bind(filter.until)
    .bind(after)
    .bind(desc)
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.pool)
    .await?;
    let more = rows.len() > limit as usize;
    let items: Vec<EntryOut> = rows
        .into_iter()
        .take(limit as usize)
        .map(EntryOut::from)
        .collect();
    let next_cursor = if more {
        items.last().map(|e| encode_cursor(e.index))
    } else {
        None
    };
    Ok(Json(EntryPage { items, next_cursor }))
}

/// One entry by its position in the log.
#[utoipa::path(
    get, path = "/v1/audit/entries/{index}", operation_id = "audit.entry", tag = "entries",
    params(("index" = i64, Path, description = "Position in the log, from 0")),
    responses(
        (status = 200, body = EntryOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AuditState>,
    principal: Principal,
    Path(index): Path<i64>,
) -> ApiResult<Json<EntryOut>> {
    Ok(Json(visible(&state, &principal, index).await?.into()))
}

/// The entry at `index`, if the principal may see it.
pub async fn visible(state: &AuditState, principal: &Principal, index: i64) -> ApiResult<EntryRow> {
    let row: Option<EntryRow> = sqlx::query_as(&format!(
        "select {ENTRY_COLUMNS}, l.leaf_index
           from audit.leaf l join audit.entry e on e.seq = l.entry_seq
          where l.leaf_index = $1"
    ))
    .bind(index)
    .fetch_optional(&state.pool)
    .await?;
    row.filter(|r| match principal.scope() {
        None => true,
        Some(own) => r.organization_id == Some(own),
    })
    .ok_or(ApiError::NotFound("entry"))
}
