//! Inclusion and consistency proofs (RFC 6962 / 9162), from the stored tree.

use axum::extract::State;
use base64::Engine;
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query},
};
use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;
use utoipa::{IntoParams, ToSchema};

use super::{AuditState, entries::visible};
use crate::{log::tree, store};

fn b64(h: &Hash) -> String {
    base64::engine::general_purpose::STANDARD.encode(h.0)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProofQuery {
    /// The tree to prove inclusion in (default: the latest checkpoint's size).
    tree_size: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProof {
    pub index: i64,
    pub tree_size: i64,
    /// SHA-256(0x00 ‖ the entry's canonical encoding), base64.
    pub leaf_hash: String,
    /// The audit path, leaf to root, base64.
    pub proof: Vec<String>,
    /// The root of the tree of `tree_size` leaves, base64.
    pub root_hash: String,
}

async fn checkpoint_size(state: &AuditState) -> ApiResult<i64> {
    let size: Option<i64> = sqlx::query_scalar("select max(tree_size) from audit.checkpoint")
        .fetch_one(&state.pool)
        .await?;
    size.ok_or(ApiError::NotFound("checkpoint"))
}

fn tree_error(e: tree::TreeError) -> ApiError {
    ApiError::Internal(e.into())
}

/// Proof that the entry at `index` is in the tree of `tree_size` leaves.
#[utoipa::path(
    get, path = "/v1/audit/entries/{index}/proof", operation_id = "audit.inclusion_proof", tag = "proofs",
    params(("index" = i64, Path, description = "Position in the log, from 0"), ProofQuery),
    responses(
        (status = 200, body = InclusionProof),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn inclusion(
    State(state): State<AuditState>,
    principal: Principal,
    Path(index): Path<i64>,
    Query(query): Query<ProofQuery>,
) -> ApiResult<Json<InclusionProof>> {
    let entry = visible(&state, &principal, index).await?;
    let size = match query.tree_size {
        Some(s) => s,
        None => checkpoint_size(&state).await?,
    };
    let mut conn = state.pool.acquire().await?;
    let logged = store::size(&mut conn).await?;
    if size <= index || size as u64 > logged {
        return Err(ApiError::Validation(vec![FieldError::new(
            "tree_size",
            format!("must be more than the index and at most the log's size ({logged})"),
        )]));
    }
    let (size_u, index_u) = (size as u64, index as u64);
    let mut wanted = tree::inclusion_reads(size_u, index_u);
    wanted.extend(tree::root_reads(size_u));
    let known = store::hashes(&mut conn, &wanted).await?;
    let proof = tree::inclusion(size_u, index_u, &known).map_err(tree_error)?;
    let root = tree::root(size_u, &known).map_err(tree_error)?;
    Ok(Json(InclusionProof {
        index,
        tree_size: size,
        leaf_hash: b64(&entry.entry(index_u).leaf_hash()),
        proof: proof.iter().map(b64).collect(),
        root_hash: b64(&root),
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree's size.
    from: i64,
    /// The newer tree's size.
    to: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: i64,
    pub to: i64,
    pub from_root: String,
    pub to_root: String,
    /// base64 hashes.
    pub proof: Vec<String>,
}

/// Proof that the tree of `to` leaves extends the tree of `from` leaves.
#[utoipa::path(
    get, path = "/v1/audit/consistency", operation_id = "audit.consistency_proof", tag = "proofs",
    params(ConsistencyQuery),
    responses(
        (status = 200, body = ConsistencyProof),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn consistency(
    State(state): State<AuditState>,
    _principal: Principal,
    Query(query): Query<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    let mut conn = state.pool.acquire().await?;
    let logged = store::size(&mut conn).await?;
    if query.from < 1 || query.from > query.to || query.to as u64 > logged {
        return Err(ApiError::Validation(vec![FieldError::new(
            "from",
            format!("need 1 <= from <= to <= the log's size ({logged})"),
        )]));
    }
    let (from, to) = (query.from as u64, query.to as u64);
    let mut wanted = tree::consistency_reads(to, from);
    wanted.extend(tree::root_reads(from));
    wanted.extend(tree::root_reads(to));
    let known = store::hashes(&mut conn, &wanted).await?;
    let proof = tree::consistency(to, from, &known).map_err(tree_error)?;
    Ok(Json(ConsistencyProof {
        from: query.from,
        to: query.to,
        from_root: b64(&tree::root(from, &known).map_err(tree_error)?),
        to_root: b64(&tree::root(to, &known).map_err(tree_error)?),
        proof: proof.iter().map(b64).collect(),
    }))
}
