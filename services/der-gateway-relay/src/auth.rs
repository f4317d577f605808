//! Who a gateway is: its stored secret hash and the DERs attributed to it.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug)]
pub struct Gateway {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub ders: HashSet<Uuid>,
    ders_loaded_at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown gateway or wrong secret")]
    Refused,
    #[error("cannot check the secret now: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// An argon2id hash of a random value, verified for unknown gateway ids so that
/// the answer takes as long as for a wrong secret.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3mT0n8m0oXc8PW1Ey1SLdQ0Yc8Qm6o3Xh2bq4v1sF6k";

pub async fn authenticate(pool: &PgPool, id: Uuid, secret: String) -> Result<Gateway, AuthError> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("select organization_id, secret_hash from pm.gateway where id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let (organization_id, hash) = match row {
        Some((org, hash)) => (Some(org), hash),
        None => (None, DECOY_HASH.to_owned()),
    };
    // Argon2 is deliberately slow; keep it off the async workers.
    let valid = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false);
    let Some(organization_id) = organization_id.filter(|_| valid) else {
        return Err(AuthError::Refused);
    };
    Ok(Gateway {
        id,
        organization_id,
        ders: load_ders(pool, id).await?,
        ders_loaded_at: Instant::now(),
    })
}

async fn load_ders(pool: &PgPool, gateway_id: Uuid) -> sqlx::Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("select id from pm.der where gateway_id = $1 and status = 'active'")
            .bind(gateway_id)
            .fetch_all(pool)
            .await?;
    Ok(ids.into_iter().collect())
}

impl Gateway {
    /// Re-reads the gateway's DERs when one it reports is not known here, at most
    /// every few seconds, so a DER registered during the session is accepted soon
    /// and a gateway sending foreign ids cannot turn each frame into a query.
    pub async fn refresh_ders(&mut self, pool: &PgPool) -> sqlx::Result<()> {
        const MIN_INTERVAL: Duration = Duration::from_secs(5);
        if self.ders_loaded_at.elapsed() >= MIN_INTERVAL {
            self.ders = load_ders(pool, self.id).await?;
            self.ders_loaded_at = Instant::now();
        }
        Ok(())
    }
}
