//! Files end to end on the real stack: an upload through the presigned link, the
//! bucket watcher noticing it, the worker importing it, and what the API then shows.

use std::{collections::HashMap, time::Duration};

use aws_sdk_s3::primitives::ByteStream;
use pmcore_kafka::KafkaConfig;
use pmcore_testkit::{Running, eventually};
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    gateways::register,
    helpers::{Caller, TestApi, problem, program_in, published, spawn_with},
};

/// The api, a worker and a bucket watcher sharing buckets no other test uses.
struct Scene {
    api: TestApi,
    s3: pmcore_storage::S3Config,
    client: pmcore_storage::Client,
    worker: Option<Running>,
    watchers: Vec<Running>,
}

fn isolated_buckets() -> pmcore_storage::S3Config {
    let mut s3 = pmcore_testkit::s3();
    let id = Uuid::now_v7().simple().to_string();
    s3.inbound_bucket = format!("in-{id}");
    s3.reports_bucket = format!("rp-{id}");
    s3
}

async fn scene() -> Scene {
    let s3 = isolated_buckets();
    let api = spawn_with({
        let s3 = s3.clone();
        move |c| c.s3 = s3
    })
    .await;
    let worker = worker(&api, &s3).await;
    let watcher = watcher(&api, &s3).await;
    let client = pmcore_storage::client(&s3);
    Scene {
        api,
        s3,
        client,
        worker: Some(worker),
        watchers: vec![watcher],
    }
}

async fn worker(api: &TestApi, s3: &pmcore_storage::S3Config) -> Running {
    let config = pmcore_worker::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        database: api.db.config_for("worker"),
        kafka: api.kafka.clone(),
        s3: s3.clone(),
        telemetry: Default::default(),
        settlement: Default::default(),
        imports: pmcore_worker::imports::ImportConfig {
            max_bytes: 4 * 1024 * 1024,
            ..Default::default()
        },
    };
    let app = <pmcore_worker::App as pmcore_runtime::Service>::build(config)
        .await
        .expect("worker builds");
    let addr = app.local_addr().expect("bound");
    let running = Running::start(app, addr).await;
    // Ready means the buckets answer: the worker created them.
    running.ready(Duration::from_secs(60)).await;
    running
}

async fn watcher(api: &TestApi, s3: &pmcore_storage::S3Config) -> Running {
    let config = pmcore_bucket_watcher::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        poll_ms: 200,
        database: api.db.config_for("bucket_watcher"),
        kafka: api.kafka.clone(),
        s3: s3.clone(),
    };
    let app = <pmcore_bucket_watcher::App as pmcore_runtime::Service>::build(config)
        .await
        .expect("watcher builds");
    let addr = app.local_addr().expect("bound");
    Running::start(app, addr).await
}

impl Scene {
    /// Announces an upload and PUTs `body` to its link; returns the file id.
    async fn upload(&self, token: &str, kind: &str, org: Option<Uuid>, body: &str) -> String {
        let response = self
            .api
            .post(
                "/v1/files",
                token,
                &json!({"kind": kind, "name": format!("{kind}.csv"), "organization_id": org}),
            )
            .send()
            .await
            .expect("request");
        let status = response.status();
        let file: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{file}");
        assert_eq!(file["status"], "awaiting_upload");
        let url = file["upload_url"].as_str().expect("upload link");
        let put = self
            .api
            .raw()
            .put(url)
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT");
        assert!(put.status().is_success(), "PUT answered {}", put.status());
        file["id"].as_str().expect("id").to_owned()
    }

    /// Writes an object straight into the inbound bucket, as an operator would.
    async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.client
            .put_object()
            .bucket(&self.s3.inbound_bucket)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .expect("put object");
    }

    /// Waits until the file is imported or rejected and returns it.
    async fn finished(&self, token: &str, id: &str) -> Value {
        eventually(
            Duration::from_secs(90),
            "the file to be imported or rejected",
            || async move {
                let file: Value = self
                    .api
                    .get(&format!("/v1/files/{id}"), token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                matches!(file["status"].as_str(), Some("imported" | "rejected")).then_some(file)
            },
        )
        .await
    }

    /// Waits for the file recorded under `key` to finish; returns its rows.
    async fn finished_key(
        &self,
        key: &str,
        versions: usize,
    ) -> Vec<(Uuid, String, Option<String>)> {
        let pool = self.api.db.pool.clone();
        eventually(
            Duration::from_secs(90),
            "the object's files to finish",
            || {
                let pool = pool.clone();
                async move {
                    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
                        "select id, status, reason from pm.file where object_key = $1 order by id",
                    )
                    .bind(key)
                    .fetch_all(&pool)
                    .await
                    .ok()?;
                    (rows.len() == versions
                        && rows
                            .iter()
                            .all(|(_, s, _)| s == "imported" || s == "rejected"))
                    .then_some(rows)
                }
            },
        )
        .await
    }

    async fn ders_of(&self, org: Uuid) -> HashMap<String, (f64, String)> {
        sqlx::query_as::<_, (String, f64, String)>(
            "select external_id, nameplate_kw::float8, der_type from pm.der where organization_id = $1",
        )
        .bind(org)
        .fetch_all(&self.api.db.pool)
        .await
        .expect("ders")
        .into_iter()
        .map(|(e, kw, t)| (e, (kw, t)))
        .collect()
    }
}

/// How many more records keyed `subject` follow the first `skip` within `quiet`.
async fn published_after(
    kafka: &KafkaConfig,
    topic: &str,
    subject: &str,
    skip: usize,
    quiet: Duration,
) -> usize {
    let consumer = crate::helpers::topic_reader(kafka, topic);
    let mut seen = 0usize;
    while let Ok(message) = tokio::time::timeout(quiet, consumer.recv()).await {
        if message.expect("message").key() == Some(subject.as_bytes()) {
            seen += 1;
        }
    }
    seen.saturating_sub(skip)
}

async fn open_program(api: &TestApi) -> String {
    let manager = api.program_manager().await;
    let response = api
        .post("/v1/programs", &manager, &program_in())
        .send()
        .await
        .expect("request");
    let program: Value = response.json().await.expect("json");
    let id = program["id"].as_str().expect("id").to_owned();
    let opened = api
        .post(&format!("/v1/programs/{id}/open"), &manager, &json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(opened.status(), StatusCode::OK);
    id
}

const DER_HEADER: &str = "external_id,der_type,nameplate_kw,nameplate_kwh,feeder";

#[tokio::test]
async fn an_uploaded_der_file_registers_then_updates_ders_and_an_enrollments_file_requests_enrollments()
 {
    let s = scene().await;
    let aggregator = s.api.caller("aggregator", &["aggregator"]).await;
    let gateway = register(&s.api, &aggregator.token).await["id"]
        .as_str()
        .expect("gateway id")
        .to_owned();
    let mut csv = format!("{DER_HEADER},gateway_id\n");
    for i in 0..50 {
        csv += &format!(
            "bat-{i},battery,{}.5,13.5,F-{},{gateway}\n",
            4 + i % 3,
            i % 2
        );
    }
    let id = s.upload(&aggregator.token, "ders", None, &csv).await;
    let file = s.finished(&aggregator.token, &id).await;
    assert_eq!(file["status"], "imported", "{file}");
    assert_eq!(file["rows_read"], 50);
    assert_eq!(file["rows_imported"], 50);
    assert_eq!(
        file["organization_id"],
        aggregator.organization_id.to_string()
    );
    let ders = s.ders_of(aggregator.organization_id).await;
    assert_eq!(ders.len(), 50);
    assert_eq!(ders["bat-7"], (5.5, "battery".to_owned()));

    // Visible through the REST API, and announced on the topics by the uploader.
    let listed: Value = s
        .api
        .get_json("/v1/ders?limit=100", &aggregator.token)
        .await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(50));
    let events = published(&s.api.kafka, "pm.files.v1", &id, 2).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["pmcore.file.received.v1", "pmcore.file.imported.v1"]
    );
    assert!(
        events.iter().all(|(_, p)| p.starts_with("client:")),
        "{events:?}"
    );
    let der_id: String = sqlx::query_scalar(
        "select id::text from pm.der where organization_id = $1 and external_id = 'bat-7'",
    )
    .bind(aggregator.organization_id)
    .fetch_one(&s.api.db.pool)
    .await
    .expect("der");
    let registered = published(&s.api.kafka, "pm.ders.v1", &der_id, 1).await;
    assert_eq!(registered[0].0, "pmcore.der.registered.v1");

    // The same external ids again: an update, not a second registration.
    let id = s
        .upload(
            &aggregator.token,
            "ders",
            None,
            &format!("{DER_HEADER}\nbat-7,battery,6,,\nbat-8,battery,6.5,13.5,F-0\n"),
        )
        .await;
    let file = s.finished(&aggregator.token, &id).await;
    assert_eq!(file["status"], "imported", "{file}");
    assert_eq!(file["rows_imported"], 1, "bat-8 is unchanged");
    let ders = s.ders_of(aggregator.organization_id).await;
    assert_eq!(ders.len(), 50);
    assert_eq!(ders["bat-7"].0, 6.0);
    let updated = published(&s.api.kafka, "pm.ders.v1", &der_id, 2).await;
    assert_eq!(updated[1].0, "pmcore.der.updated.v1");

    // Enrollments through a file go through the worker's eligibility check.
    let program = open_program(&s.api).await;
    let id = s
        .upload(
            &aggregator.token,
            "enrollments",
            None,
            &format!(
                "der_external_id,program_id,committed_kw\nbat-1,{program},4\nbat-2,{program},5\n"
            ),
        )
        .await;
    let file = s.finished(&aggregator.token, &id).await;
    assert_eq!(file["status"], "imported", "{file}");
    assert_eq!(file["rows_imported"], 2);
    let pool = s.api.db.pool.clone();
    eventually(
        Duration::from_secs(60),
        "both enrollments to be decided",
        || {
            let pool = pool.clone();
            let program = program.clone();
            async move {
                let statuses: Vec<String> = sqlx::query_scalar(
                    "select status from pm.enrollment where program_id = $1::uuid",
                )
                .bind(program)
                .fetch_all(&pool)
                .await
                .ok()?;
                (statuses.len() == 2 && statuses.iter().all(|s| s == "approved")).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn three_bad_rows_among_a_thousand_change_nothing_and_the_report_lists_exactly_them() {
    let s = scene().await;
    let aggregator = s.api.caller("aggregator", &["aggregator"]).await;
    let mut csv = format!("{DER_HEADER}\n");
    for i in 0..1000 {
        // Lines are numbered from the header (line 1), as a spreadsheet shows them.
        let line = i + 2;
        csv += &match line {
            10 => format!("m-{i},boat,5,,\n"),
            500 => format!("m-{i},battery,-5,,\n"),
            1001 => "m-3,battery,5,,=HYPERLINK(\"x\")\n".to_owned(),
            _ => format!("m-{i},battery,5,,\n"),
        };
    }
    let id = s.upload(&aggregator.token, "ders", None, &csv).await;
    let file = s.finished(&aggregator.token, &id).await;
    assert_eq!(file["status"], "rejected", "{file}");
    assert_eq!(file["rows_read"], 1000);
    assert_eq!(file["rows_imported"], 0);
    assert_eq!(file["rows_rejected"], 3);
    assert!(
        file["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("3 rows rejected; the first, line 10")),
        "{file}"
    );
    assert!(s.ders_of(aggregator.organization_id).await.is_empty());

    let link = file["error_report_url"].as_str().expect("a report link");
    let report = s.api.raw().get(link).send().await.expect("GET report");
    assert_eq!(report.status(), StatusCode::OK);
    let report = report.text().await.expect("text");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "line,column,value,message");
    assert_eq!(lines.len(), 4, "{report}");
    assert!(lines[1].starts_with("10,der_type,boat,"), "{report}");
    assert!(lines[2].starts_with("500,nameplate_kw,'-5,"), "{report}");
    assert!(
        lines[3].starts_with("1001,external_id,m-3,appears twice"),
        "{report}"
    );
}

#[tokio::test]
async fn meter_data_imported_twice_adds_nothing_and_rows_for_another_organizations_ders_are_refused()
 {
    let s = scene().await;
    let aggregator = s.api.caller("aggregator", &["aggregator"]).await;
    let other = s.api.caller("aggregator", &["aggregator"]).await;
    for (caller, ext) in [(&aggregator, "meter-1"), (&other, "meter-9")] {
        let response = s
            .api
            .post(
                "/v1/ders",
                &caller.token,
                &json!({"external_id": ext, "der_type": "battery", "nameplate_kw": 5.0}),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let mut csv = "der_external_id,interval_start,interval_minutes,kwh\n".to_owned();
    for q in 0..96 {
        let t = chrono::DateTime::parse_from_rfc3339("2026-07-01T00:00:00-07:00").expect("time")
            + chrono::TimeDelta::minutes(15 * q);
        csv += &format!(
            "meter-1,{},15,{:.3}\n",
            t.to_rfc3339(),
            0.25 + q as f64 / 100.0
        );
    }
    let org = Some(aggregator.organization_id);
    let first = s.upload(&s.api.admin, "meter_data", org, &csv).await;
    let file = s.finished(&s.api.admin, &first).await;
    assert_eq!(file["status"], "imported", "{file}");
    assert_eq!(file["rows_imported"], 96);
    let again = s.upload(&s.api.admin, "meter_data", org, &csv).await;
    let file = s.finished(&s.api.admin, &again).await;
    assert_eq!(file["status"], "imported", "{file}");
    assert_eq!(file["rows_read"], 96);
    assert_eq!(file["rows_imported"], 0, "nothing new the second time");
    let stored: i64 = sqlx::query_scalar("select count(*) from pm.meter_interval")
        .fetch_one(&s.api.db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 96);

    // A row naming the other organization's meter is refused, and so is the file.
    let mixed = "der_external_id,interval_start,interval_minutes,kw\nmeter-1,2026-07-02T00:00:00Z,60,2\nmeter-9,2026-07-02T00:00:00Z,60,2\n";
    let id = s.upload(&s.api.admin, "meter_data", org, mixed).await;
    let file = s.finished(&s.api.admin, &id).await;
    assert_eq!(file["status"], "rejected", "{file}");
    assert_eq!(file["rows_rejected"], 1);
    assert!(
        file["reason"]
            .as_str()
            .is_some_and(|r| r.contains("line 3")),
        "{file}"
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from pm.meter_interval")
        .fetch_one(&s.api.db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 96);
}

#[tokio::test]
async fn each_object_version_is_noticed_once_by_two_watchers_and_after_restarts() {
    let mut s = scene().await;
    s.watchers.push(watcher(&s.api, &s.s3).await);
    let aggregator = s.api.caller("aggregator", &["aggregator"]).await;
    let key = format!("{}/ders/crm-export.csv", aggregator.organization_id);
    s.put(&key, format!("{DER_HEADER}\nx-1,thermostat,2,,\n"))
        .await;
    let rows = s.finished_key(&key, 1).await;
    assert_eq!(rows[0].1, "imported", "{rows:?}");
    // Both watchers listed it many times; one file, one event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = published(&s.api.kafka, "pm.files.v1", &rows[0].0.to_string(), 2).await;
    assert_eq!(events[0].0, "pmcore.file.received.v1");
    assert_eq!(events[1].0, "pmcore.file.imported.v1");

    // While no watcher runs: a new version of the same key and a new file.
    for w in s.watchers.drain(..) {
        w.stop().await.expect("watcher stops");
    }
    s.put(&key, format!("{DER_HEADER}\nx-1,thermostat,3,,\n"))
        .await;
    let later = format!("{}/ders/later.csv", aggregator.organization_id);
    s.put(&later, format!("{DER_HEADER}\nx-2,thermostat,2,,\n"))
        .await;
    // Refused keys are recorded, never imported.
    s.put("loose.csv", format!("{DER_HEADER}\nx-3,thermostat,2,,\n"))
        .await;
    let stranger = format!("{}/ders/a.csv", Uuid::now_v7());
    s.put(&stranger, format!("{DER_HEADER}\nx-4,thermostat,2,,\n"))
        .await;
    s.watchers.push(watcher(&s.api, &s.s3).await);
    s.watchers.push(watcher(&s.api, &s.s3).await);

    let rows = s.finished_key(&key, 2).await;
    assert!(
        rows.iter().all(|(_, status, _)| status == "imported"),
        "{rows:?}"
    );
    assert_eq!(s.finished_key(&later, 1).await[0].1, "imported");
    let loose = s.finished_key("loose.csv", 1).await;
    assert_eq!(loose[0].1, "rejected");
    assert!(
        loose[0]
            .2
            .as_deref()
            .is_some_and(|r| r.contains("<organization id>/<kind>/"))
    );
    let stranger = s.finished_key(&stranger, 1).await;
    assert!(
        stranger[0]
            .2
            .as_deref()
            .is_some_and(|r| r.contains("no organization"))
    );
    let ders = s.ders_of(aggregator.organization_id).await;
    assert_eq!(ders.len(), 2, "{ders:?}");
    assert_eq!(ders["x-1"].0, 3.0, "the second version was imported too");

    // The refused objects are the utility's to see, not a participant's.
    let seen: Value = s
        .api
        .get_json("/v1/files?status=rejected", &aggregator.token)
        .await;
    assert_eq!(seen["items"], json!([]));
    let seen: Value = s
        .api
        .get_json("/v1/files?status=rejected", &s.api.admin)
        .await;
    assert_eq!(seen["items"].as_array().map(Vec::len), Some(2));
    let files: i64 = sqlx::query_scalar("select count(*) from pm.file")
        .fetch_one(&s.api.db.pool)
        .await
        .expect("count");
    assert_eq!(
        files, 5,
        "one row per object version, whatever the watchers did"
    );
}

#[tokio::test]
async fn files_that_are_not_what_they_claim_are_refused_whole_with_the_reason() {
    let s = scene().await;
    let aggregator = s.api.caller("aggregator", &["aggregator"]).await;
    let org = aggregator.organization_id;
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("empty.csv", Vec::new(), "the file is empty"),
        (
            "header.csv",
            b"id,type,kw\n1,battery,5\n".to_vec(),
            "unknown column `id`",
        ),
        (
            "latin1.csv",
            [
                format!("{DER_HEADER}\nm-1,battery,5,,\n").as_bytes(),
                b"m-2,battery,5,,Stra\xdfe\n",
            ]
            .concat(),
            "line 3 is not UTF-8",
        ),
        (
            "wide.csv",
            format!("{DER_HEADER}\nm-1,battery,5,,F,extra\n").into_bytes(),
            "line 2 has 6 columns, the header has 5",
        ),
        (
            "binary.csv",
            vec![0x89, b'P', b'N', b'G', 0, 0, 0xff, 0xfe],
            "not UTF-8",
        ),
        (
            "huge.csv",
            format!("{DER_HEADER}\n{}", "m-1,battery,5,,\n".repeat(300_000)).into_bytes(),
            "larger than the limit",
        ),
    ];
    for (name, body, _) in &cases {
        s.put(&format!("{org}/ders/{name}"), body.clone()).await;
    }
    for (name, _, reason) in &cases {
        let rows = s.finished_key(&format!("{org}/ders/{name}"), 1).await;
        assert_eq!(rows[0].1, "rejected", "{name}");
        let got = rows[0].2.clone().unwrap_or_default();
        assert!(
            got.contains(reason),
            "{name}: `{got}` should say `{reason}`"
        );
    }
    assert!(s.ders_of(org).await.is_empty());
}

#[tokio::test]
async fn a_worker_killed_mid_import_imports_the_file_once_after_a_restart() {
    let mut s = scene().await;
    let aggregator = s.api.caller("aggregator", &["aggregator"]).await;
    let response = s
        .api
        .post(
            "/v1/ders",
            &aggregator.token,
            &json!({"external_id": "m", "der_type": "battery", "nameplate_kw": 5.0}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let rows = 60_000;
    let mut csv = String::from("der_external_id,interval_start,interval_minutes,kwh\n");
    let start = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").expect("time");
    for i in 0..rows {
        let t = start + chrono::TimeDelta::minutes(5 * i);
        csv += &format!("m,{},5,0.4\n", t.to_rfc3339());
    }
    let id = s
        .upload(
            &s.api.admin,
            "meter_data",
            Some(aggregator.organization_id),
            &csv,
        )
        .await;
    let pool = s.api.db.pool.clone();
    eventually(Duration::from_secs(60), "the import to start", || {
        let pool = pool.clone();
        let id = id.clone();
        async move {
            let status: String =
                sqlx::query_scalar("select status from pm.file where id = $1::uuid")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (status == "importing").then_some(())
        }
    })
    .await;
    s.worker.take().expect("worker").kill().await;
    let partial: i64 = sqlx::query_scalar("select count(*) from pm.meter_interval")
        .fetch_one(&s.api.db.pool)
        .await
        .expect("count");
    assert_eq!(partial, 0, "a killed import leaves nothing behind");

    s.worker = Some(worker(&s.api, &s.s3).await);
    let file = s.finished(&s.api.admin, &id).await;
    assert_eq!(file["status"], "imported", "{file}");
    assert_eq!(file["rows_imported"], rows);
    let stored: i64 = sqlx::query_scalar("select count(*) from pm.meter_interval")
        .fetch_one(&s.api.db.pool)
        .await
        .expect("count");
    assert_eq!(stored, rows);
    let events = published(&s.api.kafka, "pm.files.v1", &id, 2).await;
    assert_eq!(events[1].0, "pmcore.file.imported.v1");
    let more = published_after(&s.api.kafka, "pm.files.v1", &id, 2, Duration::from_secs(5)).await;
    assert_eq!(more, 0, "one outcome, not one per attempt");
}

#[tokio::test]
async fn uploads_are_checked_and_files_are_private_to_their_organization() {
    let s = scene().await;
    let aggregator = s.api.caller("aggregator", &["aggregator"]).await;
    let other: Caller = s.api.caller("aggregator", &["aggregator"]).await;
    let viewer = s.api.caller("aggregator", &["viewer"]).await;
    let refused = [
        (
            &aggregator,
            json!({"kind": "meter_data", "name": "m.csv"}),
            StatusCode::FORBIDDEN,
        ),
        (
            &viewer,
            json!({"kind": "ders", "name": "d.csv"}),
            StatusCode::FORBIDDEN,
        ),
        (
            &aggregator,
            json!({"kind": "invoices", "name": "d.csv"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &aggregator,
            json!({"kind": "ders", "name": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &aggregator,
            json!({"kind": "ders", "name": "d.csv", "organization_id": other.organization_id}),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (caller, body, status) in refused {
        let response = s
            .api
            .post("/v1/files", &caller.token, &body)
            .send()
            .await
            .expect("request");
        problem(response, status).await;
    }

    let id = s
        .upload(
            &aggregator.token,
            "ders",
            None,
            &format!("{DER_HEADER}\nz-1,battery,5,,\n"),
        )
        .await;
    let response = s
        .api
        .get(&format!("/v1/files/{id}"), &other.token)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
    let listed: Value = s.api.get_json("/v1/files", &other.token).await;
    assert_eq!(listed["items"], json!([]));
    let listed: Value = s
        .api
        .get_json("/v1/files?kind=ders", &aggregator.token)
        .await;
    assert_eq!(listed["items"][0]["id"], id.as_str());
}
