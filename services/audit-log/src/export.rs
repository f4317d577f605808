//! Exports: a range of the log as JSON Lines, each entry with its leaf hash and its
//! inclusion proof in the checkpoint the export is made against, so an auditor can
//! check it without database access (`audit-tool verify`). The file's first line
//! names the checkpoint.
//!
//! An export is a job (`audit.export`): the API records it, a runner in any instance
//! claims it, writes the file to the reports bucket part by part (S3 multipart
//! upload: memory stays at one part whatever the range) and records its progress
//! with every part. A job whose instance died stops beating and is taken over.

use std::{sync::Arc, time::Duration};

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    http::Storage,
    log::{
        bundle::{FORMAT, Header, Line, b64},
        tree,
    },
    store::{self, ENTRY_COLUMNS, EntryRow},
};

/// Entries read per query.
const CHUNK: i64 = 2000;
/// A running job whose heartbeat is older than this was abandoned.
const ABANDONED_AFTER: Duration = Duration::from_secs(120);

/// Writes the header line of an export of `from..to` against `note`.
pub fn header(
    note: &str,
    tree_size: u64,
    from: u64,
    to: u64,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let header = Header {
        format: FORMAT.to_owned(),
        checkpoint: note.to_owned(),
        tree_size,
        from,
        to,
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.push(b'\n');
    Ok(())
}

/// Writes the lines of up to [`CHUNK`] positions from `at` (below `to`); returns the
/// next position (`to` when the range is done) and how many lines were written.
pub async fn lines(
    conn: &mut PgConnection,
    tree_size: u64,
    at: u64,
    to: u64,
    out: &mut Vec<u8>,
) -> anyhow::Result<(u64, u64)> {
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "select {ENTRY_COLUMNS}, l.leaf_index
           from audit.leaf l join audit.entry e on e.seq = l.entry_seq
          where l.leaf_index >= $1 and l.leaf_index < $2 order by l.leaf_index limit $3"
    ))
    .bind(at as i64)
    .bind(to as i64)
    .bind(CHUNK)
    .fetch_all(&mut *conn)
    .await?;
    let Some(last) = rows.last().and_then(|r| r.leaf_index) else {
        return Ok((to, 0));
    };
    let count = rows.len() as u64;
    let mut wanted = std::collections::BTreeSet::new();
    for r in &rows {
        wanted.extend(tree::inclusion_reads(
            tree_size,
            r.leaf_index.unwrap_or(0) as u64,
        ));
    }
    let known = store::hashes(&mut *conn, &wanted).await?;
    for r in rows {
        let index = r.leaf_index.unwrap_or(0) as u64;
        let entry = r.entry(index);
        let proof = tree::inclusion(tree_size, index, &known)?;
        let line = Line {
            leaf_hash: b64(&entry.leaf_hash()),
            entry,
            proof: proof.iter().map(b64).collect(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.push(b'\n');
    }
    Ok((last as u64 + 1, count))
}

/// One claimed job.
#[derive(Debug, sqlx::FromRow)]
struct Job {
    id: Uuid,
    from_index: i64,
    to_index: i64,
    tree_size: i64,
    object_key: String,
}

/// Runs export jobs until cancelled.
#[derive(Debug, Clone)]
pub struct Runner {
    pub pool: PgPool,
    pub storage: Storage,
    /// Bytes per uploaded part (S3 wants at least 5 MiB but for the last).
    pub part_bytes: usize,
    /// Woken when a job is recorded, so it starts at once.
    pub wake: Arc<Notify>,
}

impl Runner {
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let claimed = self.claim().await;
            let idle = match claimed {
                Ok(Some(job)) => {
                    self.execute(job, &cancel).await;
                    false
                }
                Ok(None) => true,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "claiming an export");
                    true
                }
            };
            if cancel.is_cancelled() {
                break;
            }
            if idle {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }

    async fn claim(&self) -> sqlx::Result<Option<Job>> {
        sqlx::query_as(
            "update audit.export
                set status = 'running', started_at = coalesce(started_at, now()),
                    heartbeat_at = now(), entries = 0
              where id = (select id from audit.export
                           where status = 'pending'
                              or (status = 'running' and heartbeat_at < now() - make_interval(secs => $1))
                           order by created_at
                           for update skip locked
                           limit 1)
          returning id, from_index, to_index, tree_size, object_key",
        )
        .bind(ABANDONED_AFTER.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
    }

    async fn execute(&self, job: Job, cancel: &CancellationToken) {
        let id = job.id;
        tracing::info!(export = %id, from = job.from_index, to = job.to_index, "export started");
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            outcome = self.write(&job) => outcome,
            // Stopped mid-way: the job stays `running`; another instance (or this one
            // after its restart) takes it over when its heartbeat is old.
            () = cancel.cancelled() => return,
        };
        let recorded = match outcome {
            Ok(entries) => {
                tracing::info!(export = %id, entries, seconds = started.elapsed().as_secs_f64(), "export written");
                sqlx::query(
                    "update audit.export set status = 'done', entries = $2, finished_at = now()
                      where id = $1",
                )
                .bind(id)
                .bind(entries as i64)
                .execute(&self.pool)
                .await
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::warn!(export = %id, %error, "export failed");
                sqlx::query(
                    "update audit.export set status = 'failed', error = $2, finished_at = now()
                      where id = $1",
                )
                .bind(id)
                .bind(error)
                .execute(&self.pool)
                .await
            }
        };
        if let Err(error) = recorded {
            tracing::warn!(export = %id, %error, "recording the export's outcome");
        }
    }

    /// Writes the file; the number of entries written.
    async fn write(&self, job: &Job) -> anyhow::Result<u64> {
        let (from, to, size) = (
            job.from_index as u64,
            job.to_index as u64,
            job.tree_size as u64,
        );
        let note: String =
            sqlx::query_scalar("select note from audit.checkpoint where tree_size = $1")
                .bind(job.tree_size)
                .fetch_one(&self.pool)
                .await?;
        let s3 = &self.storage.client;
        let bucket = &self.storage.bucket;
        let upload = s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(&job.object_key)
            .content_type("application/jsonl")
            .send()
            .await
            .map_err(s3_error)?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| anyhow::anyhow!("the bucket gave no upload id"))?
            .to_owned();
        let written = self.parts(job, &note, from, to, size, &upload_id).await;
        match written {
            Ok((parts, entries)) => {
                s3.complete_multipart_upload()
                    .bucket(bucket)
                    .key(&job.object_key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(s3_error)?;
                Ok(entries)
            }
            Err(error) => {
                // Best effort: an upload never completed is invisible anyway.
                let _ = s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(&job.object_key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(error)
            }
        }
    }

    async fn parts(
        &self,
        job: &Job,
        note: &str,
        from: u64,
        to: u64,
        size: u64,
        upload_id: &str,
    ) -> anyhow::Result<(Vec<CompletedPart>, u64)> {
        let mut conn = self.pool.acquire().await?;
        let mut buffer = Vec::with_capacity(self.part_bytes + 1024 * 1024);
        header(note, size, from, to, &mut buffer)?;
        let mut parts = Vec::new();
        let (mut at, mut written) = (from, 0);
        while at < to || !buffer.is_empty() {
            if at < to {
                let (next, count) = lines(&mut conn, size, at, to, &mut buffer).await?;
                at = next;
                written += count;
            }
            if buffer.len() < self.part_bytes && at < to {
                continue;
            }
            let number = i32::try_from(parts.len() + 1)?;
            let body = std::mem::replace(&mut buffer, Vec::with_capacity(self.part_bytes));
            let part = self
                .storage
                .client
                .upload_part()
                .bucket(&self.storage.bucket)
                .key(&job.object_key)
                .upload_id(upload_id)
                .part_number(number)
                .body(body.into())
                .send()
                .await
                .map_err(s3_error)?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            sqlx::query("update audit.export set entries = $2, heartbeat_at = now() where id = $1")
                .bind(job.id)
                .bind(written as i64)
                .execute(&mut *conn)
                .await?;
        }
        Ok((parts, written))
    }
}

fn s3_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> anyhow::Error {
    anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(error))
}
