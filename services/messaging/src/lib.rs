//! `messaging`: Subscriptions, templates, webhook and email deliveries with retries. This foundation serves the operational endpoints.

use std::net::SocketAddr;

use axum::Router;
use pmcore_db::DbConfig;
use pmcore_kafka::KafkaConfig;
use pmcore_runtime::{Platform, Service, supervise};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long = "listen",
        env = "PMCORE_MESSAGING_LISTEN",
        default_value = "0.0.0.0:3004"
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,
}

#[derive(Debug)]
pub struct App {
    platform: Platform,
}

impl App {
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }
}

impl Service for App {
    const NAME: &'static str = "messaging";
    const ABOUT: &'static str = "pmcore messaging: webhooks and email to participants";
    type Config = Config;

    fn database(config: &Config) -> &DbConfig {
        &config.database
    }

    fn listen_addr(config: &Config) -> SocketAddr {
        config.listen
    }

    async fn build(config: Config) -> anyhow::Result<Self> {
        let platform = Platform::new(config.listen, &config.database, &config.kafka).await?;
        Ok(Self { platform })
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.platform.readiness();
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                self.platform.serve(Router::new(), readiness, cancel),
            ],
        )
        .await
    }
}
