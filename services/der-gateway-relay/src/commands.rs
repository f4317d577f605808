//! Dispatch commands: from `der.commands.v1` into Postgres, from Postgres to sessions.
//!
//! The relays share one consumer group, so each command is stored by one instance;
//! the insert and a `NOTIFY` commit together, and every instance listens, so the
//! instance that holds the gateway's session delivers it. A gateway that is offline
//! gets its unexpired commands when it says hello, wherever it connects.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pmcore_events::{
    DomainEvent, Envelope,
    domain::{DerCommand, DerCommandAck},
};
use pmcore_kafka::consumer::{Handler, HandlerError, Incoming};
use rdkafka::{message::OwnedHeaders, producer::FutureRecord};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use uuid::Uuid;

use crate::{hub::Hub, protocol::WireCommand};

pub const CONSUMER_GROUP: &str = "pmcore-relay-commands";
const CHANNEL: &str = "pmcore_der_command";
const KINDS: &[&str] = &["curtail_kw", "setpoint_kw", "release"];

/// Stores each command once and signals the relays.
#[derive(Debug)]
pub struct StoreCommands;

fn micros(field: &str, value: i64) -> Result<DateTime<Utc>, HandlerError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| HandlerError::Permanent(anyhow::anyhow!("{field} is out of range")))
}

fn uuid(field: &str, value: &str) -> Result<Uuid, HandlerError> {
    value
        .parse()
        .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("{field} is not a UUID: {e}")))
}

/// One command as stored, checked.
struct Row {
    id: Uuid,
    gateway_id: Uuid,
    der_id: Uuid,
    event_id: Option<Uuid>,
    kind: String,
    value_kw: f64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

fn row(record: &Incoming) -> Result<Row, HandlerError> {
    let command: DerCommand = record
        .payload
        .clone_typed()
        .map_err(|e| HandlerError::Permanent(e.into()))?;
    if !KINDS.contains(&command.kind.as_str()) {
        return Err(HandlerError::Permanent(anyhow::anyhow!(
            "unknown command kind {:?}",
            command.kind
        )));
    }
    Ok(Row {
        id: uuid("command_id", &command.command_id)?,
        gateway_id: uuid("gateway_id", &command.gateway_id)?,
        der_id: uuid("der_id", &command.der_id)?,
        event_id: command
            .event_id
            .as_deref()
            .map(|e| uuid("event_id", e))
            .transpose()?,
        value_kw: command.value_kw,
        start: micros("start", command.start)?,
        end: micros("end", command.end)?,
        expires_at: micros("expires_at", command.expires_at)?,
        kind: command.kind,
    })
}

#[async_trait]
impl Handler for StoreCommands {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        self.handle_many(conn, &[record]).await
    }

    /// One insert for the batch and one notification per gateway (Postgres delivers
    /// them at commit).
    async fn handle_many(
        &self,
        conn: &mut PgConnection,
        records: &[&Incoming],
    ) -> Result<(), HandlerError> {
        let rows = records
            .iter()
            .map(|r| row(r))
            .collect::<Result<Vec<_>, _>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&Row) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
        let (ids, gateways, ders) = (col(|r| r.id), col(|r| r.gateway_id), col(|r| r.der_id));
        let events: Vec<Option<Uuid>> = rows.iter().map(|r| r.event_id).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        let values: Vec<f64> = rows.iter().map(|r| r.value_kw).collect();
        let times = |f: fn(&Row) -> DateTime<Utc>| rows.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "insert into pm.der_command
                 (id, gateway_id, der_id, event_id, kind, value_kw, start_at, end_at, expires_at)
             select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                                  $6::float8[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[])
             on conflict (id) do nothing",
        )
        .bind(&ids)
        .bind(&gateways)
        .bind(&ders)
        .bind(&events)
        .bind(&kinds)
        .bind(&values)
        .bind(times(|r| r.start))
        .bind(times(|r| r.end))
        .bind(times(|r| r.expires_at))
        .execute(&mut *conn)
        .await?;
        let distinct: std::collections::BTreeSet<String> =
            gateways.iter().map(ToString::to_string).collect();
        sqlx::query("select pg_notify($1, g) from unnest($2::text[]) as g")
            .bind(CHANNEL)
            .bind(distinct.into_iter().collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Wakes local sessions when commands for their gateway are stored. Notifications
/// can be lost while the listener reconnects, and a sweep covers that gap.
pub async fn listen(hub: Arc<Hub>) {
    const SWEEP: Duration = Duration::from_secs(30);
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        let mut listener = match PgListener::connect_with(&hub.pool).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "command listener cannot connect; retrying");
                tokio::select! {
                    () = hub.cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(%error, "cannot LISTEN; retrying");
            continue;
        }
        // Anything stored before LISTEN took effect.
        hub.wake_all();
        loop {
            tokio::select! {
                () = hub.cancel.cancelled() => return,
                _ = sweep.tick() => hub.wake_all(),
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => {
                        if let Ok(gateway_id) = n.payload().parse() {
                            hub.wake(gateway_id);
                        }
                    }
                    // The connection dropped and was re-established: notifications
                    // in between are lost, so look everywhere.
                    Ok(None) => hub.wake_all(),
                    Err(error) => {
                        tracing::warn!(%error, "command listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

/// The gateway's commands still to deliver, or to deliver again because their final
/// answer never came; expired ones are marked and reported.
pub async fn pending(hub: &Hub, gateway_id: Uuid) -> anyhow::Result<Vec<WireCommand>> {
    let expired: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "update pm.der_command set status = 'expired', acked_at = now()
         where gateway_id = $1 and status = 'pending' and expires_at <= now()
         returning id, der_id",
    )
    .bind(gateway_id)
    .fetch_all(&hub.pool)
    .await?;
    for (command_id, der_id) in expired {
        let ack = DerCommandAck {
            command_id: command_id.to_string(),
            gateway_id: gateway_id.to_string(),
            der_id: Some(der_id.to_string()),
            status: "expired".to_owned(),
            reason: Some("expired before the gateway was reachable".to_owned()),
            acked_at: Utc::now().timestamp_micros(),
        };
        // The row says expired already; the event is for subscribers, so a broker
        // hiccup here is logged rather than retried forever.
        if let Err(error) = publish(hub, &ack, gateway_id).await {
            tracing::warn!(%error, %command_id, "could not publish expiry");
        }
    }
    type Row = (
        Uuid,
        Uuid,
        Option<Uuid>,
        String,
        f64,
        DateTime<Utc>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    // Received but unanswered ones too: their final answer may have been lost with
    // the session that carried it, and the gateway answers a known command again.
    let rows: Vec<Row> = sqlx::query_as(
        "select id, der_id, event_id, kind, value_kw, start_at, end_at, expires_at
         from pm.der_command
         where gateway_id = $1
           and ((status = 'pending' and expires_at > now())
                or (status = 'received' and end_at > now()))
         order by received_at, id",
    )
    .bind(gateway_id)
    .fetch_all(&hub.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(command_id, der_id, event_id, kind, value_kw, start, end, expires_at)| WireCommand {
                command_id,
                der_id,
                event_id,
                kind,
                value_kw,
                start,
                end,
                expires_at,
            },
        )
        .collect())
}

/// Whether the gateway's secret is still the one set at `secret_rotated_at`.
pub async fn secret_current(
    pool: &PgPool,
    gateway_id: Uuid,
    secret_rotated_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let current: Option<bool> =
        sqlx::query_scalar("select secret_rotated_at = $2 from pm.gateway where id = $1")
            .bind(gateway_id)
            .bind(secret_rotated_at)
            .fetch_optional(pool)
            .await?;
    Ok(current == Some(true))
}

pub async fn mark_delivered(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        "update pm.der_command set delivered_at = coalesce(delivered_at, now()) where id = any($1)",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// The DER a command of this gateway is for, if the command exists, and whether the
/// gateway's secret is still the one set at `secret_rotated_at` (one query on the
/// acknowledgement path).
pub async fn der_of(
    pool: &PgPool,
    gateway_id: Uuid,
    command_id: Uuid,
    secret_rotated_at: DateTime<Utc>,
) -> sqlx::Result<Option<(Uuid, bool)>> {
    sqlx::query_as(
        "select c.der_id, g.secret_rotated_at = $3
           from pm.der_command c join pm.gateway g on g.id = c.gateway_id
          where c.id = $1 and c.gateway_id = $2",
    )
    .bind(command_id)
    .bind(gateway_id)
    .bind(secret_rotated_at)
    .fetch_optional(pool)
    .await
}

/// Produces an event straight to its topic and waits for the broker's acknowledgement.
pub async fn publish<E: DomainEvent>(hub: &Hub, event: &E, gateway_id: Uuid) -> anyhow::Result<()> {
    let (topic, key, headers, payload) = record_parts(hub, event, gateway_id)?;
    let record = FutureRecord::to(&topic)
        .key(&key)
        .headers(headers)
        .payload(&payload);
    hub.producer
        .send(record, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("broker did not take the record: {e}"))?;
    Ok(())
}

/// Topic, key, CloudEvents headers and Avro payload of an event the relay produces.
pub fn record_parts<E: DomainEvent>(
    hub: &Hub,
    event: &E,
    gateway_id: Uuid,
) -> anyhow::Result<(String, String, OwnedHeaders, Vec<u8>)> {
    let principal = format!("gateway:{gateway_id}");
    let envelope = Envelope::for_event(event, "der-gateway-relay", Some(principal));
    let headers = pmcore_kafka::record_headers(envelope.to_headers());
    let payload = pmcore_events::avro::encode(event)?;
    Ok((
        hub.kafka.topic(E::TYPE.topic.name),
        envelope.subject,
        headers,
        payload,
    ))
}
