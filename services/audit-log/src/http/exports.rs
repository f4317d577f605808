//! `POST /v1/audit/exports` and `GET /v1/audit/exports/{id}`: a range of the log with
//! its proofs, written in the background as a JSON Lines file in the reports bucket,
//! for auditors without database access (`audit-tool verify`).

use std::time::Duration;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AuditState, checkpoints};

/// Most entries one export holds (a file of about 17 GB, written in about eleven
/// minutes on a 2-core machine: `just bench-audit`); export a longer log in ranges.
pub const MAX_ENTRIES: u64 = 10_000_000;
const LINK_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportIn {
    /// First position (default 0).
    pub from: Option<u64>,
    /// One past the last position (default: the size of the latest checkpoint).
    pub to: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum ExportStatus {
    /// Recorded, not started.
    Pending,
    /// Being written; `entries` grows as parts are uploaded.
    Running,
    /// Written: `url` downloads it.
    Done,
    /// Not written: `error` says why.
    Failed,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ExportOut {
    pub id: Uuid,
    pub status: ExportStatus,
    /// The signed checkpoint the proofs lead to.
    pub tree_size: u64,
    pub from: u64,
    pub to: u64,
    /// Entries written so far.
    pub entries: u64,
    /// Key in the reports bucket.
    pub key: String,
    /// A 15-minute download link, once done.
    #[schema(nullable)]
    pub url: Option<String>,
    #[schema(nullable)]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[schema(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

type Row = (
    Uuid,
    ExportStatus,
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const COLUMNS: &str = "id, status, tree_size, from_index, to_index, entries, object_key, error, \
                       created_at, finished_at";

fn out(row: Row) -> ExportOut {
    let (id, status, tree_size, from, to, entries, key, error, created_at, finished_at) = row;
    ExportOut {
        id,
        status,
        tree_size: tree_size as u64,
        from: from as u64,
        to: to as u64,
        entries: entries as u64,
        key,
        url: None,
        error,
        created_at,
        finished_at,
    }
}

fn utility_only(principal: &Principal) -> ApiResult<()> {
    if principal.scope().is_some() {
        return Err(ApiError::Forbidden(
            "exports of the log are for the utility's auditors".into(),
        ));
    }
    Ok(())
}

/// Export positions `from..to` with their inclusion proofs in the latest checkpoint
/// (signed now if the log grew). The file is written in the background: poll the
/// returned `Location` until `status` is `done`. The utility's auditors and admins
/// only.
#[utoipa::path(
    post, path = "/v1/audit/exports", operation_id = "audit.export", tag = "verification",
    request_body = ExportIn,
    responses(
        (status = 202, body = ExportOut, headers(("Location" = String, description = "The export's status"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Nothing was logged yet", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AuditState>,
    principal: Principal,
    Json(input): Json<ExportIn>,
) -> ApiResult<impl IntoResponse> {
    utility_only(&principal)?;
    checkpoints::sign_if_grown(&state.pool, &state.signer)
        .await
        .map_err(ApiError::Internal)?;
    let size: Option<i64> = sqlx::query_scalar("select max(tree_size) from audit.checkpoint")
        .fetch_one(&state.pool)
        .await?;
    let size = size.ok_or(ApiError::NotFound("checkpoint"))? as u64;
    let from = input.from.unwrap_or(0);
    let to = input.to.unwrap_or(size).min(size);
    if from >= to || to - from > MAX_ENTRIES {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/from",
            format!("need from < to <= {size} (the signed size) and at most {MAX_ENTRIES} entries"),
        )]));
    }
    let id = Uuid::now_v7();
    let row: Row = sqlx::query_as(&format!(
        "insert into audit.export (id, requested_by, from_index, to_index, tree_size, object_key)
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(id)
    .bind(&principal.subject)
    .bind(from as i64)
    .bind(to as i64)
    .bind(size as i64)
    .bind(format!("audit/exports/{size}/{from}-{to}.{id}.jsonl"))
    .fetch_one(&state.pool)
    .await?;
    state.exports.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/audit/exports/{id}"))],
        Json(out(row)),
    ))
}

/// An export's progress; once `done`, a link to download it.
#[utoipa::path(
    get, path = "/v1/audit/exports/{id}", operation_id = "audit.export.get", tag = "verification",
    params(("id" = Uuid, Path, description = "The export")),
    responses(
        (status = 200, body = ExportOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AuditState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ExportOut>> {
    utility_only(&principal)?;
    let row: Option<Row> =
        sqlx::query_as(&format!("select {COLUMNS} from audit.export where id = $1"))
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    let mut export = out(row.ok_or(ApiError::NotFound("export"))?);
    if export.status == ExportStatus::Done {
        let storage = &state.storage;
        export.url = Some(
            pmcore_storage::presigned_get(&storage.links, &storage.bucket, &export.key, LINK_TTL)
                .await
                .map_err(ApiError::Internal)?,
        );
    }
    Ok(Json(export))
}
