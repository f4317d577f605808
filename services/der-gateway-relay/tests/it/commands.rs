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
