//! `just bench-messaging`: the messaging service under load, on the running stack.
//!
//! One organization with `PMCORE_BENCH_ENDPOINTS` (100) webhook endpoints, a tenth of
//! them down (connection refused), the rest served by a receiver in this process. The
//! messaging service runs as its own release process (so its CPU and memory are its
//! own), reading requests that this process puts in the platform's outbox, published
//! by the outbox relay, as any service would.
//!
//! 1. Burst: `PMCORE_BENCH_EVENTS` (1,000) requests at once, each a message to every
//!    endpoint: 100,000 deliveries, 90,000 to the healthy endpoints. Deliveries per
//!    second to the healthy ones, from the first request to the last delivery.
//! 2. Steady: `PMCORE_BENCH_RATE` (5) requests per second for 30 s: p50 and p99 from
//!    the request (its time in the outbox) to the receiver.
//!
//! Each phase reports the service's CPU seconds (from /proc) and its peak memory.

#![allow(clippy::print_stdout)]

use std::{
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::StatusCode, routing::post};
use chrono::Utc;
use pmcore_kafka::{KafkaConfig, outbox};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRETS_KEY: &str = "YmVuY2gtbWVzc2FnaW5nLXNlY3JldHMta2V5LTAxMjM=";

#[derive(Debug, Default)]
struct Seen {
    /// Milliseconds from request to receipt, per delivery.
    latencies: Vec<f64>,
}

async fn receive(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> StatusCode {
    let now = Utc::now().timestamp_micros();
    let sent = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["sent_at_us"].as_i64());
    if let Some(sent) = sent {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.latencies.push((now - sent) as f64 / 1000.0);
    }
    StatusCode::NO_CONTENT
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// `VmRSS` and `VmHWM` of a process, in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn enqueue(pool: &PgPool, organization: Uuid, n: usize) -> anyhow::Result<()> {
    let meta = outbox::EventMeta {
        source: "bench".into(),
        principal: None,
        traceparent: None,
    };
    let mut tx = pool.begin().await?;
    for _ in 0..n {
        let data = serde_json::json!({"sent_at_us": Utc::now().timestamp_micros()});
        let event = pmcore_events::domain::MessagingRequested {
            organization_id: organization.to_string(),
            kind: "settlement.calculated".into(),
            subject: Uuid::now_v7().to_string(),
            data_json: data.to_string(),
            requested_at: Utc::now().timestamp_micros(),
        };
        outbox::enqueue(&mut tx, &event, &meta).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn wait_for(seen: &Arc<Mutex<Seen>>, target: usize, limit: Duration) -> bool {
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        let n = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latencies
            .len();
        if n >= target {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        if last.elapsed() > Duration::from_secs(10) {
            eprintln!("[bench] {n} of {target} delivered");
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the time went for messages requested after `since_us`: from the request to
/// the message queued (outbox relay, broker, consumer) and from queued to delivered
/// (leasing and sending), p50 and p99 in ms.
async fn breakdown(pool: &PgPool, since_us: i64) -> anyhow::Result<String> {
    let row: (Option<f64>, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "with d as (
             select extract(epoch from m.created_at) * 1e6 - (m.data->>'sent_at_us')::float8 as queued_us,
                    extract(epoch from d.delivered_at - m.created_at) * 1e6 as sent_us
               from messaging.message m join messaging.delivery d on d.message_id = m.id
              where d.status = 'delivered' and (m.data->>'sent_at_us')::bigint >= $1)
         select percentile_cont(0.5) within group (order by queued_us) / 1000,
                percentile_cont(0.99) within group (order by queued_us) / 1000,
                percentile_cont(0.5) within group (order by sent_us) / 1000,
                percentile_cont(0.99) within group (order by sent_us) / 1000
           from d",
    )
    .bind(since_us)
    .fetch_one(pool)
    .await?;
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    Ok(format!(
        "request->queued p50 {} / p99 {} ms (outbox relay, broker, consumer); queued->delivered p50 {} / p99 {} ms (lease, send)",
        ms(row.0),
        ms(row.1),
        ms(row.2),
        ms(row.3)
    ))
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pmcore_runtime::install_crypto_provider();
    let endpoints: usize = env_or("PMCORE_BENCH_ENDPOINTS", 100);
    let events: usize = env_or("PMCORE_BENCH_EVENTS", 1000);
    let rate: usize = env_or("PMCORE_BENCH_RATE", 5);
    let brokers = std::env::var("PMCORE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    // A database of its own, migrated, with the service logins.
    let db = pmcore_testkit::TestDb::new().await?;
    eprintln!("[bench] database {}", db.name);
    let pool = db.pool.clone();

    // The receiver, and endpoints: every tenth one at a port nothing listens on.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/{hook}", post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let organization = Uuid::now_v7();
    sqlx::query("insert into pm.organization (id, name, kind) values ($1, 'bench', 'aggregator')")
        .bind(organization)
        .execute(&pool)
        .await?;
    let key = pmcore_messaging::sealed::SecretsKey::from_base64(SECRETS_KEY)?;
    let mut healthy = 0;
    for i in 0..endpoints {
        let down = i % 10 == 9;
        let url = if down {
            format!("http://127.0.0.1:1/down{i}")
        } else {
            healthy += 1;
            format!("http://{receiver}/hook{i}")
        };
        sqlx::query(
            "insert into messaging.endpoint (id, organization_id, url, secret_sealed)
             values ($1, $2, $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(organization)
        .bind(url)
        .bind(key.seal(pmcore_messaging::signature::generate().as_bytes()))
        .execute(&pool)
        .await?;
    }

    // The service, as its own process, with its own login.
    let prefix = format!("benchmsg{}.", Uuid::now_v7().simple());
    let kafka = KafkaConfig::new(&brokers, &prefix);
    let service_url = pmcore_testkit::login_url(&db.url, "messaging");
    let bin = std::env::var("PMCORE_BENCH_MESSAGING_BIN")
        .unwrap_or_else(|_| "target/release/messaging".into());
    let log_path = format!(
        "{}/bench-messaging.log",
        std::env::var("PMCORE_STACK_DIR").unwrap_or_else(|_| ".stack".into())
    );
    let log = std::fs::File::create(&log_path)?;
    eprintln!("[bench] the service logs to {log_path}");
    let child = Command::new(&bin)
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("PMCORE_DATABASE_URL", service_url)
        .env("PMCORE_KAFKA_TOPIC_PREFIX", &prefix)
        .env("PMCORE_MESSAGING_LISTEN", "127.0.0.1:0")
        .env("PMCORE_MESSAGING_SECRETS_KEY", SECRETS_KEY)
        .env("PMCORE_MESSAGING_ALLOW_PRIVATE_TARGETS", "true")
        .env(
            "PMCORE_MESSAGING_GROUP",
            format!("bench-{}", Uuid::now_v7().simple()),
        )
        .env_remove("PMCORE_SMTP_URL")
        .env(
            "PMCORE_LOG",
            std::env::var("PMCORE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "starting {bin}: {e} (build it with `cargo build --release --bin messaging`)"
            )
        })?;
    let pid = child.id();
    let _service = Service(child);
    let cancel = CancellationToken::new();
    tokio::spawn(outbox::OutboxRelay::new(pool.clone(), kafka).run(cancel.clone()));

    // Warm-up: one request, so topics, the group and the connections exist.
    enqueue(&pool, organization, 1).await?;
    if !wait_for(&seen, healthy, Duration::from_secs(120)).await {
        anyhow::bail!("the warm-up message was not delivered within 2 minutes");
    }
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .latencies
        .clear();
    println!(
        "messaging bench: {endpoints} endpoints ({healthy} healthy, {} refusing connections), \
         service pid {pid} (release build)",
        endpoints - healthy
    );

    // 1. Burst.
    let phase_start = Utc::now().timestamp_micros();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    for chunk in 0..events.div_ceil(100) {
        enqueue(&pool, organization, 100.min(events - chunk * 100)).await?;
    }
    let target = events * healthy;
    let ok = wait_for(&seen, target, Duration::from_secs(900)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let (rss, hwm) = memory_mb(pid);
    let mut lat = std::mem::take(&mut seen.lock().unwrap_or_else(|p| p.into_inner()).latencies);
    lat.sort_by(f64::total_cmp);
    let down_attempts: i64 = sqlx::query_scalar(
        "select count(*) from messaging.attempt a join messaging.delivery d on d.id = a.delivery_id
          where a.status_code is null",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "burst: {events} requests -> {} deliveries ({target} healthy){}",
        events * endpoints,
        if ok { "" } else { " (TIMED OUT)" }
    );
    println!(
        "  healthy deliveries/s {:.0} over {elapsed:.1} s; request->delivery p50 {:.0} ms, p99 {:.0} ms",
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "  failed attempts to the down endpoints {down_attempts}; service CPU {cpu:.1} s ({:.0}% of a core), RSS {rss:.0} MB, peak {hwm:.0} MB",
        100.0 * cpu / elapsed
    );
    println!("  {}", breakdown(&pool, phase_start).await?);

    // 2. Steady.
    let phase_start = Utc::now().timestamp_micros();
    let seconds = 30;
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..seconds {
        tick.tick().await;
        enqueue(&pool, organization, rate).await?;
    }
    let target = seconds * rate * healthy;
    let ok = wait_for(&seen, target, Duration::from_secs(300)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let (rss, hwm) = memory_mb(pid);
    let mut lat = std::mem::take(&mut seen.lock().unwrap_or_else(|p| p.into_inner()).latencies);
    lat.sort_by(f64::total_cmp);
    println!(
        "steady: {rate} requests/s for {seconds} s = {} healthy deliveries/s offered{}",
        rate * healthy,
        if ok { "" } else { " (TIMED OUT)" }
    );
    println!(
        "  request->delivery p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; service CPU {cpu:.1} s ({:.0}% of a core), RSS {rss:.0} MB, peak {hwm:.0} MB",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        100.0 * cpu / elapsed
    );
    println!("  {}", breakdown(&pool, phase_start).await?);
    cancel.cancel();
    Ok(())
}
