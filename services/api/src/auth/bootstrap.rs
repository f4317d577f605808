//! A fresh install has no client to call the API with. The api creates one admin
//! client (and the operator organization it belongs to) when none exists; its secret
//! comes from configuration or is generated and written once to a file only its
//! owner can read (logs are shipped and kept; a secret in them is a leaked secret).

use chrono::{DateTime, Utc};
use pmcore_events::domain::{ApiClientCreated, OrganizationCreated};
use pmcore_kafka::outbox::{self, EventMeta};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::secrets;
use crate::Config;

/// Creates the bootstrap admin unless any API client exists. Returns its id when it
/// was created now.
pub async fn ensure_bootstrap_client(
    pool: &sqlx::PgPool,
    config: &Config,
) -> anyhow::Result<Option<Uuid>> {
    let mut tx = pool.begin().await?;
    // Several api instances may start together; one creates the client.
    sqlx::query("select pg_advisory_xact_lock(7370111)")
        .execute(&mut *tx)
        .await?;
    let any: bool = sqlx::query_scalar("select exists (select 1 from pm.api_client)")
        .fetch_one(&mut *tx)
        .await?;
    if any {
        return Ok(None);
    }
    // `xmax = 0` tells a row this statement inserted from one it only updated.
    let (org_id, org_created_at, inserted): (Uuid, DateTime<Utc>, bool) = sqlx::query_as(
        "insert into pm.organization (id, name, kind) values ($1, $2, 'utility')
         on conflict on constraint organization_name_key do update set updated_at = now()
         returning id, created_at, xmax = 0",
    )
    .bind(Uuid::now_v7())
    .bind(&config.bootstrap_organization)
    .fetch_one(&mut *tx)
    .await?;
    // The trail starts with the install itself: who runs the platform, and its first key.
    let meta = EventMeta {
        source: "api".to_owned(),
        principal: Some("service:api".to_owned()),
        traceparent: None,
    };
    if inserted {
        let event = OrganizationCreated {
            organization_id: org_id.to_string(),
            name: config.bootstrap_organization.clone(),
            kind: "utility".to_owned(),
            created_at: org_created_at.timestamp_micros(),
        };
        outbox::enqueue(&mut tx, &event, &meta).await?;
    }
    let client_id = config.bootstrap_client_id.unwrap_or_else(Uuid::now_v7);
    let (secret, generated) = match &config.bootstrap_client_secret {
        Some(s) => (s.expose_secret().to_owned(), false),
        None => (secrets::generate(), true),
    };
    let hash =
        tokio::task::spawn_blocking(move || secrets::hash(&secret).map(|h| (h, secret))).await??;
    let client_created_at: DateTime<Utc> = sqlx::query_scalar(
        "insert into pm.api_client (id, organization_id, name, secret_hash, roles)
         values ($1, $2, 'bootstrap-admin', $3, array['admin']) returning created_at",
    )
    .bind(client_id)
    .bind(org_id)
    .bind(&hash.0)
    .fetch_one(&mut *tx)
    .await?;
    let event = ApiClientCreated {
        client_id: client_id.to_string(),
        organization_id: org_id.to_string(),
        name: "bootstrap-admin".to_owned(),
        roles: vec!["admin".to_owned()],
        created_at: client_created_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &meta).await?;
    if generated {
        // Written before the commit: if the file cannot be written the client is
        // not created, and the next attempt generates another secret.
        write_secret_file(&config.bootstrap_secret_file, client_id, &hash.1)?;
        tracing::warn!(%client_id, file = %config.bootstrap_secret_file.display(),
            "created the bootstrap admin client; its secret is in the file (read it, then delete it)");
    } else {
        tracing::warn!(%client_id, "created the bootstrap admin client with the configured secret");
    }
    tx.commit().await?;
    Ok(Some(client_id))
}

fn write_secret_file(path: &std::path::Path, client_id: Uuid, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {} for the bootstrap secret ({e}); remove a stale one or set PMCORE_BOOTSTRAP_SECRET_FILE",
            path.display()
        )
    })?;
    let body = serde_json::json!({"client_id": client_id, "client_secret": secret});
    writeln!(file, "{body}")?;
    file.sync_all()?;
    Ok(())
}
