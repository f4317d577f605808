//! `der-gateway-relay`: WebSocket sessions of edge gateways, bridged to Kafka. This foundation serves the operational endpoints.

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
        env = "PMCORE_RELAY_LISTEN",
        default_value = "0.0.0.0:3005"
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
    const NAME: &'static str = "der-gateway-relay";
    const ABOUT: &'static str = "pmcore der-gateway-relay: WebSocket sessions of edge gateways";
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
