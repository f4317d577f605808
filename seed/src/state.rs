//! The current state of programs, DERs and gateways as events, for a subscriber that
//! joins after they were created (`just seed-kafka`). Each object becomes the event that
//! announced it (`program.created`, `der.registered` and, for a retired DER,
//! `der.decommissioned`, `gateway.registered`) carrying its state now.
//!
//! Published again, the same state yields the same records: each `ce_id` is derived
//! from the event's type, subject and payload, so every consumer that deduplicates on
//! `ce_id` (pmcore's all do, and the contract asks subscribers to) takes it once; a
//! changed object gets a new id and is taken again.

use chrono::{DateTime, Utc};
use pmcore_events::{
    avro,
    catalog::DomainEvent,
    domain::{DerDecommissioned, DerRegistered, GatewayRegistered, ProgramCreated},
    envelope::Envelope,
};
use sqlx::PgPool;
use uuid::Uuid;

/// `ce_source` and, as `service:<name>`, `ce_principal` of what this publishes.
pub const SOURCE: &str = "seed-kafka";

/// One record ready to produce: topic (logical), key, headers, Avro value.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: &'static str,
    pub key: String,
    pub headers: Vec<(&'static str, String)>,
    pub value: Vec<u8>,
}

/// The record of `event`, with an id that depends only on what it says. The id keeps
/// the UUIDv7 layout the contract promises: the object's own time in the first 48
/// bits, then bits of a SHA-256 of type, subject and payload.
pub fn record<E: DomainEvent>(event: &E, at: DateTime<Utc>) -> anyhow::Result<Record> {
    let value = avro::encode(event)?;
    let subject = event.subject();
    let mut input = Vec::with_capacity(value.len() + 128);
    for part in [E::TYPE.ce_type.as_bytes(), subject.as_bytes(), &value] {
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part);
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&digest.as_ref()[..10]);
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid();
    let envelope = Envelope {
        id,
        time: at,
        ..Envelope::for_event(event, SOURCE, Some(format!("service:{SOURCE}")))
    };
    Ok(Record {
        topic: E::TYPE.topic.name,
        key: subject,
        headers: envelope.to_headers(),
        value,
    })
}

/// Every program, as `pmcore.program.created.v1` with its current status.
pub async fn programs(pool: &PgPool) -> anyhow::Result<Vec<Record>> {
    let rows: Vec<(Uuid, Uuid, String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "select id, organization_id, name, kind, status, created_at from pm.program order by created_at, id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, org, name, kind, status, created_at)| {
            let event = ProgramCreated {
                program_id: id.to_string(),
                organization_id: org.to_string(),
                name,
                kind,
                status,
                created_at: created_at.timestamp_micros(),
            };
            record(&event, created_at)
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct DerRow {
    id: Uuid,
    organization_id: Uuid,
    gateway_id: Option<Uuid>,
    external_id: Option<String>,
    der_type: String,
    nameplate_kw: f64,
    nameplate_kwh: Option<f64>,
    feeder: Option<String>,
    substation: Option<String>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Every DER as `pmcore.der.registered.v1` with its current attributes, and a retired
/// one also as `pmcore.der.decommissioned.v1`.
pub async fn ders(pool: &PgPool) -> anyhow::Result<Vec<Record>> {
    let rows: Vec<DerRow> = sqlx::query_as(
        "select id, organization_id, gateway_id, external_id, der_type, nameplate_kw::float8 as nameplate_kw,
                nameplate_kwh::float8 as nameplate_kwh, feeder, substation, status, created_at, updated_at
         from pm.der order by created_at, id",
    )
    .fetch_all(pool)
    .await?;
    let mut records = Vec::with_capacity(rows.len());
    for d in rows {
        let registered = DerRegistered {
            der_id: d.id.to_string(),
            organization_id: d.organization_id.to_string(),
            gateway_id: d.gateway_id.map(|g| g.to_string()),
            external_id: d.external_id,
            der_type: d.der_type,
            nameplate_kw: d.nameplate_kw,
            nameplate_kwh: d.nameplate_kwh,
            feeder: d.feeder,
            substation: d.substation,
            registered_at: d.created_at.timestamp_micros(),
        };
        records.push(record(&registered, d.created_at)?);
        if d.status == "decommissioned" {
            let retired = DerDecommissioned {
                der_id: d.id.to_string(),
                organization_id: d.organization_id.to_string(),
                decommissioned_at: d.updated_at.timestamp_micros(),
            };
            records.push(record(&retired, d.updated_at)?);
        }
    }
    Ok(records)
}

#[derive(sqlx::FromRow)]
struct GatewayRow {
    id: Uuid,
    organization_id: Uuid,
    name: String,
    firmware: Option<String>,
    created_at: DateTime<Utc>,
}

/// Every gateway as `pmcore.gateway.registered.v1` (never its secret).
pub async fn gateways(pool: &PgPool) -> anyhow::Result<Vec<Record>> {
    let rows: Vec<GatewayRow> = sqlx::query_as(
        "select id, organization_id, name, firmware, created_at from pm.gateway order by created_at, id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|g| {
            let event = GatewayRegistered {
                gateway_id: g.id.to_string(),
                organization_id: g.organization_id.to_string(),
                name: g.name,
                firmware: g.firmware,
                registered_at: g.created_at.timestamp_micros(),
            };
            record(&event, g.created_at)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(name: &str) -> GatewayRegistered {
        GatewayRegistered {
            gateway_id: "0190a000-0000-7000-8000-000000000001".into(),
            organization_id: "0190a000-0000-7000-8000-000000000002".into(),
            name: name.into(),
            firmware: None,
            registered_at: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn the_same_state_gives_the_same_record_and_a_change_a_new_id() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_000_000).expect("time");
        let a = record(&gateway("north"), at).expect("record");
        assert_eq!(a, record(&gateway("north"), at).expect("record"));
        let b = record(&gateway("north-2"), at).expect("record");
        let id = |r: &Record| {
            r.headers
                .iter()
                .find(|h| h.0 == "ce_id")
                .expect("ce_id")
                .1
                .clone()
        };
        assert_ne!(id(&a), id(&b));
        let parsed: Uuid = id(&a).parse().expect("uuid");
        assert_eq!(parsed.get_version_num(), 7);
        // The object's time, not now, so the id sorts where the object was made.
        let (secs, _) = parsed.get_timestamp().expect("v7 has a time").to_unix();
        assert_eq!(secs, 1_700_000_000);
        assert_eq!(a.topic, "pm.gateways.v1");
        assert_eq!(a.key, "0190a000-0000-7000-8000-000000000001");
    }
}
