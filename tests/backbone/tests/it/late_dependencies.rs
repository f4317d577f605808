use std::time::Duration;

use pmcore_db::DbConfig;
use pmcore_kafka::KafkaConfig;
use pmcore_runtime::Service;
use pmcore_testkit::{LatePostgres, PrivateBroker, Running, TestDb, http_status};

#[tokio::test]
async fn a_service_started_before_postgres_and_the_broker_becomes_ready_when_they_come_up() {
    let db = TestDb::new().await.expect("test database");
    let mut postgres = LatePostgres::new();
    let mut broker = PrivateBroker::new();
    let config = pmcore_audit_log::Config {
        group: "late".into(),
        ..pmcore_audit_log::Config::new(
            ([127, 0, 0, 1], 0).into(),
            DbConfig::from_url(&postgres.url(&db.name)),
            KafkaConfig::new(&broker.brokers(), ""),
        )
    };
    let app = pmcore_audit_log::App::build(config)
        .await
        .expect("builds without its dependencies");
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;

    // Alive but not ready while nothing it depends on answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_status(addr, "/healthz").await, Some(200));
    assert_eq!(http_status(addr, "/readyz").await, Some(503));

    postgres.start().await.expect("postgres reachable");
    broker.start().await.expect("broker starts");
    running.ready(Duration::from_secs(90)).await;

    let took = running.stop().await.expect("stops cleanly");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
}
