//! A Postgres connection that goes silent (open, carrying nothing) must not hold its
//! caller or its pool slot for good. The database is real; between it and the pool sits
//! a forwarder that can stop forwarding, as a firewall that lost its state does.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use pmcore_db::{DbConfig, NoAnswer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Forwards to Postgres until `silence`; then reads and drops every byte.
struct Forwarder {
    port: u16,
    silent: Arc<AtomicBool>,
}

impl Forwarder {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, flag.clone()));
                tokio::spawn(pump(sr, cw, flag.clone()));
            }
        });
        Self { port, silent }
    }

    fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if !silent.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// A pool of pmcore's own making that reaches Postgres through a forwarder.
async fn pool_through_forwarder() -> (sqlx::PgPool, Forwarder) {
    let url = pmcore_testkit::with_database(&pmcore_testkit::database_url(), "postgres");
    let parsed: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    let upstream = format!("{}:{}", parsed.get_host(), parsed.get_port());
    let forwarder = Forwarder::start(upstream.clone()).await;
    let url = url.replacen(&upstream, &format!("127.0.0.1:{}", forwarder.port), 1);
    let mut config = DbConfig::from_url(&url);
    config.acquire_timeout_ms = 1000;
    (pmcore_db::lazy_pool(&config).expect("pool"), forwarder)
}

#[tokio::test]
async fn work_on_a_silent_connection_ends_at_its_limit_and_the_connection_is_closed() {
    let (pool, forwarder) = pool_through_forwarder().await;
    let answered: Result<i32, anyhow::Error> =
        pmcore_db::within(&pool, Duration::from_secs(1), async |conn| {
            Ok(sqlx::query_scalar("select 1").fetch_one(conn).await?)
        })
        .await;
    assert_eq!(answered.expect("answered while forwarding"), 1);
    // Back in the pool once its release check is done, so the next unit reuses it.
    pmcore_testkit::eventually(Duration::from_secs(5), "the connection pooled", || {
        let idle = pool.num_idle();
        async move { (idle == 1).then_some(()) }
    })
    .await;

    let started = Instant::now();
    let silent: Result<i32, anyhow::Error> =
        pmcore_db::within(&pool, Duration::from_secs(1), async |conn| {
            sqlx::query("select 1").execute(&mut *conn).await?;
            // Silent from here on, in the middle of the unit of work.
            forwarder.silence();
            Ok(sqlx::query_scalar("select 2").fetch_one(conn).await?)
        })
        .await;
    let error = silent.expect_err("no answer");
    assert!(error.is::<NoAnswer>(), "{error:#}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        pool.size(),
        0,
        "the silent connection was closed, not pooled"
    );
}

#[tokio::test]
async fn a_released_connection_that_stays_silent_is_closed_not_pooled() {
    let (pool, forwarder) = pool_through_forwarder().await;
    let mut conn = pool.acquire().await.expect("connected");
    sqlx::query("select 1")
        .execute(&mut *conn)
        .await
        .expect("answered");
    forwarder.silence();
    // A caller that gives up mid-query (a client that hung up on the api) drops its
    // connection with a query in flight.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        sqlx::query("select 1").execute(&mut *conn),
    )
    .await;
    assert!(gave_up.is_err(), "no answer through a silent forwarder");
    drop(conn);
    assert_eq!(pool.size(), 1, "being checked on release");
    pmcore_testkit::eventually(Duration::from_secs(15), "the connection closed", || {
        let size = pool.size();
        async move { (size == 0).then_some(()) }
    })
    .await;
}
