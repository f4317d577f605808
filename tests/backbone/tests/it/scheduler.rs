use std::time::Duration;

use pmcore_runtime::Service;
use pmcore_scheduler::{App, Config, Leadership};
use pmcore_testkit::{Running, TestDb, eventually, kafka, unique_prefix};

async fn scheduler(db: &TestDb, prefix: &str) -> (Running, Leadership) {
    let config = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        leader_poll_ms: 200,
        telemetry_retention_days: 400,
        dispatch_tick_ms: 500,
        dispatch_chunk: 500,
        reminder_leads_minutes: vec![1440, 60],
        database: db.config_for("scheduler"),
        kafka: kafka(prefix),
    };
    let app = App::build(config).await.expect("scheduler builds");
    let leadership = app.leadership();
    let addr = app.local_addr().expect("bound");
    (Running::start(app, addr).await, leadership)
}

#[tokio::test]
async fn one_scheduler_leads_and_another_takes_over_when_it_stops() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let (first, first_lead) = scheduler(&db, &prefix).await;
    eventually(Duration::from_secs(10), "a leader", || async {
        first_lead.is_leader().then_some(())
    })
    .await;
    let (second, second_lead) = scheduler(&db, &prefix).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!second_lead.is_leader(), "only one leader at a time");

    first.stop().await.expect("first stops");
    eventually(
        Duration::from_secs(10),
        "the second to take over",
        || async { second_lead.is_leader().then_some(()) },
    )
    .await;
    second.stop().await.expect("second stops");
}
