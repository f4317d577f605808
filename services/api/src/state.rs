use std::sync::Arc;

use sqlx::PgPool;

use crate::{
    auth::{oidc::Oidc, tokens::Tokens},
    limits::Limits,
};

/// What every handler may use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub tokens: Arc<Tokens>,
    pub limits: Arc<Limits>,
    /// The external OIDC provider, when one is configured.
    pub oidc: Option<Arc<Oidc>>,
    /// Where reports live, for download links.
    pub reports: Reports,
}

/// Signs links to the reports bucket (signing only: the api never reads reports).
#[derive(Debug, Clone)]
pub struct Reports {
    pub client: pmcore_storage::Client,
    pub bucket: String,
}
