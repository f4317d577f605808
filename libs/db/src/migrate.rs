//! Flyway-named migrations applied by refinery, in two sets: the platform's
//! (`flyway/pm/`, every service's tables) and the audit service's own
//! (`flyway/audit/`, its transparency log), each with its own history table. The
//! same files are applied by the Flyway image under docker compose.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use secrecy::ExposeSecret;

use crate::DbConfig;

mod platform {
    refinery::embed_migrations!("../../flyway/pm");
}

mod audit {
    refinery::embed_migrations!("../../flyway/audit");
}

/// A set of migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// `flyway/pm/`: the platform's schema, applied by every service's `migrate`.
    Platform,
    /// `flyway/audit/`: the audit service's, applied by `audit-log migrate`.
    Audit,
}

impl Set {
    fn runner(self) -> refinery::Runner {
        match self {
            Set::Platform => platform::migrations::runner(),
            Set::Audit => {
                let mut runner = audit::migrations::runner();
                runner.set_migration_table_name("audit_schema_history");
                runner
            }
        }
    }
}

/// Applies pending platform migrations once; fails if Postgres does not answer.
pub async fn run(config: &DbConfig) -> anyhow::Result<Vec<String>> {
    run_sets(config, &[Set::Platform]).await
}

/// Applies pending migrations of `sets`, in order, once.
pub async fn run_sets(config: &DbConfig, sets: &[Set]) -> anyhow::Result<Vec<String>> {
    let mut applied = Vec::new();
    for set in sets {
        applied.extend(run_set(config, *set).await?);
    }
    Ok(applied)
}

async fn run_set(config: &DbConfig, set: Set) -> anyhow::Result<Vec<String>> {
    let (mut client, connection) =
        tokio_postgres::connect(config.url.expose_secret(), tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection ended");
        }
    });
    let report = set.runner().run_async(&mut client).await;
    drop(client);
    let _ = driver.await;
    let applied = report?
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(applied)
}

/// Applies pending migrations of `sets`, waiting with capped backoff until Postgres
/// answers.
pub async fn run_when_ready(config: &DbConfig, sets: &[Set]) -> anyhow::Result<Vec<String>> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    (|| run_sets(config, sets))
        .retry(backoff)
        .notify(|error, wait| tracing::warn!(%error, ?wait, "migrations wait for Postgres"))
        .await
}
