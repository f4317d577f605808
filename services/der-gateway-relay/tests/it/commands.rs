//! Dispatch commands: delivered live, kept for offline gateways, acknowledged.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use pmcore_seed::sim::Stats;
use pmcore_testkit::eventually;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Env, simulate, url};

#[tokio::test]
async fn a_connected_gateway_streams_gets_a_command_and_acknowledges_it() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let worker = env.worker().await;
    let spec = env.gateway(3).await;
    let der = spec.ders[0].id;
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let task = simulate(spec.clone(), url(&relay), stats.clone(), cancel.clone());

    eventually(Duration::from_secs(30), "readings stored", || {
        let env = &env;
        async move { (env.scalar_i64("select count(*) from pm.telemetry").await >= 30).then_some(()) }
    })
    .await;
    let command = env.command(&spec, der, chrono::Duration::minutes(5)).await;
    eventually(Duration::from_secs(30), "command applied", || {
        let env = &env;
        async move { (env.command_status(command).await.as_deref() == Some("applied")).then_some(()) }
    })
    .await;
    assert_eq!(stats.commands.load(Relaxed), 1);
    let delivered: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select delivered_at from pm.der_command where id = $1")
            .bind(command)
            .fetch_one(&env.db.pool)
            .await
            .expect("row");
    assert!(delivered.is_some());
    cancel.cancel();
    task.await.expect("joined").expect("clean stop");
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}

#[tokio::test]
async fn a_command_waits_for_an_offline_gateway_and_reaches_it_through_another_relay() {
    let env = Env::new().await;
    let first = env.relay().await;
    let worker = env.worker().await;
    let spec = env.gateway(2).await;
    // Sent while the gateway is offline: stored by the relay that consumed it.
    let waiting = env
        .command(&spec, spec.ders[1].id, chrono::Duration::minutes(10))
        .await;
    let expiring = env
        .command(&spec, spec.ders[0].id, chrono::Duration::seconds(2))
        .await;
    eventually(Duration::from_secs(30), "commands stored", || {
        let env = &env;
        async move { (env.scalar_i64("select count(*) from pm.der_command").await == 2).then_some(()) }
    })
    .await;
    assert_eq!(
        env.command_status(waiting).await.as_deref(),
        Some("pending")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The gateway comes back through a second relay instance.
    let second = env.relay().await;
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let task = simulate(spec, url(&second), stats.clone(), cancel.clone());
    eventually(
        Duration::from_secs(30),
        "the waiting command applied",
        || {
            let env = &env;
            async move {
                (env.command_status(waiting).await.as_deref() == Some("applied")).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        env.command_status(expiring).await.as_deref(),
        Some("expired")
    );
    assert_eq!(
        stats.commands.load(Relaxed),
        1,
        "the expired command is not delivered"
    );
    cancel.cancel();
    task.await.expect("joined").expect("clean stop");
    for running in [second, first, worker] {
        running.stop().await.expect("stops");
    }
}

/// A burst of commands is stored in batches; one the relay can never store (an
/// unknown kind) is dead-lettered alone and every other command is stored once.
#[tokio::test]
async fn a_burst_is_stored_in_batches_and_a_poison_command_is_parked_alone() {
    use pmcore_events::domain::DerCommand;
    use pmcore_kafka::{
        KafkaConfig,
        outbox::{self, EventMeta},
    };
    use rdkafka::{
        Message,
        consumer::{Consumer, StreamConsumer},
    };

    let env = Env::new().await;
    let spec = env.gateway(4).await;
    let now = chrono::Utc::now();
    let mut tx = env.db.pool.begin().await.expect("tx");
    let mut poison = None;
    for i in 0..201 {
        let id = uuid::Uuid::now_v7();
        let kind = if i == 100 { "explode" } else { "curtail_kw" };
        if i == 100 {
            poison = Some(id);
        }
        let command = DerCommand {
            command_id: id.to_string(),
            gateway_id: spec.id.to_string(),
            der_id: spec.ders[i % 4].id.to_string(),
            event_id: None,
            kind: kind.to_owned(),
            value_kw: 1.0,
            start: now.timestamp_micros(),
            end: (now + chrono::Duration::minutes(30)).timestamp_micros(),
            expires_at: (now + chrono::Duration::minutes(30)).timestamp_micros(),
        };
        let meta = EventMeta {
            source: "test".to_owned(),
            ..Default::default()
        };
        outbox::enqueue(&mut tx, &command, &meta)
            .await
            .expect("enqueued");
    }
    tx.commit().await.expect("commit");
    // The worker's outbox relay publishes them; the relay starts once they wait.
    let worker = env.worker().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let relay = env.relay().await;
    eventually(Duration::from_secs(60), "200 commands stored", || {
        let env = &env;
        async move { (env.scalar_i64("select count(*) from pm.der_command").await == 200).then_some(()) }
    })
    .await;
    let poison = poison.expect("poison id");
    assert_eq!(
        env.command_status(poison).await,
        None,
        "the poison command is not stored"
    );

    let dlq = KafkaConfig::dead_letter_topic(
        &env.kafka.topic("der.commands.v1"),
        "pmcore-relay-commands",
    );
    let reader: StreamConsumer = env
        .kafka
        .client_config()
        .set("group.id", format!("{}dlq-reader", env.kafka.topic_prefix))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&[dlq.as_str()]).expect("subscribe");
    let parked = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .expect("a dead letter")
        .expect("message");
    let error = parked
        .headers()
        .and_then(|h| {
            use rdkafka::message::Headers;
            h.iter()
                .find(|x| x.key == "dlq_error")
                .and_then(|x| x.value)
        })
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    assert!(error.contains("unknown command kind"), "{error}");
    relay.stop().await.expect("relay stops");
    worker.stop().await.expect("worker stops");
}

/// A session drops after the gateway said `received` and before its final answer
/// reached the platform: on the gateway's next session the command comes again, and
/// the gateway's answer then settles it (before, it stayed `received` for good).
#[tokio::test]
async fn a_command_whose_final_answer_was_lost_is_delivered_again_on_the_next_session() {
    use pmcore_der_gateway_relay::protocol::{AckStatus, GatewayFrame};

    use crate::helpers::{command_arrives, raw_session, send};

    let env = Env::new().await;
    let relay = env.relay().await;
    let worker = env.worker().await;
    let spec = env.gateway(1).await;
    let mut session = raw_session(&url(&relay), &spec).await;
    let command = env
        .command(&spec, spec.ders[0].id, chrono::Duration::minutes(10))
        .await;
    command_arrives(&mut session, command).await;
    send(
        &mut session,
        &GatewayFrame::CommandAck {
            command_id: command,
            status: AckStatus::Received,
            reason: None,
        },
    )
    .await;
    eventually(Duration::from_secs(30), "the command received", || {
        let env = &env;
        async move { (env.command_status(command).await.as_deref() == Some("received")).then_some(()) }
    })
    .await;
    // The session goes, and the `applied` the gateway sent with it.
    drop(session);

    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let task = simulate(spec, url(&relay), stats.clone(), cancel.clone());
    eventually(Duration::from_secs(30), "the command applied", || {
        let env = &env;
        async move { (env.command_status(command).await.as_deref() == Some("applied")).then_some(()) }
    })
    .await;
    assert_eq!(stats.commands.load(Relaxed), 1, "delivered again");
    cancel.cancel();
    task.await.expect("joined").expect("clean stop");
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}
