//! Who a gateway is: its stored secret hash and the DERs attributed to it.

use std::{
    collections::HashSet,
    sync::atomic::{AtomicUsize, Ordering},
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
    /// When the secret this session was opened with was set: the session may act
    /// only while it is still the gateway's.
    pub secret_rotated_at: chrono::DateTime<chrono::Utc>,
    ders_loaded_at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown gateway or wrong secret")]
    Refused,
    #[error("cannot check the secret now: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// Every verification slot stayed taken for as long as a hello may wait.
    #[error("too many gateways are being verified; retry later")]
    Busy,
}

/// Verifies secrets with at most a fixed number of argon2id runs at once. Each run
/// holds 19 MiB and a core for tens of milliseconds, also for an unknown id (the decoy
/// keeps the timing equal), so without a bound a burst of hellos, honest (a fleet
/// reconnecting) or not, takes the relay's memory and every core from the sessions it
/// serves. Beyond the bound a hello waits its turn, up to `wait`, then is told to retry.
#[derive(Debug)]
pub struct Verifier {
    slots: tokio::sync::Semaphore,
    wait: Duration,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Verifier {
    pub fn new(slots: usize, wait: Duration) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            wait,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Whether `secret` matches the PHC-format `hash`.
    pub async fn verify(&self, hash: String, secret: String) -> Result<bool, AuthError> {
        let _slot = tokio::time::timeout(self.wait, self.slots.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        let now = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        metrics::gauge!("pmcore_relay_verifications_running").set(now as f64);
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
        let now = self.running.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("pmcore_relay_verifications_running").set(now as f64);
        Ok(valid)
    }

    /// The most verifications that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }
}

/// An argon2id hash of a random value, verified for unknown gateway ids so that
/// the answer takes as long as for a wrong secret.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3mT0n8m0oXc8PW1Ey1SLdQ0Yc8Qm6o3Xh2bq4v1sF6k";

pub async fn authenticate(
    pool: &PgPool,
    verifier: &Verifier,
    id: Uuid,
    secret: String,
) -> Result<Gateway, AuthError> {
    let row: Option<(Uuid, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select organization_id, secret_hash, secret_rotated_at from pm.gateway where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let (organization_id, hash, secret_rotated_at) = match row {
        Some((org, hash, at)) => (Some(org), hash, at),
        None => (None, DECOY_HASH.to_owned(), chrono::DateTime::UNIX_EPOCH),
    };
    let valid = verifier.verify(hash, secret).await?;
    let Some(organization_id) = organization_id.filter(|_| valid) else {
        return Err(AuthError::Refused);
    };
    Ok(Gateway {
        id,
        organization_id,
        secret_rotated_at,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use argon2::{PasswordHasher, password_hash::SaltString};

    use super::*;

    fn hash(secret: &str) -> String {
        let salt = SaltString::encode_b64(b"a fixed test salt").expect("salt");
        Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .expect("hash")
            .to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_verifications_run_at_once_than_the_bound_and_each_gets_its_answer() {
        let verifier = Arc::new(Verifier::new(2, Duration::from_secs(60)));
        let good = hash("right");
        let answers = futures::future::join_all((0..8).map(|i| {
            let verifier = verifier.clone();
            let good = good.clone();
            let secret = if i % 2 == 0 { "right" } else { "wrong" };
            async move {
                verifier
                    .verify(good, secret.to_owned())
                    .await
                    .expect("verified")
            }
        }))
        .await;
        assert_eq!(
            answers,
            [true, false, true, false, true, false, true, false]
        );
        assert_eq!(verifier.peak(), 2, "eight hellos at once ran two at a time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hello_that_waits_too_long_for_a_slot_is_told_to_retry() {
        let verifier = Arc::new(Verifier::new(1, Duration::from_millis(1)));
        let good = hash("right");
        let results = futures::future::join_all((0..4).map(|_| {
            let verifier = verifier.clone();
            let good = good.clone();
            async move { verifier.verify(good, "right".to_owned()).await }
        }))
        .await;
        assert!(results.iter().any(|r| matches!(r, Ok(true))));
        assert!(
            results.iter().any(|r| matches!(r, Err(AuthError::Busy))),
            "one slot, a 1 ms wait and four verifications of ~20 ms: some must be refused"
        );
    }
}
