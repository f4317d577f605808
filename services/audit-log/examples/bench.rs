//! `just bench-audit`: the audit log at scale, on the running stack.
//!
//! 1. Produces `PMCORE_BENCH_ENTRIES` (1,000,000) domain events to their topic on the
//!    running broker while the audit log's consumer appends them to a fresh
//!    database, and times both (progress every 10 s).
//! 2. The size on disk per entry (entries, leaves, tree hashes, their indexes).
//! 3. Signs a checkpoint, then times 1,000 inclusion proofs of random entries and
//!    1,000 consistency proofs between random sizes through the HTTP API: p50, p99.
//! 4. Verifies the whole log once and times it.
//! 5. Exports the whole log (a job, uploaded in parts), downloads it and checks it
//!    offline line by line, and times both.
//!
//! `PMCORE_KAFKA_BACKGROUND_FETCH_WAIT_MS` sets the consumer's fetch wait (2 s unless
//! set; the native stack's services use 10 s).

use std::time::{Duration, Instant};

use pmcore_db::DbConfig;
use pmcore_kafka::KafkaConfig;
use pmcore_runtime::Service;
use pmcore_web::auth::{OrganizationKind, Principal, Role};
use rand::Rng;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const SECRET: &str = "bench-audit-signing-key-bench-audit-0123";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pmcore_runtime::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("PMCORE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let n: u64 = std::env::var("PMCORE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let url = std::env::var("PMCORE_DATABASE_URL")?;
    let brokers = std::env::var("PMCORE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let base = url
        .rsplit_once('/')
        .map_or(url.as_str(), |(b, _)| b)
        .to_owned();
    let mut admin = PgConnection::connect(&format!("{base}/postgres")).await?;
    sqlx::query("drop database if exists pmcore_bench_audit with (force)")
        .execute(&mut admin)
        .await?;
    sqlx::query("create database pmcore_bench_audit")
        .execute(&mut admin)
        .await?;
    let db_url = format!("{base}/pmcore_bench_audit");
    let database = DbConfig::from_url(&db_url);
    pmcore_db::migrate::run_sets(
        &database,
        &[
            pmcore_db::migrate::Set::Platform,
            pmcore_db::migrate::Set::Audit,
        ],
    )
    .await?;

    eprintln!("[bench] database pmcore_bench_audit migrated");
    let mut kafka = KafkaConfig::new(&brokers, &format!("bencha{}.", Uuid::now_v7().simple()));
    // The audit log is a background consumer: on tansu its fetch wait sets how often a
    // busy one is answered (the native stack runs it at 10 s).
    if let Ok(ms) = std::env::var("PMCORE_KAFKA_BACKGROUND_FETCH_WAIT_MS") {
        kafka.background_fetch_wait_ms = ms.parse()?;
    }
    let config = pmcore_audit_log::Config {
        jwt_secret: Some(SECRET.to_owned().into()),
        checkpoint_interval_s: 3600,
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        group: format!("bench-audit-{}", Uuid::now_v7().simple()),
        ..pmcore_audit_log::Config::new(([127, 0, 0, 1], 0).into(), database, kafka.clone())
    };
    let app = pmcore_audit_log::App::build(config).await?;
    let addr = app.local_addr()?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(app.run(cancel.clone()));
    let base = format!("http://127.0.0.1:{}", addr.port());
    let http = reqwest::Client::new();
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The path the trail takes in production: domain events on their topic (what the
    // services' outboxes write), read by the audit log's consumer group and appended
    // in batches. Producing runs alongside, as the services would.
    let mut conn = PgConnection::connect(&db_url).await?;
    let started = Instant::now();
    let producing = tokio::spawn(produce(kafka, n));
    let mut last_report = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar("select count(*) from audit.leaf")
            .fetch_one(&mut conn)
            .await?;
        if done as u64 >= n {
            break;
        }
        anyhow::ensure!(
            !service.is_finished(),
            "the audit log stopped after {done} entries"
        );
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[bench] {done} in the log after {:.0} s ({:.0}/s)",
                started.elapsed().as_secs_f64(),
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let produce_s = producing.await??;
    let append_s = started.elapsed().as_secs_f64();
    sqlx::query("vacuum analyze audit.entry, audit.leaf, audit.tree_hash")
        .execute(&mut conn)
        .await?;
    let bytes: i64 = sqlx::query_scalar(
        "select pg_total_relation_size('audit.entry') + pg_total_relation_size('audit.leaf')
              + pg_total_relation_size('audit.tree_hash')",
    )
    .fetch_one(&mut conn)
    .await?;

    let tokens = pmcore_web::tokens::Tokens::new(SECRET.as_bytes(), Duration::from_secs(3600));
    let token = tokens.issue(&Principal {
        subject: "client:bench".into(),
        organization_id: Uuid::now_v7(),
        organization_kind: OrganizationKind::Utility,
        roles: vec![Role::Auditor],
    })?;
    http.post(format!("{base}/v1/audit/checkpoint"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?;
    let mut rng = rand::rng();
    let time = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let t = Instant::now();
            let r = http.get(path).bearer_auth(token).send().await?;
            anyhow::ensure!(r.status().is_success(), "{}", r.status());
            r.bytes().await?;
            anyhow::Ok(t.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let mut inclusion = Vec::new();
    for _ in 0..1000 {
        let i = rng.random_range(0..n);
        inclusion.push(time(format!("{base}/v1/audit/entries/{i}/proof?tree_size={n}")).await?);
    }
    let mut consistency = Vec::new();
    for _ in 0..1000 {
        let from = rng.random_range(1..n);
        consistency.push(time(format!("{base}/v1/audit/consistency?from={from}&to={n}")).await?);
    }
    inclusion.sort_by(f64::total_cmp);
    consistency.sort_by(f64::total_cmp);
    let t = Instant::now();
    let verified: serde_json::Value = http
        .post(format!("{base}/v1/audit/verify"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let verify_s = t.elapsed().as_secs_f64();

    // The whole log exported (a background job, uploaded in parts), then downloaded and
    // checked offline line by line, as an auditor would with `audit-tool verify`.
    let t = Instant::now();
    let created: serde_json::Value = http
        .post(format!("{base}/v1/audit/exports"))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let export = loop {
        let e: serde_json::Value = http
            .get(format!("{base}/v1/audit/exports/{id}"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        match e["status"].as_str() {
            Some("done") => break e,
            Some("failed") => anyhow::bail!("export failed: {e}"),
            _ => {}
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("[bench] export: {} entries written", e["entries"]);
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let export_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let path = std::env::temp_dir().join(format!("pmcore-bench-export-{id}.jsonl"));
    let mut response = http
        .get(export["url"].as_str().unwrap_or_default())
        .send()
        .await?
        .error_for_status()?;
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(&path).await?);
    while let Some(chunk) = response.chunk().await? {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    let export_bytes = tokio::fs::metadata(&path).await?.len();
    let key: serde_json::Value = http
        .get(format!("{base}/v1/audit/checkpoint/key"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let vkey = key["verifier_key"].as_str().unwrap_or_default().to_owned();
    let check_path = path.clone();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let reader = std::io::BufReader::new(std::fs::File::open(&check_path)?);
        let lines = std::io::BufRead::lines(reader).map_while(Result::ok);
        Ok(pmcore_audit_log::log::bundle::check_lines(lines, &vkey))
    })
    .await??;
    let check_s = t.elapsed().as_secs_f64();
    let _ = tokio::fs::remove_file(&path).await;
    cancel.cancel();
    let _ = service.await;

    println!();
    println!("entries                 {n}");
    println!(
        "produced to the topic   {produce_s:.1} s, {:.0} events/s (the platform's producer)",
        n as f64 / produce_s
    );
    println!(
        "appended from the topic {append_s:.1} s, {:.0} entries/s (first record produced to last entry committed)",
        n as f64 / append_s
    );
    println!(
        "on disk                 {:.0} MB, {:.0} bytes per entry (entries, leaves, tree hashes, indexes)",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );
    println!(
        "inclusion proof (HTTP)  p50 {:.2} ms, p99 {:.2} ms",
        percentile(&inclusion, 0.5),
        percentile(&inclusion, 0.99)
    );
    println!(
        "consistency proof       p50 {:.2} ms, p99 {:.2} ms",
        percentile(&consistency, 0.5),
        percentile(&consistency, 0.99)
    );
    println!(
        "verify (whole log)      {verify_s:.1} s, ok = {}",
        verified["ok"]
    );
    println!(
        "export (whole log)      {export_s:.1} s to write {:.0} MB in parts; download and offline check {check_s:.1} s, ok = {} ({} entries)",
        export_bytes as f64 / 1e6,
        report.ok,
        report.entries_checked
    );
    Ok(())
}

/// Produces `n` `der.registered` events (Avro, CloudEvents headers) with the
/// platform's producer; the seconds it took until the broker acknowledged the last.
async fn produce(kafka: KafkaConfig, n: u64) -> anyhow::Result<f64> {
    use pmcore_events::{avro, domain::DerRegistered, envelope::Envelope};
    use rdkafka::producer::FutureRecord;
    let producer = pmcore_kafka::idempotent_producer(&kafka)?;
    let topic = kafka.topic(pmcore_events::catalog::DER_REGISTERED.topic.name);
    let organization = Uuid::now_v7().to_string();
    let started = Instant::now();
    let mut in_flight = Vec::with_capacity(10_000);
    for i in 0..n {
        let event = DerRegistered {
            der_id: Uuid::now_v7().to_string(),
            organization_id: organization.clone(),
            gateway_id: None,
            external_id: Some(format!("m-{i}")),
            der_type: "battery".into(),
            nameplate_kw: 5.0,
            nameplate_kwh: Some(13.5),
            feeder: Some("F-01".into()),
            substation: Some("S-1".into()),
            registered_at: 1_782_000_000_000_000,
        };
        let envelope = Envelope::for_event(
            &event,
            "api",
            Some("client:0195f3a0-0000-7000-8000-0000000000c1".into()),
        );
        let payload = avro::encode(&event)?;
        let headers = pmcore_kafka::record_headers(envelope.to_headers());
        let record = FutureRecord::to(&topic)
            .key(&envelope.subject)
            .payload(&payload)
            .headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => in_flight.push(delivery),
            Err(error) => anyhow::bail!("enqueueing event {i}: {error}"),
        }
        if in_flight.len() == 10_000 {
            for delivery in futures::future::join_all(in_flight.drain(..)).await {
                delivery?;
            }
        }
    }
    for delivery in futures::future::join_all(in_flight).await {
        delivery?;
    }
    Ok(started.elapsed().as_secs_f64())
}
