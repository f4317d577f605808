//! Helpers for tests that run against the real stack (`just stack-up --profile testing`).
//!
//! Every test gets its own database (migrated from `flyway/pm/` and `flyway/audit/`), its own topic prefix
//! and consumer groups, so tests run in parallel against one Postgres and one broker.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pmcore_db::DbConfig;
use pmcore_kafka::KafkaConfig;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// Sends the services' logs to the test output when `PMCORE_TEST_LOG` is set
/// (e.g. `PMCORE_TEST_LOG=info,pmcore_kafka=debug`).
pub fn init_logs() {
    pmcore_runtime::install_crypto_provider();
    if let Ok(filter) = std::env::var("PMCORE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// Postgres URL of the stack (the `pmcore` superuser of the dev cluster).
pub fn database_url() -> String {
    std::env::var("PMCORE_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://pmcore:pmcore@127.0.0.1:5432/pmcore".to_owned())
}

pub fn kafka_brokers() -> String {
    std::env::var("PMCORE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The stack's S3 server, as the services are configured for it in tests.
pub fn s3() -> pmcore_storage::S3Config {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    pmcore_storage::S3Config {
        endpoint: var("PMCORE_S3_ENDPOINT", "http://127.0.0.1:9000"),
        region: "us-east-1".into(),
        access_key: var("PMCORE_S3_ACCESS_KEY", "pmcore"),
        secret_key: var("PMCORE_S3_SECRET_KEY", "pmcore-secret").into(),
        inbound_bucket: "pmcore-inbound".into(),
        reports_bucket: "pmcore-reports".into(),
        public_endpoint: None,
    }
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// A database of its own for one test, migrated to the latest version.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        init_logs();
        Self::at(&database_url()).await
    }

    /// Creates the database on the server behind `url`.
    pub async fn at(url: &str) -> anyhow::Result<Self> {
        let name = format!("pmcore_t_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&with_database(url, "postgres")).await?;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = with_database(url, &name);
        let config = DbConfig::from_url(&url);
        pmcore_db::migrate::run_sets(
            &config,
            &[
                pmcore_db::migrate::Set::Platform,
                pmcore_db::migrate::Set::Audit,
            ],
        )
        .await?;
        ensure_logins(&url).await?;
        let pool = PgPool::connect(&url).await?;
        Ok(Self { name, url, pool })
    }

    /// The owner's configuration: migrations and test set-up only.
    pub fn config(&self) -> DbConfig {
        DbConfig::from_url(&self.url)
    }

    /// A pool of a service's own login.
    pub async fn pool_for(&self, service: &str) -> anyhow::Result<PgPool> {
        Ok(PgPool::connect(&login_url(&self.url, service)).await?)
    }

    /// A service's own login (`pmcore_<service>_app`, e.g. `api`, `audit_log`), with
    /// only its role's privileges, as every stack runs it.
    pub fn config_for(&self, service: &str) -> DbConfig {
        DbConfig::from_url(&login_url(&self.url, service))
    }
}

/// The dev and test password of the service logins (`flyway/logins/service-logins.sql`).
pub fn app_password() -> String {
    std::env::var("PMCORE_APP_DB_PASSWORD").unwrap_or_else(|_| "pmcore-app-dev".to_owned())
}

/// `url` with the user and password of a service's login.
pub fn login_url(url: &str, service: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://pmcore_{service}_app:{}@{host}", app_password())
}

/// Creates the service logins once per cluster (idempotent; several test processes
/// may race, which the script tolerates).
async fn ensure_logins(url: &str) -> anyhow::Result<()> {
    if PgConnection::connect(&login_url(url, "api")).await.is_ok() {
        return Ok(());
    }
    let mut owner = PgConnection::connect(url).await?;
    sqlx::query("select set_config('pmcore.app_password', $1, false)")
        .bind(app_password())
        .execute(&mut owner)
        .await?;
    sqlx::raw_sql(include_str!("../../../flyway/logins/service-logins.sql"))
        .execute(&mut owner)
        .await?;
    owner.close().await?;
    Ok(())
}

/// A topic prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("t{}.", Uuid::now_v7().simple())
}

pub fn kafka(prefix: &str) -> KafkaConfig {
    KafkaConfig::new(&kafka_brokers(), prefix)
}

/// Polls `probe` every 100 ms until it yields `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out a free port")
}

/// Status code of `GET http://addr/path`, or None when nothing answers.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let url = format!("http://{addr}{path}");
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// A private tansu broker on its own port and SQLite file, for tests that stop and
/// start the broker without disturbing other tests.
#[derive(Debug)]
pub struct PrivateBroker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Chooses a port and a data folder; does not start the broker.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("pmcore-tansu-{}", Uuid::now_v7().simple()));
        Self {
            port: free_port(),
            dir,
            child: None,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the broker on the same port and storage.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bin = std::env::var("PMCORE_TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu resolves a sqlite:// path against its working directory.
        let child = Command::new(bin)
            .current_dir(&self.dir)
            .arg("broker")
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        eventually(
            Duration::from_secs(30),
            "private tansu to listen",
            || async move { TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        // tansu 0.6's schema lacks the index its fetch path needs (docs/decisions/0012).
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tools/broker/tansu_indexes.py"
        );
        let status = Command::new("python3")
            .arg(script)
            .arg(self.dir.join("tansu.db"))
            .status()?;
        anyhow::ensure!(status.success(), "{script} failed: {status}");
        Ok(())
    }

    /// Freezes the broker (SIGSTOP): it keeps its connections and answers nothing,
    /// as a broker stalled by load or a disk would.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status();
            assert!(status.is_ok_and(|s| s.success()), "kill -{name} the broker");
        }
    }

    /// Kills the broker (SIGKILL: the harshest outage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Default for PrivateBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Forwards a loopback port to the stack's Postgres once started: stands for a
/// database that comes up after the service.
#[derive(Debug)]
pub struct LatePostgres {
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LatePostgres {
    pub fn new() -> Self {
        Self {
            port: free_port(),
            task: None,
        }
    }

    /// The URL of database `name` through this port.
    pub fn url(&self, name: &str) -> String {
        let real = database_url();
        let port_start = real.rfind(':').map_or(0, |i| i + 1);
        let after_port = real[port_start..]
            .find('/')
            .map_or(real.len(), |i| port_start + i);
        let moved = format!(
            "{}{}{}",
            &real[..port_start],
            self.port,
            &real[after_port..]
        );
        with_database(&moved, name)
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await?;
        let upstream = upstream_addr();
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        Ok(())
    }
}

impl Default for LatePostgres {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LatePostgres {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn upstream_addr() -> String {
    let url = database_url();
    let after_at = url.rsplit_once('@').map_or(url.as_str(), |(_, rest)| rest);
    after_at
        .split(['/', '?'])
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_owned()
}

/// A service running in this process until [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    cancel: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn start<S: pmcore_runtime::Service + 'static>(app: S, addr: SocketAddr) -> Self {
        let cancel = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(app.run(cancel.clone()));
        Self {
            addr,
            cancel,
            handle,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self, timeout: Duration) {
        let addr = self.addr;
        eventually(timeout, "/readyz to answer 200", || async move {
            (http_status(addr, "/readyz").await == Some(200)).then_some(())
        })
        .await;
    }

    /// Drops the service mid-flight, as a crash would: its tasks stop at whatever
    /// await point they reached, nothing is flushed by the service itself.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Cancels the service as SIGTERM would and returns how long it took to stop.
    pub async fn stop(self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle).await???;
        Ok(started.elapsed())
    }
}
