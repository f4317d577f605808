//! Presence: the gateway row and the connected/disconnected events commit together.

use chrono::Utc;
use pmcore_events::domain::{GatewayConnected, GatewayDisconnected};
use pmcore_kafka::outbox::{self, EventMeta};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::Gateway;

fn meta(gateway_id: Uuid) -> EventMeta {
    EventMeta {
        source: "der-gateway-relay".to_owned(),
        principal: Some(format!("gateway:{gateway_id}")),
        traceparent: None,
    }
}

pub async fn connected(
    pool: &PgPool,
    gateway: &Gateway,
    session_id: Uuid,
    instance: &str,
    firmware: Option<&str>,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update pm.gateway set online = true, last_seen_at = now(), session_id = $2,
             firmware = coalesce($3, firmware), updated_at = now()
         where id = $1",
    )
    .bind(gateway.id)
    .bind(session_id)
    .bind(firmware)
    .execute(&mut *tx)
    .await?;
    let event = GatewayConnected {
        gateway_id: gateway.id.to_string(),
        organization_id: gateway.organization_id.to_string(),
        session_id: session_id.to_string(),
        relay_instance: instance.to_owned(),
        firmware: firmware.map(str::to_owned),
        connected_at: Utc::now().timestamp_micros(),
    };
    outbox::enqueue(&mut tx, &event, &meta(gateway.id)).await?;
    tx.commit().await?;
    Ok(())
}

/// Marks the gateway offline unless a newer session holds it already.
pub async fn disconnected(
    pool: &PgPool,
    gateway: &Gateway,
    session_id: Uuid,
    reason: &str,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let current = sqlx::query(
        "update pm.gateway set online = false, last_seen_at = now(), session_id = null
         where id = $1 and session_id = $2",
    )
    .bind(gateway.id)
    .bind(session_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if current {
        let event = GatewayDisconnected {
            gateway_id: gateway.id.to_string(),
            organization_id: gateway.organization_id.to_string(),
            session_id: session_id.to_string(),
            reason: reason.to_owned(),
            disconnected_at: Utc::now().timestamp_micros(),
        };
        outbox::enqueue(&mut tx, &event, &meta(gateway.id)).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records that the gateway is alive (called at most every few seconds per session).
pub async fn seen(pool: &PgPool, gateway_id: Uuid, session_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("update pm.gateway set last_seen_at = now() where id = $1 and session_id = $2")
        .bind(gateway_id)
        .bind(session_id)
        .execute(pool)
        .await?;
    Ok(())
}
