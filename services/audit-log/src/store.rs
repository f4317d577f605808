//! The log in Postgres: appending entries with their leaves and tree hashes, and
//! reading what roots and proofs need. Appends are serialized by a transaction-scoped
//! advisory lock, so leaf positions are dense and in commit order whatever the
//! number of audit-log instances, and a rolled-back append leaves no gap.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tlog_tiles::Hash;
use uuid::Uuid;

use crate::log::{
    leaf::Entry,
    tree::{self, Hashes},
};

/// Key of the advisory lock that serializes appends.
const APPEND_LOCK: i64 = 0x7064_6175_6469_7401;

/// One domain event to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub event_id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub principal: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub topic: String,
    pub payload: serde_json::Value,
}

impl NewEntry {
    /// The organization the entry concerns: the payload's `organization_id`.
    fn organization_id(&self) -> Option<Uuid> {
        self.payload
            .get("organization_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
    }
}

/// Takes the append lock and returns the log's size.
async fn lock(conn: &mut PgConnection) -> sqlx::Result<u64> {
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *conn)
        .await?;
    let size: i64 = sqlx::query_scalar("select coalesce(max(leaf_index) + 1, 0) from audit.leaf")
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(size).unwrap_or(0))
}

/// Appends `entries` in the caller's transaction.
pub async fn append(conn: &mut PgConnection, entries: &[NewEntry]) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let n = lock(conn).await?;
    let mut stored = Vec::with_capacity(entries.len());
    for e in entries {
        let row: (i64, DateTime<Utc>, DateTime<Utc>, serde_json::Value) = sqlx::query_as(
            "insert into audit.entry
                 (event_id, event_type, source, subject, principal, occurred_at, topic, payload,
                  organization_id)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             returning seq, occurred_at, recorded_at, payload",
        )
        .bind(e.event_id)
        .bind(&e.event_type)
        .bind(&e.source)
        .bind(&e.subject)
        .bind(&e.principal)
        .bind(e.occurred_at)
        .bind(&e.topic)
        .bind(&e.payload)
        .bind(e.organization_id())
        .fetch_one(&mut *conn)
        .await?;
        stored.push(row);
    }
    // The leaf is made of what Postgres stored (its timestamps are microseconds, its
    // jsonb is normalized), so rebuilding it from a later read gives the same bytes.
    let leaves: Vec<(i64, Hash)> = entries
        .iter()
        .zip(&stored)
        .enumerate()
        .map(|(i, (e, (seq, occurred_at, recorded_at, payload)))| {
            let entry = Entry {
                index: n + i as u64,
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                source: e.source.clone(),
                subject: e.subject.clone(),
                principal: e.principal.clone(),
                organization_id: e.organization_id(),
                occurred_at: *occurred_at,
                recorded_at: *recorded_at,
                topic: e.topic.clone(),
                payload: payload.clone(),
            };
            (*seq, entry.leaf_hash())
        })
        .collect();
    write_leaves(conn, n, &leaves).await
}

/// Gives positions from `n` to already stored entries `(seq, leaf hash)` and writes
/// their leaves and the tree hashes they complete.
async fn write_leaves(
    conn: &mut PgConnection,
    n: u64,
    leaves: &[(i64, Hash)],
) -> anyhow::Result<()> {
    let count = leaves.len() as u64;
    let mut known = hashes(conn, &tree::append_reads(n, count)).await?;
    let hashes_only: Vec<Hash> = leaves.iter().map(|(_, h)| *h).collect();
    let new = tree::append(n, &hashes_only, &mut known)?;
    let indexes: Vec<i64> = (0..count).map(|i| (n + i) as i64).collect();
    sqlx::query(
        "insert into audit.leaf (leaf_index, entry_seq, leaf_hash)
         select * from unnest($1::int8[], $2::int8[], $3::bytea[])",
    )
    .bind(&indexes)
    .bind(leaves.iter().map(|(s, _)| *s).collect::<Vec<_>>())
    .bind(leaves.iter().map(|(_, h)| h.0.to_vec()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into audit.tree_hash (stored_index, hash)
         select * from unnest($1::int8[], $2::bytea[])",
    )
    .bind(new.iter().map(|(i, _)| *i as i64).collect::<Vec<_>>())
    .bind(new.iter().map(|(_, h)| h.0.to_vec()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    metrics::counter!("pmcore_audit_log_appended_total").increment(count);
    Ok(())
}

/// Entries recorded before the log existed (an upgraded installation) get their
/// leaves, oldest first, `chunk` at a time; returns how many.
pub async fn backfill(pool: &sqlx::PgPool, chunk: i64) -> anyhow::Result<u64> {
    let mut done = 0;
    loop {
        let mut tx = pool.begin().await?;
        let n = lock(&mut tx).await?;
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "select {ENTRY_COLUMNS}, null::int8 as leaf_index from audit.entry e
              where not exists (select 1 from audit.leaf l where l.entry_seq = e.seq)
              order by e.seq limit $1"
        ))
        .bind(chunk)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(done);
        }
        let leaves: Vec<(i64, Hash)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.seq, r.entry(n + i as u64).leaf_hash()))
            .collect();
        write_leaves(&mut tx, n, &leaves).await?;
        tx.commit().await?;
        done += leaves.len() as u64;
    }
}

/// Stored tree hashes by index.
pub async fn hashes(conn: &mut PgConnection, wanted: &BTreeSet<u64>) -> sqlx::Result<Hashes> {
    if wanted.is_empty() {
        return Ok(Hashes::new());
    }
    let ids: Vec<i64> = wanted.iter().map(|i| *i as i64).collect();
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "select stored_index, hash from audit.tree_hash where stored_index = any($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(i, h)| Some((i as u64, Hash(h.try_into().ok()?))))
        .collect())
}

/// The log's size: leaves stored.
pub async fn size(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let size: i64 = sqlx::query_scalar("select coalesce(max(leaf_index) + 1, 0) from audit.leaf")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(size).unwrap_or(0))
}

pub const ENTRY_COLUMNS: &str = "e.seq, e.event_id, e.event_type, e.source, e.subject, e.principal,
    e.organization_id, e.occurred_at, e.recorded_at, e.topic, e.payload";

/// An entry row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub seq: i64,
    pub leaf_index: Option<i64>,
    pub event_id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub principal: Option<String>,
    pub organization_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub topic: String,
    pub payload: serde_json::Value,
}

impl EntryRow {
    /// The entry as the log commits to it at position `index`.
    pub fn entry(&self, index: u64) -> Entry {
        Entry {
            index,
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            source: self.source.clone(),
            subject: self.subject.clone(),
            principal: self.principal.clone(),
            organization_id: self.organization_id,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
        }
    }
}
