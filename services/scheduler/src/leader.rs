//! Leader election on a session-level Postgres advisory lock: the lock lives as long
//! as the connection that took it, so a crashed leader releases it by itself.
//!
//! Fencing: a leader that lost its connection may not know it yet. Every transaction
//! that acts as leader first checks [`Leadership::fence`], which asks Postgres
//! whether the backend that took the lock still holds it; a stale leader's work then
//! rolls back instead of racing the new leader's.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::Duration,
};

use pmcore_db::lock::SessionLock;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

const LEADER_LOCK: i64 = 0x706d_7363_6864; // "pmschd"

/// How long a liveness check of the leader connection may take before the leader
/// gives up the role: a connection that does not answer cannot prove it holds the lock.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct Leadership {
    leader: Arc<AtomicBool>,
    /// The Postgres backend (pid) whose session holds the lock; 0 when none.
    backend: Arc<AtomicI32>,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    fn set(&self, backend: Option<i32>) {
        self.backend.store(backend.unwrap_or(0), Ordering::Release);
        self.leader.store(backend.is_some(), Ordering::Release);
        metrics::gauge!("pmcore_scheduler_leader").set(if backend.is_some() { 1.0 } else { 0.0 });
    }

    /// Whether this process's lock-holding session still holds the leader lock, as
    /// Postgres sees it now. Call it inside the transaction that acts as leader.
    pub async fn fence(&self, conn: &mut PgConnection) -> sqlx::Result<bool> {
        let backend = self.backend.load(Ordering::Acquire);
        if backend == 0 || !self.is_leader() {
            return Ok(false);
        }
        sqlx::query_scalar(
            "select exists (select 1 from pg_locks
                 where locktype = 'advisory' and granted and pid = $1
                   and classid::int8 = $2 and objid::int8 = $3 and objsubid = 1)",
        )
        .bind(backend)
        .bind(LEADER_LOCK >> 32)
        .bind(LEADER_LOCK & 0xffff_ffff)
        .fetch_one(conn)
        .await
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
    let mut held: Option<SessionLock> = None;
    loop {
        held = match held.take() {
            Some(mut lock) => match tokio::time::timeout(PING_TIMEOUT, lock.ping()).await {
                Ok(Ok(())) => Some(lock),
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer within 2 s".to_owned(),
                    };
                    tracing::warn!(%error, "lost the leader connection");
                    leadership.set(None);
                    // Dropping it closes the connection: a pooled connection that
                    // still held the lock would keep every scheduler a follower.
                    drop(lock);
                    None
                }
            },
            None => match SessionLock::try_take(&pool, LEADER_LOCK, PING_TIMEOUT).await {
                Ok(Some(lock)) => {
                    let backend = lock.backend_pid();
                    tracing::info!(backend, "became scheduler leader");
                    leadership.set(Some(backend));
                    Some(lock)
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
    if let Some(lock) = held {
        leadership.set(None);
        lock.release().await;
        tracing::info!("released scheduler leadership");
    }
    Ok(())
}
