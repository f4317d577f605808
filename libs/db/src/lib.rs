//! Postgres access shared by every service.

mod config;
pub mod inbox;
pub mod lock;
pub mod migrate;
pub mod retention;
pub mod telemetry;

pub use config::DbConfig;
use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// A pool that connects on first use, so a service can start before Postgres does
/// and become ready once it answers.
pub fn lazy_pool(config: &DbConfig) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config.url.expose_secret().parse()?;
    let options = options.options([("statement_timeout", config.statement_timeout_ms.to_string())]);
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout())
        .connect_lazy_with(options);
    Ok(pool)
}

/// Readiness: Postgres answers a trivial query.
pub async fn ping(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}
