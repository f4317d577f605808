//! Settlement against a real Postgres, broker and S3 server: a completed event over
//! DERs with history is measured, paid, reported and announced; a recomputation is
//! a new version that keeps the old one and, on the same inputs, says the same.

use std::time::Duration;

use aws_sdk_s3::Client as S3;
use chrono::{DateTime, TimeDelta, Utc};
use pmcore_events::domain::{DispatchEventCompleted, SettlementCalculated};
use pmcore_kafka::outbox::{self, EventMeta};
use pmcore_runtime::clock::ManualClock;
use pmcore_testkit::{Running, TestDb, eventually, kafka, unique_prefix};
use pmcore_worker::{App, Config};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("timestamp")
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

struct Fleet {
    event: Uuid,
    program: Uuid,
    org_a: Uuid,
    org_b: Uuid,
    /// DERs with 20 days of history: three of A's, one of B's.
    measured: Vec<Uuid>,
    /// A DER of A's without history.
    newcomer: Uuid,
}

const START: &str = "2026-07-15T14:00:00Z";
const END: &str = "2026-07-15T16:00:00Z";

/// Two organizations, a program paying $6/kW-month (4 events a month), $0.50/kWh
/// and a $0.25/kWh penalty, and a completed two-hour event on Wednesday 15 July
/// 2026 over five DERs committed 2 kW each. Every DER with history draws 4 kW,
/// except 2 kW during the event: 2 kW × 2 h = 4 kWh delivered each.
async fn fleet(pool: &PgPool) -> Fleet {
    let (org_a, org_b, program, event) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for (org, name) in [(org_a, "A"), (org_b, "B")] {
        sqlx::query("insert into pm.organization (id, name, kind) values ($1, $2, 'aggregator')")
            .bind(org)
            .bind(format!("Aggregator {name} {org}"))
            .execute(pool)
            .await
            .expect("organization");
        sqlx::query("insert into pm.gateway (id, organization_id, name, secret_hash) values ($1, $1, 'gw', 'x')")
            .bind(org)
            .execute(pool)
            .await
            .expect("gateway");
    }
    sqlx::query(
        "insert into pm.program (id, organization_id, name, kind, status, capacity_rate_cents_kw_month,
            energy_rate_cents_kwh, penalty_rate_cents_kwh, baseline_method)
         values ($1, $2, 'Summer DR', 'demand_response', 'active', 600, 50, 25, 'x_of_y_10_10')",
    )
    .bind(program)
    .bind(org_a)
    .execute(pool)
    .await
    .expect("program");
    let mut ders = Vec::new();
    for org in [org_a, org_a, org_a, org_b, org_a] {
        let der = Uuid::now_v7();
        sqlx::query("insert into pm.der (id, organization_id, gateway_id, der_type, nameplate_kw) values ($1, $2, $2, 'battery', 5)")
            .bind(der)
            .bind(org)
            .execute(pool)
            .await
            .expect("der");
        ders.push(der);
    }
    sqlx::query(
        "insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value,
            created_by, status, started_at, completed_at)
         values ($1, $2, $3, $4, 10, 'curtail_kw', 10, 'test', 'completed', $3, $4)",
    )
    .bind(event)
    .bind(program)
    .bind(at(START))
    .bind(at(END))
    .execute(pool)
    .await
    .expect("event");
    for der in &ders {
        sqlx::query(
            "insert into pm.dispatch_allocation (event_id, der_id, gateway_id, organization_id, committed_kw,
                allocated_kw, command_id, command_kind, command_value_kw, command_sent_at)
             select $1, d.id, d.gateway_id, d.organization_id, 2, 2, gen_random_uuid(), 'curtail', 2, $3
             from pm.der d where d.id = $2",
        )
        .bind(event)
        .bind(der)
        .bind(at(START))
        .execute(pool)
        .await
        .expect("allocation");
    }
    let measured = ders[..4].to_vec();
    let mut day = at("2026-06-25T00:00:00Z");
    while day <= at(START) {
        sqlx::query("select pm.ensure_telemetry_partition($1::date)")
            .bind(day.date_naive())
            .execute(pool)
            .await
            .expect("partition");
        day += TimeDelta::days(1);
    }
    sqlx::query(
        "insert into pm.telemetry (der_id, ts, power_kw)
         select d, ts, case when ts >= $2 and ts < $3 then 2 else 4 end
         from unnest($1::uuid[]) d,
              generate_series(timestamptz '2026-06-25 00:00:00+00', timestamptz '2026-07-15 23:55:00+00', interval '5 minutes') ts",
    )
    .bind(&measured)
    .bind(at(START))
    .bind(at(END))
    .execute(pool)
    .await
    .expect("telemetry");
    Fleet {
        event,
        program,
        org_a,
        org_b,
        measured,
        newcomer: ders[4],
    }
}

async fn worker(db: &TestDb, prefix: &str) -> Running {
    let config = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        database: db.config_for("worker"),
        kafka: kafka(prefix),
        s3: pmcore_testkit::s3(),
        telemetry: Default::default(),
        settlement: pmcore_worker::settlement::SettleConfig {
            tick_ms: 100,
            ..Default::default()
        },
        imports: Default::default(),
    };
    let app = App::build_with_clock(config, ManualClock::at(at("2026-07-16T00:00:00Z")).shared())
        .await
        .expect("worker builds");
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;
    running.ready(Duration::from_secs(60)).await;
    running
}

async fn run_of(pool: &PgPool, event: Uuid, version: i32) -> Option<Uuid> {
    sqlx::query_scalar("select id from pm.settlement_run where event_id = $1 and version = $2")
        .bind(event)
        .bind(version)
        .fetch_optional(pool)
        .await
        .expect("run")
}

async fn object(s3: &S3, key: &str) -> Vec<u8> {
    let config = pmcore_testkit::s3();
    s3.get_object()
        .bucket(&config.reports_bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_event_is_measured_paid_reported_and_announced() {
    pmcore_testkit::init_logs();
    let db = TestDb::new().await.expect("database");
    let prefix = unique_prefix();
    let f = fleet(&db.pool).await;
    let _worker = worker(&db, &prefix).await;

    // The scheduler's completion, through the outbox as the scheduler sends it.
    let mut tx = db.pool.begin().await.expect("tx");
    let completed = DispatchEventCompleted {
        event_id: f.event.to_string(),
        program_id: f.program.to_string(),
        starts_at: at(START).timestamp_micros(),
        ends_at: at(END).timestamp_micros(),
        completed_at: at(END).timestamp_micros(),
        target_kw: 10.0,
        allocated_kw: 10.0,
        participant_count: 5,
    };
    let meta = EventMeta {
        source: "scheduler".into(),
        principal: Some("service:scheduler".into()),
        traceparent: None,
    };
    outbox::enqueue(&mut tx, &completed, &meta)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");

    let run = eventually(Duration::from_secs(60), "version 1", || {
        run_of(&db.pool, f.event, 1)
    })
    .await;
    let due: DateTime<Utc> = sqlx::query_scalar(
        "select due_at from pm.settlement_request where event_id = $1 and version = 1",
    )
    .bind(f.event)
    .fetch_one(&db.pool)
    .await
    .expect("request");
    assert_eq!(
        due,
        at(END) + TimeDelta::seconds(120),
        "due after the settle delay"
    );

    // Each measured DER: baseline 4 kW flat (the day-of adjustment is 1), 2 kW
    // actual → 8 kWh baseline, 4 kWh actual, 4 kWh delivered of 4 expected.
    // $6 × 2 kW × 1.0 / 4 = $3.00 capacity, $0.50 × 4 = $2.00 energy, no penalty.
    type Line = (
        Uuid,
        Uuid,
        String,
        Option<Decimal>,
        Option<Decimal>,
        Option<Decimal>,
        Decimal,
    );
    let lines: Vec<Line> = sqlx::query_as(
        "select der_id, organization_id, status, baseline_kwh, delivered_kwh, performance_factor, total
         from pm.der_performance where run_id = $1 order by der_id",
    )
    .bind(run)
    .fetch_all(&db.pool)
    .await
    .expect("lines");
    assert_eq!(lines.len(), 5);
    for (der, _, status, baseline, delivered, factor, total) in &lines {
        if *der == f.newcomer {
            assert_eq!(status, "insufficient_data");
            assert_eq!(*total, Decimal::ZERO, "never paid on a partial baseline");
        } else {
            assert!(f.measured.contains(der));
            assert_eq!(status, "measured");
            assert_eq!(
                (*baseline, *delivered, *factor),
                (Some(dec("8")), Some(dec("4")), Some(dec("1")))
            );
            assert_eq!(*total, dec("5.00"));
        }
    }
    let orgs: Vec<(Uuid, i32, i32, Decimal)> = sqlx::query_as(
        "select organization_id, der_count, measured_count, total from pm.settlement where run_id = $1 order by organization_id",
    )
    .bind(run)
    .fetch_all(&db.pool)
    .await
    .expect("settlements");
    let mut expected = vec![(f.org_a, 4, 3, dec("15.00")), (f.org_b, 1, 1, dec("5.00"))];
    expected.sort();
    assert_eq!(orgs, expected);

    // The reports: one CSV row per DER, a statement per organization, the chart.
    let s3 = pmcore_storage::client(&pmcore_testkit::s3());
    let base = format!("settlements/{}/v1", f.event);
    let csv =
        String::from_utf8(object(&s3, &format!("{base}/performance.csv")).await).expect("utf-8");
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(csv.contains("insufficient_data"));
    let statement =
        String::from_utf8(object(&s3, &format!("{base}/organizations/{}.csv", f.org_b)).await)
            .expect("utf-8");
    assert!(
        statement
            .lines()
            .last()
            .expect("total row")
            .starts_with("TOTAL,,1 of 1 measured"),
        "{statement}"
    );
    let svg = String::from_utf8(object(&s3, &format!("{base}/fleet.svg")).await).expect("utf-8");
    assert!(
        svg.starts_with("<svg") && svg.contains("baseline"),
        "{}",
        &svg[..svg.len().min(200)]
    );

    // The announcement, read back from the topic.
    let announced = read_settlement(&prefix, 1).await;
    assert_eq!(announced.total_amount, "20.00");
    assert_eq!(announced.measured_count, 4);
    assert_eq!(announced.organizations.len(), 2);

    // Recompute: version 2 on the same inputs says the same, byte for byte, and
    // version 1 stays. (Due times are on the worker's clock, which the test holds
    // at 16 July.)
    sqlx::query(
        "insert into pm.settlement_request (event_id, version, due_at, reason, requested_by)
         values ($1, 2, $2, 'late meter data', 'test')",
    )
    .bind(f.event)
    .bind(at(END))
    .execute(&db.pool)
    .await
    .expect("request v2");
    let run2 = eventually(Duration::from_secs(60), "version 2", || {
        run_of(&db.pool, f.event, 2)
    })
    .await;
    assert_ne!(run, run2);
    assert!(run_of(&db.pool, f.event, 1).await.is_some());
    let rows = |run: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select string_agg(row(der_id, status, reason, baseline_kwh, actual_kwh, delivered_kwh,
                        performance_factor, comparison_days, adjustment, intervals, total)::text, '|' order by der_id)
                 from pm.der_performance where run_id = $1",
            )
            .bind(run)
            .fetch_one(&pool)
            .await
            .expect("rows")
        }
    };
    assert_eq!(rows(run).await, rows(run2).await);
    let csv2 = object(&s3, &format!("settlements/{}/v2/performance.csv", f.event)).await;
    assert_eq!(csv.as_bytes(), csv2.as_slice());

    // Parameters the method refuses close the request with the reason; nothing
    // is stored for that version.
    sqlx::query("update pm.program set baseline_params = '{\"bogus\": 1}' where id = $1")
        .bind(f.program)
        .execute(&db.pool)
        .await
        .expect("params");
    sqlx::query(
        "insert into pm.settlement_request (event_id, version, due_at, reason, requested_by)
         values ($1, 3, $2, 'bad params', 'test')",
    )
    .bind(f.event)
    .bind(at(END))
    .execute(&db.pool)
    .await
    .expect("request v3");
    let error: String = eventually(Duration::from_secs(30), "v3 refused", || async {
        sqlx::query_scalar::<_, Option<String>>(
            "select error from pm.settlement_request where event_id = $1 and version = 3",
        )
        .bind(f.event)
        .fetch_one(&db.pool)
        .await
        .ok()
        .flatten()
    })
    .await;
    assert!(error.contains("unknown field"), "{error}");
    assert!(run_of(&db.pool, f.event, 3).await.is_none());
}

async fn read_settlement(prefix: &str, version: i32) -> SettlementCalculated {
    let consumer: StreamConsumer = kafka(prefix)
        .client_config()
        .set("group.id", format!("{prefix}reader-{}", Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer
        .subscribe(&[&format!("{prefix}pm.settlements.v1")])
        .expect("subscribe");
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a settlement on the topic")
            .expect("message");
        let decoded =
            pmcore_events::avro::decode(message.payload().unwrap_or_default(), None).expect("avro");
        let event: SettlementCalculated = decoded.into_typed().expect("a settlement");
        if event.version == version {
            return event;
        }
    }
}

/// A program that settles on meter data reads `pm.meter_interval`, not telemetry:
/// the fleet's telemetry says 2 kW during the event, the meters say 1 kW.
#[tokio::test(flavor = "multi_thread")]
async fn a_program_on_meter_data_is_measured_from_the_imported_intervals() {
    pmcore_testkit::init_logs();
    let db = TestDb::new().await.expect("database");
    let prefix = unique_prefix();
    let f = fleet(&db.pool).await;
    sqlx::query("update pm.program set settlement_data_source = 'meter' where id = $1")
        .bind(f.program)
        .execute(&db.pool)
        .await
        .expect("program");
    // One DER read hourly, one every 15 minutes: 4 kW, and 1 kW during the event.
    for (der, minutes) in [(f.measured[0], 60), (f.measured[1], 15)] {
        sqlx::query(
            "insert into pm.meter_interval (der_id, interval_start, interval_minutes, energy_kwh, file_id)
             select $1, t, $2, case when t >= $3 and t < $4 then 1 else 4 end * $2 / 60.0, gen_random_uuid()
             from generate_series(timestamptz '2026-06-25 00:00:00+00', timestamptz '2026-07-15 23:00:00+00',
                                  make_interval(mins => $2)) t",
        )
        .bind(der)
        .bind(minutes)
        .bind(at(START))
        .bind(at(END))
        .execute(&db.pool)
        .await
        .expect("meter data");
    }
    sqlx::query(
        "insert into pm.settlement_request (event_id, version, due_at, reason, requested_by)
         values ($1, 1, $2, 'event_completed', 'test')",
    )
    .bind(f.event)
    .bind(at(END))
    .execute(&db.pool)
    .await
    .expect("request");
    let _worker = worker(&db, &prefix).await;
    let run = eventually(Duration::from_secs(60), "version 1", || {
        run_of(&db.pool, f.event, 1)
    })
    .await;
    let lines: Vec<(Uuid, String, Option<Decimal>, Option<Decimal>)> = sqlx::query_as(
        "select der_id, status, baseline_kwh, delivered_kwh from pm.der_performance where run_id = $1",
    )
    .bind(run)
    .fetch_all(&db.pool)
    .await
    .expect("lines");
    for (der, status, baseline, delivered) in lines {
        if der == f.measured[0] || der == f.measured[1] {
            assert_eq!(status, "measured", "{der}");
            // 4 kW × 2 h baseline, 1 kW actual: 6 kWh, where telemetry would say 4.
            assert_eq!(
                (baseline, delivered),
                (Some(dec("8")), Some(dec("6"))),
                "{der}"
            );
        } else {
            assert_eq!(status, "insufficient_data", "telemetry is not read: {der}");
        }
    }
}
