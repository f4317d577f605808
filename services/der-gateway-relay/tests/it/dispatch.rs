//! The whole dispatch path on the real stack: the scheduler starts an event and fans
//! out commands, the relay delivers them to simulated gateways, which apply them and
//! shed load; the worker stores their acknowledgements and telemetry; at the end
//! every DER is released.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Duration as Span, DurationRound, Utc};
use pmcore_runtime::Service;
use pmcore_seed::sim::Stats;
use pmcore_testkit::{Running, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Env, simulate, url};

pub(crate) async fn scheduler(env: &Env) -> Running {
    let config = pmcore_scheduler::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        leader_poll_ms: 200,
        telemetry_retention_days: 400,
        dispatch_tick_ms: 100,
        dispatch_chunk: 500,
        reminder_leads_minutes: vec![60],
        database: env.db.config_for("scheduler"),
        kafka: env.kafka.clone(),
    };
    let app = pmcore_scheduler::App::build(config)
        .await
        .expect("scheduler builds");
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;
    running.ready(Duration::from_secs(60)).await;
    running
}

/// Mean total power of `ders` over [from, to), from raw telemetry.
async fn fleet_kw(env: &Env, ders: &[Uuid], from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    sqlx::query_scalar::<_, Option<f64>>(
        "select sum(avg_kw) from (
             select t.der_id, avg(t.power_kw) as avg_kw from pm.telemetry t
              where t.der_id = any($1) and t.ts >= $2 and t.ts < $3 group by t.der_id) per_der",
    )
    .bind(ders)
    .bind(from)
    .bind(to)
    .fetch_one(&env.db.pool)
    .await
    .expect("fleet power")
    .unwrap_or_default()
}

#[tokio::test]
async fn an_event_runs_end_to_end_and_the_fleet_sheds_its_target() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let worker = env.worker().await;
    let sched = scheduler(&env).await;
    // Two gateways of four steady commercial loads each (a load the simulator can
    // shed by exactly what it is told), each DER committing 1 kW: 8 kW in all.
    let mut gateways = vec![env.gateway(4).await, env.gateway(4).await];
    for spec in &mut gateways {
        for der in &mut spec.ders {
            der.der_type = "ci_load".into();
        }
    }
    let utility = Uuid::now_v7();
    let program = Uuid::now_v7();
    let event = Uuid::now_v7();
    let pool = &env.db.pool;
    sqlx::query("insert into pm.organization (id, name, kind) values ($1, $2, 'utility')")
        .bind(utility)
        .bind(format!("utility {utility}"))
        .execute(pool)
        .await
        .expect("utility");
    sqlx::query(
        "insert into pm.program (id, organization_id, name, kind, status) values ($1, $2, 'DR', 'demand_response', 'active')",
    )
    .bind(program)
    .bind(utility)
    .execute(pool)
    .await
    .expect("program");
    let ids: Vec<Uuid> = gateways.iter().map(|g| g.id).collect();
    sqlx::query("update pm.der set der_type = 'ci_load' where gateway_id = any($1)")
        .bind(&ids)
        .execute(pool)
        .await
        .expect("types");
    sqlx::query(
        "insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw, status)
         select gen_random_uuid(), $1, id, organization_id, 1, 'active' from pm.der where gateway_id = any($2)",
    )
    .bind(program)
    .bind(&ids)
    .execute(pool)
    .await
    .expect("enrollments");
    // 6 kW over 8 kW of commitments: 0.75 kW each, from 6 s from now for 12 s.
    let starts = Utc::now()
        .duration_trunc(Span::seconds(1))
        .expect("truncates")
        + Span::seconds(6);
    let ends = starts + Span::seconds(12);
    sqlx::query(
        "insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value, created_by)
         values ($1, $2, $3, $4, 6, 'curtail_kw', 6, 'test')",
    )
    .bind(event)
    .bind(program)
    .bind(starts)
    .bind(ends)
    .execute(pool)
    .await
    .expect("event");

    // The first gateway streams from the start; the second is offline at the
    // event's start and connects two seconds into it.
    let cancel = CancellationToken::new();
    let stats = Arc::new(Stats::default());
    let late = gateways.pop().expect("two");
    let early = gateways.pop().expect("one");
    let early_ders: Vec<Uuid> = early.ders.iter().map(|d| d.id).collect();
    let mut sims = vec![simulate(early, url(&relay), stats.clone(), cancel.clone())];
    let wait = (starts + Span::seconds(2) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    sims.push(simulate(late, url(&relay), stats.clone(), cancel.clone()));

    let applied = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pm.der_command where event_id = $1 and kind = 'curtail_kw' and status = 'applied'",
        )
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("count")
    };
    eventually(
        Duration::from_secs(30),
        "all eight commands applied",
        || async { (applied().await == 8).then_some(()) },
    )
    .await;
    let (value, start, started): (f64, DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "select c.value_kw, c.start_at, e.started_at from pm.der_command c
           join pm.dispatch_event e on e.id = c.event_id where c.event_id = $1 limit 1",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .expect("a command");
    assert_eq!(value, 0.75, "6 kW shared by commitment");
    assert_eq!(start, starts, "the command starts with the event");
    assert!(
        started >= starts && started - starts < Span::seconds(2),
        "on time: {started}"
    );

    eventually(Duration::from_secs(40), "completion and eight applied releases", || async {
        let released: i64 = sqlx::query_scalar(
            "select count(*) from pm.der_command where event_id = $1 and kind = 'release' and status = 'applied'",
        )
        .bind(event)
        .fetch_one(pool)
        .await
        .ok()?;
        (released == 8).then_some(())
    })
    .await;
    let status: String = sqlx::query_scalar("select status from pm.dispatch_event where id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .expect("status");
    assert_eq!(status, "completed");
    let duplicates: i64 = sqlx::query_scalar(
        "select count(*) - count(distinct (der_id, kind)) from pm.der_command where event_id = $1",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .expect("count");
    assert_eq!(duplicates, 0, "one command and one release per DER");

    // The gateway that streamed all along: its four DERs drew about 4 × 0.75 kW
    // less during the event than just before it.
    // From when their commands reached the gateway (a loaded machine takes a moment).
    let delivered: DateTime<Utc> = sqlx::query_scalar(
        "select max(delivered_at) from pm.der_command where event_id = $1 and der_id = any($2) and kind <> 'release'",
    )
    .bind(event)
    .bind(&early_ders)
    .fetch_one(pool)
    .await
    .expect("delivered");
    let before = fleet_kw(&env, &early_ders, starts - Span::seconds(4), starts).await;
    let during = fleet_kw(&env, &early_ders, delivered + Span::milliseconds(500), ends).await;
    assert!(
        (before - during - 3.0).abs() < 0.5,
        "shed {:.2} kW (before {before:.2}, during {during:.2})",
        before - during
    );
    cancel.cancel();
    for sim in sims {
        let _ = sim.await;
    }
    sched.stop().await.expect("scheduler stops");
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}
