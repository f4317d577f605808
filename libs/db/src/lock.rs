//! A session-level advisory lock on a connection of its own: "one process at a time"
//! (the scheduler's leader, the outbox relay's publisher) without a transaction held
//! open. The lock lives as long as the connection, so a crashed holder frees it.

use std::{
    ops::{Deref, DerefMut},
    time::Duration,
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// A held lock. Dropping it closes its connection (a pooled connection that kept the
/// lock would lock everyone else out); [`SessionLock::release`] unlocks politely.
#[derive(Debug)]
pub struct SessionLock {
    conn: Option<PoolConnection<Postgres>>,
    key: i64,
    backend_pid: i32,
}

impl SessionLock {
    /// Takes the lock if free; None when another session holds it. A connection that
    /// does not answer within `limit` is closed (see [`crate::within`]).
    pub async fn try_take(pool: &PgPool, key: i64, limit: Duration) -> sqlx::Result<Option<Self>> {
        let mut conn = pool.acquire().await?;
        let asked = sqlx::query_as("select pg_try_advisory_lock($1), pg_backend_pid()")
            .bind(key)
            .fetch_one(&mut *conn);
        let (got, backend_pid): (bool, i32) = match tokio::time::timeout(limit, asked).await {
            Ok(answer) => answer?,
            Err(_) => {
                drop(conn.detach());
                return Err(crate::NoAnswer(limit).into());
            }
        };
        if !got {
            // Back to the pool holding nothing. (Built eagerly and dropped, a
            // `SessionLock` would close it: every standby relay and follower
            // scheduler opened a connection a second that way, issue 16.)
            return Ok(None);
        }
        Ok(Some(Self {
            conn: Some(conn),
            key,
            backend_pid,
        }))
    }

    /// The Postgres backend whose session holds the lock (see `pg_locks.pid`).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Unlocks and returns the connection to the pool.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("select pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut *conn);
            // Closing the connection frees the lock as well, and cannot hang.
            if !matches!(
                tokio::time::timeout(RELEASE_WITHIN, unlocked).await,
                Ok(Ok(_))
            ) {
                drop(conn.detach());
            }
        }
    }
}

impl Deref for SessionLock {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_deref()
            .unwrap_or_else(|| unreachable!("taken only on release or drop"))
    }
}

impl DerefMut for SessionLock {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("taken only on release or drop"))
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
