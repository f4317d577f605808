//! Command acknowledgements: each `pmcore.der.command-ack.v1` moves its command's
//! status forward (`pending` → `received` → `applied` / `rejected` / `expired`);
//! a late or repeated ack never moves it back.

use async_trait::async_trait;
use chrono::DateTime;
use pmcore_events::domain::DerCommandAck;
use pmcore_kafka::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;
use uuid::Uuid;

pub const CONSUMER_GROUP: &str = "pmcore-worker-command-acks";
const STATUSES: &[&str] = &["received", "applied", "rejected", "expired"];

#[derive(Debug, Clone, Copy)]
pub struct RecordAcks;

#[async_trait]
impl Handler for RecordAcks {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        let ack: DerCommandAck = record
            .payload
            .clone_typed()
            .map_err(|e| HandlerError::Permanent(e.into()))?;
        let permanent = |m: String| HandlerError::Permanent(anyhow::anyhow!(m));
        if !STATUSES.contains(&ack.status.as_str()) {
            return Err(permanent(format!("unknown ack status {:?}", ack.status)));
        }
        let command_id: Uuid = ack
            .command_id
            .parse()
            .map_err(|e| permanent(format!("command_id: {e}")))?;
        let acked_at = DateTime::from_timestamp_micros(ack.acked_at)
            .ok_or_else(|| permanent("acked_at out of range".to_owned()))?;
        // An ack for a command this database never stored (another deployment's,
        // or one whose row was purged) changes nothing.
        sqlx::query(
            "update pm.der_command set status = $2, reason = $3, acked_at = $4
             where id = $1
               and (status = 'pending' or (status = 'received' and $2 <> 'received'))",
        )
        .bind(command_id)
        .bind(&ack.status)
        .bind(&ack.reason)
        .bind(acked_at)
        .execute(conn)
        .await?;
        Ok(())
    }
}
