//! `/v1/files`: uploads into the inbound bucket and what became of them. The api
//! only announces an upload and signs its link; the bucket watcher notices the
//! object and the worker imports it, and both write the file's status here.

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Principal, Role},
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query, created},
    gateways::{FIELD_ROLES, owner},
    pagination::{Page, PageParams},
    state::AppState,
};

/// How long an upload link stays valid.
const UPLOAD_TTL: Duration = Duration::from_secs(15 * 60);
/// How long an error-report link stays valid.
const LINK_TTL: Duration = Duration::from_secs(15 * 60);

/// Meter data comes from the utility's meter data management system.
const METER_ROLES: [Role; 2] = [Role::Admin, Role::Operator];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// DER registry: register or update DERs by external id.
    Ders,
    /// Enrollment requests: DER external id, program, committed kW.
    Enrollments,
    /// Interval meter data for settlement (the utility only).
    MeterData,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ders => "ders",
            Self::Enrollments => "enrollments",
            Self::MeterData => "meter_data",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Announced; nothing is in the bucket yet.
    AwaitingUpload,
    /// The bucket watcher noticed the object; the worker will import it.
    Uploaded,
    Importing,
    /// Every row was valid and is stored.
    Imported,
    /// Nothing was stored; `reason` says why (and the report lists bad rows).
    Rejected,
}

impl FileStatus {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "awaiting_upload" => Self::AwaitingUpload,
            "uploaded" => Self::Uploaded,
            "importing" => Self::Importing,
            "imported" => Self::Imported,
            "rejected" => Self::Rejected,
            other => anyhow::bail!("unexpected file status `{other}`"),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingUpload => "awaiting_upload",
            Self::Uploaded => "uploaded",
            Self::Importing => "importing",
            Self::Imported => "imported",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileIn {
    pub kind: FileKind,
    /// The file's name as the uploader knows it (shown back; the object key is the id).
    pub name: String,
    /// Owner; the utility's staff may upload for any organization, others for their own.
    pub organization_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileOut {
    pub id: Uuid,
    /// Null for an object whose key names no organization (only the utility sees those).
    pub organization_id: Option<Uuid>,
    pub kind: Option<FileKind>,
    pub name: String,
    pub object_key: String,
    pub size_bytes: Option<i64>,
    pub status: FileStatus,
    /// Why the file was rejected.
    pub reason: Option<String>,
    pub rows_read: i64,
    pub rows_imported: i64,
    pub rows_rejected: i64,
    /// A short-lived link to the per-row error report (CSV), when rows were rejected.
    pub error_report_url: Option<String>,
    /// Who announced the upload (`client:<id>`); null for a direct write to the bucket.
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub received_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadOut {
    #[serde(flatten)]
    pub file: FileOut,
    /// `PUT` the CSV here before `upload_expires_at` (any content type).
    pub upload_url: String,
    pub upload_expires_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, organization_id, kind, name, object_key, size_bytes, status, reason,
    rows_read, rows_imported, rows_rejected, report_key, created_by, created_at, received_at,
    finished_at";

#[derive(FromRow)]
struct Row {
    id: Uuid,
    organization_id: Option<Uuid>,
    kind: Option<String>,
    name: String,
    object_key: String,
    size_bytes: Option<i64>,
    status: String,
    reason: Option<String>,
    rows_read: i64,
    rows_imported: i64,
    rows_rejected: i64,
    report_key: Option<String>,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    received_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl Row {
    async fn into_out(self, state: &AppState) -> ApiResult<FileOut> {
        let kind = match self.kind.as_deref() {
            None => None,
            Some("ders") => Some(FileKind::Ders),
            Some("enrollments") => Some(FileKind::Enrollments),
            Some("meter_data") => Some(FileKind::MeterData),
            Some(other) => return Err(anyhow::anyhow!("unexpected file kind `{other}`").into()),
        };
        let error_report_url = match self.report_key {
            Some(key) => Some(
                pmcore_storage::presigned_get(
                    &state.reports.client,
                    &state.reports.bucket,
                    &key,
                    LINK_TTL,
                )
                .await
                .map_err(ApiError::Internal)?,
            ),
            None => None,
        };
        Ok(FileOut {
            id: self.id,
            organization_id: self.organization_id,
            kind,
            name: self.name,
            object_key: self.object_key,
            size_bytes: self.size_bytes,
            status: FileStatus::parse(&self.status)?,
            reason: self.reason,
            rows_read: self.rows_read,
            rows_imported: self.rows_imported,
            rows_rejected: self.rows_rejected,
            error_report_url,
            created_by: self.created_by,
            created_at: self.created_at,
            received_at: self.received_at,
            finished_at: self.finished_at,
        })
    }
}

/// Announce an upload: returns a short-lived link to `PUT` the CSV to. The file is
/// imported once the bucket watcher notices it; follow it at `GET /v1/files/{id}`.
#[utoipa::path(
    post, path = "/v1/files", operation_id = "file.upload", tag = "files",
    request_body = FileIn,
    responses(
        (status = 201, body = UploadOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<FileIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<UploadOut>)> {
    if input.kind == FileKind::MeterData {
        principal.require(&METER_ROLES)?;
        if principal.scope().is_some() {
            return Err(ApiError::Forbidden(
                "meter data comes from the utility".into(),
            ));
        }
    } else {
        principal.require(&FIELD_ROLES)?;
    }
    let organization_id = owner(&principal, input.organization_id)?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/name",
            "must be 1 to 200 characters, none of them control characters",
        )]));
    }
    let id = Uuid::now_v7();
    let key = format!("{organization_id}/{}/{id}.csv", input.kind.as_str());
    let row: Option<Row> = sqlx::query_as(&format!(
        "insert into pm.file (id, organization_id, kind, name, bucket, object_key, status, created_by)
         select $1, $2, $3, $4, $5, $6, 'awaiting_upload', $7
          where exists (select 1 from pm.organization where id = $2)
         returning {COLUMNS}"
    ))
    .bind(id)
    .bind(organization_id)
    .bind(input.kind.as_str())
    .bind(name)
    .bind(&state.reports.inbound_bucket)
    .bind(&key)
    .bind(principal.audit_name())
    .fetch_optional(&state.pool)
    .await?;
    let row = row.ok_or(ApiError::NotFound("organization"))?;
    let upload_url = pmcore_storage::presigned_put(
        &state.reports.client,
        &state.reports.inbound_bucket,
        &key,
        UPLOAD_TTL,
    )
    .await
    .map_err(ApiError::Internal)?;
    let file = row.into_out(&state).await?;
    let expires =
        Utc::now() + chrono::TimeDelta::from_std(UPLOAD_TTL).map_err(anyhow::Error::from)?;
    Ok(created(
        format!("/v1/files/{id}"),
        UploadOut {
            file,
            upload_url,
            upload_expires_at: expires,
        },
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FileFilter {
    kind: Option<FileKind>,
    status: Option<FileStatus>,
    organization_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List files, newest first.
#[utoipa::path(
    get, path = "/v1/files", operation_id = "file.list", tag = "files",
    params(FileFilter),
    responses(
        (status = 200, body = Page<FileOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<FileFilter>,
) -> ApiResult<Json<Page<FileOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .parse()?;
    let organization = principal.scope().or(filter.organization_id);
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from pm.file
          where ($1::uuid is null or organization_id = $1)
            and ($2::text is null or kind = $2)
            and ($3::text is null or status = $3)
            and ($4::uuid is null or id < $4)
          order by id desc limit $5"
    ))
    .bind(organization)
    .bind(filter.kind.map(FileKind::as_str))
    .bind(filter.status.map(FileStatus::as_str))
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(&state.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(row.into_out(&state).await?);
    }
    Ok(Json(Page::from_rows(out, page, |f| f.id)))
}

/// Read one file: its status, row counts, and a link to its error report.
#[utoipa::path(
    get, path = "/v1/files/{id}", operation_id = "file.get", tag = "files",
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, body = FileOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<FileOut>> {
    let row: Option<Row> = sqlx::query_as(&format!("select {COLUMNS} from pm.file where id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
    let row = row
        .filter(|r| match r.organization_id {
            Some(org) => principal.can_see(org),
            None => principal.scope().is_none(),
        })
        .ok_or(ApiError::NotFound("file"))?;
    Ok(Json(row.into_out(&state).await?))
}
