//! The consumer inbox: a row per (consumer, event id), written in the same transaction
//! as the event's effects, so a redelivered event becomes a no-op.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Which inbox table a consumer writes to; each schema owner has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbox {
    Pm,
    Audit,
    Messaging,
}

impl Inbox {
    fn insert_sql(self) -> &'static str {
        match self {
            Inbox::Pm => {
                "insert into pm.inbox (consumer, event_id) values ($1, $2) on conflict do nothing"
            }
            Inbox::Audit => {
                "insert into audit.inbox (consumer, event_id) values ($1, $2) on conflict do nothing"
            }
            Inbox::Messaging => {
                "insert into messaging.inbox (consumer, event_id) values ($1, $2) on conflict do nothing"
            }
        }
    }

    fn table(self) -> &'static str {
        match self {
            Inbox::Pm => "pm.inbox",
            Inbox::Audit => "audit.inbox",
            Inbox::Messaging => "messaging.inbox",
        }
    }

    /// Forgets events handled more than `keep_days` ago, in batches of `batch` rows
    /// (short transactions, no long lock); returns how many. An id only has to be
    /// remembered while its record can still be read again: keep more days than the
    /// topics' retention.
    pub async fn prune(self, pool: &PgPool, keep_days: i32, batch: i64) -> sqlx::Result<u64> {
        crate::retention::delete_older(pool, self.table(), "processed_at", keep_days, batch).await
    }

    /// Claims many at once; returns the ids not handled before (each once).
    pub async fn claim_many(
        self,
        conn: &mut PgConnection,
        consumer: &str,
        event_ids: &[Uuid],
    ) -> sqlx::Result<Vec<Uuid>> {
        let table = self.table();
        sqlx::query_scalar(&format!(
            "insert into {table} (consumer, event_id) select $1, unnest($2::uuid[])
             on conflict do nothing returning event_id"
        ))
        .bind(consumer)
        .bind(event_ids)
        .fetch_all(conn)
        .await
    }

    /// Records that `consumer` handles `event_id` in this transaction. Returns false
    /// when it was handled before, in which case the caller does nothing else.
    pub async fn claim(
        self,
        conn: &mut PgConnection,
        consumer: &str,
        event_id: Uuid,
    ) -> sqlx::Result<bool> {
        let result = sqlx::query(self.insert_sql())
            .bind(consumer)
            .bind(event_id)
            .execute(conn)
            .await?;
        Ok(result.rows_affected() == 1)
    }
}
