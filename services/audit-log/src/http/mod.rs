//! The audit API (port 3003): entries, checkpoints, proofs and verification, with
//! the api's conventions (its tokens and roles, problem+json, an OpenAPI document
//! generated from these handlers).

pub mod checkpoints;
pub mod entries;
pub mod exports;
pub mod openapi;
pub mod proofs;
pub mod verify;

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use pmcore_web::{
    auth::{Principal, Role},
    error::ApiError,
    limits::Limits,
    tokens::Tokens,
};
use sqlx::PgPool;

use crate::log::note::CheckpointSigner;

/// Who may read the trail.
pub const READERS: [Role; 2] = [Role::Admin, Role::Auditor];

/// What every handler may use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditState {
    pub pool: PgPool,
    pub tokens: Arc<Tokens>,
    pub limits: Arc<Limits>,
    pub oidc: Option<Arc<pmcore_web::oidc::Oidc>>,
    pub signer: Arc<CheckpointSigner>,
    pub storage: Storage,
    /// Wakes the export runner when a job is recorded.
    pub exports: Arc<tokio::sync::Notify>,
}

/// Where exports go: the reports bucket.
#[derive(Debug, Clone)]
pub struct Storage {
    pub client: pmcore_storage::Client,
    /// Signs links at the endpoint clients use.
    pub links: pmcore_storage::Client,
    pub bucket: String,
}

impl FromRequestParts<AuditState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AuditState,
    ) -> Result<Self, Self::Rejection> {
        let principal = pmcore_web::auth::verify_request(
            parts,
            &state.tokens,
            &state.limits,
            &state.pool,
            state.oidc.as_deref(),
        )
        .await?;
        principal.require(&READERS)?;
        Ok(principal)
    }
}
