//! The audit trail end to end: API actions reach the audit log in order with their
//! actors, read through the audit API with the api's tokens; the log verifies, and
//! every kind of tampering done directly in Postgres is found.

use std::time::Duration;

use pmcore_testkit::{Running, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    dispatch::{Scene, event, scene, schedule},
    helpers::{JWT_SECRET, TestApi, problem},
};

async fn audit_log(api: &TestApi) -> Running {
    audit_log_with(api, |_| {}).await
}

pub(crate) async fn audit_log_with(
    api: &TestApi,
    tweak: impl FnOnce(&mut pmcore_audit_log::Config),
) -> Running {
    pmcore_testkit::init_logs();
    let mut config = pmcore_audit_log::Config {
        jwt_secret: Some(JWT_SECRET.to_owned().into()),
        checkpoint_interval_s: 3600,
        group: format!("audit-{}", Uuid::now_v7().simple()),
        ..pmcore_audit_log::Config::new(
            ([127, 0, 0, 1], 0).into(),
            api.db.config_for("audit_log"),
            api.kafka.clone(),
        )
    };
    tweak(&mut config);
    let app = <pmcore_audit_log::App as pmcore_runtime::Service>::build(config)
        .await
        .expect("audit-log builds");
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;
    running.ready(Duration::from_secs(60)).await;
    running
}

/// A client of `organization` with `roles`; returns its token.
async fn client(api: &TestApi, organization: Uuid, roles: &[&str]) -> String {
    let response = api
        .post(
            &format!("/v1/organizations/{organization}/clients"),
            &api.admin,
            &json!({"name": "audit test", "roles": roles}),
        )
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id: Uuid = body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    api.token(id, body["client_secret"].as_str().expect("secret"))
        .await
        .expect("token")
}

async fn utility(api: &TestApi) -> Uuid {
    sqlx::query_scalar("select organization_id from pm.api_client where id = $1")
        .bind(api.admin_id)
        .fetch_one(&api.db.pool)
        .await
        .expect("utility")
}

async fn get(audit: &Running, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{}{path}", audit.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn post(audit: &Running, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", audit.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn entries(audit: &Running, query: &str, token: &str) -> Vec<Value> {
    let response = get(audit, &format!("/v1/audit/entries?{query}"), token).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

fn types(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect()
}

/// The scene of `dispatch`, an event scheduled and cancelled, and the audit log.
async fn trail() -> (Scene, String, String, Running) {
    let s = scene(5).await;
    let created: Value = schedule(&s, &event(&s, 24 * 60, 60))
        .await
        .json()
        .await
        .expect("json");
    let event_id = created["id"].as_str().expect("id").to_owned();
    let cancelled = s
        .api
        .post(
            &format!("/v1/dispatch-events/{event_id}/cancel"),
            &s.manager,
            &json!({"reason": "heat wave ended"}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(cancelled.status(), StatusCode::OK);
    let auditor = client(&s.api, utility(&s.api).await, &["auditor"]).await;
    let audit = audit_log(&s.api).await;
    let query = format!("subject={event_id}");
    eventually(
        Duration::from_secs(60),
        "the cancellation in the trail",
        || {
            let (audit, query, auditor) = (&audit, query.clone(), auditor.clone());
            async move { (entries(audit, &query, &auditor).await.len() == 2).then_some(()) }
        },
    )
    .await;
    (s, event_id, auditor, audit)
}

#[tokio::test]
async fn api_actions_are_in_the_trail_in_order_with_their_actors_and_only_for_those_allowed() {
    let (s, event_id, auditor, audit) = trail().await;

    let program = entries(&audit, &format!("subject={}", s.program), &auditor).await;
    assert_eq!(
        types(&program),
        [
            "pmcore.program.created.v1",
            "pmcore.program.status-changed.v1",
            "pmcore.program.status-changed.v1"
        ]
    );
    let manager = program[0]["principal"]
        .as_str()
        .expect("principal")
        .to_owned();
    assert!(manager.starts_with("client:"));

    let enrollment: Vec<Value> = entries(
        &audit,
        "event_type=pmcore.enrollment.requested.v1",
        &auditor,
    )
    .await;
    assert_eq!(enrollment.len(), 1);
    let enrollment_id = enrollment[0]["subject"]
        .as_str()
        .expect("subject")
        .to_owned();
    let history = entries(&audit, &format!("subject={enrollment_id}"), &auditor).await;
    assert_eq!(
        types(&history),
        [
            "pmcore.enrollment.requested.v1",
            "pmcore.enrollment.status-changed.v1"
        ]
    );
    let aggregator = history[0]["principal"].as_str().expect("principal");
    assert_ne!(
        aggregator, manager,
        "the aggregator asked, the manager approved"
    );
    assert_eq!(history[1]["principal"], manager.as_str());
    assert_eq!(
        history[0]["organization_id"],
        s.aggregator.organization_id.to_string()
    );

    let dispatch = entries(&audit, &format!("subject={event_id}"), &auditor).await;
    assert_eq!(
        types(&dispatch),
        [
            "pmcore.dispatch-event.scheduled.v1",
            "pmcore.dispatch-event.cancelled.v1"
        ]
    );
    assert!(dispatch.iter().all(|e| e["principal"] == manager.as_str()));

    // One object's entries are in the order its changes happened: its events share a
    // partition (keyed by subject). Across topics the log keeps the order the audit
    // service read them in, which Kafka does not promise to be the order they were
    // published in (CI saw an approval logged after a later scheduling).
    let index = |e: &Value| e["index"].as_i64().expect("index");
    assert!(index(&program[0]) < index(&program[1]));
    assert!(index(&program[1]) < index(&program[2]));
    assert!(index(&history[0]) < index(&history[1]));
    assert!(index(&dispatch[0]) < index(&dispatch[1]));
    let newest = entries(
        &audit,
        &format!("subject={event_id}&order=desc&limit=1"),
        &auditor,
    )
    .await;
    assert_eq!(
        newest[0]["event_type"],
        "pmcore.dispatch-event.cancelled.v1"
    );

    // The aggregator's own auditor sees its enrollment, not the utility's program.
    let own = client(&s.api, s.aggregator.organization_id, &["auditor"]).await;
    assert_eq!(
        entries(&audit, &format!("subject={enrollment_id}"), &own)
            .await
            .len(),
        2
    );
    assert!(
        entries(&audit, &format!("subject={}", s.program), &own)
            .await
            .is_empty()
    );
    let all_own = entries(&audit, "limit=500", &own).await;
    assert!(
        all_own
            .iter()
            .all(|e| e["organization_id"] == s.aggregator.organization_id.to_string())
    );
    // Another organization's auditor sees none of it, whatever it asks for.
    let stranger = s.api.caller("aggregator", &["auditor"]).await;
    for query in [
        format!("subject={enrollment_id}"),
        format!("organization_id={}", s.aggregator.organization_id),
        format!("subject={event_id}"),
    ] {
        assert!(
            entries(&audit, &query, &stranger.token).await.is_empty(),
            "{query}"
        );
    }
    let index = index(&history[0]);
    let response = get(
        &audit,
        &format!("/v1/audit/entries/{index}"),
        &stranger.token,
    )
    .await;
    problem(response, StatusCode::NOT_FOUND).await;
    problem(
        post(&audit, "/v1/audit/verify", &own).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // Neither the aggregator's other roles nor a missing token may read.
    let response = get(&audit, "/v1/audit/entries", &s.aggregator.token).await;
    problem(response, StatusCode::FORBIDDEN).await;
    problem(
        get(&audit, "/v1/audit/entries", "nope").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let response = get(&audit, "/v1/audit/entries?limit=0&cursor=%25", &auditor).await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

/// Runs `verify` and returns (ok, first bad index).
async fn verify(audit: &Running, token: &str) -> (bool, Option<i64>, Value) {
    let response = post(audit, "/v1/audit/verify", token).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["ok"].as_bool().expect("ok"),
        body["first_bad_index"].as_i64(),
        body,
    )
}

/// Runs `sql` as the database's owner (a superuser), foreign keys and triggers off,
/// as someone with direct access would.
async fn tamper(api: &TestApi, sql: &str) {
    let mut tx = api.db.pool.begin().await.expect("tx");
    sqlx::query("set local session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("replica");
    for statement in sql.split(";\n") {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .expect(statement);
    }
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn the_log_verifies_proves_and_names_the_first_entry_anyone_tampered_with() {
    let (s, _, auditor, audit) = trail().await;
    let checkpoint = post(&audit, "/v1/audit/checkpoint", &auditor).await;
    assert_eq!(checkpoint.status(), StatusCode::OK);
    let checkpoint: Value = checkpoint.json().await.expect("json");
    let size = checkpoint["tree_size"].as_i64().expect("size");
    assert!(size >= 8, "{checkpoint}");
    let key: Value = get(&audit, "/v1/audit/checkpoint/key", &auditor)
        .await
        .json()
        .await
        .expect("json");
    let note = checkpoint["note"].as_str().expect("note");
    let head = pmcore_audit_log::log::note::open(note, key["verifier_key"].as_str().expect("key"))
        .expect("the checkpoint verifies with the published key");
    assert_eq!(head.size as i64, size);

    // Proofs check against the signed root.
    let proof: Value = get(
        &audit,
        &format!("/v1/audit/entries/3/proof?tree_size={size}"),
        &auditor,
    )
    .await
    .json()
    .await
    .expect("json");
    let hash = |v: &Value| {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("base64");
        tlog_tiles::Hash(bytes.try_into().expect("32 bytes"))
    };
    let path: Vec<tlog_tiles::Hash> = proof["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(hash)
        .collect();
    tlog_tiles::check_record(&path, size as u64, head.root, 3, hash(&proof["leaf_hash"]))
        .expect("inclusion proof checks");
    let consistency: Value = get(
        &audit,
        &format!("/v1/audit/consistency?from=2&to={size}"),
        &auditor,
    )
    .await
    .json()
    .await
    .expect("json");
    let path: Vec<tlog_tiles::Hash> = consistency["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(hash)
        .collect();
    tlog_tiles::check_tree(
        &path,
        size as u64,
        head.root,
        2,
        hash(&consistency["from_root"]),
    )
    .expect("consistency proof checks");

    // An export an auditor can check offline with only the verifier key.
    let export = reqwest::Client::new()
        .post(format!("http://{}/v1/audit/exports", audit.addr))
        .bearer_auth(&auditor)
        .json(&json!({"from": 1}))
        .send()
        .await
        .expect("request");
    assert_eq!(export.status(), StatusCode::ACCEPTED);
    let location = export
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("location")
        .to_owned();
    let export: Value = eventually(Duration::from_secs(30), "the export written", || {
        let (audit, auditor, location) = (&audit, &auditor, &location);
        async move {
            let e: Value = get(audit, location, auditor).await.json().await.ok()?;
            assert_ne!(e["status"], "failed", "{e}");
            (e["status"] == "done").then_some(e)
        }
    })
    .await;
    assert_eq!(export["entries"].as_i64(), Some(size - 1), "{export}");
    let file = reqwest::get(export["url"].as_str().expect("url"))
        .await
        .expect("download")
        .text()
        .await
        .expect("text");
    let vkey = key["verifier_key"].as_str().expect("key");
    let report = pmcore_audit_log::log::bundle::check(&file, vkey);
    assert!(report.ok, "{report:?}");
    let edited = file.replacen("heat wave ended", "heat wave endeD", 1);
    assert_ne!(edited, file, "the cancellation's reason is in the export");
    let report = pmcore_audit_log::log::bundle::check(&edited, vkey);
    assert!(!report.ok && report.first_bad_index.is_some(), "{report:?}");
    let (ok, first, body) = verify(&audit, &auditor).await;
    assert!(ok && first.is_none(), "an untouched log verifies: {body}");

    let seq_at = |i: i64| {
        let pool = s.api.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select entry_seq from audit.leaf where leaf_index = $1")
                .bind(i)
                .fetch_one(&pool)
                .await
                .expect("seq")
        }
    };
    let (s4, s5) = (seq_at(4).await, seq_at(5).await);

    // One byte of one payload.
    tamper(&s.api, &format!(
        "update audit.entry set payload = jsonb_set(payload, '{{tampered}}', 'true') where seq = {s4}"
    ))
    .await;
    let (ok, first, body) = verify(&audit, &auditor).await;
    assert!(!ok && first == Some(4), "{body}");
    tamper(
        &s.api,
        &format!("update audit.entry set payload = payload - 'tampered' where seq = {s4}"),
    )
    .await;
    assert!(verify(&audit, &auditor).await.0, "restored");

    // Two entries swapped.
    tamper(
        &s.api,
        &format!(
            "update audit.leaf set entry_seq = -1 where entry_seq = {s4};
update audit.leaf set entry_seq = {s4} where entry_seq = {s5};
update audit.leaf set entry_seq = {s5} where entry_seq = -1"
        ),
    )
    .await;
    let (ok, first, body) = verify(&audit, &auditor).await;
    assert!(!ok && first == Some(4), "{body}");
    tamper(
        &s.api,
        &format!(
            "update audit.leaf set entry_seq = -1 where entry_seq = {s4};
update audit.leaf set entry_seq = {s4} where entry_seq = {s5};
update audit.leaf set entry_seq = {s5} where entry_seq = -1"
        ),
    )
    .await;
    assert!(verify(&audit, &auditor).await.0, "restored");

    // A forged entry, inserted beside the log.
    tamper(&s.api, "insert into audit.entry (event_id, event_type, source, subject, occurred_at, topic, payload)
        values (gen_random_uuid(), 'pmcore.program.created.v1', 'api', 'forged', now(), 'pm.programs.v1', '{}')").await;
    let (ok, first, body) = verify(&audit, &auditor).await;
    let logged: i64 = sqlx::query_scalar("select count(*) from audit.leaf")
        .fetch_one(&s.api.db.pool)
        .await
        .expect("count");
    assert!(!ok && first == Some(logged), "{body}");
    tamper(&s.api, "delete from audit.entry where subject = 'forged'").await;

    // An entry deleted (its leaf left dangling, as only a superuser could).
    tamper(&s.api, &format!("delete from audit.entry where seq = {s5}")).await;
    let (ok, first, body) = verify(&audit, &auditor).await;
    assert!(!ok && first == Some(5), "{body}");

    // The tail cut off: entries, leaves and tree hashes past position 6.
    // Stored hashes from index 10 on are those of positions 6 and later (6 + 3 + 1).
    tamper(
        &s.api,
        "delete from audit.tree_hash where stored_index >= 10;
delete from audit.entry where seq in (select entry_seq from audit.leaf where leaf_index >= 6);
delete from audit.leaf where leaf_index >= 6",
    )
    .await;
    let (ok, first, body) = verify(&audit, &auditor).await;
    assert!(
        !ok && first == Some(5),
        "the deleted entry still comes first: {body}"
    );
    assert!(
        body["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("cut short"))),
        "{body}"
    );

    // Checkpoints signed with another key, or with a forged root, are refused.
    let (_, other) =
        pmcore_audit_log::log::note::CheckpointSigner::generate(&head.origin).expect("key");
    let foreign = other.sign(head.size + 100, head.root).expect("sign");
    let forged = note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 101), 1);
    for (at, text) in [(size + 100, &foreign), (size + 101, &forged)] {
        sqlx::query(
            "insert into audit.checkpoint (tree_size, root_hash, note, key_id) values ($1, '\\x00', $2, 0)",
        )
        .bind(at)
        .bind(text)
        .execute(&s.api.db.pool)
        .await
        .expect("insert a checkpoint");
    }
    let (_, _, body) = verify(&audit, &auditor).await;
    let refused = body["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|p| p.as_str().is_some_and(|p| p.contains("refused")))
        .count();
    assert_eq!(refused, 2, "{body}");
}
