//! Settlements through the API: an event the worker measured shows its performance
//! (the utility sees the fleet, an aggregator its own DERs), settlements with report
//! links that download, recomputation into a new version, and baseline previews.

use std::time::Duration;

use pmcore_testkit::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Caller, TestApi, problem, spawn_with, spawn_worker};

struct Scene {
    api: TestApi,
    manager: String,
    a: Caller,
    b: Caller,
    event: Uuid,
    der_a: Uuid,
    der_b: Uuid,
}

/// A completed two-hour event two days ago over one DER of each of two aggregators,
/// with 30 days of 15-minute history: 4 kW, and 1 kW during the event.
async fn scene() -> Scene {
    let api = spawn_with(|c| c.s3 = pmcore_testkit::s3()).await;
    let manager = api.program_manager().await;
    let a = api.caller("aggregator", &["aggregator"]).await;
    let b = api.caller("aggregator", &["aggregator"]).await;
    let pool = &api.db.pool;
    let (program, event) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "insert into pm.program (id, organization_id, name, kind, status, capacity_rate_cents_kw_month, energy_rate_cents_kwh)
         select $1, organization_id, 'DR', 'demand_response', 'active', 800, 40 from pm.api_client where id = $2",
    )
    .bind(program)
    .bind(api.admin_id)
    .execute(pool)
    .await
    .expect("program");
    let mut ders = Vec::new();
    for org in [a.organization_id, b.organization_id] {
        let der = Uuid::now_v7();
        for sql in [
            "insert into pm.gateway (id, organization_id, name, secret_hash) values ($1, $2, 'gw', 'x')",
            "insert into pm.der (id, organization_id, gateway_id, der_type, nameplate_kw) values ($1, $2, $1, 'battery', 5)",
            "insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw, status)
             values (gen_random_uuid(), $3, $1, $2, 3, 'active')",
        ] {
            sqlx::query(sql).bind(der).bind(org).bind(program).execute(pool).await.expect(sql);
        }
        ders.push(der);
    }
    let statements = [
        "insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value,
             created_by, status, started_at, completed_at)
         values ($1, $2, date_trunc('hour', now()) - interval '2 days', date_trunc('hour', now()) - interval '2 days' + interval '2 hours',
                 6, 'curtail_kw', 6, 'test', 'completed', date_trunc('hour', now()) - interval '2 days',
                 date_trunc('hour', now()) - interval '2 days' + interval '2 hours')",
        "insert into pm.dispatch_allocation (event_id, der_id, gateway_id, organization_id, committed_kw,
             allocated_kw, command_id, command_kind, command_value_kw, command_sent_at)
         select $1, d.id, d.gateway_id, d.organization_id, 3, 3, gen_random_uuid(), 'curtail_kw', 3, e.starts_at
           from pm.der d, pm.dispatch_event e where d.id = any($3) and e.id = $1",
        "select pm.ensure_telemetry_partition(d::date)
           from generate_series(now() - interval '31 days', now(), interval '1 day') d",
        "insert into pm.telemetry (der_id, ts, power_kw)
         select d, ts, case when ts >= e.starts_at and ts < e.ends_at then 1 else 4 end
           from unnest($3::uuid[]) d, pm.dispatch_event e,
                generate_series(date_trunc('hour', now()) - interval '30 days', now() - interval '1 hour', interval '15 minutes') ts
          where e.id = $1",
        "insert into pm.settlement_request (event_id, version, due_at, reason, requested_by)
         values ($1, 1, now(), 'event_completed', 'test')",
    ];
    for sql in statements {
        sqlx::query(sql)
            .bind(event)
            .bind(program)
            .bind(&ders)
            .execute(pool)
            .await
            .expect(sql);
    }
    Scene {
        api,
        manager,
        a,
        b,
        event,
        der_a: ders[0],
        der_b: ders[1],
    }
}

async fn get(s: &Scene, path: &str, token: &str) -> Value {
    let r = s.api.get(path, token).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

async fn download(s: &Scene, url: &str) -> String {
    let r = s.api.raw().get(url).send().await.expect("download");
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.text().await.expect("body")
}

#[tokio::test]
async fn a_settled_event_shows_performance_settlements_reports_and_recomputes() {
    let s = scene().await;
    let _worker = spawn_worker(&s.api).await;
    let performance = format!("/v1/dispatch-events/{}/performance", s.event);
    eventually(Duration::from_secs(60), "version 1", || async {
        let r = s.api.get(&performance, &s.manager).send().await.ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;

    // The utility: both DERs and the fleet's day. Each: 4 kW baseline, 1 kW during
    // two hours → 6 kWh delivered of 3 kW × 2 h committed → factor 1; $8 × 3 / 4
    // events = $6.00 capacity + $0.40 × 6 = $2.40 energy.
    let all = get(&s, &performance, &s.manager).await;
    assert_eq!(all["version"], 1);
    assert_eq!(all["summary"]["der_count"], 2);
    assert_eq!(all["summary"]["delivered_kwh"], "12.000");
    assert_eq!(all["summary"]["total_amount"], "16.80");
    assert_eq!(all["items"][0]["performance_factor"], "1.0000");
    assert!(all["fleet"].as_array().is_some_and(|f| !f.is_empty()));

    // An aggregator: its DER only, no fleet.
    let mine = get(&s, &performance, &s.a.token).await;
    assert_eq!(mine["summary"]["der_count"], 1);
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(mine["items"][0]["der_id"], s.der_a.to_string());
    assert!(mine["fleet"].is_null());

    // Settlements: one per organization; each aggregator sees its own.
    let list = get(
        &s,
        &format!("/v1/settlements?event_id={}", s.event),
        &s.manager,
    )
    .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let own = get(&s, "/v1/settlements", &s.a.token).await;
    assert_eq!(own["items"].as_array().map(Vec::len), Some(1));
    let settlement = &own["items"][0];
    assert_eq!(
        settlement["organization_id"],
        s.a.organization_id.to_string()
    );
    assert_eq!(settlement["total"], "8.40");
    let id = settlement["id"].as_str().expect("id");

    // Its reports: the aggregator's statement downloads; fleet-wide files are the
    // utility's.
    let detail = get(&s, &format!("/v1/settlements/{id}"), &s.a.token).await;
    assert!(detail["reports"]["performance_csv"].is_null());
    let statement = download(
        &s,
        detail["reports"]["statement_csv"].as_str().expect("link"),
    )
    .await;
    assert!(
        statement.contains(&s.der_a.to_string()) && !statement.contains(&s.der_b.to_string()),
        "{statement}"
    );
    assert!(
        statement
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("TOTAL")),
        "{statement}"
    );
    let detail = get(&s, &format!("/v1/settlements/{id}"), &s.manager).await;
    let svg = download(&s, detail["reports"]["chart_svg"].as_str().expect("chart")).await;
    assert!(svg.starts_with("<svg"));
    let r = s
        .api
        .get(&format!("/v1/settlements/{id}"), &s.b.token)
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::NOT_FOUND).await;

    // Recompute: aggregators may not; an empty reason is refused; a manager gets
    // version 2 and version 1 stays readable.
    let recompute = format!("/v1/dispatch-events/{}/settlement:recompute", s.event);
    let r = s
        .api
        .post(&recompute, &s.a.token, &json!({"reason": "mine"}))
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::FORBIDDEN).await;
    let r = s
        .api
        .post(&recompute, &s.manager, &json!({"reason": "  "}))
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = s
        .api
        .post(
            &recompute,
            &s.manager,
            &json!({"reason": "late meter data"}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let queued: Value = r.json().await.expect("json");
    assert_eq!(queued["version"], 2);
    eventually(Duration::from_secs(60), "version 2", || async {
        let latest = s
            .api
            .get(&performance, &s.manager)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        (latest["version"] == 2).then_some(())
    })
    .await;
    let v1 = get(&s, &format!("{performance}?version=1"), &s.manager).await;
    assert_eq!(v1["version"], 1);
    let latest = get(
        &s,
        &format!("/v1/settlements?event_id={}", s.event),
        &s.manager,
    )
    .await;
    assert!(
        latest["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["version"] == 2)
    );
    let every = get(
        &s,
        &format!(
            "/v1/settlements?event_id={}&include_superseded=true",
            s.event
        ),
        &s.manager,
    )
    .await;
    assert_eq!(every["items"].as_array().map(Vec::len), Some(4));

    // An event that has not completed cannot be settled.
    sqlx::query("update pm.dispatch_event set status = 'active' where id = $1")
        .bind(s.event)
        .execute(&s.api.db.pool)
        .await
        .expect("status");
    let r = s
        .api
        .post(&recompute, &s.manager, &json!({"reason": "again"}))
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_baseline_preview_follows_the_method_and_says_what_is_missing() {
    let s = scene().await;
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::hours(3);
    let path = |query: &str| format!("/v1/ders/{}/baseline?{query}", s.der_a);
    let window = format!(
        "starts_at={}&ends_at={}",
        urlencode(&start.to_rfc3339()),
        urlencode(&(start + chrono::Duration::hours(1)).to_rfc3339())
    );
    // History reads 4 kW outside the event day's window, so the baseline is 4 kW
    // per interval (the adjustment window, also 4 kW, changes nothing).
    let preview = get(
        &s,
        &path(&format!("{window}&method=x_of_y_high_4_5")),
        &s.a.token,
    )
    .await;
    assert_eq!(preview["method"], "x_of_y_high_4_5");
    let points = preview["points"].as_array().expect("points");
    assert!(points.len() >= 4);
    assert!(points.iter().all(|p| p["kw"] == 4.0), "{points:?}");

    let r = s
        .api
        .get(&path(&format!("{window}&method=guess")), &s.a.token)
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let backwards = format!(
        "starts_at={}&ends_at={}",
        urlencode(&start.to_rfc3339()),
        urlencode(&(start - chrono::Duration::hours(1)).to_rfc3339())
    );
    let r = s
        .api
        .get(&path(&backwards), &s.a.token)
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    // A year back there is no history: insufficient data, said as such.
    let old = now - chrono::Duration::days(365);
    let r = s
        .api
        .get(
            &path(&format!(
                "starts_at={}&ends_at={}",
                urlencode(&old.to_rfc3339()),
                urlencode(&(old + chrono::Duration::hours(1)).to_rfc3339())
            )),
            &s.a.token,
        )
        .send()
        .await
        .expect("request");
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body.to_string().contains("insufficient data"), "{body}");
    // Another organization's DER does not exist for this caller.
    let r = s
        .api
        .get(
            &format!("/v1/ders/{}/baseline?{window}", s.der_b),
            &s.a.token,
        )
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::NOT_FOUND).await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn baseline_accuracy_scores_every_method_on_placebo_days() {
    let s = scene().await;
    // Ask for the utility's view as an admin of the utility; the program's DERs
    // have enrollments; history is a flat 4 kW, so every method that finds its days
    // is exact on placebo days.
    let program: Uuid =
        sqlx::query_scalar("select program_id from pm.dispatch_event where id = $1")
            .bind(s.event)
            .fetch_one(&s.api.db.pool)
            .await
            .expect("program");
    let path = format!(
        "/v1/programs/{program}/baseline-accuracy?days=3&start_time=10:00&duration_minutes=60"
    );
    let report = get(&s, &path, &s.manager).await;
    assert_eq!(report["placebo_days"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["der_count"], 2);
    let methods = report["methods"].as_array().expect("methods");
    assert_eq!(methods.len(), 5);
    let ten = methods
        .iter()
        .find(|m| m["method"] == "x_of_y_10_10")
        .expect("10-in-10");
    assert_eq!(ten["ders_scored"], 2);
    assert_eq!(ten["fleet"]["relative_rmse"], 0.0);
    assert_eq!(ten["fleet"]["intervals"], 12, "3 days × 4 intervals");

    let csv = s
        .api
        .get(&format!("{path}&format=csv"), &s.manager)
        .send()
        .await
        .expect("request");
    assert_eq!(csv.headers()["content-type"], "text/csv");
    let csv = csv.text().await.expect("body");
    assert!(
        csv.starts_with("scope,method,intervals,relative_rmse,bias\nfleet,"),
        "{csv}"
    );

    let r = s.api.get(&path, &s.a.token).send().await.expect("request");
    problem(r, StatusCode::FORBIDDEN).await;
    let r = s
        .api
        .get(
            &format!("/v1/programs/{program}/baseline-accuracy?days=99"),
            &s.manager,
        )
        .send()
        .await
        .expect("request");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
}
