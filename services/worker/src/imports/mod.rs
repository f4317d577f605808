//! File imports: each `file.received` is imported in the consumer's transaction, so
//! the inbox row, every change the file makes, its domain events and its outcome
//! commit together. A worker killed mid-import leaves nothing behind and the record
//! comes again; a redelivered record finds its inbox row and is skipped.
//!
//! The object is streamed: a blocking task reads it through the `csv` crate and sends
//! parsed rows in chunks over a bounded channel, so memory does not grow with the
//! file. Every import is all or nothing: the changes go into a savepoint that is
//! rolled back when any row is bad, and the bad rows go to a report in the reports
//! bucket.

pub mod apply;
pub mod format;
pub mod report;
pub mod rows;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::{error::SdkError, operation::get_object::GetObjectError};
use chrono::Utc;
use pmcore_events::{
    catalog,
    domain::{FileImported, FileReceived, FileRejected},
};
use pmcore_kafka::{
    consumer::{Handler, HandlerError, Incoming},
    outbox::{self, EventMeta},
};
use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::mpsc;
use uuid::Uuid;

use self::{
    apply::Applier,
    format::{FileError, Kind, Records},
    report::Rejections,
    rows::RowError,
};

pub const CONSUMER_GROUP: &str = "pmcore-worker-imports";

#[derive(Debug, Clone, clap::Args)]
pub struct ImportConfig {
    /// Largest file the worker imports, in bytes; a larger one is rejected unread.
    #[arg(
        long = "import-max-bytes",
        env = "PMCORE_WORKER_IMPORT_MAX_BYTES",
        default_value_t = 512 * 1024 * 1024
    )]
    pub max_bytes: u64,

    /// Rows parsed and written per statement.
    #[arg(
        long = "import-chunk-rows",
        env = "PMCORE_WORKER_IMPORT_CHUNK_ROWS",
        default_value_t = 5000
    )]
    pub chunk_rows: usize,

    /// Row errors listed in a rejected file's report (all are counted).
    #[arg(
        long = "import-report-max-errors",
        env = "PMCORE_WORKER_IMPORT_REPORT_MAX_ERRORS",
        default_value_t = 10_000
    )]
    pub report_max_errors: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            chunk_rows: 5000,
            report_max_errors: 10_000,
        }
    }
}

/// The consumer's handler.
#[derive(Debug, Clone)]
pub struct ImportFiles {
    pub pool: PgPool,
    pub s3: aws_sdk_s3::Client,
    pub reports_bucket: String,
    pub config: ImportConfig,
}

pub fn handler(
    pool: PgPool,
    s3: aws_sdk_s3::Client,
    reports_bucket: String,
    config: ImportConfig,
) -> Arc<ImportFiles> {
    Arc::new(ImportFiles {
        pool,
        s3,
        reports_bucket,
        config,
    })
}

#[async_trait]
impl Handler for ImportFiles {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        if record.envelope.ce_type != catalog::FILE_RECEIVED.ce_type {
            return Ok(());
        }
        let received: FileReceived = record
            .payload
            .clone_typed()
            .map_err(|e| HandlerError::Permanent(e.into()))?;
        let file_id: Uuid = received
            .file_id
            .parse()
            .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("file_id: {e}")))?;
        // Shown while the import runs; the outcome replaces it in the import's
        // transaction, and a crash leaves it for the redelivery to finish.
        sqlx::query(
            "update pm.file set status = 'importing', updated_at = now()
              where id = $1 and status = 'uploaded'",
        )
        .bind(file_id)
        .execute(&self.pool)
        .await?;
        let started = std::time::Instant::now();
        let outcome = self.import(conn, file_id).await?;
        metrics::histogram!("pmcore_worker_import_seconds", "kind" => received.kind.clone())
            .record(started.elapsed().as_secs_f64());
        if let Some(outcome) = outcome {
            tracing::info!(
                file = %file_id,
                kind = received.kind,
                rows_read = outcome.rows_read,
                imported = outcome.imported,
                rejected = outcome.rejected.as_deref().unwrap_or("no"),
                seconds = started.elapsed().as_secs_f64(),
                "file import finished"
            );
        }
        Ok(())
    }
}

/// The file row as the import needs it.
#[derive(Debug, sqlx::FromRow)]
struct FileRow {
    organization_id: Option<Uuid>,
    kind: Option<String>,
    bucket: String,
    object_key: String,
    object_version: Option<String>,
    size_bytes: Option<i64>,
    status: String,
    created_by: Option<String>,
}

/// What an import did, for the log.
#[derive(Debug)]
pub struct Outcome {
    pub rows_read: u64,
    pub imported: u64,
    pub rejected: Option<String>,
}

/// What the reading task sends: parsed rows and the errors of the rows that were not.
#[derive(Debug)]
pub struct Chunk<T> {
    pub rows: Vec<T>,
    pub errors: Vec<Vec<RowError>>,
}

impl ImportFiles {
    async fn import(
        &self,
        conn: &mut PgConnection,
        file_id: Uuid,
    ) -> Result<Option<Outcome>, HandlerError> {
        let Some(file) = sqlx::query_as::<_, FileRow>(
            "select organization_id, kind, bucket, object_key, object_version, size_bytes,
                    status, created_by
               from pm.file where id = $1 for update",
        )
        .bind(file_id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            // Another deployment's file: nothing here to import.
            return Ok(None);
        };
        if file.status == "imported" || file.status == "rejected" {
            return Ok(None);
        }
        let (Some(organization_id), Some(kind)) = (
            file.organization_id,
            file.kind.as_deref().and_then(Kind::parse),
        ) else {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "file {file_id} was received without an organization or kind"
            )));
        };
        let meta = EventMeta {
            source: "worker".to_owned(),
            principal: file.created_by.clone(),
            traceparent: None,
        };
        let target = Target {
            file_id,
            organization_id,
            kind,
            object_key: file.object_key.clone(),
            meta,
        };
        if let Some(size) = file.size_bytes
            && u64::try_from(size).unwrap_or(0) > self.config.max_bytes
        {
            let error = FileError::TooLarge {
                limit: self.config.max_bytes,
            };
            return self
                .reject(conn, &target, error.to_string(), 0, None)
                .await
                .map(Some);
        }
        let body = match self.open(&file).await {
            Ok(body) => body,
            Err(Opened::Gone(reason)) => {
                return self.reject(conn, &target, reason, 0, None).await.map(Some);
            }
            Err(Opened::Failed(e)) => return Err(HandlerError::Unavailable(e)),
        };
        let mut savepoint = conn.begin().await?;
        let mut rejections = Rejections::new(self.config.report_max_errors);
        let read = match kind {
            Kind::Ders => {
                let applier = apply::Ders::new(&target);
                self.stream(
                    body,
                    kind,
                    rows::der,
                    applier,
                    &mut savepoint,
                    &mut rejections,
                )
                .await?
            }
            Kind::Enrollments => {
                let applier = apply::Enrollments::new(&target);
                self.stream(
                    body,
                    kind,
                    rows::enrollment,
                    applier,
                    &mut savepoint,
                    &mut rejections,
                )
                .await?
            }
            Kind::MeterData => {
                let applier = apply::Meter::new(&target);
                self.stream(
                    body,
                    kind,
                    rows::meter,
                    applier,
                    &mut savepoint,
                    &mut rejections,
                )
                .await?
            }
        };
        match read {
            Read::File(error, rows_read) => {
                savepoint.rollback().await?;
                self.reject(conn, &target, error.to_string(), rows_read, None)
                    .await
                    .map(Some)
            }
            Read::Rows { rows_read, .. } if !rejections.is_empty() => {
                savepoint.rollback().await?;
                let report = self.write_report(&target, &rejections).await?;
                self.reject(
                    conn,
                    &target,
                    rejections.summary(),
                    rows_read,
                    Some((report, rejections.rows())),
                )
                .await
                .map(Some)
            }
            Read::Rows {
                rows_read,
                imported,
            } => {
                savepoint.commit().await?;
                self.finish(conn, &target, rows_read, imported).await?;
                Ok(Some(Outcome {
                    rows_read,
                    imported,
                    rejected: None,
                }))
            }
        }
    }

    async fn open(&self, file: &FileRow) -> Result<aws_sdk_s3::primitives::ByteStream, Opened> {
        let mut request = self
            .s3
            .get_object()
            .bucket(&file.bucket)
            .key(&file.object_key);
        match file.object_version.as_deref().map(split_version) {
            Some(Version::Id(id)) => request = request.version_id(id),
            // An unversioned bucket: read the content that was noticed, or nothing.
            Some(Version::ETag(etag)) => request = request.if_match(etag),
            None => {}
        }
        match request.send().await {
            Ok(output) => Ok(output.body),
            Err(SdkError::ServiceError(e)) => {
                let status = e.raw().status().as_u16();
                match e.err() {
                    GetObjectError::NoSuchKey(_) => {
                        Err(Opened::Gone("the object was deleted before it was imported".into()))
                    }
                    _ if status == 404 => {
                        Err(Opened::Gone("the object was deleted before it was imported".into()))
                    }
                    _ if status == 412 => Err(Opened::Gone(
                        "the object was replaced before it was imported (the new version is imported on its own)"
                            .into(),
                    )),
                    other => Err(Opened::Failed(anyhow::anyhow!(
                        "reading s3://{}/{}: {}",
                        file.bucket,
                        file.object_key,
                        aws_sdk_s3::error::DisplayErrorContext(other)
                    ))),
                }
            }
            Err(e) => Err(Opened::Failed(anyhow::anyhow!(
                "reading s3://{}/{}: {}",
                file.bucket,
                file.object_key,
                aws_sdk_s3::error::DisplayErrorContext(e)
            ))),
        }
    }

    /// Reads the object on a blocking thread and applies its rows chunk by chunk.
    async fn stream<T, A>(
        &self,
        body: aws_sdk_s3::primitives::ByteStream,
        kind: Kind,
        parse: fn(&format::Header, &format::Record) -> Result<T, Vec<RowError>>,
        mut applier: A,
        conn: &mut PgConnection,
        rejections: &mut Rejections,
    ) -> Result<Read, HandlerError>
    where
        T: Send + 'static,
        A: Applier<Row = T>,
    {
        let (sender, mut receiver) = mpsc::channel::<Chunk<T>>(2);
        let max_bytes = self.config.max_bytes;
        let chunk_rows = self.config.chunk_rows.max(1);
        let reader = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new(body.into_async_read());
            read_chunks(
                std::io::BufReader::with_capacity(256 * 1024, bridge),
                kind,
                max_bytes,
                chunk_rows,
                parse,
                |chunk| sender.blocking_send(chunk).is_ok(),
            )
        });
        let mut imported = 0u64;
        while let Some(chunk) = receiver.recv().await {
            for errors in chunk.errors {
                rejections.add(errors);
            }
            let applied = applier
                .apply(conn, chunk.rows, rejections)
                .await
                .map_err(HandlerError::classify_any)?;
            imported += applied;
        }
        let result = reader
            .await
            .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("the file reader failed: {e}")))?;
        Ok(match result {
            Ok(rows_read) => Read::Rows {
                rows_read,
                imported,
            },
            Err((FileError::Read(message), _)) => {
                return Err(HandlerError::Unavailable(anyhow::anyhow!(
                    "reading the object: {message}"
                )));
            }
            Err((error, rows_read)) => Read::File(error, rows_read),
        })
    }

    async fn write_report(
        &self,
        target: &Target,
        rejections: &Rejections,
    ) -> Result<String, HandlerError> {
        let key = format!(
            "files/{}/{}/errors.csv",
            target.organization_id, target.file_id
        );
        let body = rejections.to_csv().map_err(HandlerError::Permanent)?;
        crate::settlement::store::put(&self.s3, &self.reports_bucket, &key, body, "text/csv")
            .await
            .map_err(HandlerError::Unavailable)?;
        Ok(key)
    }

    async fn reject(
        &self,
        conn: &mut PgConnection,
        target: &Target,
        reason: String,
        rows_read: u64,
        report: Option<(String, u64)>,
    ) -> Result<Outcome, HandlerError> {
        let rows_rejected = report.as_ref().map_or(0, |(_, n)| *n);
        let report_key = report.map(|(key, _)| key);
        sqlx::query(
            "update pm.file set status = 'rejected', reason = $2, rows_read = $3,
                    rows_imported = 0, rows_rejected = $4, report_key = $5,
                    finished_at = now(), updated_at = now()
              where id = $1",
        )
        .bind(target.file_id)
        .bind(&reason)
        .bind(to_i64(rows_read))
        .bind(to_i64(rows_rejected))
        .bind(&report_key)
        .execute(&mut *conn)
        .await?;
        let event = FileRejected {
            file_id: target.file_id.to_string(),
            organization_id: Some(target.organization_id.to_string()),
            kind: Some(target.kind.as_str().to_owned()),
            object_key: target.object_key.clone(),
            reason: reason.clone(),
            rows_read: to_i64(rows_read),
            rows_rejected: to_i64(rows_rejected),
            report_key,
            rejected_at: Utc::now().timestamp_micros(),
        };
        outbox::enqueue(conn, &event, &target.meta)
            .await
            .map_err(HandlerError::classify_any)?;
        metrics::counter!("pmcore_worker_files_total", "kind" => target.kind.as_str(), "outcome" => "rejected")
            .increment(1);
        Ok(Outcome {
            rows_read,
            imported: 0,
            rejected: Some(reason),
        })
    }

    async fn finish(
        &self,
        conn: &mut PgConnection,
        target: &Target,
        rows_read: u64,
        imported: u64,
    ) -> Result<(), HandlerError> {
        sqlx::query(
            "update pm.file set status = 'imported', reason = null, rows_read = $2,
                    rows_imported = $3, rows_rejected = 0, finished_at = now(), updated_at = now()
              where id = $1",
        )
        .bind(target.file_id)
        .bind(to_i64(rows_read))
        .bind(to_i64(imported))
        .execute(&mut *conn)
        .await?;
        let event = FileImported {
            file_id: target.file_id.to_string(),
            organization_id: target.organization_id.to_string(),
            kind: target.kind.as_str().to_owned(),
            rows_read: to_i64(rows_read),
            rows_imported: to_i64(imported),
            imported_at: Utc::now().timestamp_micros(),
        };
        outbox::enqueue(conn, &event, &target.meta)
            .await
            .map_err(HandlerError::classify_any)?;
        metrics::counter!("pmcore_worker_files_total", "kind" => target.kind.as_str(), "outcome" => "imported")
            .increment(1);
        metrics::counter!("pmcore_worker_import_rows_total", "kind" => target.kind.as_str())
            .increment(rows_read);
        Ok(())
    }
}

/// The file being imported, as every applier sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub file_id: Uuid,
    pub organization_id: Uuid,
    pub kind: Kind,
    pub object_key: String,
    pub meta: EventMeta,
}

enum Opened {
    /// The object cannot be read as noticed: the file is rejected.
    Gone(String),
    /// S3 failed: try again.
    Failed(anyhow::Error),
}

enum Read {
    Rows { rows_read: u64, imported: u64 },
    File(FileError, u64),
}

enum Version<'a> {
    Id(&'a str),
    ETag(&'a str),
}

/// Splits a stored version: an S3 version id, or `<etag>@<last modified>`.
fn split_version(version: &str) -> Version<'_> {
    match version.rsplit_once('@') {
        Some((etag, _)) => Version::ETag(etag),
        None => Version::Id(version),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads every record, parses it and hands chunks of `chunk_rows` records to `send`
/// (which says whether to go on). Returns the number of data rows read, or the fault
/// that refuses the file with the rows read until then.
pub fn read_chunks<R: std::io::Read, T>(
    read: R,
    kind: Kind,
    max_bytes: u64,
    chunk_rows: usize,
    parse: fn(&format::Header, &format::Record) -> Result<T, Vec<RowError>>,
    mut send: impl FnMut(Chunk<T>) -> bool,
) -> Result<u64, (FileError, u64)> {
    let mut records = Records::open(read, kind, max_bytes).map_err(|e| (e, 0))?;
    let mut rows_read = 0u64;
    let mut chunk = Chunk {
        rows: Vec::with_capacity(chunk_rows),
        errors: Vec::new(),
    };
    loop {
        let record = match records.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e) => return Err((e, rows_read)),
        };
        rows_read += 1;
        match parse(records.header(), &record) {
            Ok(row) => chunk.rows.push(row),
            Err(errors) => chunk.errors.push(errors),
        }
        if chunk.rows.len() + chunk.errors.len() >= chunk_rows {
            let full = std::mem::replace(
                &mut chunk,
                Chunk {
                    rows: Vec::with_capacity(chunk_rows),
                    errors: Vec::new(),
                },
            );
            if !send(full) {
                return Ok(rows_read);
            }
        }
    }
    if !chunk.rows.is_empty() || !chunk.errors.is_empty() {
        send(chunk);
    }
    Ok(rows_read)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(text: &[u8], kind: Kind) -> Result<u64, (FileError, u64)> {
        let chunk = |_: Chunk<()>| true;
        match kind {
            Kind::Ders => read_chunks(
                text,
                kind,
                1 << 16,
                7,
                |h, r| rows::der(h, r).map(drop),
                chunk,
            ),
            Kind::Enrollments => read_chunks(
                text,
                kind,
                1 << 16,
                7,
                |h, r| rows::enrollment(h, r).map(drop),
                chunk,
            ),
            Kind::MeterData => read_chunks(
                text,
                kind,
                1 << 16,
                7,
                |h, r| rows::meter(h, r).map(drop),
                chunk,
            ),
        }
    }

    /// Cells a file might hold, good and bad, so generated lines reach the row checks.
    fn cell() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("battery".to_owned()),
            Just("2026-07-01T17:00:00Z".to_owned()),
            Just("0195f3a0-0000-7000-8000-000000000001".to_owned()),
            Just("\"a,\nb\"".to_owned()),
            "-?[0-9]{1,8}(\\.[0-9]{0,4})?(e[0-9]{1,3})?",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn no_bytes_make_the_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for kind in Kind::ALL {
                let _ = run(&bytes, kind);
            }
        }

        #[test]
        fn no_lines_under_a_valid_header_make_the_row_checks_panic(
            lines in proptest::collection::vec(proptest::collection::vec(cell(), 0..11), 0..12),
        ) {
            let body: String = lines.iter().map(|l| l.join(",") + "\n").collect();
            for (kind, header) in [
                (Kind::Ders, "external_id,der_type,nameplate_kw,nameplate_kwh,latitude,longitude,feeder,substation,gateway_id"),
                (Kind::Enrollments, "der_external_id,program_id,committed_kw"),
                (Kind::MeterData, "der_external_id,interval_start,interval_minutes,kw"),
                (Kind::MeterData, "der_id,interval_start,interval_minutes,kwh"),
            ] {
                let text = format!("{header}\n{body}");
                // Cells may hold quotes and line breaks, so lines are not records; a
                // record still needs a line of its own.
                let most = body.matches('\n').count() as u64 + 1;
                match run(text.as_bytes(), kind) {
                    Ok(read) => prop_assert!(read <= most),
                    Err((error, read)) => {
                        prop_assert!(read <= most);
                        prop_assert!(!error.to_string().is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn chunks_carry_every_row_once_in_order() {
        let mut text = String::from("der_external_id,program_id,committed_kw\n");
        for i in 0..23 {
            let kw = if i % 10 == 3 {
                "x".to_owned()
            } else {
                format!("{i}.5")
            };
            text += &format!("m-{i},0195f3a0-0000-7000-8000-000000000001,{kw}\n");
        }
        let mut lines = Vec::new();
        let mut bad = Vec::new();
        let read = read_chunks(
            text.as_bytes(),
            Kind::Enrollments,
            1 << 20,
            5,
            rows::enrollment,
            |chunk| {
                assert!(chunk.rows.len() + chunk.errors.len() <= 5);
                lines.extend(chunk.rows.iter().map(|r| r.line));
                bad.extend(chunk.errors.iter().map(|e| e[0].line));
                true
            },
        )
        .expect("reads");
        assert_eq!(read, 23);
        assert_eq!(bad, [5, 15]);
        assert_eq!(lines.len(), 21);
        assert!(lines.windows(2).all(|w| w[0] < w[1]));
    }
}
