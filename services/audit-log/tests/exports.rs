//! Exports as jobs on the real stack: a range larger than one upload part is written
//! part by part and checks offline; a job whose instance died is taken over.

use std::time::Duration;

use pmcore_audit_log::{log::bundle, store::NewEntry};
use pmcore_testkit::{Running, TestDb, eventually};
use pmcore_web::auth::{OrganizationKind, Principal, Role};
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "exports-test-signing-key-exports-0123";
const PART: u64 = 5 * 1024 * 1024;
const ENTRIES: u64 = 12_000;

fn entries(from: u64, n: u64) -> Vec<NewEntry> {
    (from..from + n)
        .map(|i| NewEntry {
            event_id: Uuid::now_v7(),
            event_type: "pmcore.der.registered.v1".into(),
            source: "api".into(),
            subject: format!("der-{i}"),
            principal: Some("client:exports-test".into()),
            occurred_at: chrono::Utc::now(),
            topic: "pm.ders.v1".into(),
            // About a kilobyte each, so the range spans several 5 MiB parts.
            payload: json!({"der_id": format!("der-{i}"), "notes": "x".repeat(900)}),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_is_written_in_parts_and_an_abandoned_one_is_taken_over() {
    let db = TestDb::new().await.expect("database");
    for start in (0..ENTRIES).step_by(1000) {
        let mut tx = db.pool.begin().await.expect("tx");
        pmcore_audit_log::store::append(&mut tx, &entries(start, 1000))
            .await
            .expect("append");
        tx.commit().await.expect("commit");
    }
    let config = pmcore_audit_log::Config {
        jwt_secret: Some(SECRET.to_owned().into()),
        checkpoint_interval_s: 3600,
        export_part_bytes: PART,
        s3: pmcore_testkit::s3(),
        ..pmcore_audit_log::Config::new(
            ([127, 0, 0, 1], 0).into(),
            db.config_for("audit_log"),
            pmcore_testkit::kafka(&pmcore_testkit::unique_prefix()),
        )
    };
    let app = <pmcore_audit_log::App as pmcore_runtime::Service>::build(config)
        .await
        .expect("builds");
    let addr = app.local_addr().expect("bound");
    let audit = Running::start(app, addr).await;
    audit.ready(Duration::from_secs(60)).await;
    let token = pmcore_web::tokens::Tokens::new(SECRET.as_bytes(), Duration::from_secs(600))
        .issue(&Principal {
            subject: "client:exports-test".into(),
            organization_id: Uuid::now_v7(),
            organization_kind: OrganizationKind::Utility,
            roles: vec![Role::Auditor],
        })
        .expect("token");
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    // A job an instance started and then died on: running, its heartbeat long gone.
    http.post(format!("{base}/v1/audit/checkpoint"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("checkpoint")
        .error_for_status()
        .expect("signed");
    let abandoned = Uuid::now_v7();
    sqlx::query(
        "insert into audit.export (id, requested_by, from_index, to_index, tree_size, object_key,
                                   status, started_at, heartbeat_at)
         values ($1, 'client:gone', 0, 100, $2, $3, 'running', now() - interval '1 hour',
                 now() - interval '1 hour')",
    )
    .bind(abandoned)
    .bind(ENTRIES as i64)
    .bind(format!("audit/exports/test/{abandoned}.jsonl"))
    .execute(&db.pool)
    .await
    .expect("abandoned job");

    let response = http
        .post(format!("{base}/v1/audit/exports"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["status"], "pending", "{created}");
    assert_eq!(created["to"].as_u64(), Some(ENTRIES), "{created}");

    let done = |id: String| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move {
            eventually(Duration::from_secs(120), "the export written", || {
                let (http, token, base, id) = (&http, &token, &base, &id);
                async move {
                    let e: Value = http
                        .get(format!("{base}/v1/audit/exports/{id}"))
                        .bearer_auth(token)
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    assert_ne!(e["status"], "failed", "{e}");
                    (e["status"] == "done").then_some(e)
                }
            })
            .await
        }
    };
    let export = done(created["id"].as_str().expect("id").to_owned()).await;
    assert_eq!(export["entries"].as_u64(), Some(ENTRIES), "{export}");
    let url = export["url"].as_str().expect("url");
    let file = reqwest::get(url)
        .await
        .expect("download")
        .text()
        .await
        .expect("text");
    assert!(
        file.len() as u64 > 2 * PART,
        "the file ({} bytes) spans several parts",
        file.len()
    );
    let key: Value = http
        .get(format!("{base}/v1/audit/checkpoint/key"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let vkey = key["verifier_key"].as_str().expect("verifier key");
    let report = bundle::check_lines(file.lines(), vkey);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries_checked, ENTRIES);
    // A part boundary joins lines intact: any change to one shows.
    let edited = file.replacen("der-7000\"", "der-7001\"", 1);
    assert_ne!(edited, file);
    assert!(!bundle::check_lines(edited.lines(), vkey).ok);

    let taken_over = done(abandoned.to_string()).await;
    assert_eq!(taken_over["entries"].as_u64(), Some(100), "{taken_over}");

    // Another organization's auditor may not export or read jobs.
    let aggregator = pmcore_web::tokens::Tokens::new(SECRET.as_bytes(), Duration::from_secs(600))
        .issue(&Principal {
            subject: "client:aggregator-auditor".into(),
            organization_id: Uuid::now_v7(),
            organization_kind: OrganizationKind::Aggregator,
            roles: vec![Role::Auditor],
        })
        .expect("token");
    let refused = http
        .get(format!("{base}/v1/audit/exports/{abandoned}"))
        .bearer_auth(&aggregator)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    audit.stop().await.expect("stops");
}
