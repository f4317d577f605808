//! Messages and their deliveries in Postgres. Creating a message queues one delivery
//! per subscribed endpoint and contact and wakes the senders at commit.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The channel senders `LISTEN` on; notified in the transaction that queues work, so
/// they wake exactly when it becomes visible.
pub const WAKE_CHANNEL: &str = "messaging_delivery";

/// A notification for one organization.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub organization_id: Uuid,
    pub kind: &'a str,
    /// What caused it: a domain event's id, a request's id; with the organization and
    /// the kind it makes the message unique.
    pub source_event_id: Uuid,
    pub subject: &'a str,
    pub data: &'a Value,
}

/// Who gets a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipients {
    /// Every enabled endpoint and every contact of the organization subscribed to the kind.
    Subscribers,
    /// One endpoint only (a test message).
    Endpoint(Uuid),
    /// The organization's contacts only (news about an endpoint, which may be down).
    Contacts,
}

/// Queues a message; `None` when it already exists (the same event read again).
pub async fn create_message(
    conn: &mut PgConnection,
    message: &NewMessage<'_>,
    recipients: Recipients,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Uuid>> {
    let id = Uuid::now_v7();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "insert into messaging.message (id, organization_id, kind, source_event_id, subject, data, created_at)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (source_event_id, organization_id, kind) do nothing
         returning id",
    )
    .bind(id)
    .bind(message.organization_id)
    .bind(message.kind)
    .bind(message.source_event_id)
    .bind(message.subject)
    .bind(message.data)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = inserted else {
        return Ok(None);
    };
    let (endpoints, contacts) = match recipients {
        Recipients::Endpoint(endpoint) => (vec![endpoint], vec![]),
        Recipients::Contacts => (vec![], subscribed(conn, "contact", message).await?),
        Recipients::Subscribers => (
            subscribed(conn, "endpoint", message).await?,
            subscribed(conn, "contact", message).await?,
        ),
    };
    queue(conn, id, &endpoints, &contacts, now).await?;
    Ok(Some(id))
}

/// The organization's endpoints (enabled) or contacts subscribed to the kind.
async fn subscribed(
    conn: &mut PgConnection,
    table: &str,
    message: &NewMessage<'_>,
) -> sqlx::Result<Vec<Uuid>> {
    let enabled = if table == "endpoint" {
        "and enabled"
    } else {
        ""
    };
    sqlx::query_scalar(&format!(
        "select id from messaging.{table}
          where organization_id = $1 {enabled}
            and (cardinality(kinds) = 0 or $2 = any(kinds))"
    ))
    .bind(message.organization_id)
    .bind(message.kind)
    .fetch_all(conn)
    .await
}

/// An endpoint or a contact: where deliveries go.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Endpoint(Uuid),
    Contact(Uuid),
}

/// Drops what is still queued for a target (deleted, or an endpoint disabled).
pub async fn drop_pending(
    conn: &mut PgConnection,
    target: Target,
    reason: &str,
) -> sqlx::Result<()> {
    let (column, id) = match target {
        Target::Endpoint(id) => ("endpoint_id", id),
        Target::Contact(id) => ("contact_id", id),
    };
    sqlx::query(&format!(
        "update messaging.delivery set status = 'dropped', last_error = $2, leased_until = null
          where {column} = $1 and status = 'pending'"
    ))
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await
    .map(|_| ())
}

async fn queue(
    conn: &mut PgConnection,
    message_id: Uuid,
    endpoints: &[Uuid],
    contacts: &[Uuid],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    if endpoints.is_empty() && contacts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = (0..endpoints.len() + contacts.len())
        .map(|_| Uuid::now_v7())
        .collect();
    let endpoint_col: Vec<Option<Uuid>> = endpoints
        .iter()
        .map(|e| Some(*e))
        .chain(contacts.iter().map(|_| None))
        .collect();
    let contact_col: Vec<Option<Uuid>> = endpoints
        .iter()
        .map(|_| None)
        .chain(contacts.iter().map(|c| Some(*c)))
        .collect();
    sqlx::query(
        "insert into messaging.delivery (id, message_id, endpoint_id, contact_id, next_attempt_at, created_at)
         select id, $2, endpoint_id, contact_id, $5, $5
           from unnest($1::uuid[], $3::uuid[], $4::uuid[]) as t(id, endpoint_id, contact_id)",
    )
    .bind(&ids)
    .bind(message_id)
    .bind(&endpoint_col)
    .bind(&contact_col)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    wake(conn).await
}

/// Wakes the senders when the transaction commits.
pub async fn wake(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("select pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(conn)
        .await
        .map(|_| ())
}
