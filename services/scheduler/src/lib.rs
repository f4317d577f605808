//! `scheduler`: owns time. Any number may run; one holds the Postgres leader lock and
//! does the work, the others wait to take over.

pub mod dispatch;
mod leader;
pub mod partitions;
pub mod retention;

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use pmcore_db::DbConfig;
use pmcore_kafka::KafkaConfig;
use pmcore_runtime::{
    Platform, Service,
    clock::{self, SharedClock},
    supervise, task,
};
use tokio_util::sync::CancellationToken;

pub use leader::Leadership;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long = "listen",
        env = "PMCORE_SCHEDULER_LISTEN",
        default_value = "0.0.0.0:3011"
    )]
    pub listen: SocketAddr,

    /// How often a follower tries to become leader, in milliseconds.
    #[arg(
        long = "leader-poll-ms",
        env = "PMCORE_SCHEDULER_LEADER_POLL_MS",
        default_value_t = 2000
    )]
    pub leader_poll_ms: u64,

    /// Days of raw telemetry (and its rollups) kept; older days are dropped whole
    /// (at least 7).
    #[arg(
        long = "telemetry-retention-days",
        env = "PMCORE_SCHEDULER_TELEMETRY_RETENTION_DAYS",
        default_value_t = 400
    )]
    pub telemetry_retention_days: i32,

    /// How often the leader looks for due dispatch work (starts, ends, commands), in
    /// milliseconds; an event starts at most this late.
    #[arg(
        long = "dispatch-tick-ms",
        env = "PMCORE_SCHEDULER_DISPATCH_TICK_MS",
        default_value_t = 500
    )]
    pub dispatch_tick_ms: u64,

    /// Commands (or releases) put in the outbox per transaction during a fan-out.
    #[arg(
        long = "dispatch-chunk",
        env = "PMCORE_SCHEDULER_DISPATCH_CHUNK",
        default_value_t = 500,
        value_parser = clap::value_parser!(i64).range(1..=10_000)
    )]
    pub dispatch_chunk: i64,

    /// Minutes before an event's start at which participants get a reminder, comma separated.
    #[arg(
        long = "reminder-leads-minutes",
        env = "PMCORE_SCHEDULER_REMINDER_LEADS_MINUTES",
        default_value = "1440,60",
        value_delimiter = ','
    )]
    pub reminder_leads_minutes: Vec<i32>,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,
}

#[derive(Debug)]
pub struct App {
    config: Config,
    platform: Platform,
    leadership: Leadership,
    clock: SharedClock,
}

impl App {
    /// Builds the scheduler on a clock of the caller's (tests move time by hand).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let platform = Platform::new(config.listen, &config.database, &config.kafka).await?;
        Ok(Self {
            config,
            platform,
            leadership: Leadership::default(),
            clock,
        })
    }

    fn dispatch_config(&self) -> dispatch::DispatchConfig {
        dispatch::DispatchConfig {
            tick: Duration::from_millis(self.config.dispatch_tick_ms.max(10)),
            chunk: self.config.dispatch_chunk,
            reminder_leads_minutes: self
                .config
                .reminder_leads_minutes
                .iter()
                .copied()
                .filter(|m| *m > 0)
                .collect(),
            database_timeout: self.config.kafka.database_timeout(),
            ..dispatch::DispatchConfig::default()
        }
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }

    /// Whether this instance currently holds the leader lock.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }
}

impl Service for App {
    const NAME: &'static str = "scheduler";
    const ABOUT: &'static str = "pmcore scheduler: starts and ends dispatch events and runs periodic jobs (one leader at a time)";
    type Config = Config;

    fn database(config: &Config) -> &DbConfig {
        &config.database
    }

    fn listen_addr(config: &Config) -> SocketAddr {
        config.listen
    }

    async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, clock::system()).await
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.platform.readiness();
        let elect = leader::hold(
            self.platform.pool.clone(),
            self.leadership.clone(),
            Duration::from_millis(self.config.leader_poll_ms),
            cancel.clone(),
        );
        let partitions = partitions::maintain(
            self.platform.pool.clone(),
            self.leadership.clone(),
            self.config.telemetry_retention_days.max(7),
            self.config.kafka.inbox_retention_days.max(1),
            Duration::from_secs(3600),
            self.config.kafka.database_timeout(),
            cancel.clone(),
        );
        let dispatch = dispatch::run(
            self.platform.pool.clone(),
            self.leadership.clone(),
            self.clock.clone(),
            self.dispatch_config(),
            cancel.clone(),
        );
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                self.platform.outbox_relay(cancel.clone()),
                Box::pin(elect),
                task(partitions),
                task(dispatch),
                self.platform.serve(Router::new(), readiness, cancel),
            ],
        )
        .await
    }
}
