//! `api`: REST API (programs, DERs, gateways, enrollments, dispatch events) and the OAuth2 token endpoint. This foundation serves the operational endpoints and publishes its outbox.

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
        env = "PMCORE_API_LISTEN",
        default_value = "0.0.0.0:3001"
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
    const NAME: &'static str = "api";
    const ABOUT: &'static str =
        "pmcore api: REST API for programs, DERs, gateways, enrollments and dispatch events";
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
                self.platform.outbox_relay(cancel.clone()),
                self.platform.serve(Router::new(), readiness, cancel),
            ],
        )
        .await
    }
}
