//! Dispatch execution against a real Postgres and broker, on a clock the test moves:
//! events start and end on time, each DER gets exactly one command and one release,
//! whatever runs twice, crashes half way or was down across the start.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Duration as Span, DurationRound, Utc};
use pmcore_events::domain::DerCommand;
use pmcore_runtime::clock::{ManualClock, SharedClock};
use pmcore_scheduler::{App, Config, Leadership, dispatch};
use pmcore_testkit::{Running, TestDb, eventually, kafka, unique_prefix};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
};
use sqlx::PgPool;
use uuid::Uuid;

fn config(db: &TestDb, prefix: &str, chunk: i64) -> Config {
    Config {
        listen: ([127, 0, 0, 1], 0).into(),
        leader_poll_ms: 200,
        telemetry_retention_days: 400,
        dispatch_tick_ms: 100,
        dispatch_chunk: chunk,
        reminder_leads_minutes: vec![1440, 60],
        database: db.config_for("scheduler"),
        kafka: kafka(prefix),
    }
}

async fn scheduler(
    db: &TestDb,
    prefix: &str,
    clock: &ManualClock,
    chunk: i64,
) -> (Running, Leadership) {
    let app = App::build_with_clock(config(db, prefix, chunk), clock.shared())
        .await
        .expect("scheduler builds");
    let leadership = app.leadership();
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;
    eventually(Duration::from_secs(10), "a leader", || async {
        leadership.is_leader().then_some(())
    })
    .await;
    (running, leadership)
}

/// A program with `ders` active enrollments (committed 2 kW of a 5 kW nameplate
/// each) behind `gateways` gateways, and one event in it; returns the event id.
async fn fleet_with_event(
    pool: &PgPool,
    ders: i64,
    gateways: i64,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    target_kw: f64,
) -> Uuid {
    let org = Uuid::now_v7();
    let program = Uuid::now_v7();
    let event = Uuid::now_v7();
    let statements = [
        format!("insert into pm.organization (id, name, kind) values ('{org}', 'Agg {org}', 'aggregator')"),
        format!("insert into pm.program (id, organization_id, name, kind, status) values ('{program}', '{org}', 'DR', 'demand_response', 'active')"),
        format!("insert into pm.gateway (id, organization_id, name, secret_hash)
                 select gen_random_uuid(), '{org}', 'gw ' || g, 'x' from generate_series(1, {gateways}) g"),
        format!("insert into pm.der (id, organization_id, gateway_id, der_type, nameplate_kw)
                 select gen_random_uuid(), '{org}',
                        (select id from pm.gateway where organization_id = '{org}' order by id offset (d % {gateways}) limit 1),
                        'battery', 5 from generate_series(1, {ders}) d"),
        format!("insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw, status)
                 select gen_random_uuid(), '{program}', id, '{org}', 2, 'active' from pm.der where organization_id = '{org}'"),
    ];
    for sql in statements {
        sqlx::query(&sql).execute(pool).await.expect("fleet");
    }
    sqlx::query(
        "insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value, created_by, created_at)
         values ($1, $2, $3, $4, $5, 'curtail_kw', 0, 'test', $3 - interval '2 days')",
    )
    .bind(event)
    .bind(program)
    .bind(starts_at)
    .bind(ends_at)
    .bind(target_kw)
    .execute(pool)
    .await
    .expect("event");
    event
}

async fn event_status(pool: &PgPool, event: Uuid) -> String {
    sqlx::query_scalar("select status from pm.dispatch_event where id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("status")
}

/// Every command record on the topic, by kind, per DER: reads until `expect_total`
/// arrived and then two quiet seconds more, to catch a duplicate that would follow.
async fn read_commands(
    prefix: &str,
    expect_total: usize,
) -> HashMap<(String, Uuid), Vec<DerCommand>> {
    let consumer: StreamConsumer = kafka(prefix)
        .client_config()
        .set("group.id", format!("{prefix}reader-{}", Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer
        .subscribe(&[&format!("{prefix}der.commands.v1")])
        .expect("subscribe");
    let mut seen: HashMap<(String, Uuid), Vec<DerCommand>> = HashMap::new();
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wait = if total >= expect_total {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("reading commands: {e}"),
            Err(_) => break,
        };
        let decoded = pmcore_events::avro::decode(message.payload().unwrap_or_default(), None)
            .expect("a command the contract describes");
        let command: DerCommand = decoded.into_typed().expect("a DER command");
        let der: Uuid = command.der_id.parse().expect("uuid");
        seen.entry((command.kind.clone(), der))
            .or_default()
            .push(command);
        total += 1;
    }
    seen
}

/// All records of a DER and kind are the same command (redeliveries of one record).
fn one_command(records: &[DerCommand]) -> bool {
    records.iter().all(|r| r == &records[0])
}

fn now_s() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Span::seconds(1))
        .expect("truncates")
}

#[tokio::test]
async fn an_event_starts_and_ends_on_time_with_one_command_and_one_release_per_der() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let t0 = now_s() + Span::hours(2);
    // 40 DERs committing 2 kW each (80 kW in all) asked for 50 kW: 1.25 kW each.
    let event = fleet_with_event(&db.pool, 40, 4, t0, t0 + Span::hours(1), 50.0).await;
    let clock = ManualClock::at(t0 - Span::minutes(1));
    let (running, _) = scheduler(&db, &prefix, &clock, 7).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        event_status(&db.pool, event).await,
        "scheduled",
        "not before its start"
    );

    clock.set(t0);
    eventually(Duration::from_secs(20), "the event to start and fan out", || async {
        let sent: i64 = sqlx::query_scalar(
            "select count(*) from pm.dispatch_allocation where event_id = $1 and command_sent_at is not null",
        )
        .bind(event)
        .fetch_one(&db.pool)
        .await
        .ok()?;
        (sent == 40).then_some(())
    })
    .await;
    let (status, late_by_ms, allocated, participants): (String, i64, f64, i32) = sqlx::query_as(
        "select status, late_by_ms, allocated_kw::float8, participant_count from pm.dispatch_event where id = $1",
    )
    .bind(event)
    .fetch_one(&db.pool)
    .await
    .expect("event");
    assert_eq!(status, "active");
    assert_eq!(late_by_ms, 0, "the clock stood at the start");
    assert_eq!(allocated, 50.0);
    assert_eq!(participants, 40);

    clock.set(t0 + Span::hours(1));
    eventually(Duration::from_secs(20), "completion and releases", || async {
        let released: i64 = sqlx::query_scalar(
            "select count(*) from pm.dispatch_allocation where event_id = $1 and release_reason = 'completed'",
        )
        .bind(event)
        .fetch_one(&db.pool)
        .await
        .ok()?;
        (released == 40).then_some(())
    })
    .await;
    assert_eq!(event_status(&db.pool, event).await, "completed");

    let seen = read_commands(&prefix, 80).await;
    let curtails: Vec<_> = seen
        .iter()
        .filter(|((k, _), _)| k == "curtail_kw")
        .collect();
    let releases: Vec<_> = seen.iter().filter(|((k, _), _)| k == "release").collect();
    assert_eq!(curtails.len(), 40, "every DER got a command");
    assert_eq!(releases.len(), 40, "every DER got a release");
    for ((_, der), commands) in &seen {
        assert_eq!(
            commands.len(),
            1,
            "DER {der} got {} of a kind",
            commands.len()
        );
    }
    for (_, commands) in curtails {
        let c = &commands[0];
        assert_eq!(c.value_kw, 1.25);
        assert_eq!(c.start, t0.timestamp_micros());
        assert_eq!(c.end, (t0 + Span::hours(1)).timestamp_micros());
        assert_eq!(c.expires_at, c.end);
    }
    running.stop().await.expect("stops");
}

/// The leads of the event's reminders sent so far, in order.
async fn reminders(pool: &PgPool, event: Uuid) -> Vec<i32> {
    sqlx::query_scalar(
        "select lead_minutes from pm.dispatch_reminder where event_id = $1 order by lead_minutes desc",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .expect("reminders")
}

// The clock skips its steps when nothing is due (`anything_due`): reminders must
// still go out at each lead, and a pass with nothing due must do nothing.
#[tokio::test]
async fn reminders_go_out_at_each_lead_and_an_idle_pass_does_nothing() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let t0 = now_s() + Span::days(3);
    let event = fleet_with_event(&db.pool, 4, 1, t0, t0 + Span::hours(1), 4.0).await;
    let clock = ManualClock::at(t0 - Span::hours(25));
    let (running, leader) = scheduler(&db, &prefix, &clock, 50).await;

    let idle = dispatch::pass(
        &db.pool,
        &leader,
        &clock.shared(),
        &dispatch::DispatchConfig {
            reminder_leads_minutes: vec![1440, 60],
            ..dispatch::DispatchConfig::default()
        },
    )
    .await
    .expect("a pass");
    assert_eq!(
        idle,
        dispatch::Pass::default(),
        "nothing is due a day ahead"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        reminders(&db.pool, event).await.is_empty(),
        "no reminder yet"
    );

    clock.set(t0 - Span::hours(24));
    eventually(
        Duration::from_secs(10),
        "the day-ahead reminder",
        || async { (reminders(&db.pool, event).await == [1440]).then_some(()) },
    )
    .await;
    clock.set(t0 - Span::minutes(59));
    eventually(
        Duration::from_secs(10),
        "the hour-ahead reminder",
        || async { (reminders(&db.pool, event).await == [1440, 60]).then_some(()) },
    )
    .await;
    assert_eq!(event_status(&db.pool, event).await, "scheduled");
    running.stop().await.expect("stops");
}

#[tokio::test]
async fn two_schedulers_and_a_stale_leader_racing_still_send_each_command_once() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let t0 = now_s() + Span::hours(2);
    let event = fleet_with_event(&db.pool, 300, 10, t0, t0 + Span::hours(1), 100.0).await;
    let clock = ManualClock::at(t0 - Span::minutes(1));
    let (first, leader) = scheduler(&db, &prefix, &clock, 25).await;
    let (second, _) = {
        let app = App::build_with_clock(config(&db, &prefix, 25), clock.shared())
            .await
            .expect("builds");
        let leadership = app.leadership();
        let addr = app.local_addr().expect("bound");
        (Running::start(app, addr).await, leadership)
    };
    // And four more passes at once with the leader's own fence, as a leader that
    // does not yet know it was replaced would run them.
    clock.set(t0);
    let shared: SharedClock = clock.shared();
    let dispatch_config = dispatch::DispatchConfig {
        chunk: 25,
        ..dispatch::DispatchConfig::default()
    };
    let scheduler_pool = db
        .pool_for("scheduler")
        .await
        .expect("the scheduler's login");
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, leader, clock, config) = (
                scheduler_pool.clone(),
                leader.clone(),
                shared.clone(),
                dispatch_config.clone(),
            );
            tokio::spawn(async move { dispatch::pass(&pool, &leader, &clock, &config).await })
        })
        .collect();
    for racer in racers {
        racer.await.expect("joins").expect("a pass");
    }
    eventually(Duration::from_secs(20), "the fan-out", || async {
        let sent: i64 = sqlx::query_scalar(
            "select count(*) from pm.dispatch_allocation where event_id = $1 and command_sent_at is not null",
        )
        .bind(event)
        .fetch_one(&db.pool)
        .await
        .ok()?;
        (sent == 300).then_some(())
    })
    .await;
    let seen = read_commands(&prefix, 300).await;
    assert_eq!(seen.len(), 300, "each DER once");
    assert!(seen.values().all(|c| c.len() == 1), "no DER twice");
    let started: i64 =
        sqlx::query_scalar("select count(*) from pm.dispatch_allocation where event_id = $1")
            .bind(event)
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(started, 300, "one allocation: the start happened once");
    first.stop().await.expect("stops");
    second.stop().await.expect("stops");
}

#[tokio::test]
async fn a_scheduler_killed_mid_fan_out_is_continued_by_the_next_without_repeats() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let t0 = now_s() + Span::hours(2);
    let ders = 600;
    let event = fleet_with_event(&db.pool, ders, 20, t0, t0 + Span::hours(1), 500.0).await;
    let clock = ManualClock::at(t0);
    // One command per transaction, so the fan-out takes long enough to die in.
    let (first, _) = scheduler(&db, &prefix, &clock, 1).await;
    let sent = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pm.dispatch_allocation where event_id = $1 and command_sent_at is not null",
        )
        .bind(event)
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    eventually(
        Duration::from_secs(20),
        "the fan-out to be under way",
        || {
            let pool = db.pool.clone();
            async move { (sent(pool).await >= 20).then_some(()) }
        },
    )
    .await;
    first.kill().await;
    let before = sent(db.pool.clone()).await;
    assert!(before < ders, "killed mid-way ({before} of {ders} sent)");
    let (second, _) = scheduler(&db, &prefix, &clock, 50).await;
    eventually(Duration::from_secs(30), "the rest of the fan-out", || {
        let pool = db.pool.clone();
        async move { (sent(pool).await == ders).then_some(()) }
    })
    .await;
    let seen = read_commands(&prefix, ders as usize).await;
    assert_eq!(
        seen.len(),
        ders as usize,
        "every DER ({before} sent before the kill)"
    );
    // The outbox is at least once: a scheduler killed between the broker's ack and
    // the outbox delete republishes that batch, byte for byte (same ce_id and
    // command id), which consumers absorb. What must hold is one command per DER.
    assert!(
        seen.values().all(|c| one_command(c)),
        "one command id per DER"
    );
    let outbox_commands: i64 = sqlx::query_scalar(
        "select count(*) from pm.dispatch_allocation where event_id = $1 and command_sent_at is not null",
    )
    .bind(event)
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(outbox_commands, ders);
    second.stop().await.expect("stops");
}

#[tokio::test]
async fn a_scheduler_down_across_a_start_starts_late_and_one_down_across_the_window_marks_it_missed()
 {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let now = now_s();
    let late = fleet_with_event(
        &db.pool,
        5,
        1,
        now - Span::minutes(10),
        now + Span::minutes(20),
        5.0,
    )
    .await;
    let gone = fleet_with_event(
        &db.pool,
        5,
        1,
        now - Span::hours(3),
        now - Span::hours(2),
        5.0,
    )
    .await;
    let clock = ManualClock::at(now);
    let (running, _) = scheduler(&db, &prefix, &clock, 50).await;
    eventually(
        Duration::from_secs(20),
        "the late start and the miss",
        || async {
            let a = event_status(&db.pool, late).await;
            let b = event_status(&db.pool, gone).await;
            (a == "active" && b == "missed").then_some(())
        },
    )
    .await;
    let late_by_ms: i64 =
        sqlx::query_scalar("select late_by_ms from pm.dispatch_event where id = $1")
            .bind(late)
            .fetch_one(&db.pool)
            .await
            .expect("late");
    assert_eq!(late_by_ms, 10 * 60 * 1000, "ten minutes late");
    let gone_commands: i64 =
        sqlx::query_scalar("select count(*) from pm.dispatch_allocation where event_id = $1")
            .bind(gone)
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(gone_commands, 0, "a missed event sends nothing");
    let seen = read_commands(&prefix, 5).await;
    assert_eq!(seen.len(), 5);
    for commands in seen.values() {
        assert_eq!(
            commands[0].start,
            now.timestamp_micros(),
            "a late command starts now"
        );
    }
    running.stop().await.expect("stops");
}

#[tokio::test]
async fn cancelling_a_running_event_and_opting_out_during_it_send_releases() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let t0 = now_s() + Span::hours(2);
    let event = fleet_with_event(&db.pool, 10, 2, t0, t0 + Span::hours(1), 10.0).await;
    let clock = ManualClock::at(t0);
    let (running, _) = scheduler(&db, &prefix, &clock, 50).await;
    let count = |sql: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(event)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    eventually(Duration::from_secs(20), "the fan-out", || async {
        (count("select count(*) from pm.dispatch_allocation where event_id = $1 and command_sent_at is not null").await == 10)
            .then_some(())
    })
    .await;
    // One DER opts out during the event: it alone is released.
    let der: Uuid = sqlx::query_scalar(
        "select der_id from pm.dispatch_allocation where event_id = $1 order by der_id limit 1",
    )
    .bind(event)
    .fetch_one(&db.pool)
    .await
    .expect("a DER");
    sqlx::query(
        "insert into pm.dispatch_opt_out (event_id, der_id, reason) values ($1, $2, 'hot day')",
    )
    .bind(event)
    .bind(der)
    .execute(&db.pool)
    .await
    .expect("opt-out");
    eventually(Duration::from_secs(20), "the opted-out DER's release", || async {
        (count("select count(*) from pm.dispatch_allocation where event_id = $1 and release_reason = 'opted_out'").await == 1)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count("select count(*) from pm.dispatch_allocation where event_id = $1 and release_sent_at is not null").await,
        1,
        "only that DER"
    );
    // Then the event is cancelled: the other nine are released, nothing new is sent.
    sqlx::query("update pm.dispatch_event set status = 'cancelled', cancelled_reason = 'grid ok' where id = $1")
        .bind(event)
        .execute(&db.pool)
        .await
        .expect("cancel");
    eventually(Duration::from_secs(20), "the releases", || async {
        (count("select count(*) from pm.dispatch_allocation where event_id = $1 and release_reason = 'cancelled'").await == 9)
            .then_some(())
    })
    .await;
    let seen = read_commands(&prefix, 20).await;
    let releases = seen.keys().filter(|(k, _)| k == "release").count();
    assert_eq!(releases, 10, "each DER released once");
    assert!(seen.values().all(|c| c.len() == 1));
    running.stop().await.expect("stops");
}

#[tokio::test]
async fn a_leader_whose_connection_is_cut_is_fenced_off_at_once() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    let clock = ManualClock::at(now_s());
    let (running, leader) = scheduler(&db, &prefix, &clock, 50).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    assert!(
        leader.fence(&mut conn).await.expect("fence"),
        "the leader passes"
    );
    // Postgres ends the session that holds the lock; the process does not know yet.
    sqlx::query(
        "select pg_terminate_backend(pid, 5000) from pg_locks
          where locktype = 'advisory' and objid::int8 = ($1 & 4294967295) and classid::int8 = ($1 >> 32)",
    )
    .bind(0x706d_7363_6864_i64)
    .execute(&mut *conn)
    .await
    .expect("terminate");
    assert!(
        !leader.fence(&mut conn).await.expect("fence"),
        "its transactions are refused before it notices"
    );
    running.stop().await.expect("stops");
}
