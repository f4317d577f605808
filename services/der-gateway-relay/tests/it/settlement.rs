//! From dispatch to payment on the real stack: simulated gateways shed what they are
//! told, and the settlement finds the energy the simulator says it shed.

use std::sync::Arc;

use chrono::{DurationRound, TimeDelta, Utc};
use pmcore_seed::sim::Stats;
use pmcore_testkit::eventually;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    dispatch::scheduler,
    helpers::{Env, simulate, url},
};

#[tokio::test]
async fn the_settlement_finds_what_the_fleet_shed() {
    let env = Env::new().await;
    let relay = env.relay().await;
    let worker = env.worker().await;
    let sched = scheduler(&env).await;
    // Four steady commercial loads committing 1 kW each, in a program measured on
    // one-minute intervals against the minute before each DER's command.
    let gateway = env.gateway(4).await;
    let ders: Vec<Uuid> = gateway.ders.iter().map(|d| d.id).collect();
    let mut gateway = gateway;
    for der in &mut gateway.ders {
        der.der_type = "ci_load".into();
    }
    let pool = &env.db.pool;
    let (utility, program, event) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let statements = [
        "insert into pm.organization (id, name, kind) values ($1, 'utility ' || $1, 'utility')",
        "insert into pm.program (id, organization_id, name, kind, status, baseline_method, baseline_params,
             interval_minutes, energy_rate_cents_kwh)
         values ($2, $1, 'Fast DR', 'demand_response', 'active', 'meter_before_after', '{\"minutes_before\": 1}', 1, 100)",
        "update pm.der set der_type = 'ci_load' where id = any($4)",
        "insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw, status)
         select gen_random_uuid(), $2, id, organization_id, 1, 'active' from pm.der where id = any($4)",
    ];
    for sql in statements {
        sqlx::query(sql)
            .bind(utility)
            .bind(program)
            .bind(event)
            .bind(&ders)
            .execute(pool)
            .await
            .expect(sql);
    }
    let cancel = CancellationToken::new();
    let stats = Arc::new(Stats::default());
    let sim = simulate(gateway, url(&relay), stats.clone(), cancel.clone());

    // A one-minute event on a minute boundary at least 70 s ahead, so a whole
    // minute of readings precedes it: 3 kW over 4 kW of commitments.
    let starts = (Utc::now() + TimeDelta::seconds(70))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("truncates")
        + TimeDelta::minutes(1);
    let ends = starts + TimeDelta::minutes(1);
    sqlx::query(
        "insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value, created_by)
         values ($1, $2, $3, $4, 3, 'curtail_kw', 3, 'test')",
    )
    .bind(event)
    .bind(program)
    .bind(starts)
    .bind(ends)
    .execute(pool)
    .await
    .expect("event");

    let wait = (ends - Utc::now() + TimeDelta::seconds(60))
        .to_std()
        .unwrap_or_default();
    let delivered: Decimal = eventually(wait, "the event settled", || async {
        sqlx::query_scalar::<_, Decimal>(
            "select delivered_kwh from pm.settlement_run where event_id = $1 and version = 1",
        )
        .bind(event)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
    })
    .await;
    let delivered: f64 = delivered.try_into().expect("a float");
    let shed = stats.shed_kwh();
    // 3 kW for up to a minute: at most 0.05 kWh, less the moment the commands took.
    assert!(
        shed > 0.03 && shed <= 0.0501,
        "the simulator shed {shed} kWh"
    );
    assert!(
        (delivered - shed).abs() <= 0.1 * shed,
        "settlement found {delivered} kWh delivered; the simulator shed {shed} kWh"
    );
    let measured: i64 = sqlx::query_scalar(
        "select count(*) from pm.der_performance p join pm.settlement_run r on r.id = p.run_id
          where r.event_id = $1 and p.status = 'measured'",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .expect("lines");
    assert_eq!(measured, 4);

    cancel.cancel();
    let _ = sim.await;
    sched.stop().await.expect("scheduler stops");
    worker.stop().await.expect("worker stops");
    relay.stop().await.expect("relay stops");
}
