//! Authentication, ownership, bad input, limits and presence.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use pmcore_der_gateway_relay::protocol::{ErrorCode, GatewayFrame, RelayFrame, WireReading};
use pmcore_seed::sim::{SimError, Stats};
use pmcore_testkit::eventually;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    Env, close_code, next_reply, raw_session, send, send_text, simulate, url, ws_url,
};

fn reading(der: Uuid, kw: f64) -> WireReading {
    WireReading {
        der_id: der,
        ts: Utc::now(),
        power_kw: kw,
        soc_pct: None,
    }
}

#[tokio::test]
async fn wrong_secret_and_unknown_gateway_are_refused() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let mut spec = env.gateway(1).await;
    spec.secret = "not-the-secret".into();
    let refused = pmcore_seed::sim::connect(&url(&relay), &spec, "t").await;
    assert!(matches!(refused, Err(SimError::Refused(..))), "{refused:?}");
    spec.id = Uuid::now_v7();
    let refused = pmcore_seed::sim::connect(&url(&relay), &spec, "t").await;
    assert!(matches!(refused, Err(SimError::Refused(..))), "{refused:?}");
    // A gateway that gives up after a refusal does not retry forever.
    let outcome = simulate(spec, url(&relay), Arc::default(), CancellationToken::new())
        .await
        .expect("joined");
    assert!(matches!(outcome, Err(SimError::Refused(..))));
    relay.stop().await.expect("stops");
}

#[tokio::test]
async fn a_gateway_cannot_report_another_organizations_der() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let mine = env.gateway(1).await;
    let theirs = env.gateway(1).await;
    let mut socket = raw_session(&url(&relay), &mine).await;
    send(
        &mut socket,
        &GatewayFrame::Telemetry {
            batch_id: "b-1".into(),
            readings: vec![
                reading(mine.ders[0].id, 1.0),
                reading(theirs.ders[0].id, 1.0),
            ],
        },
    )
    .await;
    match next_reply(&mut socket).await {
        RelayFrame::Error {
            code,
            batch_id,
            message,
            ..
        } => {
            assert_eq!(code, ErrorCode::UnknownDer);
            assert_eq!(batch_id.as_deref(), Some("b-1"));
            assert!(
                message.contains(&theirs.ders[0].id.to_string()),
                "{message}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The session goes on: its own DER's reading is taken.
    send(
        &mut socket,
        &GatewayFrame::Telemetry {
            batch_id: "b-2".into(),
            readings: vec![reading(mine.ders[0].id, 1.0)],
        },
    )
    .await;
    assert_eq!(
        next_reply(&mut socket).await,
        RelayFrame::TelemetryAck {
            batch_id: "b-2".into()
        }
    );
    relay.stop().await.expect("stops");
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_session_survives() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let spec = env.gateway(1).await;
    let mut socket = raw_session(&url(&relay), &spec).await;
    let cases = [
        ("{not json", ErrorCode::Malformed),
        (r#"{"type":"reboot"}"#, ErrorCode::UnknownType),
        (r#"{"type":"telemetry","batch_id":"x"}"#, ErrorCode::Invalid),
        (
            r#"{"type":"hello","gateway_id":"00000000-0000-0000-0000-000000000000","secret":"s"}"#,
            ErrorCode::Invalid,
        ),
    ];
    for (text, expected) in cases {
        send_text(&mut socket, text).await;
        match next_reply(&mut socket).await {
            RelayFrame::Error { code, .. } => assert_eq!(code, expected, "for {text}"),
            other => panic!("for {text}: expected an error, got {other:?}"),
        }
    }
    let future = WireReading {
        ts: Utc::now() + chrono::Duration::hours(1),
        ..reading(spec.ders[0].id, 1.0)
    };
    send(
        &mut socket,
        &GatewayFrame::Telemetry {
            batch_id: "f".into(),
            readings: vec![future],
        },
    )
    .await;
    assert!(matches!(
        next_reply(&mut socket).await,
        RelayFrame::Error {
            code: ErrorCode::Invalid,
            ..
        }
    ));
    send(
        &mut socket,
        &GatewayFrame::Telemetry {
            batch_id: "ok".into(),
            readings: vec![reading(spec.ders[0].id, 2.0)],
        },
    )
    .await;
    assert_eq!(
        next_reply(&mut socket).await,
        RelayFrame::TelemetryAck {
            batch_id: "ok".into()
        }
    );
    relay.stop().await.expect("stops");
}

#[tokio::test]
async fn limits_close_one_session_and_spare_the_others() {
    let env = Env::new().await;
    let relay = env
        .relay_with(|c| {
            c.max_frame_bytes = 4096;
            c.frames_per_second = 5;
        })
        .await;
    let noisy = env.gateway(1).await;
    let quiet = env.gateway(2).await;
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let quiet_task = simulate(quiet, url(&relay), stats.clone(), cancel.clone());

    // Over the rate: refused with rate_limited, session kept.
    let mut socket = raw_session(&url(&relay), &noisy).await;
    for _ in 0..30 {
        send(&mut socket, &GatewayFrame::Heartbeat).await;
    }
    send_text(&mut socket, "{}").await;
    let mut limited = false;
    for _ in 0..20 {
        if let RelayFrame::Error {
            code: ErrorCode::RateLimited,
            ..
        } = next_reply(&mut socket).await
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "a burst over the rate is refused");

    // Over the size: closed with 1009.
    let mut socket = raw_session(&url(&relay), &noisy).await;
    send_text(
        &mut socket,
        &format!(r#"{{"type":"heartbeat","pad":"{}"}}"#, "x".repeat(10_000)),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(1009));

    // Twenty errors: closed with 1008.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut socket = raw_session(&url(&relay), &noisy).await;
    for _ in 0..20 {
        send_text(&mut socket, "nope").await;
        tokio::time::sleep(Duration::from_millis(210)).await;
    }
    assert_eq!(close_code(&mut socket).await, Some(1008));

    // The well-behaved gateway kept streaming all along.
    let before = stats.acked.load(std::sync::atomic::Ordering::Relaxed);
    eventually(
        Duration::from_secs(20),
        "the quiet gateway still acked",
        || {
            let stats = stats.clone();
            async move {
                (stats.acked.load(std::sync::atomic::Ordering::Relaxed) > before + 10).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        stats.connects.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "never reconnected"
    );
    cancel.cancel();
    quiet_task.await.expect("joined").expect("clean stop");
    relay.stop().await.expect("stops");
}

#[tokio::test]
async fn presence_follows_the_session_and_the_heartbeat_timeout() {
    let env = Env::new().await;
    let relay = env.relay_with(|c| c.heartbeat_timeout_s = 1).await;
    let spec = env.gateway(1).await;
    let mut socket = raw_session(&ws_url(relay.addr), &spec).await;
    assert!(env.online(spec.id).await, "online once welcomed");
    // Say nothing: the relay closes with 4008 and marks it offline.
    assert_eq!(close_code(&mut socket).await, Some(4008));
    eventually(Duration::from_secs(10), "gateway offline", || {
        let env = &env;
        async move { (!env.online(spec.id).await).then_some(()) }
    })
    .await;
    let last_seen: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("select last_seen_at from pm.gateway where id = $1")
            .bind(spec.id)
            .fetch_one(&env.db.pool)
            .await
            .expect("gateway");
    assert!(last_seen.is_some());
    relay.stop().await.expect("stops");
}

#[tokio::test]
async fn welcome_names_the_ders_the_gateway_does_not_control() {
    use futures::StreamExt;
    let env = Env::new().await;
    let relay = env.relay().await;
    let spec = env.gateway(1).await;
    let stranger = Uuid::now_v7();
    let (mut socket, _) = tokio_tungstenite::connect_async(url(&relay))
        .await
        .expect("connected");
    send(
        &mut socket,
        &GatewayFrame::Hello {
            gateway_id: spec.id,
            secret: spec.secret.clone(),
            firmware: Some("3.1".into()),
            ders: vec![spec.ders[0].id, stranger],
        },
    )
    .await;
    let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = socket.next().await else {
        panic!("no welcome");
    };
    match serde_json::from_str::<RelayFrame>(&text).expect("frame") {
        RelayFrame::Welcome { unknown_ders, .. } => assert_eq!(unknown_ders, vec![stranger]),
        other => panic!("expected welcome, got {other:?}"),
    }
    let firmware: Option<String> =
        sqlx::query_scalar("select firmware from pm.gateway where id = $1")
            .bind(spec.id)
            .fetch_one(&env.db.pool)
            .await
            .expect("gateway");
    assert_eq!(
        firmware.as_deref(),
        Some("3.1"),
        "hello records the firmware"
    );
    relay.stop().await.expect("stops");
}

#[tokio::test]
async fn rotating_the_secret_ends_the_session_opened_with_the_old_one() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let old = env.gateway(1).await;
    let mut old_socket = raw_session(&url(&relay), &old).await;
    // The other gateway connected with its current secret before that secret's own
    // rotation notice came through (the notice travels the outbox and the broker).
    let current = env.gateway(1).await;
    let mut current_socket = raw_session(&url(&relay), &current).await;
    let current_set_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("select secret_rotated_at from pm.gateway where id = $1")
            .bind(current.id)
            .fetch_one(&env.db.pool)
            .await
            .expect("gateway");
    let mut conn = env.db.pool.acquire().await.expect("connection");
    let meta = pmcore_kafka::outbox::EventMeta {
        source: "test".into(),
        ..Default::default()
    };
    for (spec, rotated_at) in [
        (&current, current_set_at),
        (&old, Utc::now() + chrono::Duration::seconds(1)),
    ] {
        let event = pmcore_events::domain::GatewaySecretRotated {
            gateway_id: spec.id.to_string(),
            organization_id: Uuid::nil().to_string(),
            rotated_at: rotated_at.timestamp_micros(),
        };
        pmcore_kafka::outbox::enqueue(&mut conn, &event, &meta)
            .await
            .expect("enqueued");
    }
    assert_eq!(close_code(&mut old_socket).await, Some(1008));
    // Both notices were read by now (one reader, one fetch); give a slow one a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    send(
        &mut current_socket,
        &GatewayFrame::Telemetry {
            batch_id: "after-notice".into(),
            readings: vec![reading(current.ders[0].id, 1.0)],
        },
    )
    .await;
    match next_reply(&mut current_socket).await {
        RelayFrame::TelemetryAck { batch_id, .. } => assert_eq!(batch_id, "after-notice"),
        other => panic!("the session on the current secret was ended: {other:?}"),
    }
    relay.stop().await.expect("stops");
}

#[tokio::test]
async fn new_connections_beyond_an_addresses_rate_are_refused_before_any_work() {
    let env = Env::new().await;
    let relay = env
        .relay_with(|c| c.hellos_per_second_per_address = 1)
        .await;
    // One a second in bursts of ten: of twenty at once, about ten are turned away at
    // the upgrade, before a hello is read or a secret verified.
    let mut refused = 0;
    let mut upgraded = Vec::new();
    for _ in 0..20 {
        match tokio_tungstenite::connect_async(url(&relay)).await {
            Ok((socket, _)) => upgraded.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
                assert_eq!(
                    response.headers().get("retry-after").map(|v| v.as_bytes()),
                    Some(&b"1"[..])
                );
                refused += 1;
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert!(
        (8..=10).contains(&refused),
        "{refused} of 20 refused with a burst of 10"
    );
    // The address gets its turn again as the budget refills, and a gateway connects.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let spec = env.gateway(1).await;
    pmcore_seed::sim::connect(&url(&relay), &spec, "t")
        .await
        .expect("welcomed once the rate allows");
}

/// A relay told to stop (SIGTERM) says so to each gateway (close 1001, reconnect
/// elsewhere) and records the disconnect, instead of dropping the sockets.
#[tokio::test]
async fn a_relay_shutting_down_closes_its_sessions_and_records_them_offline() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let spec = env.gateway(1).await;
    let mut session = raw_session(&url(&relay), &spec).await;
    eventually(Duration::from_secs(10), "online", || {
        let env = &env;
        async move { env.online(spec.id).await.then_some(()) }
    })
    .await;
    let stopping = tokio::spawn(relay.stop());
    assert_eq!(close_code(&mut session).await, Some(1001));
    stopping.await.expect("joined").expect("the relay stops");
    let (online, session_id): (bool, Option<Uuid>) =
        sqlx::query_as("select online, session_id from pm.gateway where id = $1")
            .bind(spec.id)
            .fetch_one(&env.db.pool)
            .await
            .expect("gateway");
    assert!(!online && session_id.is_none(), "recorded offline");
}
