//! `just bench-audit`: the audit log at scale, on the running stack.
//!
//! 1. Appends `PMCORE_BENCH_ENTRIES` (1,000,000) entries to a fresh database in
//!    batches of 500, through the code the consumer runs per batch, and times it
//!    (progress every 10 s).
//! 2. The size on disk per entry (entries, leaves, tree hashes, their indexes).
//! 3. Signs a checkpoint, then times 1,000 inclusion proofs of random entries and
//!    1,000 consistency proofs between random sizes through the HTTP API: p50, p99.
//! 4. Verifies the whole log once and times it.

use std::time::{Duration, Instant};

use pmcore_audit_log::store::NewEntry;
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
    // The append path the consumer runs per batch (one transaction, the append lock,
    // entries, leaves, tree hashes), fed directly: through tansu the consumer group
    // never got its assignment at this volume (issues 15 and 16), and the broker is
    // not what this measures.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&db_url)
        .await?;
    let organization = Uuid::now_v7();
    let batch = 500u64;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut done = 0u64;
    while done < n {
        let size = batch.min(n - done);
        let entries: Vec<NewEntry> = (done..done + size)
            .map(|i| NewEntry {
                event_id: Uuid::now_v7(),
                event_type: "pmcore.der.registered.v1".into(),
                source: "api".into(),
                subject: Uuid::now_v7().to_string(),
                principal: Some("client:0195f3a0-0000-7000-8000-0000000000c1".into()),
                occurred_at: chrono::Utc::now(),
                topic: "pm.ders.v1".into(),
                payload: serde_json::json!({
                    "der_id": Uuid::now_v7(), "organization_id": organization,
                    "der_type": "battery", "nameplate_kw": 5.0, "nameplate_kwh": 13.5,
                    "external_id": format!("m-{i}"), "feeder": "F-01", "substation": "S-1",
                    "gateway_id": null, "registered_at": 1_782_000_000_000_000i64,
                }),
            })
            .collect();
        let mut tx = pool.begin().await?;
        pmcore_audit_log::store::append(&mut tx, &entries).await?;
        tx.commit().await?;
        done += size;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[bench] appended {done} in {:.0} s ({:.0}/s)",
                started.elapsed().as_secs_f64(),
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let append_s = started.elapsed().as_secs_f64();
    let mut conn = PgConnection::connect(&db_url).await?;
    sqlx::query("vacuum analyze audit.entry, audit.leaf, audit.tree_hash")
        .execute(&mut conn)
        .await?;
    let bytes: i64 = sqlx::query_scalar(
        "select pg_total_relation_size('audit.entry') + pg_total_relation_size('audit.leaf')
              + pg_total_relation_size('audit.tree_hash')",
    )
    .fetch_one(&mut conn)
    .await?;

    let config = pmcore_audit_log::Config {
        jwt_secret: Some(SECRET.to_owned().into()),
        checkpoint_interval_s: 3600,
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        group: format!("bench-audit-{}", Uuid::now_v7().simple()),
        ..pmcore_audit_log::Config::new(
            ([127, 0, 0, 1], 0).into(),
            database,
            KafkaConfig::new(&brokers, &format!("bencha{}.", Uuid::now_v7().simple())),
        )
    };
    let app = pmcore_audit_log::App::build(config).await?;
    let addr = app.local_addr()?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(app.run(cancel.clone()));
    let tokens = pmcore_web::tokens::Tokens::new(SECRET.as_bytes(), Duration::from_secs(3600));
    let token = tokens.issue(&Principal {
        subject: "client:bench".into(),
        organization_id: Uuid::now_v7(),
        organization_kind: OrganizationKind::Utility,
        roles: vec![Role::Auditor],
    })?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", addr.port());
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
    cancel.cancel();
    let _ = service.await;

    println!();
    println!("entries                 {n}");
    println!(
        "append (batches of 500) {append_s:.1} s, {:.0} entries/s",
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
    Ok(())
}
