//! Leader election on a session-level Postgres advisory lock: the lock lives as long
//! as the connection that took it, so a crashed leader releases it by itself.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{Connection, PgPool, Postgres, pool::PoolConnection};
use tokio_util::sync::CancellationToken;

const LEADER_LOCK: i64 = 0x706d_7363_6864; // "pmschd"

#[derive(Debug, Clone, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, leader: bool) {
        self.0.store(leader, Ordering::Release);
        metrics::gauge!("pmcore_scheduler_leader").set(if leader { 1.0 } else { 0.0 });
    }
}

/// Tries to take the lock every `poll`; once leader, checks every `poll` that the
/// connection holding it is alive. Releases it on cancel.
pub(crate) async fn hold(
    pool: PgPool,
    leadership: Leadership,
    poll: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut held: Option<PoolConnection<Postgres>> = None;
    loop {
        held = match held.take() {
            Some(mut conn) => match conn.ping().await {
                Ok(()) => Some(conn),
                Err(error) => {
                    tracing::warn!(%error, "lost the leader connection");
                    leadership.set(false);
                    None
                }
            },
            None => match try_acquire(&pool).await {
                Ok(Some(conn)) => {
                    tracing::info!("became scheduler leader");
                    leadership.set(true);
                    Some(conn)
                }
                Ok(None) => None,
                Err(error) => {
                    tracing::debug!(%error, "leader election needs Postgres");
                    None
                }
            },
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(poll) => {}
        }
    }
    if let Some(mut conn) = held {
        let _ = sqlx::query("select pg_advisory_unlock($1)")
            .bind(LEADER_LOCK)
            .execute(&mut *conn)
            .await;
        leadership.set(false);
        tracing::info!("released scheduler leadership");
    }
    Ok(())
}

async fn try_acquire(pool: &PgPool) -> anyhow::Result<Option<PoolConnection<Postgres>>> {
    let mut conn = pool.acquire().await?;
    let got: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    // A connection that failed to lock goes back to the pool holding nothing.
    Ok(got.then_some(conn))
}
