//! The field path through a broker that stalls (SIGSTOP) for longer than the consumers'
//! session timeout, as a broker under load or on a stuck disk does: gateways keep
//! streaming (the relay acknowledges only what the broker took), a command is sent
//! during the stall, and once the broker answers again the command reaches its
//! still-connected gateway and every acknowledged reading is stored once, without
//! anyone restarting anything.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use pmcore_kafka::KafkaConfig;
use pmcore_seed::sim::Stats;
use pmcore_testkit::{PrivateBroker, eventually};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Env, simulate, url};

#[tokio::test]
async fn readings_and_a_command_sent_during_a_broker_stall_arrive_after_it() {
    let mut broker = PrivateBroker::new();
    broker.start().await.expect("private broker starts");
    let mut kafka = KafkaConfig::new(&broker.brokers(), "");
    // A stall of 20 s outlasts a 6 s session: every member loses its group (and tansu
    // may keep the group from ever forming again: the consumers then move it).
    kafka.session_timeout_ms = 6_000;
    kafka.stall_after_s = 10;
    let env = Env::with_kafka(kafka).await;
    let relay = env.relay().await;
    let worker = env.worker().await;

    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let mut specs = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let spec = env.gateway(5).await;
        tasks.push(simulate(
            spec.clone(),
            url(&relay),
            stats.clone(),
            cancel.clone(),
        ));
        specs.push(spec);
    }
    eventually(Duration::from_secs(60), "readings flowing", || {
        let env = &env;
        async move { (env.scalar_i64("select count(*) from pm.telemetry").await > 100).then_some(()) }
    })
    .await;

    broker.pause();
    let command = env
        .command(
            &specs[0],
            specs[0].ders[0].id,
            chrono::Duration::minutes(10),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let acked_during = stats.acked.load(Relaxed);
    broker.resume();
    let resumed = Instant::now();

    // The gateway is still connected: the command reaches it once the relay's
    // consumer has its partitions again.
    eventually(Duration::from_secs(90), "the command applied", || {
        let env = &env;
        async move { (env.command_status(command).await.as_deref() == Some("applied")).then_some(()) }
    })
    .await;
    eprintln!(
        "command applied {:?} after the broker resumed",
        resumed.elapsed()
    );

    cancel.cancel();
    for task in tasks {
        task.await.expect("joined").expect("clean stop");
    }
    let acked = stats.acked.load(Relaxed) as i64;
    assert!(acked > acked_during as i64, "acks went on after the stall");
    assert_eq!(
        acked,
        stats.generated.load(Relaxed) as i64,
        "every reading acknowledged"
    );

    eventually(
        Duration::from_secs(90),
        "every acknowledged reading stored",
        || {
            let env = &env;
            async move {
                (env.scalar_i64("select count(*) from pm.telemetry").await >= acked).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "readings stored {:?} after the broker resumed",
        resumed.elapsed()
    );
    assert_eq!(
        env.scalar_i64("select count(*) from pm.telemetry").await,
        acked,
        "each reading once"
    );
    assert_eq!(
        env.scalar_i64("select sum(samples)::int8 from pm.telemetry_1m")
            .await,
        acked,
        "the rollup counts each once"
    );
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}
