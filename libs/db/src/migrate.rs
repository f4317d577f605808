//! Flyway-named migrations (`flyway/V1__init.sql`, …) applied by refinery. The same
//! files are applied by the Flyway image under docker compose.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use secrecy::ExposeSecret;

use crate::DbConfig;

mod embedded {
    refinery::embed_migrations!("../../flyway");
}

/// Applies pending migrations once; fails if Postgres does not answer.
pub async fn run(config: &DbConfig) -> anyhow::Result<Vec<String>> {
    let (mut client, connection) =
        tokio_postgres::connect(config.url.expose_secret(), tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection ended");
        }
    });
    let report = embedded::migrations::runner().run_async(&mut client).await;
    drop(client);
    let _ = driver.await;
    let applied = report?
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(applied)
}

/// Applies pending migrations, waiting with capped backoff until Postgres answers.
pub async fn run_when_ready(config: &DbConfig) -> anyhow::Result<Vec<String>> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    (|| run(config))
        .retry(backoff)
        .notify(|error, wait| tracing::warn!(%error, ?wait, "migrations wait for Postgres"))
        .await
}
