//! `POST /v1/audit/exports`: a range of the log with its proofs, as a JSON Lines file
//! in the reports bucket, for auditors without database access (`audit-tool verify`).

use std::time::Duration;

use axum::extract::State;
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AuditState, checkpoints};
use crate::export;

/// Most entries one export holds (about 100 MB).
pub const MAX_ENTRIES: u64 = 100_000;
const LINK_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportIn {
    /// First position (default 0).
    pub from: Option<u64>,
    /// One past the last position (default: the size of the latest checkpoint).
    pub to: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportOut {
    /// Key in the reports bucket.
    pub key: String,
    /// A 15-minute download link.
    pub url: String,
    /// The signed checkpoint the proofs lead to.
    pub tree_size: u64,
    pub from: u64,
    pub to: u64,
    pub entries: u64,
}

/// Export positions `from..to` with their inclusion proofs in the latest checkpoint
/// (signed now if the log grew). The utility's auditors and admins only.
#[utoipa::path(
    post, path = "/v1/audit/exports", operation_id = "audit.export", tag = "verification",
    request_body = ExportIn,
    responses(
        (status = 200, body = ExportOut),
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
) -> ApiResult<Json<ExportOut>> {
    if principal.scope().is_some() {
        return Err(ApiError::Forbidden(
            "exports of the log are for the utility's auditors".into(),
        ));
    }
    checkpoints::sign_if_grown(&state.pool, &state.signer)
        .await
        .map_err(ApiError::Internal)?;
    let latest: Option<(i64, String)> = sqlx::query_as(
        "select tree_size, note from audit.checkpoint order by tree_size desc limit 1",
    )
    .fetch_optional(&state.pool)
    .await?;
    let (size, note) = latest.ok_or(ApiError::NotFound("checkpoint"))?;
    let size = size as u64;
    let from = input.from.unwrap_or(0);
    let to = input.to.unwrap_or(size).min(size);
    if from >= to || to - from > MAX_ENTRIES {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/from",
            format!("need from < to <= {size} (the signed size) and at most {MAX_ENTRIES} entries"),
        )]));
    }
    let mut conn = state.pool.acquire().await?;
    let mut body = Vec::new();
    let entries = export::write(&mut conn, &note, size, from, to, &mut body)
        .await
        .map_err(ApiError::Internal)?;
    drop(conn);
    let key = format!("audit/exports/{size}/{from}-{to}.jsonl");
    let storage = &state.storage;
    storage
        .client
        .put_object()
        .bucket(&storage.bucket)
        .key(&key)
        .content_type("application/jsonl")
        .body(body.into())
        .send()
        .await
        .map_err(|e| {
            ApiError::Unavailable(anyhow::anyhow!(
                "writing the export: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ))
        })?;
    let url = pmcore_storage::presigned_get(&storage.links, &storage.bucket, &key, LINK_TTL)
        .await
        .map_err(ApiError::Internal)?;
    Ok(Json(ExportOut {
        key,
        url,
        tree_size: size,
        from,
        to,
        entries,
    }))
}
