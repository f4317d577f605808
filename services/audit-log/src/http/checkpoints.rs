//! Signed checkpoints: made every interval when the log grew, or on demand, and all
//! kept; and the key that verifies them.

use std::time::Duration;

use axum::extract::State;
use base64::Engine;
use chrono::{DateTime, Utc};
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, Problem},
    extract::Json,
};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::AuditState;
use crate::{
    log::{note::CheckpointSigner, tree},
    store,
};

/// A signed tree head.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct CheckpointOut {
    /// Leaves in the tree.
    pub tree_size: i64,
    /// The RFC 6962 root hash, base64.
    #[sqlx(skip)]
    pub root_hash: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub root_bytes: Vec<u8>,
    /// The C2SP signed note: origin, size and root lines, a blank line, signature lines.
    pub note: String,
    pub signed_at: DateTime<Utc>,
}

const COLUMNS: &str = "tree_size, root_hash as root_bytes, note, signed_at";

fn finish(mut c: CheckpointOut) -> CheckpointOut {
    c.root_hash = base64::engine::general_purpose::STANDARD.encode(&c.root_bytes);
    c
}

/// Signs a checkpoint of the log as it is, unless one of this size exists.
pub async fn sign_if_grown(
    pool: &PgPool,
    signer: &CheckpointSigner,
) -> anyhow::Result<Option<i64>> {
    let mut conn = pool.acquire().await?;
    let size = store::size(&mut conn).await?;
    let latest: Option<i64> = sqlx::query_scalar("select max(tree_size) from audit.checkpoint")
        .fetch_one(&mut *conn)
        .await?;
    if size == 0 || latest.is_some_and(|l| l as u64 >= size) {
        return Ok(None);
    }
    let known = store::hashes(&mut conn, &tree::root_reads(size)).await?;
    let root = tree::root(size, &known)?;
    let note = signer.sign(size, root)?;
    let size = i64::try_from(size)?;
    sqlx::query(
        "insert into audit.checkpoint (tree_size, root_hash, note, key_id) values ($1, $2, $3, $4)
         on conflict (tree_size) do nothing",
    )
    .bind(size)
    .bind(root.0.to_vec())
    .bind(&note)
    .bind(i64::from(signer.key_id()))
    .execute(&mut *conn)
    .await?;
    metrics::gauge!("pmcore_audit_log_checkpoint_size").set(size as f64);
    Ok(Some(size))
}

/// Signs a checkpoint every `interval` when the log grew, until cancelled.
pub async fn run(
    pool: PgPool,
    signer: std::sync::Arc<CheckpointSigner>,
    interval: Duration,
    database_timeout: Duration,
    cancel: CancellationToken,
) {
    loop {
        match pmcore_db::bounded(database_timeout, sign_if_grown(&pool, &signer)).await {
            Ok(Some(size)) => tracing::info!(size, "checkpoint signed"),
            Ok(None) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "signing a checkpoint"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn latest(pool: &PgPool) -> ApiResult<CheckpointOut> {
    let row: Option<CheckpointOut> = sqlx::query_as(&format!(
        "select {COLUMNS} from audit.checkpoint order by tree_size desc limit 1"
    ))
    .fetch_optional(pool)
    .await?;
    row.map(finish).ok_or(ApiError::NotFound("checkpoint"))
}

/// The latest signed checkpoint.
#[utoipa::path(
    get, path = "/v1/audit/checkpoint", operation_id = "audit.checkpoint", tag = "checkpoints",
    responses(
        (status = 200, body = CheckpointOut),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Nothing was logged yet", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AuditState>,
    _principal: Principal,
) -> ApiResult<Json<CheckpointOut>> {
    Ok(Json(latest(&state.pool).await?))
}

/// Sign a checkpoint of the log as it is now (if it grew since the last one), and
/// return the latest.
#[utoipa::path(
    post, path = "/v1/audit/checkpoint", operation_id = "audit.checkpoint_now", tag = "checkpoints",
    responses(
        (status = 200, body = CheckpointOut),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Nothing was logged yet", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn sign_now(
    State(state): State<AuditState>,
    _principal: Principal,
) -> ApiResult<Json<CheckpointOut>> {
    sign_if_grown(&state.pool, &state.signer)
        .await
        .map_err(ApiError::Internal)?;
    Ok(Json(latest(&state.pool).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// Newest first, at most 1,000.
    pub items: Vec<CheckpointOut>,
}

/// Every checkpoint signed, newest first.
#[utoipa::path(
    get, path = "/v1/audit/checkpoints", operation_id = "audit.checkpoints", tag = "checkpoints",
    responses(
        (status = 200, body = CheckpointList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AuditState>,
    _principal: Principal,
) -> ApiResult<Json<CheckpointList>> {
    let rows: Vec<CheckpointOut> = sqlx::query_as(&format!(
        "select {COLUMNS} from audit.checkpoint order by tree_size desc limit 1000"
    ))
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(CheckpointList {
        items: rows.into_iter().map(finish).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifierKey {
    /// The C2SP `signed-note` verifier key: `<name>+<key id>+<base64 key>`.
    pub verifier_key: String,
    /// The checkpoints' origin line (the key's name).
    pub origin: String,
    /// The key id, 8 hex digits.
    pub key_id: String,
}

/// The key that verifies the log's checkpoints.
#[utoipa::path(
    get, path = "/v1/audit/checkpoint/key", operation_id = "audit.checkpoint_key", tag = "checkpoints",
    responses(
        (status = 200, body = VerifierKey),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn key(State(state): State<AuditState>, _principal: Principal) -> Json<VerifierKey> {
    Json(VerifierKey {
        verifier_key: state.signer.verifier_key().to_owned(),
        origin: state.signer.origin().to_owned(),
        key_id: format!("{:08x}", state.signer.key_id()),
    })
}
