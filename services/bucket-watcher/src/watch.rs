//! The watch loop: list the inbound bucket, and record each object version not yet in
//! the ledger (`pm.file`) with its event, in one transaction per object.
//!
//! Notifications are not used: the embedded S3 server has none, and a notification
//! lost while the watcher is down would lose the file. Listing is the source of
//! truth and the ledger's unique (bucket, key, version) makes recording idempotent,
//! so any number of watchers, restarted at any point, publish each version once.

use std::{collections::HashSet, time::Duration};

use aws_sdk_s3::{primitives::DateTime as S3Time, types::Object};
use chrono::{DateTime, Utc};
use pmcore_events::domain::{FileReceived, FileRejected};
use pmcore_kafka::outbox::{self, EventMeta};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::keys::{self, Placement};

/// Lists the bucket every `interval` until cancelled.
pub async fn run(
    pool: PgPool,
    s3: aws_sdk_s3::Client,
    bucket: String,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        match scan(&pool, &s3, &bucket).await {
            Ok(found) => {
                metrics::gauge!("pmcore_bucket_watcher_last_scan_timestamp_seconds")
                    .set(Utc::now().timestamp() as f64);
                if found > 0 {
                    tracing::info!(found, bucket, "new object versions recorded");
                }
            }
            Err(error) => {
                metrics::counter!("pmcore_bucket_watcher_scan_errors_total").increment(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    bucket,
                    "scanning the inbound bucket"
                );
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass over the bucket; returns how many new versions it recorded.
pub async fn scan(pool: &PgPool, s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<u64> {
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    let mut recorded = 0;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "listing s3://{bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
        let objects: Vec<Listed> = page.contents().iter().filter_map(Listed::from).collect();
        for object in unseen(pool, bucket, objects).await? {
            if record(pool, s3, bucket, &object).await? {
                recorded += 1;
            }
        }
    }
    Ok(recorded)
}

/// An object as the listing shows it.
#[derive(Debug, Clone)]
struct Listed {
    key: String,
    modified: DateTime<Utc>,
    size: i64,
}

impl Listed {
    fn from(object: &Object) -> Option<Listed> {
        let key = object.key()?;
        if keys::is_folder(key) {
            return None;
        }
        Some(Listed {
            key: key.to_owned(),
            modified: object.last_modified().and_then(to_chrono)?,
            size: object.size().unwrap_or(0),
        })
    }
}

/// Timestamps at the microsecond, as Postgres keeps them, so a listed time compares
/// equal to the stored one.
fn to_chrono(t: &S3Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(t.to_millis().ok()? * 1000)
}

/// The listed objects whose (key, last modified, size) the ledger does not hold:
/// only those cost a HEAD request.
async fn unseen(pool: &PgPool, bucket: &str, objects: Vec<Listed>) -> anyhow::Result<Vec<Listed>> {
    if objects.is_empty() {
        return Ok(objects);
    }
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let known: HashSet<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "select object_key, listed_modified, size_bytes from pm.file
          where bucket = $1 and object_key = any($2)
            and listed_modified is not null and size_bytes is not null",
    )
    .bind(bucket)
    .bind(&keys)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    Ok(objects
        .into_iter()
        .filter(|o| !known.contains(&(o.key.clone(), o.modified, o.size)))
        .collect())
}

/// Records one object version with its event; false when it was already recorded
/// (by another watcher, or the object changed between listing and HEAD and the new
/// version is recorded instead, on a later pass).
async fn record(
    pool: &PgPool,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    listed: &Listed,
) -> anyhow::Result<bool> {
    let head = match s3
        .head_object()
        .bucket(bucket)
        .key(&listed.key)
        .send()
        .await
    {
        Ok(head) => head,
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
            // Deleted since the listing: there is nothing to import.
            return Ok(false);
        }
        Err(e) => anyhow::bail!(
            "HEAD s3://{bucket}/{}: {}",
            listed.key,
            aws_sdk_s3::error::DisplayErrorContext(e)
        ),
    };
    let modified = head
        .last_modified()
        .and_then(to_chrono)
        .unwrap_or(listed.modified);
    let version = match head.version_id().filter(|v| *v != "null") {
        Some(id) => id.to_owned(),
        None => format!(
            "{}@{}",
            head.e_tag().unwrap_or_default(),
            modified.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
    };
    let size = head.content_length().unwrap_or(listed.size);
    let object = Noticed {
        bucket,
        key: &listed.key,
        version: &version,
        listed_modified: listed.modified,
        size,
    };
    let mut tx = pool.begin().await?;
    let recorded = match keys::placement(&listed.key) {
        Ok(placement) => {
            let exists: bool =
                sqlx::query_scalar("select exists (select 1 from pm.organization where id = $1)")
                    .bind(placement.organization_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if exists {
                received(&mut tx, &object, &placement).await?
            } else {
                rejected(
                    &mut tx,
                    &object,
                    None,
                    Some(placement.kind),
                    "no organization has the id the key starts with".to_owned(),
                )
                .await?
            }
        }
        Err(error) => rejected(&mut tx, &object, None, None, error.to_string()).await?,
    };
    tx.commit().await?;
    Ok(recorded)
}

/// One object version as the HEAD request saw it.
#[derive(Debug)]
struct Noticed<'a> {
    bucket: &'a str,
    key: &'a str,
    version: &'a str,
    listed_modified: DateTime<Utc>,
    size: i64,
}

fn meta(principal: Option<String>) -> EventMeta {
    EventMeta {
        source: "bucket-watcher".to_owned(),
        principal,
        traceparent: None,
    }
}

async fn received(
    tx: &mut sqlx::PgConnection,
    object: &Noticed<'_>,
    placement: &Placement<'_>,
) -> anyhow::Result<bool> {
    // An upload the api announced becomes this version, once.
    let announced: Option<(Uuid, String, Option<String>)> =
        match keys::upload_id(placement.name) {
            Some(id) => sqlx::query_as(
                "update pm.file set status = 'uploaded', object_version = $2, listed_modified = $3,
                        size_bytes = $4, received_at = now(), updated_at = now()
                  where id = $1 and object_version is null and bucket = $5 and object_key = $6
                        and organization_id = $7 and kind = $8
                  returning id, name, created_by",
            )
            .bind(id)
            .bind(object.version)
            .bind(object.listed_modified)
            .bind(object.size)
            .bind(object.bucket)
            .bind(object.key)
            .bind(placement.organization_id)
            .bind(placement.kind)
            .fetch_optional(&mut *tx)
            .await?,
            None => None,
        };
    let file = match announced {
        Some(file) => Some(file),
        None => {
            let name = placement.name.rsplit('/').next().unwrap_or(placement.name);
            sqlx::query_as(
                "insert into pm.file (id, organization_id, kind, name, bucket, object_key,
                     object_version, listed_modified, size_bytes, status, received_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'uploaded', now())
                 on conflict (bucket, object_key, object_version) do nothing
                 returning id, name, created_by",
            )
            .bind(Uuid::now_v7())
            .bind(placement.organization_id)
            .bind(placement.kind)
            .bind(name)
            .bind(object.bucket)
            .bind(object.key)
            .bind(object.version)
            .bind(object.listed_modified)
            .bind(object.size)
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    let Some((id, name, created_by)) = file else {
        return Ok(false);
    };
    let event = FileReceived {
        file_id: id.to_string(),
        organization_id: placement.organization_id.to_string(),
        kind: placement.kind.to_owned(),
        name,
        bucket: object.bucket.to_owned(),
        object_key: object.key.to_owned(),
        object_version: object.version.to_owned(),
        size_bytes: object.size,
        received_at: Utc::now().timestamp_micros(),
    };
    outbox::enqueue(&mut *tx, &event, &meta(created_by)).await?;
    metrics::counter!("pmcore_bucket_watcher_objects_total", "outcome" => "received").increment(1);
    Ok(true)
}

async fn rejected(
    tx: &mut sqlx::PgConnection,
    object: &Noticed<'_>,
    organization_id: Option<Uuid>,
    kind: Option<&str>,
    reason: String,
) -> anyhow::Result<bool> {
    let name = object.key.rsplit('/').next().unwrap_or(object.key);
    let id: Option<Uuid> = sqlx::query_scalar(
        "insert into pm.file (id, organization_id, kind, name, bucket, object_key, object_version,
             listed_modified, size_bytes, status, reason, received_at, finished_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'rejected', $10, now(), now())
         on conflict (bucket, object_key, object_version) do nothing
         returning id",
    )
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(kind)
    .bind(name)
    .bind(object.bucket)
    .bind(object.key)
    .bind(object.version)
    .bind(object.listed_modified)
    .bind(object.size)
    .bind(&reason)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Ok(false);
    };
    tracing::warn!(key = object.key, reason, "object refused");
    let event = FileRejected {
        file_id: id.to_string(),
        organization_id: organization_id.map(|o| o.to_string()),
        kind: kind.map(str::to_owned),
        object_key: object.key.to_owned(),
        reason,
        rows_read: 0,
        rows_rejected: 0,
        report_key: None,
        rejected_at: Utc::now().timestamp_micros(),
    };
    outbox::enqueue(&mut *tx, &event, &meta(None)).await?;
    metrics::counter!("pmcore_bucket_watcher_objects_total", "outcome" => "rejected").increment(1);
    Ok(true)
}
