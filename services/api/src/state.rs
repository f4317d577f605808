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
    /// API clients that were disabled, refreshed from the database every few
    /// seconds so every instance refuses their unexpired tokens.
    pub disabled: Arc<DisabledClients>,
    /// Token requests refused since the last summary event.
    pub refusals: Arc<crate::auth::refusals::Refusals>,
}

#[derive(Debug, Default)]
pub struct DisabledClients(std::sync::RwLock<std::collections::HashSet<uuid::Uuid>>);

impl DisabledClients {
    /// Whether a principal's subject (`client:<id>`) is a disabled client.
    pub fn contains(&self, subject: &str) -> bool {
        subject
            .strip_prefix("client:")
            .and_then(|id| id.parse().ok())
            .is_some_and(|id| {
                self.0
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&id)
            })
    }

    pub fn insert(&self, id: uuid::Uuid) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(id);
    }

    pub async fn refresh(&self, pool: &PgPool) -> sqlx::Result<()> {
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("select id from pm.api_client where disabled_at is not null")
                .fetch_all(pool)
                .await?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = ids.into_iter().collect();
        Ok(())
    }
}

/// Signs download links to the reports bucket and upload links to the inbound
/// bucket (signing only: the api never reads or writes objects itself).
#[derive(Debug, Clone)]
pub struct Reports {
    pub client: pmcore_storage::Client,
    pub bucket: String,
    pub inbound_bucket: String,
}
