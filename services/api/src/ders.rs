//! `/v1/ders`: the DER warehouse. Single and bulk registration (all or nothing, with
//! per-item errors), filtered keyset listing, edits and decommissioning.

use std::collections::{HashMap, HashSet};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use pmcore_events::domain::{DerDecommissioned, DerRegistered, DerUpdated};
use pmcore_kafka::outbox::{self, EventMeta};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::Principal,
    error::{ApiError, ApiResult, FieldError, Problem},
    extract::{Json, Path, Query, created},
    gateways::{FIELD_ROLES, owner},
    pagination::{Page, PageParams},
    programs::model::DerType,
    state::AppState,
};

/// Most DERs one bulk request may register.
pub const BULK_LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DerStatus {
    Active,
    Decommissioned,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub feeder: Option<String>,
    pub substation: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DerIn {
    /// The owner's own identifier (meter or serial number), unique per organization.
    pub external_id: Option<String>,
    pub der_type: DerType,
    pub nameplate_kw: f64,
    pub nameplate_kwh: Option<f64>,
    #[serde(default)]
    pub location: Location,
    pub gateway_id: Option<Uuid>,
    /// Owner; the utility's staff may register for any organization, others for their own.
    pub organization_id: Option<Uuid>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DerBulkIn {
    /// 1 to 1000 DERs, registered together or not at all.
    pub items: Vec<DerIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DerBulkOut {
    pub items: Vec<DerOut>,
}

/// Changes to a DER; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DerPatch {
    pub external_id: Option<String>,
    pub nameplate_kw: Option<f64>,
    pub nameplate_kwh: Option<f64>,
    pub location: Option<Location>,
    pub gateway_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DerOut {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub gateway_id: Option<Uuid>,
    pub external_id: Option<String>,
    pub der_type: DerType,
    pub nameplate_kw: f64,
    pub nameplate_kwh: Option<f64>,
    pub location: Location,
    pub status: DerStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, organization_id, gateway_id, external_id, der_type,
    nameplate_kw::float8 as nameplate_kw, nameplate_kwh::float8 as nameplate_kwh, latitude,
    longitude, feeder, substation, status, created_at, updated_at";

#[derive(FromRow)]
struct DerRow {
    id: Uuid,
    organization_id: Uuid,
    gateway_id: Option<Uuid>,
    external_id: Option<String>,
    der_type: String,
    nameplate_kw: f64,
    nameplate_kwh: Option<f64>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    feeder: Option<String>,
    substation: Option<String>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DerRow> for DerOut {
    type Error = anyhow::Error;

    fn try_from(r: DerRow) -> anyhow::Result<Self> {
        Ok(Self {
            id: r.id,
            organization_id: r.organization_id,
            gateway_id: r.gateway_id,
            external_id: r.external_id,
            der_type: r.der_type.parse()?,
            nameplate_kw: r.nameplate_kw,
            nameplate_kwh: r.nameplate_kwh,
            location: Location {
                latitude: r.latitude,
                longitude: r.longitude,
                feeder: r.feeder,
                substation: r.substation,
            },
            status: match r.status.as_str() {
                "active" => DerStatus::Active,
                "decommissioned" => DerStatus::Decommissioned,
                other => anyhow::bail!("unexpected DER status `{other}`"),
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Field rules of one DER; `at` prefixes the pointers (`/items/3`).
fn check(der: &DerOut, at: &str, errors: &mut Vec<FieldError>) {
    let mut bad =
        |field: &str, message: &str| errors.push(FieldError::new(format!("{at}/{field}"), message));
    if !der.nameplate_kw.is_finite() || der.nameplate_kw <= 0.0 || der.nameplate_kw > 1e6 {
        bad("nameplate_kw", "must be more than 0 and at most 1000000");
    }
    if der
        .nameplate_kwh
        .is_some_and(|k| !k.is_finite() || k <= 0.0 || k > 1e7)
    {
        bad("nameplate_kwh", "must be more than 0 and at most 10000000");
    }
    if der
        .external_id
        .as_ref()
        .is_some_and(|e| e.trim().is_empty() || e.chars().count() > 100)
    {
        bad("external_id", "must be 1 to 100 characters");
    }
    let l = &der.location;
    if l.latitude.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
        bad("location/latitude", "must be between -90 and 90");
    }
    if l.longitude.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
        bad("location/longitude", "must be between -180 and 180");
    }
    for (field, value) in [
        ("location/feeder", &l.feeder),
        ("location/substation", &l.substation),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.trim().is_empty() || v.chars().count() > 100)
        {
            bad(field, "must be 1 to 100 characters");
        }
    }
}

impl DerIn {
    fn into_der(self, organization_id: Uuid) -> DerOut {
        let now = Utc::now();
        DerOut {
            id: Uuid::now_v7(),
            organization_id,
            gateway_id: self.gateway_id,
            external_id: self.external_id.map(|e| e.trim().to_owned()),
            der_type: self.der_type,
            nameplate_kw: self.nameplate_kw,
            nameplate_kwh: self.nameplate_kwh,
            location: self.location,
            status: DerStatus::Active,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Checks what needs the database: each gateway exists and belongs to the DER's
/// owner, and no external id is taken (in the database or twice in the request).
async fn check_references(
    conn: &mut PgConnection,
    ders: &[(String, &DerOut)],
    errors: &mut Vec<FieldError>,
) -> ApiResult<()> {
    let gateway_ids: Vec<Uuid> = ders.iter().filter_map(|(_, d)| d.gateway_id).collect();
    let owners: HashMap<Uuid, Uuid> = if gateway_ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (Uuid, Uuid)>(
            "select id, organization_id from pm.gateway where id = any($1)",
        )
        .bind(&gateway_ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    for (at, der) in ders {
        if let Some(gateway) = der.gateway_id
            && owners.get(&gateway) != Some(&der.organization_id)
        {
            errors.push(FieldError::new(
                format!("{at}/gateway_id"),
                "no gateway with this id belongs to the DER's organization",
            ));
        }
    }
    let mut seen: HashSet<(Uuid, String)> = HashSet::new();
    let mut wanted: Vec<(Uuid, String)> = Vec::new();
    for (at, der) in ders {
        if let Some(ext) = &der.external_id {
            if !seen.insert((der.organization_id, ext.clone())) {
                errors.push(FieldError::new(
                    format!("{at}/external_id"),
                    "appears twice in this request",
                ));
            }
            wanted.push((der.organization_id, ext.clone()));
        }
    }
    if !wanted.is_empty() {
        let (orgs, exts): (Vec<Uuid>, Vec<String>) = wanted.into_iter().unzip();
        let taken: HashSet<(Uuid, String)> = sqlx::query_as::<_, (Uuid, String)>(
            "select d.organization_id, d.external_id from pm.der d
               join unnest($1::uuid[], $2::text[]) as w(org, ext)
                 on d.organization_id = w.org and d.external_id = w.ext",
        )
        .bind(&orgs)
        .bind(&exts)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        for (at, der) in ders {
            if let Some(ext) = &der.external_id
                && taken.contains(&(der.organization_id, ext.clone()))
            {
                errors.push(FieldError::new(
                    format!("{at}/external_id"),
                    "this organization already uses it",
                ));
            }
        }
    }
    Ok(())
}

/// Inserts DERs with one statement (UNNEST) and queues one event each.
async fn insert(conn: &mut PgConnection, ders: &[DerOut], meta: &EventMeta) -> ApiResult<()> {
    let col = |f: fn(&DerOut) -> Option<String>| ders.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "insert into pm.der (id, organization_id, gateway_id, external_id, der_type, nameplate_kw,
             nameplate_kwh, latitude, longitude, feeder, substation, status, created_at, updated_at)
         select *, 'active', $12, $12 from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
             $5::text[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::text[], $11::text[])",
    )
    .bind(ders.iter().map(|d| d.id).collect::<Vec<_>>())
    .bind(ders.iter().map(|d| d.organization_id).collect::<Vec<_>>())
    .bind(ders.iter().map(|d| d.gateway_id).collect::<Vec<_>>())
    .bind(col(|d| d.external_id.clone()))
    .bind(ders.iter().map(|d| d.der_type.as_str()).collect::<Vec<_>>())
    .bind(ders.iter().map(|d| d.nameplate_kw).collect::<Vec<_>>())
    .bind(ders.iter().map(|d| d.nameplate_kwh).collect::<Vec<_>>())
    .bind(ders.iter().map(|d| d.location.latitude).collect::<Vec<_>>())
    .bind(ders.iter().map(|d| d.location.longitude).collect::<Vec<_>>())
    .bind(col(|d| d.location.feeder.clone()))
    .bind(col(|d| d.location.substation.clone()))
    .bind(ders.first().map(|d| d.created_at).unwrap_or_else(Utc::now))
    .execute(&mut *conn)
    .await?;
    for der in ders {
        let event = DerRegistered {
            der_id: der.id.to_string(),
            organization_id: der.organization_id.to_string(),
            gateway_id: der.gateway_id.map(|g| g.to_string()),
            external_id: der.external_id.clone(),
            der_type: der.der_type.as_str().to_owned(),
            nameplate_kw: der.nameplate_kw,
            nameplate_kwh: der.nameplate_kwh,
            feeder: der.location.feeder.clone(),
            substation: der.location.substation.clone(),
            registered_at: der.created_at.timestamp_micros(),
        };
        outbox::enqueue(&mut *conn, &event, meta).await?;
    }
    Ok(())
}

async fn register_all(
    state: &AppState,
    principal: &Principal,
    items: Vec<DerIn>,
    bulk: bool,
) -> ApiResult<Vec<DerOut>> {
    principal.require(&FIELD_ROLES)?;
    let mut errors = Vec::new();
    let mut ders = Vec::with_capacity(items.len());
    for item in items {
        let org = owner(principal, item.organization_id)?;
        ders.push(item.into_der(org));
    }
    let at = |i: usize| {
        if bulk {
            format!("/items/{i}")
        } else {
            String::new()
        }
    };
    for (i, der) in ders.iter().enumerate() {
        check(der, &at(i), &mut errors);
    }
    let mut tx = state.pool.begin().await?;
    let labelled: Vec<(String, &DerOut)> =
        ders.iter().enumerate().map(|(i, d)| (at(i), d)).collect();
    check_references(&mut tx, &labelled, &mut errors).await?;
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    insert(&mut tx, &ders, &principal.event_meta("api")).await?;
    tx.commit().await?;
    metrics::counter!("pmcore_api_ders_registered_total").increment(ders.len() as u64);
    Ok(ders)
}

/// Register one DER.
#[utoipa::path(
    post, path = "/v1/ders", operation_id = "der.create", tag = "ders",
    request_body = DerIn,
    responses(
        (status = 201, body = DerOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<DerIn>,
) -> ApiResult<(StatusCode, HeaderMap, Json<DerOut>)> {
    let der = register_all(&state, &principal, vec![input], false)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("one DER in, none out"))?;
    Ok(created(format!("/v1/ders/{}", der.id), der))
}

/// Register up to 1000 DERs at once: all of them, or none with an error per item.
#[utoipa::path(
    post, path = "/v1/ders/bulk", operation_id = "der.bulk_create", tag = "ders",
    request_body = DerBulkIn,
    responses(
        (status = 201, body = DerBulkOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Nothing was registered; `errors` point at `/items/<n>/<field>`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bulk_create(
    State(state): State<AppState>,
    principal: Principal,
    Json(input): Json<DerBulkIn>,
) -> ApiResult<(StatusCode, Json<DerBulkOut>)> {
    if input.items.is_empty() || input.items.len() > BULK_LIMIT {
        return Err(ApiError::invalid(
            "/items",
            format!("must hold 1 to {BULK_LIMIT} DERs"),
        ));
    }
    let items = register_all(&state, &principal, input.items, true).await?;
    Ok((StatusCode::CREATED, Json(DerBulkOut { items })))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DerFilter {
    der_type: Option<DerType>,
    feeder: Option<String>,
    substation: Option<String>,
    organization_id: Option<Uuid>,
    gateway_id: Option<Uuid>,
    status: Option<DerStatus>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List DERs, oldest first, by any combination of filters.
#[utoipa::path(
    get, path = "/v1/ders", operation_id = "der.list", tag = "ders",
    params(DerFilter),
    responses(
        (status = 200, body = Page<DerOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(filter): Query<DerFilter>,
) -> ApiResult<Json<Page<DerOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .parse()?;
    // Only the filters given become predicates, so the planner can use the index
    // that ends in `id` for the most selective one.
    let mut q: QueryBuilder<'_, Postgres> =
        QueryBuilder::new(format!("select {COLUMNS} from pm.der where true"));
    if let Some(org) = principal.scope().or(filter.organization_id) {
        q.push(" and organization_id = ").push_bind(org);
    }
    if let Some(t) = filter.der_type {
        q.push(" and der_type = ").push_bind(t.as_str());
    }
    if let Some(f) = &filter.feeder {
        q.push(" and feeder = ").push_bind(f.clone());
    }
    if let Some(s) = &filter.substation {
        q.push(" and substation = ").push_bind(s.clone());
    }
    if let Some(g) = filter.gateway_id {
        q.push(" and gateway_id = ").push_bind(g);
    }
    if let Some(s) = filter.status {
        q.push(" and status = ").push_bind(match s {
            DerStatus::Active => "active",
            DerStatus::Decommissioned => "decommissioned",
        });
    }
    if let Some(after) = page.after {
        q.push(" and id > ").push_bind(after);
    }
    q.push(" order by id limit ").push_bind(page.fetch());
    let rows: Vec<DerRow> = q.build_query_as().fetch_all(&state.pool).await?;
    let items = rows
        .into_iter()
        .map(DerOut::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Json(Page::from_rows(items, page, |d| d.id)))
}

async fn fetch(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> ApiResult<DerOut> {
    let sql = format!(
        "select {COLUMNS} from pm.der where id = $1{}",
        if lock { " for update" } else { "" }
    );
    let row: Option<DerRow> = sqlx::query_as(&sql).bind(id).fetch_optional(conn).await?;
    row.map(DerOut::try_from)
        .transpose()?
        .filter(|d| principal.can_see(d.organization_id))
        .ok_or(ApiError::NotFound("DER"))
}

/// Read one DER.
#[utoipa::path(
    get, path = "/v1/ders/{id}", operation_id = "der.get", tag = "ders",
    params(("id" = Uuid, Path, description = "DER id")),
    responses(
        (status = 200, body = DerOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DerOut>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(fetch(&mut conn, &principal, id, false).await?))
}

/// Edit a DER that is in service.
#[utoipa::path(
    patch, path = "/v1/ders/{id}", operation_id = "der.update", tag = "ders",
    params(("id" = Uuid, Path, description = "DER id")),
    request_body = DerPatch,
    responses(
        (status = 200, body = DerOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The DER is decommissioned", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(patch): Json<DerPatch>,
) -> ApiResult<Json<DerOut>> {
    principal.require(&FIELD_ROLES)?;
    let mut tx = state.pool.begin().await?;
    let mut der = fetch(&mut tx, &principal, id, true).await?;
    if der.status == DerStatus::Decommissioned {
        return Err(ApiError::Conflict(
            "a decommissioned DER cannot be edited".into(),
        ));
    }
    let mut changed = Vec::new();
    macro_rules! set {
        ($field:ident, $value:expr) => {
            if let Some(v) = $value {
                if der.$field != v {
                    der.$field = v;
                    changed.push(stringify!($field));
                }
            }
        };
    }
    set!(
        external_id,
        patch.external_id.map(|e| Some(e.trim().to_owned()))
    );
    set!(nameplate_kw, patch.nameplate_kw);
    set!(nameplate_kwh, patch.nameplate_kwh.map(Some));
    set!(location, patch.location);
    set!(gateway_id, patch.gateway_id.map(Some));
    let mut errors = Vec::new();
    check(&der, "", &mut errors);
    if changed.contains(&"gateway_id") || changed.contains(&"external_id") {
        let probe = DerOut {
            external_id: der
                .external_id
                .clone()
                .filter(|_| changed.contains(&"external_id")),
            gateway_id: der.gateway_id.filter(|_| changed.contains(&"gateway_id")),
            ..der.clone()
        };
        check_references(&mut tx, &[(String::new(), &probe)], &mut errors).await?;
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if changed.is_empty() {
        return Ok(Json(der));
    }
    der.updated_at = Utc::now();
    sqlx::query(
        "update pm.der set external_id = $2, nameplate_kw = $3, nameplate_kwh = $4, latitude = $5,
            longitude = $6, feeder = $7, substation = $8, gateway_id = $9, updated_at = $10
          where id = $1",
    )
    .bind(der.id)
    .bind(&der.external_id)
    .bind(der.nameplate_kw)
    .bind(der.nameplate_kwh)
    .bind(der.location.latitude)
    .bind(der.location.longitude)
    .bind(&der.location.feeder)
    .bind(&der.location.substation)
    .bind(der.gateway_id)
    .bind(der.updated_at)
    .execute(&mut *tx)
    .await?;
    let event = DerUpdated {
        der_id: der.id.to_string(),
        organization_id: der.organization_id.to_string(),
        changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
        der_json: serde_json::to_string(&der).map_err(anyhow::Error::from)?,
        updated_at: der.updated_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(Json(der))
}

/// Take a DER out of service. It stays in the warehouse for history.
#[utoipa::path(
    post, path = "/v1/ders/{id}/decommission", operation_id = "der.decommission", tag = "ders",
    params(("id" = Uuid, Path, description = "DER id")),
    responses(
        (status = 200, body = DerOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already decommissioned", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn decommission(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DerOut>> {
    principal.require(&FIELD_ROLES)?;
    let mut tx = state.pool.begin().await?;
    let mut der = fetch(&mut tx, &principal, id, true).await?;
    if der.status == DerStatus::Decommissioned {
        return Err(ApiError::Conflict(
            "the DER is already decommissioned".into(),
        ));
    }
    der.status = DerStatus::Decommissioned;
    der.updated_at = Utc::now();
    sqlx::query("update pm.der set status = 'decommissioned', updated_at = $2 where id = $1")
        .bind(der.id)
        .bind(der.updated_at)
        .execute(&mut *tx)
        .await?;
    let event = DerDecommissioned {
        der_id: der.id.to_string(),
        organization_id: der.organization_id.to_string(),
        decommissioned_at: der.updated_at.timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &principal.event_meta("api")).await?;
    tx.commit().await?;
    Ok(Json(der))
}
