//! The database side of each file kind: the checks that need the database (is this
//! DER yours, does this program take enrollments) and the writes, one statement per
//! chunk. Once any row of a file is bad nothing more is written: the file will be
//! rolled back, and the remaining rows are only checked, for the report.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pmcore_events::domain::{DerRegistered, DerUpdated, EnrollmentRequested};
use pmcore_kafka::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Target,
    report::Rejections,
    rows::{DerRef, DerRow, EnrollmentRow, MeterRow, RowError},
};

#[async_trait]
pub trait Applier: Send {
    type Row: Send;

    /// Checks and writes one chunk; returns the rows that changed something.
    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        rows: Vec<Self::Row>,
        rejections: &mut Rejections,
    ) -> anyhow::Result<u64>;
}

/// `ders`: registers new external ids and updates known ones (a blank cell or an
/// absent column leaves the field as it is).
#[derive(Debug)]
pub struct Ders {
    target: Target,
    seen: HashSet<String>,
}

impl Ders {
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            seen: HashSet::new(),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct StoredDer {
    id: Uuid,
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

const DER_COLUMNS: &str =
    "id, gateway_id, external_id, der_type, nameplate_kw::float8 as nameplate_kw,
    nameplate_kwh::float8 as nameplate_kwh, latitude, longitude, feeder, substation, status,
    created_at, updated_at";

impl StoredDer {
    /// The DER as the api shows it (the `der_json` of `der.updated`).
    fn json(&self, organization_id: Uuid) -> String {
        serde_json::json!({
            "id": self.id,
            "organization_id": organization_id,
            "gateway_id": self.gateway_id,
            "external_id": self.external_id,
            "der_type": self.der_type,
            "nameplate_kw": self.nameplate_kw,
            "nameplate_kwh": self.nameplate_kwh,
            "location": {
                "latitude": self.latitude,
                "longitude": self.longitude,
                "feeder": self.feeder,
                "substation": self.substation,
            },
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
        .to_string()
    }

    /// The row's values over the stored ones, and the names of the fields that differ.
    fn merged(&self, row: &DerRow) -> (StoredDer, Vec<&'static str>) {
        let mut changed = Vec::new();
        let mut pick = |name: &'static str, old: Option<f64>, new: Option<f64>| match new {
            Some(v) if Some(v) != old => {
                changed.push(name);
                Some(v)
            }
            _ => old,
        };
        let nameplate_kw = pick(
            "nameplate_kw",
            Some(self.nameplate_kw),
            Some(row.nameplate_kw),
        )
        .unwrap_or(self.nameplate_kw);
        let nameplate_kwh = pick("nameplate_kwh", self.nameplate_kwh, row.nameplate_kwh);
        let latitude = pick("location", self.latitude, row.latitude);
        let longitude = pick("location", self.longitude, row.longitude);
        let mut text = |name: &'static str, old: &Option<String>, new: &Option<String>| match new {
            Some(v) if Some(v) != old.as_ref() => {
                changed.push(name);
                Some(v.clone())
            }
            _ => old.clone(),
        };
        let feeder = text("location", &self.feeder, &row.feeder);
        let substation = text("location", &self.substation, &row.substation);
        let gateway_id = match row.gateway_id {
            Some(g) if Some(g) != self.gateway_id => {
                changed.push("gateway_id");
                Some(g)
            }
            _ => self.gateway_id,
        };
        changed.dedup();
        let merged = StoredDer {
            id: self.id,
            gateway_id,
            external_id: self.external_id.clone(),
            der_type: self.der_type.clone(),
            nameplate_kw,
            nameplate_kwh,
            latitude,
            longitude,
            feeder,
            substation,
            status: self.status.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        (merged, changed)
    }
}

#[async_trait]
impl Applier for Ders {
    type Row = DerRow;

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        rows: Vec<DerRow>,
        rejections: &mut Rejections,
    ) -> anyhow::Result<u64> {
        let org = self.target.organization_id;
        let gateways: Vec<Uuid> = rows.iter().filter_map(|r| r.gateway_id).collect();
        let owned: HashSet<Uuid> = sqlx::query_scalar(
            "select id from pm.gateway where id = any($1) and organization_id = $2",
        )
        .bind(&gateways)
        .bind(org)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let externals: Vec<&str> = rows.iter().map(|r| r.external_id.as_str()).collect();
        let stored: HashMap<String, StoredDer> = sqlx::query_as::<_, StoredDer>(&format!(
            "select {DER_COLUMNS} from pm.der where organization_id = $1 and external_id = any($2)"
        ))
        .bind(org)
        .bind(&externals)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .filter_map(|d| Some((d.external_id.clone()?, d)))
        .collect();

        let mut new = Vec::new();
        let mut updates = Vec::new();
        for row in rows {
            let mut errors = Vec::new();
            let mut bad = |column: &str, value: &str, message: &str| {
                errors.push(RowError::new(row.line, column, value, message));
            };
            if !self.seen.insert(row.external_id.clone()) {
                bad(
                    "external_id",
                    &row.external_id,
                    "appears twice in this file",
                );
            }
            if let Some(g) = row.gateway_id
                && !owned.contains(&g)
            {
                bad(
                    "gateway_id",
                    &g.to_string(),
                    "no gateway with this id belongs to your organization",
                );
            }
            match stored.get(&row.external_id) {
                Some(der) if der.status != "active" => {
                    bad(
                        "external_id",
                        &row.external_id,
                        "this DER is decommissioned",
                    );
                }
                Some(der) if der.der_type != row.der_type => bad(
                    "der_type",
                    row.der_type,
                    &format!("this DER is a {}; a DER's type cannot change", der.der_type),
                ),
                _ => {}
            }
            if !errors.is_empty() {
                rejections.add(errors);
                continue;
            }
            match stored.get(&row.external_id) {
                Some(der) => {
                    let (merged, changed) = der.merged(&row);
                    if !changed.is_empty() {
                        updates.push((merged, changed));
                    }
                }
                None => new.push(row),
            }
        }
        if !rejections.is_empty() {
            return Ok(0);
        }
        let registered = new.len() as u64;
        insert_ders(conn, &self.target, new).await?;
        let updated = updates.len() as u64;
        update_ders(conn, &self.target, updates).await?;
        Ok(registered + updated)
    }
}

async fn insert_ders(
    conn: &mut PgConnection,
    target: &Target,
    rows: Vec<DerRow>,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    let now = Utc::now();
    sqlx::query(
        "insert into pm.der (id, organization_id, gateway_id, external_id, der_type, nameplate_kw,
             nameplate_kwh, latitude, longitude, feeder, substation, status, created_at, updated_at)
         select u.id, $1, u.gateway_id, u.external_id, u.der_type, u.nameplate_kw, u.nameplate_kwh,
                u.latitude, u.longitude, u.feeder, u.substation, 'active', $11, $11
           from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::float8[], $7::float8[],
                       $8::float8[], $9::float8[], $10::text[], $12::text[])
             as u(id, gateway_id, external_id, der_type, nameplate_kw, nameplate_kwh, latitude,
                  longitude, feeder, substation)",
    )
    .bind(target.organization_id)
    .bind(&ids)
    .bind(rows.iter().map(|r| r.gateway_id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.external_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.der_type).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.nameplate_kw).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.nameplate_kwh).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.latitude).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.longitude).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.feeder.clone()).collect::<Vec<_>>())
    .bind(now)
    .bind(
        rows.iter()
            .map(|r| r.substation.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?;
    for (id, row) in ids.into_iter().zip(rows) {
        let event = DerRegistered {
            der_id: id.to_string(),
            organization_id: target.organization_id.to_string(),
            gateway_id: row.gateway_id.map(|g| g.to_string()),
            external_id: Some(row.external_id),
            der_type: row.der_type.to_owned(),
            nameplate_kw: row.nameplate_kw,
            nameplate_kwh: row.nameplate_kwh,
            feeder: row.feeder,
            substation: row.substation,
            registered_at: now.timestamp_micros(),
        };
        outbox::enqueue(&mut *conn, &event, &target.meta).await?;
    }
    Ok(())
}

async fn update_ders(
    conn: &mut PgConnection,
    target: &Target,
    updates: Vec<(StoredDer, Vec<&'static str>)>,
) -> anyhow::Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let ders = || updates.iter().map(|(d, _)| d);
    let now = Utc::now();
    sqlx::query(
        "update pm.der d set gateway_id = u.gateway_id, nameplate_kw = u.nameplate_kw,
                nameplate_kwh = u.nameplate_kwh, latitude = u.latitude, longitude = u.longitude,
                feeder = u.feeder, substation = u.substation, updated_at = $9
           from unnest($1::uuid[], $2::uuid[], $3::float8[], $4::float8[], $5::float8[],
                       $6::float8[], $7::text[], $8::text[])
             as u(id, gateway_id, nameplate_kw, nameplate_kwh, latitude, longitude, feeder, substation)
          where d.id = u.id",
    )
    .bind(ders().map(|d| d.id).collect::<Vec<_>>())
    .bind(ders().map(|d| d.gateway_id).collect::<Vec<_>>())
    .bind(ders().map(|d| d.nameplate_kw).collect::<Vec<_>>())
    .bind(ders().map(|d| d.nameplate_kwh).collect::<Vec<_>>())
    .bind(ders().map(|d| d.latitude).collect::<Vec<_>>())
    .bind(ders().map(|d| d.longitude).collect::<Vec<_>>())
    .bind(ders().map(|d| d.feeder.clone()).collect::<Vec<_>>())
    .bind(ders().map(|d| d.substation.clone()).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for (mut der, changed) in updates {
        der.updated_at = now;
        let event = DerUpdated {
            der_id: der.id.to_string(),
            organization_id: target.organization_id.to_string(),
            changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
            der_json: der.json(target.organization_id),
            updated_at: now.timestamp_micros(),
        };
        outbox::enqueue(&mut *conn, &event, &target.meta).await?;
    }
    Ok(())
}

/// `enrollments`: requests enrollments as `POST /v1/enrollments` does; the worker's
/// eligibility consumer then decides each one, as for the REST path.
#[derive(Debug)]
pub struct Enrollments {
    target: Target,
    seen: HashSet<(Uuid, String)>,
    programs: HashMap<Uuid, Option<String>>,
}

impl Enrollments {
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            seen: HashSet::new(),
            programs: HashMap::new(),
        }
    }
}

#[async_trait]
impl Applier for Enrollments {
    type Row = EnrollmentRow;

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        rows: Vec<EnrollmentRow>,
        rejections: &mut Rejections,
    ) -> anyhow::Result<u64> {
        let org = self.target.organization_id;
        let unknown: Vec<Uuid> = rows
            .iter()
            .map(|r| r.program_id)
            .filter(|p| !self.programs.contains_key(p))
            .collect();
        if !unknown.is_empty() {
            let found: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
                "select id, status from pm.program where id = any($1)",
            )
            .bind(&unknown)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
            for id in unknown {
                self.programs.insert(id, found.get(&id).cloned());
            }
        }
        let externals: Vec<&str> = rows.iter().map(|r| r.der_external_id.as_str()).collect();
        let ders: HashMap<String, (Uuid, f64, String)> =
            sqlx::query_as::<_, (String, Uuid, f64, String)>(
                "select external_id, id, nameplate_kw::float8, status from pm.der
              where organization_id = $1 and external_id = any($2)",
            )
            .bind(org)
            .bind(&externals)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(ext, id, kw, status)| (ext, (id, kw, status)))
            .collect();
        let der_ids: Vec<Uuid> = ders.values().map(|(id, _, _)| *id).collect();
        let live: HashSet<(Uuid, Uuid)> = sqlx::query_as::<_, (Uuid, Uuid)>(
            "select program_id, der_id from pm.enrollment
              where der_id = any($1) and status in ('requested', 'approved', 'active')",
        )
        .bind(&der_ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();

        let mut accepted = Vec::new();
        for row in rows {
            let mut errors = Vec::new();
            let mut bad = |column: &str, value: &str, message: String| {
                errors.push(RowError::new(row.line, column, value, message));
            };
            let program = row.program_id.to_string();
            match self.programs.get(&row.program_id).cloned().flatten() {
                None => bad("program_id", &program, "no such program".into()),
                Some(s) if s == "draft" => bad("program_id", &program, "no such program".into()),
                Some(s) if s != "open" && s != "active" => bad(
                    "program_id",
                    &program,
                    format!("the program is {s} and takes no enrollments"),
                ),
                Some(_) => {}
            }
            let der = ders.get(&row.der_external_id);
            match der {
                None => bad(
                    "der_external_id",
                    &row.der_external_id,
                    "no DER with this external id in your organization".into(),
                ),
                Some((_, _, status)) if status != "active" => bad(
                    "der_external_id",
                    &row.der_external_id,
                    "the DER is decommissioned".into(),
                ),
                Some((id, nameplate, _)) => {
                    if row.committed_kw > *nameplate {
                        bad(
                            "committed_kw",
                            &row.committed_kw.to_string(),
                            format!("must be at most the DER's nameplate ({nameplate} kW)"),
                        );
                    }
                    if live.contains(&(row.program_id, *id)) {
                        bad(
                            "der_external_id",
                            &row.der_external_id,
                            "the DER is already enrolled in this program".into(),
                        );
                    }
                }
            }
            if !self
                .seen
                .insert((row.program_id, row.der_external_id.clone()))
            {
                bad(
                    "der_external_id",
                    &row.der_external_id,
                    "appears twice for this program in this file".into(),
                );
            }
            if errors.is_empty() {
                if let Some((der_id, _, _)) = der {
                    accepted.push((*der_id, row));
                }
            } else {
                rejections.add(errors);
            }
        }
        if !rejections.is_empty() || accepted.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = accepted.iter().map(|_| Uuid::now_v7()).collect();
        let now = Utc::now();
        sqlx::query(
            "insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw,
                 created_at, updated_at)
             select u.id, u.program_id, u.der_id, $4, u.committed_kw, $6, $6
               from unnest($1::uuid[], $2::uuid[], $3::uuid[], $5::float8[])
                 as u(id, program_id, der_id, committed_kw)",
        )
        .bind(&ids)
        .bind(
            accepted
                .iter()
                .map(|(_, r)| r.program_id)
                .collect::<Vec<_>>(),
        )
        .bind(accepted.iter().map(|(d, _)| *d).collect::<Vec<_>>())
        .bind(org)
        .bind(
            accepted
                .iter()
                .map(|(_, r)| r.committed_kw)
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .execute(&mut *conn)
        .await?;
        for (id, (der_id, row)) in ids.into_iter().zip(&accepted) {
            let event = EnrollmentRequested {
                enrollment_id: id.to_string(),
                program_id: row.program_id.to_string(),
                der_id: der_id.to_string(),
                organization_id: org.to_string(),
                committed_kw: row.committed_kw,
                requested_at: now.timestamp_micros(),
            };
            outbox::enqueue(&mut *conn, &event, &self.target.meta).await?;
        }
        Ok(accepted.len() as u64)
    }
}

/// `meter_data`: interval energies into `pm.meter_interval`; a reading already
/// stored (the same file imported again) adds nothing.
#[derive(Debug)]
pub struct Meter {
    target: Target,
    /// External id → the organization's DER, or `None` when it has none by that id.
    by_external: HashMap<String, Option<Uuid>>,
    /// DER id → whether it is the organization's.
    by_id: HashMap<Uuid, bool>,
}

impl Meter {
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            by_external: HashMap::new(),
            by_id: HashMap::new(),
        }
    }

    async fn resolve(&mut self, conn: &mut PgConnection, rows: &[MeterRow]) -> anyhow::Result<()> {
        let org = self.target.organization_id;
        let mut externals: Vec<&str> = Vec::new();
        let mut ids: Vec<Uuid> = Vec::new();
        for row in rows {
            match &row.der {
                DerRef::ExternalId(e) if !self.by_external.contains_key(e) => externals.push(e),
                DerRef::Id(id) if !self.by_id.contains_key(id) => ids.push(*id),
                _ => {}
            }
        }
        if !externals.is_empty() {
            externals.sort_unstable();
            externals.dedup();
            let found: HashMap<String, Uuid> = sqlx::query_as::<_, (String, Uuid)>(
                "select external_id, id from pm.der where organization_id = $1 and external_id = any($2)",
            )
            .bind(org)
            .bind(&externals)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
            for e in externals {
                self.by_external.insert(e.to_owned(), found.get(e).copied());
            }
        }
        if !ids.is_empty() {
            ids.sort_unstable();
            ids.dedup();
            let found: HashSet<Uuid> = sqlx::query_scalar(
                "select id from pm.der where organization_id = $1 and id = any($2)",
            )
            .bind(org)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
            for id in ids {
                self.by_id.insert(id, found.contains(&id));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Applier for Meter {
    type Row = MeterRow;

    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        rows: Vec<MeterRow>,
        rejections: &mut Rejections,
    ) -> anyhow::Result<u64> {
        self.resolve(conn, &rows).await?;
        let mut der_ids = Vec::with_capacity(rows.len());
        let mut starts = Vec::with_capacity(rows.len());
        let mut minutes = Vec::with_capacity(rows.len());
        let mut energy = Vec::with_capacity(rows.len());
        for row in rows {
            let der = match &row.der {
                DerRef::ExternalId(e) => {
                    self.by_external.get(e).copied().flatten().ok_or_else(|| {
                        RowError::new(
                            row.line,
                            "der_external_id",
                            e.as_str(),
                            "no DER with this external id in your organization",
                        )
                    })
                }
                DerRef::Id(id) => match self.by_id.get(id) {
                    Some(true) => Ok(*id),
                    _ => Err(RowError::new(
                        row.line,
                        "der_id",
                        id.to_string(),
                        "no DER with this id in your organization",
                    )),
                },
            };
            match der {
                Ok(der) => {
                    der_ids.push(der);
                    starts.push(row.interval_start);
                    minutes.push(row.interval_minutes);
                    energy.push(row.energy_kwh);
                }
                Err(error) => rejections.add([error]),
            }
        }
        if !rejections.is_empty() || der_ids.is_empty() {
            return Ok(0);
        }
        let inserted = sqlx::query(
            "insert into pm.meter_interval (der_id, interval_start, interval_minutes, energy_kwh, file_id)
             select u.der_id, u.interval_start, u.interval_minutes, u.energy_kwh, $5
               from unnest($1::uuid[], $2::timestamptz[], $3::int4[], $4::float8[])
                 as u(der_id, interval_start, interval_minutes, energy_kwh)
             on conflict do nothing",
        )
        .bind(&der_ids)
        .bind(&starts)
        .bind(&minutes)
        .bind(&energy)
        .bind(self.target.file_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(inserted)
    }
}
