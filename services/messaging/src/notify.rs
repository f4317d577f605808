//! Domain events and requests become notifications: one message per organization the
//! event concerns, queued for that organization's subscribers in the consumer's
//! transaction (so a record read twice, or a crash before the offset commit, adds
//! nothing: the inbox and the message's unique key both see to it).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pmcore_events::catalog;
use pmcore_kafka::consumer::{Handler, HandlerError, Incoming};
use pmcore_runtime::clock::SharedClock;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    audience, kinds,
    store::{self, NewMessage, Recipients},
};

/// The consumer's handler.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub clock: SharedClock,
}

/// What one record asks for.
#[derive(Debug)]
struct Notification {
    kind: &'static str,
    subject: String,
    data: Value,
    organizations: Vec<Uuid>,
}

fn permanent(message: impl Into<String>) -> HandlerError {
    HandlerError::Permanent(anyhow::anyhow!(message.into()))
}

fn db(error: sqlx::Error) -> HandlerError {
    HandlerError::classify_any(anyhow::Error::from(error))
}

/// The payload's fields, with Avro's `timestamp-micros` numbers (`…_at`) as RFC 3339.
fn data_of(payload: &Value) -> Map<String, Value> {
    let mut data = payload.as_object().cloned().unwrap_or_default();
    for (name, value) in &mut data {
        if name.ends_with("_at")
            && let Some(micros) = value.as_i64()
            && let Some(at) = DateTime::<Utc>::from_timestamp_micros(micros)
        {
            *value = Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
    data
}

fn uuid_field(data: &Map<String, Value>, name: &str) -> Result<Uuid, HandlerError> {
    data.get(name)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| permanent(format!("`{name}` is not a UUID")))
}

async fn notification(
    conn: &mut PgConnection,
    record: &Incoming,
) -> Result<Option<Notification>, HandlerError> {
    let ce_type = record.envelope.ce_type.as_str();
    let mut data = data_of(&record.payload.to_json());
    let (kind, organizations) = match ce_type {
        t if t == catalog::MESSAGING_REQUESTED.ce_type => {
            let kind = data.get("kind").and_then(Value::as_str).unwrap_or_default();
            let kind = kinds::find(kind).ok_or_else(|| {
                permanent(format!(
                    "unknown notification kind `{kind}`; known: {}",
                    kinds::names()
                ))
            })?;
            let organization = uuid_field(&data, "organization_id")?;
            let text = data
                .get("data_json")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let Ok(Value::Object(requested)) = serde_json::from_str::<Value>(text) else {
                return Err(permanent("`data_json` is not a JSON object"));
            };
            let subject = data
                .get("subject")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            return Ok(Some(Notification {
                kind: kind.name,
                subject,
                data: Value::Object(requested),
                organizations: vec![organization],
            }));
        }
        t if t == catalog::DISPATCH_EVENT_SCHEDULED.ce_type
            || t == catalog::DISPATCH_EVENT_REMINDER.ce_type
            || t == catalog::DISPATCH_EVENT_CANCELLED.ce_type
            || t == catalog::DISPATCH_EVENT_MISSED.ce_type =>
        {
            let kind = match t.split('.').nth(2).unwrap_or_default() {
                "scheduled" => "dispatch-event.scheduled",
                "reminder" => "dispatch-event.reminder",
                "cancelled" => "dispatch-event.cancelled",
                _ => "dispatch-event.missed",
            };
            let program = uuid_field(&data, "program_id")?;
            (
                kind,
                audience::program_participants(conn, program)
                    .await
                    .map_err(db)?,
            )
        }
        t if t == catalog::DISPATCH_EVENT_STARTED.ce_type
            || t == catalog::DISPATCH_EVENT_COMPLETED.ce_type =>
        {
            let kind = if t == catalog::DISPATCH_EVENT_STARTED.ce_type {
                "dispatch-event.started"
            } else {
                "dispatch-event.completed"
            };
            let program = uuid_field(&data, "program_id")?;
            let event = uuid_field(&data, "event_id")?;
            (
                kind,
                audience::event_participants(conn, program, event)
                    .await
                    .map_err(db)?,
            )
        }
        t if t == catalog::SETTLEMENT_CALCULATED.ce_type => {
            let program = uuid_field(&data, "program_id")?;
            let run = uuid_field(&data, "run_id")?;
            (
                "settlement.calculated",
                audience::settlement_payees(conn, program, run)
                    .await
                    .map_err(db)?,
            )
        }
        t if t == catalog::ENROLLMENT_STATUS_CHANGED.ce_type => {
            let from = data.get("from_status").and_then(Value::as_str);
            let to = data.get("to_status").and_then(Value::as_str);
            let kind = match (from, to) {
                (Some("requested"), Some("approved" | "active")) => "enrollment.approved",
                (_, Some("rejected")) => "enrollment.rejected",
                _ => return Ok(None),
            };
            (kind, vec![uuid_field(&data, "organization_id")?])
        }
        t if t == catalog::FILE_IMPORTED.ce_type || t == catalog::FILE_REJECTED.ce_type => {
            // A file nobody could be matched to has nobody to tell.
            let Ok(organization) = uuid_field(&data, "organization_id") else {
                return Ok(None);
            };
            let kind = if t == catalog::FILE_IMPORTED.ce_type {
                "file.imported"
            } else {
                "file.rejected"
            };
            (kind, vec![organization])
        }
        t if t == catalog::GATEWAY_DISCONNECTED.ce_type => (
            "gateway.offline",
            vec![uuid_field(&data, "organization_id")?],
        ),
        _ => return Ok(None),
    };
    if let Ok(program) = uuid_field(&data, "program_id") {
        let name = audience::program_name(conn, program).await.map_err(db)?;
        data.insert("program_name".into(), Value::String(name));
    }
    Ok(Some(Notification {
        kind,
        subject: record.envelope.subject.clone(),
        data: Value::Object(data),
        organizations,
    }))
}

#[async_trait]
impl Handler for Notifier {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        let Some(n) = notification(conn, record).await? else {
            return Ok(());
        };
        let now = self.clock.now();
        for organization_id in n.organizations {
            let message = NewMessage {
                organization_id,
                kind: n.kind,
                source_event_id: record.envelope.id,
                subject: &n.subject,
                data: &n.data,
            };
            store::create_message(conn, &message, Recipients::Subscribers, now)
                .await
                .map_err(db)?;
        }
        metrics::counter!("pmcore_messaging_notifications_total", "kind" => n.kind).increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_become_rfc3339_and_the_rest_stays() {
        let data = data_of(&serde_json::json!({
            "starts_at": 1_782_925_200_000_000_i64,
            "late_by_ms": 5,
            "program_id": "x",
        }));
        assert_eq!(data["starts_at"], "2026-07-01T17:00:00Z");
        assert_eq!(data["late_by_ms"], 5);
        assert_eq!(data["program_id"], "x");
    }
}
