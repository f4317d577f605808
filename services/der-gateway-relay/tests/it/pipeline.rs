//! The telemetry pipeline end to end: acknowledged readings are stored exactly
//! once, whatever happens to the worker; bad records are parked; anomalies flagged.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use chrono::Utc;
use pmcore_der_gateway_relay::protocol::{GatewayFrame, RelayFrame, WireReading};
use pmcore_kafka::{KafkaConfig, idempotent_producer};
use pmcore_seed::sim::Stats;
use pmcore_testkit::eventually;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    producer::FutureRecord,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Env, next_reply, raw_session, send, simulate, url};

#[tokio::test]
async fn killing_the_worker_mid_stream_loses_nothing_and_duplicates_nothing() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let mut worker = env.worker().await;
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let spec = env.gateway(10).await;
        tasks.push(simulate(spec, url(&relay), stats.clone(), cancel.clone()));
    }
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if round == 0 {
            worker.kill().await;
        } else {
            worker.stop().await.expect("worker stops");
        }
        // The gateways keep streaming into the broker meanwhile.
        let acked = stats.acked.load(Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            stats.acked.load(Relaxed) > acked,
            "round {round}: acks go on without the worker"
        );
        worker = env.worker().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cancel.cancel();
    for task in tasks {
        task.await.expect("joined").expect("clean stop");
    }
    let acked = stats.acked.load(Relaxed) as i64;
    assert_eq!(
        acked,
        stats.generated.load(Relaxed) as i64,
        "every reading acknowledged"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while std::time::Instant::now() < deadline {
        stored = env.scalar_i64("select count(*) from pm.telemetry").await;
        if stored >= acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored, acked, "stored readings against acknowledged ones");
    // The rollup counts each reading once, though some records were read twice.
    assert_eq!(
        env.scalar_i64("select sum(samples)::int8 from pm.telemetry_1m")
            .await,
        acked
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.scalar_i64("select count(*) from pm.telemetry").await,
        acked,
        "nothing more arrives"
    );
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}

#[tokio::test]
async fn a_poison_record_is_parked_and_the_partition_moves_on() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let worker = env.worker().await;
    let topic = env.kafka.topic("der.telemetry.v1");
    let producer = idempotent_producer(&env.kafka).expect("producer");
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&topic)
                .key("k")
                .payload(b"not avro".as_slice())
                // Malformed on purpose: the contract reader of `just test` skips it.
                .headers(pmcore_kafka::record_headers([("pmcore-test", "poison")])),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
    let spec = env.gateway(1).await;
    let mut socket = raw_session(&url(&relay), &spec).await;
    let reading = WireReading {
        der_id: spec.ders[0].id,
        ts: Utc::now(),
        power_kw: 1.0,
        soc_pct: None,
    };
    send(
        &mut socket,
        &GatewayFrame::Telemetry {
            batch_id: "after".into(),
            readings: vec![reading],
        },
    )
    .await;
    assert_eq!(
        next_reply(&mut socket).await,
        RelayFrame::TelemetryAck {
            batch_id: "after".into()
        }
    );
    eventually(Duration::from_secs(30), "the good reading stored", || {
        let env = &env;
        async move { (env.scalar_i64("select count(*) from pm.telemetry").await == 1).then_some(()) }
    })
    .await;
    let dlq = KafkaConfig::dead_letter_topic(&topic, pmcore_worker::telemetry::CONSUMER_GROUP);
    let kafka = env.kafka.clone();
    let parked = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", format!("{}-dlq-check", kafka.topic_prefix))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[dlq.as_str()]).expect("subscribed");
        for _ in 0..60 {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
                return Some(rdkafka::Message::payload(&m).map(<[u8]>::to_vec));
            }
        }
        None
    })
    .await
    .expect("joined");
    assert_eq!(parked, Some(Some(b"not avro".to_vec())));
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}

#[tokio::test]
async fn a_reading_beyond_nameplate_is_flagged_once() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let worker = env.worker().await;
    let spec = env.gateway(1).await;
    let der = spec.ders[0].id;
    let mut socket = raw_session(&url(&relay), &spec).await;
    let now = Utc::now();
    let readings: Vec<WireReading> = (0..5)
        .map(|i| WireReading {
            der_id: der,
            ts: now - chrono::Duration::seconds(10 - i),
            power_kw: if i >= 2 { 50.0 } else { 2.0 },
            soc_pct: None,
        })
        .collect();
    send(
        &mut socket,
        &GatewayFrame::Telemetry {
            batch_id: "hot".into(),
            readings,
        },
    )
    .await;
    assert_eq!(
        next_reply(&mut socket).await,
        RelayFrame::TelemetryAck {
            batch_id: "hot".into()
        }
    );
    eventually(Duration::from_secs(30), "an out-of-range flag", || {
        let env = &env;
        async move {
            (env.scalar_i64(
                "select count(*) from pm.telemetry_anomaly where kind = 'out_of_range'",
            )
            .await
                == 1)
                .then_some(())
        }
    })
    .await;
    let (value, observed): (f64, chrono::DateTime<Utc>) =
        sqlx::query_as("select value_kw, observed_at from pm.telemetry_anomaly where der_id = $1")
            .bind(der)
            .fetch_one(&env.db.pool)
            .await
            .expect("anomaly");
    assert_eq!(value, 50.0);
    assert_eq!(
        observed.timestamp(),
        (now - chrono::Duration::seconds(8)).timestamp()
    );
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}

#[tokio::test]
async fn a_silent_gateway_is_flagged_once_and_marked_offline() {
    let env = Env::new().await;
    let spec = env.gateway(1).await;
    let quiet_since = Utc::now() - chrono::Duration::minutes(10);
    sqlx::query(
        "update pm.gateway set online = true, last_seen_at = $2, session_id = $3 where id = $1",
    )
    .bind(spec.id)
    .bind(quiet_since)
    .bind(uuid::Uuid::now_v7())
    .execute(&env.db.pool)
    .await
    .expect("a gateway last heard 10 minutes ago");
    let fresh = env.gateway(1).await;
    sqlx::query("update pm.gateway set online = true, last_seen_at = now() where id = $1")
        .bind(fresh.id)
        .execute(&env.db.pool)
        .await
        .expect("a gateway heard just now");

    let flagged = pmcore_worker::anomalies::sweep_silence(&env.db.pool, 300)
        .await
        .expect("sweep");
    assert_eq!(flagged, 1, "only the silent one");
    assert_eq!(
        pmcore_worker::anomalies::sweep_silence(&env.db.pool, 300)
            .await
            .expect("again"),
        0,
        "once per silence"
    );
    let (gateway, online): (Option<uuid::Uuid>, bool) = sqlx::query_as(
        "select a.gateway_id, g.online from pm.telemetry_anomaly a join pm.gateway g on g.id = a.gateway_id
         where a.kind = 'gateway_silent'",
    )
    .fetch_one(&env.db.pool)
    .await
    .expect("one flag");
    assert_eq!(gateway, Some(spec.id));
    assert!(!online, "marked offline");
    // The flag and the disconnect are both on their way through the outbox.
    assert_eq!(env.scalar_i64("select count(*) from pm.outbox").await, 2);
}

#[tokio::test]
async fn gateways_ride_out_a_relay_restart_without_losing_a_reading() {
    let env = Env::new().await;
    let port = pmcore_testkit::free_port();
    let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let relay = env.relay_with(|c| c.listen = listen).await;
    let worker = env.worker().await;
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let spec = env.gateway(10).await;
    let task = simulate(
        spec,
        crate::helpers::ws_url(listen),
        stats.clone(),
        cancel.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.stop().await.expect("relay stops");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let relay = env.relay_with(|c| c.listen = listen).await;
    eventually(
        Duration::from_secs(30),
        "the gateway back and acknowledged",
        || {
            let stats = stats.clone();
            async move {
                (stats.connects.load(Relaxed) >= 2 && stats.acked.load(Relaxed) > 500).then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cancel.cancel();
    task.await.expect("joined").expect("clean stop");
    let acked = stats.acked.load(Relaxed) as i64;
    assert_eq!(
        acked,
        stats.generated.load(Relaxed) as i64,
        "everything generated was acknowledged in the end"
    );
    eventually(
        Duration::from_secs(30),
        "every acknowledged reading stored",
        || {
            let env = &env;
            async move {
                (env.scalar_i64("select count(*) from pm.telemetry").await == acked).then_some(())
            }
        },
    )
    .await;
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}
