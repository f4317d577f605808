use async_trait::async_trait;
use pmcore_kafka::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;

/// Appends one audit entry per domain event.
#[derive(Debug, Clone, Copy)]
pub struct Recorder;

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        let e = &record.envelope;
        sqlx::query(
            "insert into audit.entry
                 (event_id, event_type, source, subject, principal, occurred_at, topic, payload)
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.id)
        .bind(&e.ce_type)
        .bind(&e.source)
        .bind(&e.subject)
        .bind(&e.principal)
        .bind(e.time)
        .bind(&record.topic)
        .bind(record.payload.to_json())
        .execute(conn)
        .await?;
        Ok(())
    }
}
