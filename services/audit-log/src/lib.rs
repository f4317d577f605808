//! `audit-log`: reads every domain topic and appends what happened, who did it and
//! when to `audit.entry`.

pub mod log;
mod recorder;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use pmcore_db::{DbConfig, inbox::Inbox};
use pmcore_events::catalog;
use pmcore_kafka::{
    KafkaConfig,
    consumer::{self, ConsumerSpec},
};
use pmcore_runtime::{Platform, Service, supervise, task};
use tokio_util::sync::CancellationToken;

pub use recorder::Recorder;

pub const CONSUMER_GROUP: &str = "pmcore-audit-log";

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the audit API and the operational endpoints.
    #[arg(
        long = "listen",
        env = "PMCORE_AUDIT_LOG_LISTEN",
        default_value = "0.0.0.0:3003"
    )]
    pub listen: SocketAddr,

    /// Consumer group; change it only to replay the trail into a fresh schema.
    #[arg(long = "consumer-group", env = "PMCORE_AUDIT_LOG_GROUP", default_value = CONSUMER_GROUP)]
    pub group: String,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,
}

#[derive(Debug)]
pub struct App {
    config: Config,
    platform: Platform,
}

impl App {
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }
}

impl Service for App {
    const NAME: &'static str = "audit-log";
    const ABOUT: &'static str = "pmcore audit-log: the append-only trail of every domain event";
    const MIGRATIONS: &'static [pmcore_db::migrate::Set] =
        &[pmcore_db::migrate::Set::Platform, pmcore_db::migrate::Set::Audit];
    type Config = Config;

    fn database(config: &Config) -> &DbConfig {
        &config.database
    }

    fn listen_addr(config: &Config) -> SocketAddr {
        config.listen
    }

    async fn build(config: Config) -> anyhow::Result<Self> {
        let platform = Platform::new(config.listen, &config.database, &config.kafka).await?;
        Ok(Self { config, platform })
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let spec = ConsumerSpec {
            group: self.config.group.clone(),
            topics: catalog::domain_topics().map(|t| t.name).collect(),
            inbox: Inbox::Audit,
        };
        let consume = consumer::run(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            spec,
            Arc::new(Recorder),
            cancel.clone(),
        );
        let readiness = self.platform.readiness();
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                task(consume),
                self.platform.serve(Router::new(), readiness, cancel),
            ],
        )
        .await
    }
}
