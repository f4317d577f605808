//! Telemetry frames: checked against the gateway's DERs, produced to
//! `der.telemetry.v1`, acknowledged once the broker has them.

use chrono::{DateTime, Duration, Utc};
use pmcore_events::domain::{Reading, TelemetryBatch};
use pmcore_kafka::producer::Pending;
use rdkafka::producer::FutureRecord;

use crate::{
    auth::Gateway,
    commands::record_parts,
    hub::Hub,
    protocol::{ErrorCode, WireReading},
};

pub const MAX_READINGS: usize = 5000;
const MAX_BATCH_ID: usize = 100;
const MAX_FUTURE: Duration = Duration::minutes(5);
const MAX_AGE: Duration = Duration::days(30);
const MAX_ABS_KW: f64 = 1.0e6;

pub type Refusal = (ErrorCode, String);

/// Checks a batch. Every reading must be valid and for one of the gateway's DERs;
/// otherwise nothing of the batch is stored.
pub fn check(
    gateway: &Gateway,
    batch_id: &str,
    readings: &[WireReading],
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let invalid = |message: String| Err((ErrorCode::Invalid, message));
    if batch_id.is_empty() || batch_id.len() > MAX_BATCH_ID {
        return invalid(format!("batch_id must have 1 to {MAX_BATCH_ID} characters"));
    }
    if readings.is_empty() || readings.len() > MAX_READINGS {
        return invalid(format!("a batch has 1 to {MAX_READINGS} readings"));
    }
    for (i, r) in readings.iter().enumerate() {
        if !r.power_kw.is_finite() || r.power_kw.abs() > MAX_ABS_KW {
            return invalid(format!("readings[{i}].power_kw is not a plausible power"));
        }
        if r.soc_pct.is_some_and(|s| !(0.0..=100.0).contains(&s)) {
            return invalid(format!("readings[{i}].soc_pct must be within 0..=100"));
        }
        if r.ts > now + MAX_FUTURE || r.ts < now - MAX_AGE {
            return invalid(format!(
                "readings[{i}].ts must be within 30 days before and 5 minutes after {now}"
            ));
        }
    }
    let mut foreign: Vec<String> = readings
        .iter()
        .filter(|r| !gateway.ders.contains(&r.der_id))
        .map(|r| r.der_id.to_string())
        .collect();
    if !foreign.is_empty() {
        foreign.sort();
        foreign.dedup();
        let shown = foreign
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        return Err((
            ErrorCode::UnknownDer,
            format!(
                "{} DER(s) are not controlled by this gateway: {shown}",
                foreign.len()
            ),
        ));
    }
    Ok(())
}

pub fn has_foreign(gateway: &Gateway, readings: &[WireReading]) -> bool {
    readings.iter().any(|r| !gateway.ders.contains(&r.der_id))
}

/// Hands the batch to the producer; the future resolves when the broker has it.
pub fn produce(
    hub: &Hub,
    gateway: &Gateway,
    batch_id: String,
    readings: Vec<WireReading>,
) -> Result<Pending, Refusal> {
    let batch = TelemetryBatch {
        batch_id,
        gateway_id: gateway.id.to_string(),
        organization_id: gateway.organization_id.to_string(),
        received_at: Utc::now().timestamp_micros(),
        readings: readings
            .into_iter()
            .map(|r| Reading {
                der_id: r.der_id.to_string(),
                ts: r.ts.timestamp_micros(),
                power_kw: r.power_kw,
                soc_pct: r.soc_pct,
            })
            .collect(),
    };
    let unavailable = |e: String| (ErrorCode::Unavailable, e);
    let (topic, key, headers, payload) =
        record_parts(hub, &batch, gateway.id).map_err(|e| unavailable(format!("{e:#}")))?;
    let record = FutureRecord::to(&topic)
        .key(&key)
        .headers(headers)
        .payload(&payload);
    hub.producer
        .send_result(record)
        .map_err(|e| unavailable(format!("the relay cannot queue the batch now: {e}")))
}
