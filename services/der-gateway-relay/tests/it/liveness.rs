//! Secret rotation and session liveness (issue 10, item 4): once a rotation is
//! committed, no session opened with the old secret delivers or acknowledges a
//! command on any instance, whether or not the notice reached it; a gateway that
//! stops reading loses its session instead of holding it, and its commands wait.

use std::time::Duration;

use argon2::{
    Argon2, PasswordHasher,
    password_hash::{SaltString, rand_core::OsRng},
};
use futures::StreamExt;
use pmcore_der_gateway_relay::protocol::{AckStatus, GatewayFrame, RelayFrame};
use pmcore_testkit::eventually;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{Env, Socket, close_code, command_arrives, raw_session, send, url};
use pmcore_seed::fleet::GatewaySpec;

/// What the session receives until it ends: the command ids, and the close code.
async fn until_closed(socket: &mut Socket) -> (Vec<Uuid>, Option<u16>) {
    let mut commands = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Text(text) => {
                    if let Ok(RelayFrame::Command(c)) = serde_json::from_str(&text) {
                        commands.push(c.command_id);
                    }
                }
                Message::Close(frame) => return frame.map(|f| u16::from(f.code)),
                _ => {}
            }
        }
        None
    })
    .await
    .expect("the session ends");
    (commands, ended)
}

#[tokio::test]
async fn after_a_rotation_no_session_with_the_old_secret_delivers_or_acknowledges_anywhere() {
    let env = Env::new().await;
    let a = env.relay().await;
    let b = env.relay().await;
    let worker = env.worker().await;
    let mut spec = env.gateway(1).await;
    let der = spec.ders[0].id;

    // Sessions opened with the old secret on both instances (a gateway may hold one
    // per instance); the one on A has a command to acknowledge.
    let mut on_a = raw_session(&url(&a), &spec).await;
    let before = env.command(&spec, der, chrono::Duration::minutes(10)).await;
    command_arrives(&mut on_a, before).await;
    let mut on_b = raw_session(&url(&b), &spec).await;

    // The rotation as the api commits it, with no notice on the topic: the relays
    // can only learn it from Postgres.
    let new_secret = format!("rotated-{}", Uuid::now_v7());
    let hash = Argon2::default()
        .hash_password(new_secret.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("hash")
        .to_string();
    sqlx::query("update pm.gateway set secret_hash = $2, secret_rotated_at = now() where id = $1")
        .bind(spec.id)
        .bind(hash)
        .execute(&env.db.pool)
        .await
        .expect("rotated");

    // A's old session acknowledges: refused, the session ended, nothing recorded.
    send(
        &mut on_a,
        &GatewayFrame::CommandAck {
            command_id: before,
            status: AckStatus::Applied,
            reason: None,
        },
    )
    .await;
    assert_eq!(close_code(&mut on_a).await, Some(1008));

    // A command after the rotation: B's old session is woken for it and ends
    // without it.
    let after = env.command(&spec, der, chrono::Duration::minutes(10)).await;
    let (received, code) = until_closed(&mut on_b).await;
    assert!(
        !received.contains(&after),
        "the old session on B got {after}"
    );
    assert_eq!(code, Some(1008));

    // The new secret gets both, and its acknowledgements count.
    spec.secret = new_secret;
    let mut fresh = raw_session(&url(&b), &spec).await;
    for id in [before, after] {
        command_arrives(&mut fresh, id).await;
        send(
            &mut fresh,
            &GatewayFrame::CommandAck {
                command_id: id,
                status: AckStatus::Applied,
                reason: None,
            },
        )
        .await;
    }
    eventually(Duration::from_secs(30), "both applied", || {
        let env = &env;
        async move {
            (env.command_status(before).await.as_deref() == Some("applied")
                && env.command_status(after).await.as_deref() == Some("applied"))
            .then_some(())
        }
    })
    .await;
    let acks: i64 = sqlx::query_scalar(
        "select count(*) from pm.der_command where id = any($1) and acked_at is not null",
    )
    .bind([before, after])
    .fetch_one(&env.db.pool)
    .await
    .expect("count");
    assert_eq!(acks, 2);
    drop(fresh);
    worker.stop().await.expect("worker stops");
    b.stop().await.expect("b stops");
    a.stop().await.expect("a stops");
}

/// A WebSocket session over a socket with a tiny receive buffer, so that a gateway
/// that stops reading fills it quickly.
async fn slow_reader(addr: std::net::SocketAddr, spec: &GatewaySpec) -> Socket {
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("small buffer");
    let stream = tcp.connect(addr).await.expect("connect");
    let (mut socket, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/v1/gateway"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("upgrade");
    send(
        &mut socket,
        &GatewayFrame::Hello {
            gateway_id: spec.id,
            secret: spec.secret.clone(),
            firmware: None,
            ders: spec.ders.iter().map(|d| d.id).collect(),
        },
    )
    .await;
    socket
}

#[tokio::test]
async fn a_gateway_that_stops_reading_loses_its_session_and_its_commands_wait() {
    let env = Env::new().await;
    // The heartbeat timeout is long, so only the send timeout can end the session
    // within the test's time.
    let relay = env
        .relay_with(|c| {
            c.send_timeout_s = 2;
            c.heartbeat_timeout_s = 600;
        })
        .await;
    let spec = env.gateway(1).await;
    let der = spec.ders[0].id;
    let stalled = slow_reader(relay.addr, &spec).await;
    eventually(Duration::from_secs(20), "the gateway online", || {
        let env = &env;
        async move { env.online(spec.id).await.then_some(()) }
    })
    .await;
    // Far more than the socket buffers hold (~7 MB: 2,000 were absorbed by them on
    // loopback), while the gateway reads nothing.
    let mut ids = Vec::new();
    for _ in 0..20_000 {
        ids.push(env.command(&spec, der, chrono::Duration::minutes(30)).await);
    }
    eventually(
        Duration::from_secs(180),
        "the stalled session ended",
        || {
            let env = &env;
            async move { (!env.online(spec.id).await).then_some(()) }
        },
    )
    .await;
    drop(stalled);
    // Nothing was lost in the buffers: a gateway that reads gets every command.
    let mut fresh = raw_session(&url(&relay), &spec).await;
    let mut seen = std::collections::HashSet::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while seen.len() < ids.len() {
            match fresh.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(RelayFrame::Command(c)) = serde_json::from_str(&text) {
                        seen.insert(c.command_id);
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the session ended: {other:?}"),
            }
        }
    })
    .await
    .expect("every command delivered");
    assert!(ids.iter().all(|id| seen.contains(id)));
    relay.stop().await.expect("relay stops");
}
