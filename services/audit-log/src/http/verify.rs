//! `POST /v1/audit/verify`: the whole log checked against the database, as an
//! auditor's offline check would (see `audit-verify`).

use axum::extract::State;
use pmcore_web::{
    auth::Principal,
    error::{ApiError, ApiResult, Problem},
    extract::Json,
};
use serde::Serialize;
use tlog_tiles::Hash;
use utoipa::ToSchema;

use super::AuditState;
use crate::{
    log::verify::{Report, Verifier},
    store::{ENTRY_COLUMNS, EntryRow},
};

/// What verification found.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOut {
    /// Nothing is wrong.
    pub ok: bool,
    pub tree_size: u64,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    /// The first position whose entry, leaf or stored hash is wrong, if any.
    pub first_bad_index: Option<u64>,
    pub problems: Vec<String>,
}

impl From<Report> for VerifyOut {
    fn from(r: Report) -> Self {
        Self {
            ok: r.ok,
            tree_size: r.tree_size,
            entries_checked: r.entries_checked,
            checkpoints_checked: r.checkpoints_checked,
            first_bad_index: r.first_bad_index,
            problems: r.problems,
        }
    }
}

const CHUNK: i64 = 5000;

/// Rebuilds every leaf from its entry and the tree from the leaves, compares them with
/// the stored leaves and tree hashes, and checks every signed checkpoint against the
/// log's key and the rebuilt tree. The utility's auditors and admins only.
#[utoipa::path(
    post, path = "/v1/audit/verify", operation_id = "audit.verify", tag = "verification",
    responses(
        (status = 200, body = VerifyOut),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    State(state): State<AuditState>,
    principal: Principal,
) -> ApiResult<Json<VerifyOut>> {
    if principal.scope().is_some() {
        return Err(ApiError::Forbidden(
            "verifying the whole log is for the utility's auditors".into(),
        ));
    }
    let report = run(&state.pool, state.signer.verifier_key())
        .await
        .map_err(ApiError::Internal)?;
    metrics::counter!("pmcore_audit_log_verifications_total", "ok" => report.ok.to_string())
        .increment(1);
    Ok(Json(report.into()))
}

/// One consistent snapshot of the log, verified.
pub async fn run(pool: &sqlx::PgPool, verifier_key: &str) -> anyhow::Result<Report> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let mut v = Verifier::new(verifier_key);
    let mut after = -1i64;
    loop {
        let rows: Vec<(i64, Vec<u8>, Option<EntryRow>)> = sqlx::query_as::<_, LeafRow>(&format!(
            "select l.leaf_index as at, l.leaf_hash, {ENTRY_COLUMNS}, l.leaf_index
               from audit.leaf l left join audit.entry e on e.seq = l.entry_seq
              where l.leaf_index > $1 order by l.leaf_index limit $2"
        ))
        .bind(after)
        .bind(CHUNK)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(LeafRow::split)
        .collect();
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        for (at, hash, entry) in rows {
            let recorded = hash.try_into().ok().map(Hash);
            let entry = entry.map(|e| e.entry(at as u64));
            v.leaf(at as u64, recorded, entry.as_ref());
        }
        after = last;
    }
    let unlogged: Vec<i64> = sqlx::query_scalar(
        "select seq from audit.entry e
          where not exists (select 1 from audit.leaf l where l.entry_seq = e.seq)
          order by seq limit 100",
    )
    .fetch_all(&mut *tx)
    .await?;
    for seq in unlogged {
        v.unlogged(format!("entry seq {seq}"));
    }
    let mut after = -1i64;
    loop {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "select stored_index, hash from audit.tree_hash where stored_index > $1
              order by stored_index limit 50000",
        )
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        for (index, hash) in rows {
            if let Ok(h) = <[u8; 32]>::try_from(hash) {
                v.stored_hash(index as u64, Hash(h));
            }
        }
        after = last;
    }
    let notes: Vec<String> =
        sqlx::query_scalar("select note from audit.checkpoint order by tree_size")
            .fetch_all(&mut *tx)
            .await?;
    for note in &notes {
        v.checkpoint(note);
    }
    tx.commit().await?;
    Ok(v.finish())
}

/// A leaf and, when it still exists, its entry.
#[derive(sqlx::FromRow)]
struct LeafRow {
    at: i64,
    leaf_hash: Vec<u8>,
    seq: Option<i64>,
    #[sqlx(flatten)]
    entry: MaybeEntry,
}

#[derive(sqlx::FromRow)]
struct MaybeEntry {
    leaf_index: Option<i64>,
    event_id: Option<uuid::Uuid>,
    event_type: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    principal: Option<String>,
    organization_id: Option<uuid::Uuid>,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    recorded_at: Option<chrono::DateTime<chrono::Utc>>,
    topic: Option<String>,
    payload: Option<serde_json::Value>,
}

impl LeafRow {
    fn split(self) -> (i64, Vec<u8>, Option<EntryRow>) {
        let e = self.entry;
        let entry = (|| {
            Some(EntryRow {
                seq: self.seq?,
                leaf_index: e.leaf_index,
                event_id: e.event_id?,
                event_type: e.event_type?,
                source: e.source?,
                subject: e.subject?,
                principal: e.principal,
                organization_id: e.organization_id,
                occurred_at: e.occurred_at?,
                recorded_at: e.recorded_at?,
                topic: e.topic?,
                payload: e.payload?,
            })
        })();
        (self.at, self.leaf_hash, entry)
    }
}
