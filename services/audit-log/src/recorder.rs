use async_trait::async_trait;
use pmcore_kafka::consumer::{Handler, HandlerError, Incoming};
use sqlx::PgConnection;

use crate::store::{self, NewEntry};

/// Appends one log entry per domain event, with its leaf and tree hashes, in the
/// consumer's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Recorder;

fn entry(record: &Incoming) -> NewEntry {
    let e = &record.envelope;
    NewEntry {
        event_id: e.id,
        event_type: e.ce_type.clone(),
        source: e.source.clone(),
        subject: e.subject.clone(),
        principal: e.principal.clone(),
        occurred_at: e.time,
        topic: record.topic.clone(),
        payload: record.payload.to_json(),
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        store::append(conn, &[entry(record)])
            .await
            .map_err(HandlerError::classify_any)
    }

    async fn handle_many(
        &self,
        conn: &mut PgConnection,
        records: &[&Incoming],
    ) -> Result<(), HandlerError> {
        let entries: Vec<NewEntry> = records.iter().map(|r| entry(r)).collect();
        store::append(conn, &entries)
            .await
            .map_err(HandlerError::classify_any)
    }
}
